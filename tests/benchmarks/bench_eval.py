"""Evaluation during training on 1 and 2 processes: the sample grid, the bound's estimate and the full bound, as
the trainer runs them (`generate`, `evaluate_bound`, in chunks of `--batch_size`), timed on every process.

    .venv/bin/python tests/benchmarks/bench_eval.py [--repeats 3] [--images 64] [--batch_size 32] [--grid_steps 100]

The default job's model (UNet `small`, 8x8 grayscale, T = 1000, random weights: the time does not depend on them)
and `--images` held-out images and samples, in chunks of `--batch_size` (the trainer's --eval_batch_size). Three
set-ups, in turn, `--repeats` times, each through `accelerate launch`: 1 process with 1 torch thread, 2 processes
with 1 thread each (each process its own core, as each GPU of a multi-GPU run is its own device), and 1 process
with 2 threads (the same 2 cores used by one). Each phase is timed from a barrier to a barrier, so it is the time
of the slowest process. Printed: the median seconds and spread per phase and set-up, and each set-up's time over
that of 1 process with 1 thread. Not a test: timings on shared machines are noisy, so only ratios within one run
mean anything.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict

from timing import accelerate_launch, spread

SETUPS = {"1 process, 1 thread": (1, 1), "2 processes, 1 thread each": (2, 1), "1 process, 2 threads": (1, 2)}
PHASES = ("grid", "bound estimate (100 terms)", "full bound (1000 terms)")


def worker(threads: int, num_images: int, chunk: int, grid_steps: int) -> None:
    """One process of a set-up: time each phase between barriers and print the times (main process)."""
    import torch
    from diffusers import UNet2DModel

    from ddpm_hf import DDPMPipeline, PaperDDPMScheduler
    from ddpm_hf.core.unets import training_unet_config
    from ddpm_hf.tools.distributed import process_state
    from ddpm_hf.tools.evaluation import evaluate_bound, generate

    torch.set_num_threads(threads)
    state = process_state()
    torch.manual_seed(0)
    unet = UNet2DModel(**training_unet_config("small", 8, channels=1)).eval()
    scheduler = PaperDDPMScheduler(num_train_timesteps=1000)
    pipeline = DDPMPipeline(unet, scheduler)
    pipeline.set_progress_bar_config(disable=True)
    images = torch.randint(0, 256, (num_images, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    phases = {
        PHASES[0]: lambda: generate(pipeline, num_images, chunk, grid_steps, progress=False),
        PHASES[1]: lambda: evaluate_bound(unet, scheduler, images, chunk, num_timesteps=100),
        PHASES[2]: lambda: evaluate_bound(unet, scheduler, images, chunk),
    }
    seconds = {}
    for name, run in phases.items():
        state.wait_for_everyone()
        start = time.perf_counter()
        run()
        state.wait_for_everyone()
        seconds[name] = time.perf_counter() - start
    if state.is_main_process:
        print(json.dumps(seconds))


def run_setup(processes: int, threads: int, num_images: int, chunk: int, grid_steps: int) -> dict[str, float]:
    command = accelerate_launch(processes, __file__, "--worker", *map(str, (threads, num_images, chunk, grid_steps)))
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--grid_steps", type=int, default=100)
    args = parser.parse_args()
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    for _ in range(args.repeats):
        for name, (processes, threads) in SETUPS.items():
            for phase, seconds in run_setup(processes, threads, args.images, args.batch_size, args.grid_steps).items():
                times[(name, phase)].append(seconds)
    baseline = next(iter(SETUPS))
    print(
        f"Seconds per phase, {args.images} images in chunks of {args.batch_size}, grid of {args.grid_steps} steps, "
        f"{args.repeats} repeats in turn"
    )
    for phase in PHASES:
        print(f"{phase}:")
        for name in SETUPS:
            ratios = [a / b for a, b in zip(times[(name, phase)], times[(baseline, phase)], strict=True)]
            print(f"- {name}: {spread(times[(name, phase)], 2)}; x {baseline}: {spread(ratios, 3)}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(*map(int, sys.argv[2:6]))
    else:
        main()
