"""The training script end to end: outputs, several processes, exact resume, failures, mixed precision."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ddpm_hf import DDPMPipeline, PaperDDPMScheduler, build_unet
from ddpm_hf.trainer import DDPMTrainer, l_simple
from ddpm_hf.training_args import parse_train_args

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
    run(
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
        "--save_images_steps",
        "3",
        "--ddpm_num_inference_steps",
        "5",
        "--save_model_steps",
        "3",
        "--checkpoints_total_limit",
        "1",
    )
    pipe = DDPMPipeline.from_pretrained(out)
    assert isinstance(pipe.scheduler, PaperDDPMScheduler) and pipe.scheduler.config.num_train_timesteps == 50
    assert (out / "samples.png").is_file() and (out / "samples" / "step-3.png").is_file()
    card = (out / "README.md").read_text()
    for fact in ["load_digits", "none (the embedded default job)", "lr 0.002", "6 of 6", "fixed_large"]:
        assert fact in card, fact
    assert json.loads((out / "train_args.json").read_text())["unet"] == "tiny"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-6"], "total limit 1"
    # The saved weights are the EMA ones, not the training weights of the checkpoint.
    saved, raw = unet_weights(out), load_file(out / "checkpoints" / "checkpoint-6" / "model.safetensors")
    assert any(not torch.equal(saved[k], raw[k]) for k in saved)
    events = EventAccumulator(str(next((out / "logs").rglob("events.out.tfevents*")).parent)).Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in [
        "loss",
        "lr",
        "grad_norm",
        "ema_decay",
        "steps_per_second",
        "images_per_second",
        "eval/bpd_estimate_5_timesteps",
    ]:
        assert tag in scalars, tag
    assert "samples" in events.Tags()["images"]
    assert [e.step for e in events.Scalars("loss")] == [2, 4, 6]


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
    # Only the main process writes: one pipeline, one card, one tracker run.
    assert (out / "model_index.json").is_file() and len(list((out / "logs").rglob("events.out.tfevents*"))) >= 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((out / "logs").rglob("events.out.tfevents*")).parent)).Reload()
    lrs = [round(e.value, 8) for e in events.Scalars("lr")]
    # Warm-up counts optimizer steps: 2e-3 * k / 4 after k steps, whatever the processes and accumulation.
    assert lrs == [5e-4, 1e-3, 1.5e-3, 2e-3]


def test_killed_run_resumes_to_the_same_bits(tmp_path):
    args = ["--max_train_steps", "40", "--checkpointing_steps", "10", "--dropout", "0.1", "--random_flip"]
    run("--output_dir", str(tmp_path / "straight"), *args)

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *QUICK, "--output_dir", str(out), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (out / "checkpoints" / "checkpoint-10" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (out / "model_index.json").exists(), "killed before the end"
    run("--output_dir", str(out), *args, "--resume_from_checkpoint", "latest")

    straight, resumed = unet_weights(tmp_path / "straight"), unet_weights(out)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    raw = [load_file(d / "checkpoints" / "checkpoint-40" / "model.safetensors") for d in (tmp_path / "straight", out)]
    assert all(torch.equal(raw[0][k], raw[1][k]) for k in raw[0])


@pytest.mark.parametrize(
    "args,message",
    [
        (["--train_data_dir", "{tmp}/nowhere"], "--train_data_dir .*nowhere does not exist"),
        (["--train_data_dir", "{tmp}/empty"], "--train_data_dir .*empty holds no image files"),
        (["--train_data_dir", "{tmp}/bad"], "Cannot read image .*broken.png"),
        (["--resolution", "9"], "--resolution 9 does not suit the UNet: .* a multiple of 2"),
        (["--resume_from_checkpoint", "latest"], "--resume_from_checkpoint latest: no complete checkpoint"),
        (["--resume_from_checkpoint", "{tmp}"], "is not a complete checkpoint"),
        (["--unet", "cifar100"], "--unet 'cifar100' is neither a preset"),
        (["--total_batch_size", "7", "--gradient_accumulation_steps", "2"], "--total_batch_size 7 is not divisible"),
    ],
)
def test_bad_input_fails_before_training(tmp_path, args, message, fresh_accelerate_state):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"garbage")
    out = tmp_path / "run"
    argv = [*QUICK, "--output_dir", str(out), "--max_train_steps", "3", *[a.format(tmp=tmp_path) for a in args]]
    with pytest.raises(ValueError, match=message):
        DDPMTrainer(parse_train_args(argv))
    assert not out.exists()


def test_output_dir_of_another_run_is_refused(tmp_path):
    out = tmp_path / "run"
    run("--output_dir", str(out), "--max_train_steps", "2")
    before = unet_weights(out)
    result = run("--output_dir", str(out), "--max_train_steps", "2", check=False)
    assert result.returncode != 0 and "holds another run. Pass --resume_from_checkpoint latest" in result.stderr
    assert all(torch.equal(before[k], v) for k, v in unet_weights(out).items())


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
    assert result.returncode != 0 and "The loss became non-finite by step" in result.stderr
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
