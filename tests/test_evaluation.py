"""train_scripts/evaluate_ddpm.py and ddpm_hf.tools.evaluation: the bound and FID/KID of a tiny model, one process
against two, the JSON and card outputs, and the errors before any work."""

import csv
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from diffusers import DDIMScheduler
from helpers.cli import script_help

from ddpm_hf import DDPMPipeline, PaperDDPMScheduler, bits_per_dim, build_unet
from ddpm_hf.core.images import to_model_range
from ddpm_hf.jobs.arguments import DataArguments
from ddpm_hf.jobs.evaluator import DDPMEvaluator, EvaluationArguments, plot_lines
from ddpm_hf.tools.distributed import chunk_generator
from ddpm_hf.tools.evaluation import evaluate_bound, generate

ROOT = Path(__file__).resolve().parents[1]
# A measurement recorded before, of another kind and split than the test's (it must survive the update).
EARLIER = {"metric": "fid", "name": "FID earlier", "value": 3.0, "dataset": "sklearn-digits", "split": "train"}
SCRIPT = ROOT / "train_scripts" / "evaluate_ddpm.py"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny pipeline (T = 20) saved to a folder, as the trainer would leave it."""
    folder = tmp_path_factory.mktemp("model") / "tiny-ddpm"
    torch.manual_seed(0)
    DDPMPipeline(build_unet("tiny"), PaperDDPMScheduler(num_train_timesteps=20)).save_pretrained(folder)
    return folder


def _images(n: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


def test_chunk_generators_depend_on_seed_and_chunk_only():
    draw = [torch.randn(4, generator=chunk_generator(s, k, "cpu")) for s, k in [(0, 0), (0, 1), (1, 0), (0, 0)]]
    assert torch.equal(draw[0], draw[3])
    assert not torch.equal(draw[0], draw[1]) and not torch.equal(draw[0], draw[2])


def test_bound_is_the_per_chunk_bound_with_the_chunk_noise(model_dir):
    pipe = DDPMPipeline.from_pretrained(model_dir)
    images = _images(5)
    result = evaluate_bound(pipe.unet, pipe.scheduler, images, batch_size=2, seed=3)
    expected = torch.cat(
        [
            bits_per_dim(
                pipe.unet, pipe.scheduler, to_model_range(images[i : i + 2]), chunk_generator(3, k, "cpu")
            ).total_bpd
            for k, i in enumerate(range(0, 5, 2))
        ]
    )
    torch.testing.assert_close(result.per_image_bpd, expected.double())
    assert result.mean == pytest.approx(expected.double().mean().item())
    assert result.stderr == pytest.approx(expected.double().std().item() / 5**0.5)
    assert not result.is_estimate and result.num_timesteps == 20
    estimate = evaluate_bound(pipe.unet, pipe.scheduler, images, batch_size=5, num_timesteps=4)
    assert estimate.is_estimate and estimate.num_timesteps == 4


def test_generate_gives_sample_i_whatever_the_batch_split(model_dir):
    pipe = DDPMPipeline.from_pretrained(model_dir)
    samples = generate(pipe, 3, batch_size=2, num_inference_steps=5, seed=7)
    assert samples.dtype == torch.uint8 and samples.shape == (3, 3, 8, 8)
    first_chunk = pipe(batch_size=2, generator=chunk_generator(7, 0, "cpu"), num_inference_steps=5, output_type="np")
    torch.testing.assert_close(
        samples[:2], torch.from_numpy(first_chunk.images * 255).round().to(torch.uint8).permute(0, 3, 1, 2)
    )


def _evaluate(*args: str, launcher: list[str] | None = None) -> dict:
    cmd = [*(launcher or [sys.executable]), str(SCRIPT), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = Path(args[args.index("--output_dir") + 1])
    return json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_two_processes_give_the_numbers_of_one(model_dir, tmp_path, accelerate_launch):
    flags = ["--model", str(model_dir), "--feature_space", "random", "--num_samples", "6", "--batch_size", "2"]
    flags += ["--num_images", "7", "--num_inference_steps", "4,20", "--stats_cache_dir", str(tmp_path / "stats")]
    one = _evaluate(*flags, "--output_dir", str(tmp_path / "one"))
    launcher = accelerate_launch(2, SCRIPT)[:-1]
    two = _evaluate(*flags, "--output_dir", str(tmp_path / "two"), launcher=launcher)
    assert two["num_processes"] == 2 and one["num_processes"] == 1
    assert one["bound"]["num_images"] == 7 and not one["bound"]["is_estimate"]
    assert two["bound"]["bpd"] == pytest.approx(one["bound"]["bpd"], rel=1e-6)
    assert two["bound"]["stderr"] == pytest.approx(one["bound"]["stderr"], rel=1e-5)
    assert [r["num_inference_steps"] for r in one["quality"]] == [4, 20]
    for a, b in zip(one["quality"], two["quality"], strict=True):
        assert b["fid"] == pytest.approx(a["fid"], rel=1e-5) and b["kid_mean"] == pytest.approx(a["kid_mean"], rel=1e-4)
    assert one["quality"][0]["fid"] != pytest.approx(one["quality"][1]["fid"])
    assert (tmp_path / "one" / "quality_vs_steps.csv").read_text().count("\n") == 3


def test_results_update_the_model_card(model_dir, tmp_path):
    folder = Path(shutil.copytree(model_dir, tmp_path / "model"))
    (folder / "eval_results.json").write_text(json.dumps({"results": [EARLIER]}))
    args = EvaluationArguments(
        model=str(folder),
        metrics="bpd",
        num_images=4,
        bpd_num_timesteps=5,
        output_dir=str(tmp_path / "e"),
        update_model_card=True,
    )
    report = DDPMEvaluator(args, DataArguments()).run()
    header = yaml.safe_load((folder / "README.md").read_text().split("---")[1])
    kept, (metric,) = (result["metrics"] for result in header["model-index"][0]["results"])
    assert kept == [{"type": "fid", "value": 3.0, "name": "FID earlier"}]  # an earlier measurement stays
    assert metric["type"] == "bits_per_dim" and metric["value"] == pytest.approx(report["bound"]["bpd"])
    # The estimate's wording is the bound's (ddpm_hf.tools.evaluation.bound_entry); its numbers are the run's.
    assert "estimate" in metric["name"] and "5 of 20" in metric["name"] and "4 held-out images" in metric["name"]
    saved = json.loads((tmp_path / "e" / "results.json").read_text())
    # The digits have no test split: --split test is the images held out of them, and is called so.
    assert saved["split"] == "held-out" and saved["results"][0]["split"] == "held-out"
    assert saved["settings"]["bpd_num_timesteps"] == 5 and saved["dataset"].startswith("sklearn.datasets.load_digits")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"metrics": "bpd,fdi"}, "--metrics takes bpd, fid; got fdi"),
        ({"split": "val"}, "--split must be one of test, train"),
        ({"num_inference_steps": "10,30"}, r"--num_inference_steps must lie in 1..20; got \[30\]"),
        ({"variance_type": "learned"}, "--variance_type takes fixed_small"),
        ({"scheduler": "ddim,heun"}, "--scheduler takes ddpm, ddim, dpm_solver, euler_ancestral, pndm; got heun"),
        ({"scheduler": " , "}, "--scheduler needs one or more of ddpm, ddim"),
        ({"scheduler": "ddim", "variance_type": "fixed_large"}, "--variance_type sets the ddpm sampler's"),
        ({"bpd_num_timesteps": 1}, "--bpd_num_timesteps must be in 2..20"),
        ({"feature_space": "clip"}, "--feature_space must be one of inception, random"),
        ({"model": "no/such-folder", "update_model_card": True}, "is not a local folder"),
    ],
)
def test_bad_arguments_are_named(model_dir, changes, message):
    args = EvaluationArguments(**{"model": str(model_dir), **changes})
    with pytest.raises(ValueError, match=message):
        DDPMEvaluator(args, DataArguments())


def test_a_resolution_other_than_the_models_is_refused(model_dir):
    with pytest.raises(ValueError, match="--resolution 16: the model makes 8x8 images"):
        DDPMEvaluator(EvaluationArguments(model=str(model_dir)), DataArguments(resolution=16), given={"resolution"})


def test_update_model_card_refuses_a_hub_cache_snapshot(model_dir, tmp_path):
    folder = Path(shutil.copytree(model_dir, tmp_path / "snapshot"))
    (tmp_path / "blob").write_text("card")
    (folder / "README.md").symlink_to(tmp_path / "blob")
    with pytest.raises(ValueError, match="is a Hub cache snapshot"):
        DDPMEvaluator(EvaluationArguments(model=str(folder), update_model_card=True), DataArguments())
    assert (tmp_path / "blob").read_text() == "card"


def test_missing_inception_weights_are_reported_before_sampling(model_dir, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty torch hub cache
    calls = []
    monkeypatch.setattr("ddpm_hf.jobs.evaluator.generate", lambda *a, **k: calls.append(a))
    with pytest.raises(FileNotFoundError, match="--inception_weights PATH") as error:
        DDPMEvaluator(EvaluationArguments(model=str(model_dir), metrics="fid"), DataArguments()).run()
    assert "pt_inception-2015-12-05-6726825d.pth" in str(error.value) and calls == []


def test_the_data_default_to_the_models_training_data(model_dir, tmp_path):
    folder = Path(shutil.copytree(model_dir, tmp_path / "trained"))
    (folder / "training_run.json").write_text(json.dumps({"args": {"max_train_samples": 100, "seed": 3}}))
    args = EvaluationArguments(model=str(folder), metrics="fid", feature_space="random")
    assert len(DDPMEvaluator(args, DataArguments()).fid_images) == 100
    given = DDPMEvaluator(args, DataArguments(max_train_samples=50), given={"max_train_samples"})
    assert len(given.fid_images) == 50


def test_several_samplers_are_crossed_with_the_chain_lengths(model_dir, tmp_path, monkeypatch):
    """--scheduler ddpm,ddim: every (sampler, variance for ddpm, steps) is sampled with that sampler's scheduler and
    gets a row naming it, in results.json, the CSV, the plot's lines and the card entries."""
    sampled = []

    def watched_generate(pipeline, num_samples, batch_size, num_inference_steps, seed):
        scheduler = pipeline.scheduler
        sampled.append(
            (
                type(scheduler).__name__,
                scheduler.config.get("variance_type") if isinstance(scheduler, PaperDDPMScheduler) else None,
                num_inference_steps,
                scheduler.config.timestep_spacing,
            )
        )
        return generate(pipeline, num_samples, batch_size, num_inference_steps, seed)

    monkeypatch.setattr("ddpm_hf.jobs.evaluator.generate", watched_generate)
    args = EvaluationArguments(
        model=str(model_dir),
        metrics="fid",
        feature_space="random",
        num_samples=4,
        batch_size=4,
        scheduler="ddpm,ddim",
        num_inference_steps="2,5",
        variance_type="fixed_small,fixed_large",
        output_dir=str(tmp_path / "out"),
        stats_cache_dir=str(tmp_path / "stats"),
    )
    evaluator = DDPMEvaluator(args, DataArguments(max_train_samples=50), given={"max_train_samples"})
    report = evaluator.run()
    expected = [
        ("ddpm", "fixed_small", 2),
        ("ddpm", "fixed_small", 5),
        ("ddpm", "fixed_large", 2),
        ("ddpm", "fixed_large", 5),
        ("ddim", None, 2),
        ("ddim", None, 5),
    ]
    classes = {"ddpm": "PaperDDPMScheduler", "ddim": "DDIMScheduler"}
    assert sampled == [(classes[name], variance, steps, "trailing") for name, variance, steps in expected]
    rows = report["quality"]
    assert [(r["scheduler"], r["variance_type"], r["num_inference_steps"]) for r in rows] == expected
    assert all(r["timestep_spacing"] == "trailing" and r["num_model_calls"] == r["num_inference_steps"] for r in rows)
    assert type(evaluator.pipeline.scheduler) is PaperDDPMScheduler  # the model's own scheduler is put back
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["quality"] == rows and saved["settings"]["scheduler"] == "ddpm,ddim"
    with open(tmp_path / "out" / "quality_vs_steps.csv", newline="") as file:
        table = list(csv.DictReader(file))
    assert [(r["scheduler"], r["variance_type"], r["num_inference_steps"]) for r in table] == [
        (name, variance or "", str(steps)) for name, variance, steps in expected
    ]
    lines = plot_lines(rows)
    assert list(lines) == ["ddpm fixed_small", "ddpm fixed_large", "ddim"]
    assert [r["num_inference_steps"] for r in lines["ddim"]] == [2, 5]
    names = [entry["name"] for entry in report["results"]]
    assert "4 samples, ddim, 5 steps (trailing)" in names[-1] and "ddpm fixed_large, 2 steps" in names[2]


