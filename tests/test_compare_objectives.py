"""train_scripts/compare_objectives.py end to end at a tiny size: a run per objective, its scores, the table and the
plot; a second invocation reuses finished runs and resumes an interrupted one; bad flags stop it before training."""

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import PIL.Image
import pytest
import torch
from helpers.cli import usage_error
from safetensors.torch import load_file

from ddpm_hf.jobs import objectives as objectives_job
from ddpm_hf.jobs.objectives import OBJECTIVES, ComparisonArguments

SCRIPT = Path(__file__).resolve().parents[1] / "train_scripts" / "compare_objectives.py"
sys.path.insert(0, str(SCRIPT.parent))
import compare_objectives  # noqa: E402

# The tiny UNet on the grayscale digits, T = 20, 30 steps of batch 8 with a checkpoint every 10, scored with 16
# samples at the full chain and at 5 steps, the bound on 8 held-out images; one thread.
TRAINER_FLAGS = (
    "--unet tiny --channels 1 --num_train_timesteps 20 --max_train_steps 30 --train_batch_size 8 --eval_steps 0 "
    "--eval_num_timesteps 10 --logging_steps 10 --report_to none --cpu_threads 1"
).split()
SCORING_FLAGS = (
    "--quality_every_steps 10 --num_inference_steps 5 --num_samples 16 --num_bound_images 8 --batch_size 16".split()
)
WEIGHTS = Path("unet") / "diffusion_pytorch_model.safetensors"

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def compare(out: Path, names: list[str]) -> subprocess.CompletedProcess:
    argv = ["--output_dir", str(out), "--objectives", ",".join(names), *SCORING_FLAGS, *TRAINER_FLAGS]
    result = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def check_report(out: Path, names: list[str], stdout: str) -> dict:
    report = json.loads((out / "objectives.json").read_text())
    rows = report["objectives"]
    assert [row["objective"] for row in rows] == names
    assert report["num_inference_steps"] == [20, 5]
    for row in rows:
        assert row["loss"] == ("L_hybrid, lambda 0.001" if row["loss_type"] == "hybrid" else row["loss"])
        bound = row["bound"]
        assert math.isfinite(bound["bpd"]) and bound["bpd"] > 0 and bound["stderr"] > 0, row["objective"]
        assert bound["num_timesteps"] == 20 and not bound["is_estimate"] and bound["num_images"] == 8
        assert [q["num_inference_steps"] for q in row["quality"]] == [20, 5]
        for q in row["quality"]:
            assert math.isfinite(q["fid"]) and q["kid_std"] > 0 and q["num_samples"] == 16
            assert q["feature_space"] == "random"
        curve = row["quality_vs_train_steps"]
        assert curve["num_inference_steps"] == 5 and [p["train_step"] for p in curve["points"]] == [10, 20, 30]
        assert curve["points"][-1]["fid"] == row["quality"][1]["fid"]  # the last point is the final model
        assert row["train_steps"] == 30 and row["train_seconds"] > 0
        assert row["variance_type"] == ("learned_range" if row["loss_type"] == "hybrid" else "fixed_large")
        assert {k: row[k] for k in ("loss_type", "snr_gamma", "timestep_sampler")} == OBJECTIVES[
            row["objective"]
        ].settings()
    table = (out / "objectives.md").read_text()
    lines = table.strip().splitlines()
    assert lines[0].startswith("| objective |") and "bits/dim ± SE" in lines[0] and "FID (20 steps)" in lines[0]
    assert "KID x 1e4 (5 steps)" in lines[0] and "training time" in lines[0]
    assert [line.split("|")[1].strip() for line in lines[2:]] == names
    assert table.strip() in stdout  # printed at the end
    with PIL.Image.open(out / "quality_vs_train_steps.png") as plot:
        assert plot.format == "PNG" and plot.width > 400
    return report


