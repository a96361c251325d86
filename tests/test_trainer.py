"""The training script end to end: outputs, several processes, exact resume, failures, mixed precision."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file

from ddpm_hf import DDPMPipeline, PaperDDPMScheduler, build_unet
from ddpm_hf.core.losses import l_simple
from ddpm_hf.jobs.arguments import parse_train_args
from ddpm_hf.jobs.trainer import DDPMTrainer
from ddpm_hf.tools.run_folder import holds_pipeline

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "train_scripts" / "train_ddpm.py"
RECORDER = ROOT / "tests" / "helpers" / "record_run.py"
# A few-second job: the tiny UNet on the digits, T = 50.
QUICK = (
    "--unet tiny --num_train_timesteps 50 --train_batch_size 8 --logging_steps 2 --eval_steps 0 "
    "--checkpointing_steps 0 --num_sample_images 4 --cpu_threads 1"
).split()


def run(*args, check=True, **kwargs):
    result = subprocess.run([sys.executable, str(SCRIPT), *QUICK, *args], capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(result.stderr[-3000:])
    return result


def unet_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")


def test_few_step_run_writes_every_output(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    result = run(
        "--output_dir",
        str(out),
        "--max_train_steps",
        "6",
        "--checkpointing_steps",
        "3",
        "--eval_steps",
        "3",
        "--eval_num_timesteps",
        "5",
        "--ddpm_num_inference_steps",
        "5",
        "--save_model_steps",
        "3",
        "--checkpoints_total_limit",
        "1",
        "--eval_fid_steps",
        "3",
        "--eval_num_samples",
        "4",
        "--eval_feature_space",
        "random",
    )
    pipe = DDPMPipeline.from_pretrained(out)
    assert isinstance(pipe.scheduler, PaperDDPMScheduler) and pipe.scheduler.config.num_train_timesteps == 50
    # A grid at each evaluation by default (step 3; the one of step 6 is the final samples.png).
    assert (out / "samples.png").is_file() and [p.name for p in (out / "samples").iterdir()] == ["step-3.png"]
    for line in [
        "INFO ddpm_hf.jobs.trainer: Saved",
        "Final evaluation: the full bound (50 terms) on 64 held-out images",
        "INFO ddpm_hf.jobs.trainer: Bound on 64 held-out images:",
        "Saving the pipeline, the sample grid and the model card",
    ]:
        assert line in result.stderr, line
    # 4 tiles of 8x8 on a 2x2 grid are 22 pixels wide: enlarged 12 times, nearest-neighbour, to 264.
    with PIL.Image.open(out / "samples.png") as grid:
        assert grid.width >= 256 and grid.width == 22 * 12
        pixels = np.asarray(grid)
        assert (pixels[::12, ::12].repeat(12, 0).repeat(12, 1) == pixels).all()  # blocks, not smoothed
    card = (out / "README.md").read_text()
    for fact in ["load_digits", "none (the embedded default job)", "lr 0.002", "6 of 6", "fixed_large"]:
        assert fact in card, fact
    assert json.loads((out / "train_args.json").read_text())["unet"] == "tiny"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-6"], "total limit 1"
    # The saved weights are the EMA ones (the checkpoint's EMA state), not the training weights.
    saved, raw = unet_weights(out), load_file(out / "checkpoints" / "checkpoint-6" / "model.safetensors")
    assert any(not torch.equal(saved[k], raw[k]) for k in saved)
    ema = torch.load(out / "checkpoints" / "checkpoint-6" / "custom_checkpoint_1.pkl", weights_only=False)
    names = [name for name, _ in build_unet("tiny").named_parameters()]
    assert ema["optimization_step"] == 6 and len(ema["shadow_params"]) == len(names)
    assert all(torch.equal(saved[n], shadow) for n, shadow in zip(names, ema["shadow_params"], strict=True))
    events = EventAccumulator(str(next((out / "logs").rglob("events.out.tfevents*")).parent)).Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in [
        "loss",
        "lr",
        "grad_norm",
        "ema_decay",
        "steps_per_second",
        "images_per_second",
        "eval/bpd_estimate_5_terms",
        "eval/bpd_estimate_5_terms_stderr",
        "eval/bpd",
        "eval/fid_random",
        "eval/kid_random",
    ]:
        assert tag in scalars, tag
    assert [e.step for e in events.Scalars("eval/fid_random")] == [3, 6]
    results = {r["metric"]: r for r in json.loads((out / "training_run.json").read_text())["results"]}
    assert results["fid_random_features"]["value"] == pytest.approx(events.Scalars("eval/fid_random")[-1].value)
    assert "4 samples, 5 steps, step 6" in results["fid_random_features"]["name"]
    assert results["bits_per_dim"]["value"] == pytest.approx(events.Scalars("eval/bpd")[-1].value)
    assert "all 50 terms; 64 held-out images; EMA weights of step 6" in results["bits_per_dim"]["name"]
    assert [e.step for e in events.Images("samples")] == [3, 6]
    assert [e.step for e in events.Scalars("loss")] == [2, 4, 6]
    assert events.path.endswith(str(Path("logs") / "ddpm_hf")), "the default --tracker_project_name"


@pytest.mark.slow
def test_quick_trial_skips_the_final_phase_and_checkpoints_the_last_step(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    flags = "--max_train_steps 5 --checkpointing_steps 3 --eval_steps 2 --eval_num_timesteps 5".split()
    result = run("--output_dir", str(out), *flags, "--final_eval_batch_size", "0", "--num_sample_images", "0")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-3", "checkpoint-5"]
    assert holds_pipeline(out) and not (out / "samples.png").exists() and not (out / "samples").exists()
    assert "![samples]" not in (out / "README.md").read_text()
    assert json.loads((out / "training_run.json").read_text())["results"][0]["name"].startswith(
        "NLL bound, bits/dim (unbiased estimate from 5 of 50 terms"
    ), "the card keeps the last estimate, labelled as one"
    assert "Final evaluation" not in result.stderr
    events = EventAccumulator(str(next((out / "logs").rglob("events.out.tfevents*")).parent)).Reload()
    assert events.Tags()["images"] == [] and "eval/bpd" not in events.Tags()["scalars"]


def test_a_bad_flag_is_one_line_without_a_traceback(tmp_path):
    result = run("--output_dir", str(tmp_path / "run"), "--resolution", "9", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "train_ddpm.py: error: --resolution 9 does not suit --unet tiny: it halves the image between each two of its "
        "2 levels, so the resolution must be a multiple of 2."
    ]


@pytest.mark.slow
def test_two_processes_share_weights_and_split_the_data(tmp_path, accelerate_launch):
    out = tmp_path / "run"
    flags = "--max_train_steps 4 --gradient_accumulation_steps 2 --lr_warmup_steps 4 --logging_steps 1".split()
    cmd = accelerate_launch(2, RECORDER, str(tmp_path / "record"), *QUICK, "--output_dir", str(out), *flags)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / "record" / f"rank{i}.json").read_text()) for i in range(2)]
    assert len(ranks[0]["hashes"]) == 4
    assert ranks[0]["hashes"] == ranks[1]["hashes"], "identical weights after every optimizer step"
    assert len(set(ranks[0]["hashes"])) == 4, "the weights changed at every step"
    for a, b in zip(ranks[0]["indices"], ranks[1]["indices"], strict=True):
        assert not set(a) & set(b), "each process sees its own images"
    assert len(ranks[0]["indices"]) == 8, "4 optimizer steps x 2 accumulated micro-batches"
    # Only the main process writes: one pipeline, one tracker run.
    assert (out / "model_index.json").is_file() and len(list((out / "logs" / "ddpm_hf").glob("events.out*"))) == 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((out / "logs").rglob("events.out.tfevents*")).parent)).Reload()
    lrs = [round(e.value, 8) for e in events.Scalars("lr")]
    # Warm-up counts optimizer steps: 2e-3 * k / 4 after k steps, whatever the processes and accumulation.
    assert lrs == [5e-4, 1e-3, 1.5e-3, 2e-3]


def launch(accelerate_launch, processes: int, *args: str) -> list[str]:
    """The trainer's command line: plain python for one process, `accelerate launch` (gloo) for more."""
    if processes == 1:
        return [sys.executable, str(SCRIPT), *QUICK, *args]
    return accelerate_launch(processes, SCRIPT, *QUICK, *args)