def test_a_model_saved_with_ddim_is_evaluated_with_the_papers_bound(tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "ddim-model"
    DDPMPipeline(build_unet("tiny"), DDIMScheduler(num_train_timesteps=20)).save_pretrained(folder)
    args = EvaluationArguments(
        model=str(folder),
        metrics="bpd",
        num_images=3,
        bpd_num_timesteps=4,
        scheduler="ddim",
        output_dir=str(tmp_path / "out"),
    )
    evaluator = DDPMEvaluator(args, DataArguments(), given=())
    assert type(evaluator.pipeline.scheduler) is DDIMScheduler
    assert type(evaluator.paper_scheduler) is PaperDDPMScheduler and len(evaluator.paper_scheduler) == 20
    report = evaluator.run()
    expected = evaluate_bound(
        evaluator.pipeline.unet, PaperDDPMScheduler(num_train_timesteps=20), evaluator.images, 64, 4
    )
    assert report["bound"]["bpd"] == pytest.approx(expected.mean, rel=1e-12)


def test_help_documents_every_flag():
    out = script_help(SCRIPT)
    for flag in dataclasses.fields(EvaluationArguments):
        assert f"--{flag.name}" in out
    text = " ".join(out.split())  # argparse wraps the lines
    assert "--scheduler SCHEDULER" in text and "the trainer's fixed 10%)" in text