@pytest.mark.slow
def test_compares_every_objective_and_continues_an_interrupted_comparison(tmp_path):
    out, names = tmp_path / "compare", list(OBJECTIVES)
    first = compare(out, names)
    report = check_report(out, names, first.stdout)
    assert not any(row["reused"] for row in report["objectives"])
    for name in names:
        assert f"{name}: training in {out / name}" in first.stderr
        assert sorted(p.name for p in (out / name / "checkpoints").iterdir()) == [
            "checkpoint-10",
            "checkpoint-20",
            "checkpoint-30",
        ]
        # Each checkpoint before the last is scored with its EMA weights, which differ from the final ones.
        snapshot = load_file(out / "scores" / name / "step-10" / "pipeline" / WEIGHTS)
        final = load_file(out / name / WEIGHTS)
        assert any(not torch.equal(snapshot[k], final[k]) for k in final)

    # Interrupt vlb after step 20: no final pipeline, no last checkpoint.
    vlb = out / "vlb"
    vlb_weights = load_file(vlb / WEIGHTS)
    for name in ("model_index.json", "training_run.json"):
        (vlb / name).unlink()
    for folder in ("unet", "scheduler", "checkpoints/checkpoint-30"):
        for path in sorted((vlb / folder).rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        (vlb / folder).rmdir()
    stamps = {name: (out / name / WEIGHTS).stat().st_mtime_ns for name in names if name != "vlb"}

    again = compare(out, names)
    rerun = check_report(out, names, again.stdout)
    assert f"vlb: resuming in {vlb}" in again.stderr
    assert "Resumed from" in again.stderr and "checkpoint-20" in again.stderr
    for name in stamps:
        assert f"{name}: reusing the finished run in {out / name} (not retrained)" in again.stderr
        assert f"{name}: training in" not in again.stderr
        assert (out / name / WEIGHTS).stat().st_mtime_ns == stamps[name]
    resumed = load_file(vlb / WEIGHTS)
    assert all(torch.equal(resumed[k], vlb_weights[k]) for k in vlb_weights), "the resumed run ends where it did"
    for before, now in zip(report["objectives"], rerun["objectives"], strict=True):
        assert now["reused"] == (now["objective"] != "vlb")
        assert (now["bound"], now["quality"]) == (before["bound"], before["quality"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--objectives", "simple,l2"], "--objectives takes comma-separated names among simple, simple_snr5, vlb,"),
        (["--objectives", ","], "--objectives takes comma-separated names among"),
        (["--num_inference_steps", "0"], "--num_inference_steps takes comma-separated chain lengths in 1..20"),
        (["--num_inference_steps", "50"], "--num_inference_steps takes comma-separated chain lengths in 1..20"),
        (["--num_inference_steps", "5,ten"], "--num_inference_steps takes comma-separated chain lengths in 1..20"),
        (["--num_samples", "1"], "--num_samples must be >= 2"),
        (["--quality_every_steps", "-1"], "--quality_every_steps must be >= 0"),
        (["--loss_type", "vlb"], "--loss_type is not passed to the trainer here: each of --objectives sets it"),
        (["--checkpointing_steps", "5"], "--checkpointing_steps is not passed to the trainer here"),
        (["--unet_preset", "tiny"], "the flags passed to train_ddpm.py"),
    ],
)
def test_bad_flags_stop_before_training(tmp_path, capsys, monkeypatch, flags, message):
    trained = []
    monkeypatch.setattr(objectives_job, "DDPMTrainer", lambda args: trained.append(args))
    out = tmp_path / "compare"
    error = usage_error(
        capsys, compare_objectives.main, ["--output_dir", str(out), *SCORING_FLAGS, *TRAINER_FLAGS, *flags]
    )
    assert error.startswith("compare_objectives.py: error: ") and message in error
    if "l2" in flags:
        assert "unknown l2" in error and "hybrid_is" in error
    assert trained == [] and not out.exists()


def test_a_folder_of_other_arguments_is_not_reused(tmp_path, capsys, monkeypatch):
    """A finished run is reused only if it was trained with the same arguments (up to output-only ones)."""
    monkeypatch.setattr(objectives_job, "DDPMTrainer", lambda args: pytest.fail("trained"))
    run = tmp_path / "compare" / "simple"
    run.mkdir(parents=True)
    (run / "model_index.json").write_text("{}")
    args = {"max_train_steps": 99, "cpu_threads": 2, "loss_type": "simple"}
    (run / "training_run.json").write_text(json.dumps({"args": args, "run": {"global_step": 99, "max_steps": 99}}))
    argv = ["--output_dir", str(tmp_path / "compare"), "--objectives", "simple", *SCORING_FLAGS, *TRAINER_FLAGS]
    error = usage_error(capsys, compare_objectives.main, argv)
    assert f"{run} holds a run of objective simple with other arguments (max_train_steps: 99 there, 30 now)" in error


def test_help_documents_every_flag_and_objective(capsys):
    with pytest.raises(SystemExit):
        compare_objectives.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
    for flag in dataclasses.fields(ComparisonArguments):
        assert f"--{flag.name}" in text, flag.name
    for name in OBJECTIVES:
        assert f"{name}:" in text, name
    for cited in ("Ho et al. 2020", "Nichol & Dhariwal 2021", "Hang et al. 2023", "train_ddpm.py --help"):
        assert cited in text, cited


def test_objective_flags_are_explicit():
    """Each objective gives its flags, so a preset or --config file cannot change them."""
    uniform = ["--timestep_sampler", "uniform"]
    assert OBJECTIVES["simple"].trainer_flags() == ["--loss_type", "simple", *uniform]
    assert OBJECTIVES["simple_snr5"].trainer_flags() == ["--loss_type", "simple", "--snr_gamma", "5", *uniform]
    assert OBJECTIVES["hybrid_is"].trainer_flags() == ["--loss_type", "hybrid", "--timestep_sampler", "loss_aware"]
    assert OBJECTIVES["vlb_is"].trainer_flags() == ["--loss_type", "vlb", "--timestep_sampler", "loss_aware"]
