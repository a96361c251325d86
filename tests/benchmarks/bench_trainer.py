"""Trainer throughput against a bare loop of the same UNet forward + backward + AdamW step, in one process.

    .venv/bin/python tests/benchmarks/bench_trainer.py [--steps 150] [--repeats 3] [--unet small] [--batch 128]

Both run on the embedded digits' shapes with the same UNet, batch and optimizer; the trainer also draws
its data, flips, timesteps and noise, clips the gradient, steps the LR schedule and the EMA. Runs alternate
(trainer, bare, trainer, ...) and the ratio of steps/s is printed per repeat with its median and spread.
Not a test: timings on shared machines are noisy, so only the ratio within one run is meaningful.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from accelerate.state import AcceleratorState, GradientState

from ddpm_hf import PaperDDPMScheduler, build_unet
from ddpm_hf.jobs.arguments import parse_train_args
from ddpm_hf.jobs.trainer import DDPMTrainer


def trainer_steps_per_second(steps: int, unet: str, batch: int) -> float:
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    with tempfile.TemporaryDirectory() as out:
        flags = f"--unet {unet} --train_batch_size {batch} --max_train_steps {steps} --logger none --eval_steps 0"
        argv = ["--output_dir", out, *flags.split(), "--checkpointing_steps", "0", "--logging_steps", str(steps)]
        trainer = DDPMTrainer(parse_train_args(argv))
        trainer._save_pipeline = lambda: None  # time the loop, not the final sampling and saving
        start = time.perf_counter()
        trainer.train()
        return steps / (time.perf_counter() - start)


def bare_steps_per_second(steps: int, unet: str, batch: int) -> float:
    torch.manual_seed(0)
    model = build_unet(unet)
    scheduler = PaperDDPMScheduler()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    channels, size = model.config.in_channels, model.config.sample_size
    x_t, t = torch.randn(batch, channels, size, size), torch.randint(0, len(scheduler), (batch,))
    noise = torch.randn_like(x_t)
    start = time.perf_counter()
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(x_t, t).sample, noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--unet", default="small")
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    ratios = []
    for i in range(args.repeats):
        trained = trainer_steps_per_second(args.steps, args.unet, args.batch)
        bare = bare_steps_per_second(args.steps, args.unet, args.batch)
        ratios.append(trained / bare)
        print(f"repeat {i}: trainer {trained:.2f} steps/s, bare loop {bare:.2f} steps/s, ratio {ratios[-1]:.3f}")
    spread = max(ratios) - min(ratios)
    print(f"trainer / bare loop: median {statistics.median(ratios):.3f}, spread {spread:.3f} over {len(ratios)}")


if __name__ == "__main__":
    main()