# Hybrid loss with the loss-aware timestep sampler: T = 10 and 32 images a step warm the sampler up (10 losses at
# every t) well before the checkpoint of step 10, so the resumed run draws t from its restored state.
LOSS_AWARE = "--loss_type hybrid --timestep_sampler loss_aware --num_train_timesteps 10 --train_batch_size 32".split()


@pytest.mark.slow
@pytest.mark.parametrize(
    "processes,accumulation,objective", [(1, 1, []), (2, 2, []), (1, 1, LOSS_AWARE)], ids=["1", "2", "loss_aware"]
)
def test_killed_run_resumes_to_the_same_bits(tmp_path, accelerate_launch, processes, accumulation, objective):
    args = [
        *objective,
        "--max_train_steps",
        "30",
        "--checkpointing_steps",
        "10",
        "--dropout",
        "0.1",
        "--random_flip",
        "--gradient_accumulation_steps",
        str(accumulation),
        "--eval_steps",
        "5",
        "--eval_num_timesteps",
        "3",
        "--save_images_steps",
        "5",
        "--ddpm_num_inference_steps",
        "3",
        "--allow_tf32",  # a warning on the CPU
    ]
    straight = subprocess.run(
        launch(accelerate_launch, processes, "--output_dir", str(tmp_path / "straight"), *args),
        check=True,
        capture_output=True,
        text=True,
    )
    # Logging configured once: each line once, whatever the number of processes.
    assert straight.stderr.count("WARNING ddpm_hf.jobs.trainer: --allow_tf32 has no effect") == 1
    assert [
        line.split("checkpoints")[-1] for line in straight.stderr.splitlines() if "INFO" in line and "Saved" in line
    ] == [f"{os.sep}checkpoint-{step}" for step in (10, 20, 30)]

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        launch(accelerate_launch, processes, "--output_dir", str(out), *args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while not (out / "checkpoints" / "checkpoint-10" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (out / "model_index.json").exists(), "killed before the end"
    subprocess.run(
        launch(accelerate_launch, processes, "--output_dir", str(out), *args, "--resume_from_checkpoint", "latest"),
        check=True,
        capture_output=True,
    )

    straight, resumed = unet_weights(tmp_path / "straight"), unet_weights(out)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    if objective:  # the sampler's state is in the checkpoint, warm: the draws depended on it
        state = torch.load(out / "checkpoints" / "checkpoint-10" / "custom_checkpoint_2.pkl", weights_only=True)
        assert int(state["counts"].min()) == 10
    raw = [load_file(d / "checkpoints" / "checkpoint-30" / "model.safetensors") for d in (tmp_path / "straight", out)]
    assert all(torch.equal(raw[0][k], raw[1][k]) for k in raw[0])


@pytest.mark.slow
def test_resuming_with_another_set_up_is_refused(tmp_path, fresh_accelerate_state):
    out = tmp_path / "run"
    run("--output_dir", str(out), "--max_train_steps", "2", "--checkpointing_steps", "2")
    argv = [*QUICK, "--output_dir", str(out), "--max_train_steps", "4", "--resume_from_checkpoint", "latest"]
    with pytest.raises(ValueError, match=r"different set-up \(per_process_batch_size: checkpoint 8, now 16\)"):
        DDPMTrainer(parse_train_args([*argv, "--train_batch_size", "16"]))


@pytest.mark.parametrize(
    "args,message",
    [
        (["--train_data_dir", "{tmp}/nowhere"], "--train_data_dir .*nowhere does not exist"),
        (["--train_data_dir", "{tmp}/empty"], "--train_data_dir .*empty holds no image files"),
        (["--train_data_dir", "{tmp}/bad"], "Cannot read image .*broken.png"),
        (["--resolution", "9"], "--resolution 9 does not suit --unet tiny: .* a multiple of 2"),
        (["--resume_from_checkpoint", "{tmp}"], "is not a complete checkpoint"),
        (["--unet", "cifar100"], "--unet 'cifar100' is neither a preset"),
        (["--total_batch_size", "7", "--gradient_accumulation_steps", "2"], "--total_batch_size 7 is not divisible"),
        (["--preset", "celebahq"], "--preset celebahq trains 256x256 images: give --dataset_name or --train_data_dir"),
        (["--num_sample_images", "-1"], "--num_sample_images must be >= 0, got -1"),
        (["--final_eval_batch_size", "-1"], "--final_eval_batch_size must be >= 0, got -1"),
        (["--ddpm_num_inference_steps", "51"], "--ddpm_num_inference_steps must be in 1..50, got 51"),
        (["--eval_num_timesteps", "1"], "--eval_num_timesteps must be in 2..50, got 1"),
        (["--checkpoints_total_limit", "0"], "--checkpoints_total_limit must be >= 1, got 0"),
        (["--eval_fid_steps", "2", "--eval_num_samples", "1"], "--eval_num_samples must be >= 2, got 1"),
        (["--eval_fid_steps", "2"], "The FID Inception weights are not on this machine"),
        (["--eval_fid_steps", "2", "--inception_weights", "{tmp}/none.pth"], "No Inception weight file at"),
    ],
)
def test_bad_input_fails_before_training(tmp_path, args, message, fresh_accelerate_state):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"garbage")
    out = tmp_path / "run"
    argv = [*QUICK, "--output_dir", str(out), "--max_train_steps", "3", *[a.format(tmp=tmp_path) for a in args]]
    with pytest.raises((ValueError, FileNotFoundError), match=message):  # missing weights: a FileNotFoundError
        DDPMTrainer(parse_train_args(argv))
    assert not out.exists()


@pytest.mark.slow
def test_output_dir_of_another_run_is_refused_unless_overwritten(tmp_path):
    out = tmp_path / "run"
    # `latest` on a first run starts fresh, as in diffusers' scripts, and says so.
    first = run("--output_dir", str(out), "--max_train_steps", "2", "--resume_from_checkpoint", "latest")
    assert "no checkpoint in" in first.stderr and "starting fresh" in first.stderr
    before = unet_weights(out)
    refusals = {
        (): "holds another run. Pass --resume_from_checkpoint latest",
        ("--resume_from_checkpoint", "latest"): "holds a finished run but no checkpoint to resume",
    }
    for extra, message in refusals.items():  # a pipeline but no checkpoint to resume
        result = run("--output_dir", str(out), "--max_train_steps", "2", *extra, check=False)
        assert result.returncode != 0 and message in result.stderr and "starting fresh" not in result.stderr
        assert all(torch.equal(before[k], v) for k, v in unet_weights(out).items())
    (out / "eval_results.json").write_text('{"results": []}')  # what an evaluation of the old run left
    (out / "notes.txt").write_text("mine")
    run("--output_dir", str(out), "--max_train_steps", "2", "--seed", "1", "--overwrite_output_dir")
    after = unet_weights(out)
    assert any(not torch.equal(before[k], v) for k, v in after.items())
    assert not (out / "eval_results.json").exists() and (out / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    result = run(
        "--output_dir",
        str(out),
        "--max_train_steps",
        "20",
        "--learning_rate",
        "1e30",
        "--lr_warmup_steps",
        "0",
        "--max_grad_norm",
        "0",
        "--checkpointing_steps",
        "1",
        "--logging_steps",
        "1",
        check=False,
    )
    assert result.returncode != 0 and "The loss or the weights became non-finite by step 2" in result.stderr
    kept = sorted((out / "checkpoints").glob("checkpoint-*"))
    assert kept and "the last good checkpoint is" in result.stderr and str(kept[-1]) in result.stderr
    good = load_file(kept[-1] / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in good.values())
    assert not (out / "model_index.json").exists()


def test_bf16_autocast_keeps_the_noise_of_small_timesteps(fresh_accelerate_state):
    from accelerate import Accelerator

    torch.manual_seed(0)
    unet, scheduler = build_unet("tiny"), PaperDDPMScheduler()
    seen = {}
    unet.register_forward_hook(lambda m, args, out: seen.update(x_t=args[0], t=args[1], out=out.sample))
    x0 = torch.rand(64, 3, 8, 8) * 2 - 1
    autocast = Accelerator(mixed_precision="bf16", cpu=True).autocast
    l_simple(unet, scheduler, x0, torch.Generator().manual_seed(3), autocast)
    assert seen["out"].dtype == torch.bfloat16, "the UNet did run in bf16"
    g = torch.Generator().manual_seed(3)
    t, noise = torch.randint(0, 1000, (64,), generator=g), torch.randn(x0.shape, generator=g)
    assert seen["x_t"].dtype == torch.float32 and torch.equal(seen["t"], t)
    ab = scheduler.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(seen["x_t"], ab.sqrt() * x0 + (1 - ab).sqrt() * noise)
    small = t < 20
    assert small.any()
    added = seen["x_t"][small] - ab[small].sqrt() * x0[small]
    torch.testing.assert_close(added, (1 - ab[small]).sqrt() * noise[small], rtol=1e-3, atol=1e-6)


def test_non_finite_weights_stop_before_a_checkpoint_keeps_them(tmp_path, fresh_accelerate_state):
    """A finite loss can hide non-finite weights (an inf gradient after clipping); checkpoints must not keep them."""
    out = tmp_path / "run"
    argv = [
        *QUICK,
        "--output_dir",
        str(out),
        "--max_train_steps",
        "5",
        "--checkpointing_steps",
        "1",
        "--logging_steps",
        "100",
    ]
    trainer = DDPMTrainer(parse_train_args(argv))
    ema_step = trainer.ema.step

    def poison_after_second_step(parameters):
        ema_step(parameters)
        if trainer.global_step == 1:  # the counter is raised after this call: this is the 2nd optimizer step
            next(trainer.unet.parameters()).data.fill_(float("nan"))

    trainer.ema.step = poison_after_second_step
    with pytest.raises(RuntimeError, match=r"non-finite by step 2; .*last good checkpoint is .*checkpoint-1"):
        trainer.train()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-1"]


@pytest.mark.slow
def test_bf16_training_runs_end_to_end(tmp_path):
    out = tmp_path / "run"
    run("--output_dir", str(out), "--max_train_steps", "4", "--mixed_precision", "bf16")
    assert "| precision | bf16 |" in (out / "README.md").read_text()
    assert all(torch.isfinite(v).all() for v in unet_weights(out).values())


def test_epochs_count_optimizer_steps(fresh_accelerate_state, tmp_path):
    argv = [
        *QUICK,
        "--output_dir",
        str(tmp_path / "run"),
        "--num_epochs",
        "2",
        "--train_batch_size",
        "100",
        "--gradient_accumulation_steps",
        "2",
    ]
    trainer = DDPMTrainer(parse_train_args(argv))
    assert trainer.max_steps == 2 * (1617 // 100 // 2)


@pytest.mark.slow
def test_memory_and_speed_flags_fall_back_on_the_cpu(tmp_path):
    out = tmp_path / "run"
    flags = ["--gradient_checkpointing", "--channels_last", "--allow_tf32", "--max_train_steps", "2"]
    result = run("--output_dir", str(out), *flags)
    assert "--allow_tf32 has no effect without a CUDA device" in result.stderr
    assert all(torch.isfinite(v).all() for v in unet_weights(out).values())


def test_trackers_get_the_project_and_the_run_name(tmp_path, fresh_accelerate_state, monkeypatch):
    from accelerate import Accelerator

    calls = []
    monkeypatch.setattr(Accelerator, "init_trackers", lambda self, *a, **kw: calls.append((a, kw)))
    argv = [*QUICK, "--output_dir", str(tmp_path / "my-run"), "--max_train_steps", "1", "--num_sample_images", "0"]
    DDPMTrainer(parse_train_args([*argv, "--tracker_project_name", "digits"])).train()
    DDPMTrainer(parse_train_args([*argv, "--run_name", "trial", "--overwrite_output_dir"])).train()
    (project, *_), kwargs = calls[0]
    assert project == "digits" and kwargs["init_kwargs"]["wandb"] == {"name": "my-run"}, "default: the folder's name"
    assert kwargs["init_kwargs"]["mlflow"] == {"run_name": "my-run"}
    (project, *_), kwargs = calls[1]
    assert project == "ddpm_hf" and kwargs["init_kwargs"]["wandb"] == {"name": "trial"}
