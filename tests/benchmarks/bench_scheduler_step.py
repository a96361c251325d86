"""The scheduler's step alone, against diffusers' `DDPMScheduler.step`, in one process.

    .venv/bin/python tests/benchmarks/bench_scheduler_step.py [--unet small] [--steps 1000] [--batch_size 16]
        [--repeats 7] [--threads 1] [--variance_type fixed_small]

Each run makes the chain's `--steps` steps from x_T with a fixed model output (no network), a fresh generator
and the x_t of the previous step, on the shape of the `--unet` preset's samples:

  diffusers: `diffusers.DDPMScheduler.step(out, t, x, generator=g)`, t iterated from its `timesteps` as its
             pipeline does (same config as ours, `trailing` timesteps);
  step:      `PaperDDPMScheduler.step(out, t, x, generator=g)` with t a Python int, the public reference;
  plan:      `SamplingPlan.step(k, out, x, noise)`, what `ddpm_hf.DDPMPipeline` runs: coefficients looked up
             once per `set_timesteps`, noise drawn in place.

Runs rotate their order from repeat to repeat; it prints microseconds per step and the ratios to diffusers,
with their median and min-max over repeats. Not a test: only ratios within one run mean anything.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import diffusers
import torch
from timing import spread  # tests/benchmarks/timing.py, beside this script

from ddpm_hf import PaperDDPMScheduler, unet_config
from ddpm_hf.core.scheduling_ddpm_paper import NoiseBuffer


def runners(steps: int, shape: tuple[int, ...], variance_type: str) -> dict[str, Callable[[], torch.Tensor]]:
    ours = PaperDDPMScheduler(variance_type=variance_type)
    theirs = diffusers.DDPMScheduler.from_config(ours.config)
    ours.set_timesteps(steps)
    theirs.set_timesteps(steps)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    out = 0.5 * torch.randn(shape, generator=torch.Generator().manual_seed(1))
    ints = ours.timesteps.tolist()

    def run_diffusers() -> torch.Tensor:
        x, g = x_T, torch.Generator().manual_seed(2)
        for t in theirs.timesteps:
            x = theirs.step(out, t, x, generator=g).prev_sample
        return x

    def run_step() -> torch.Tensor:
        x, g = x_T, torch.Generator().manual_seed(2)
        for t in ints:
            x = ours.step(out, t, x, generator=g).prev_sample
        return x

    def run_plan() -> torch.Tensor:
        plan = ours.sampling_plan("cpu", torch.float32)
        noise = NoiseBuffer(shape, torch.Generator().manual_seed(2), torch.device("cpu"), torch.float32)
        x = x_T
        for k in range(len(plan)):
            x, _ = plan.step(k, out, x, noise)
        return x

    return {"diffusers": run_diffusers, "step": run_step, "plan": run_plan}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unet", choices=["small", "tiny"], default="small", help="Preset whose sample shape to use.")
    parser.add_argument("--steps", type=int, default=1000, help="Steps per run.")
    parser.add_argument("--batch_size", type=int, default=16, help="Samples per step.")
    parser.add_argument("--repeats", type=int, default=7, help="Rounds of the three runs.")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads.")
    parser.add_argument("--variance_type", default="fixed_small", choices=["fixed_small", "fixed_large"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = unet_config(args.unet)
    shape = (args.batch_size, config["in_channels"], config["sample_size"], config["sample_size"])

    run = runners(args.steps, shape, args.variance_type)
    final = {name: fn() for name, fn in run.items()}  # also the warm-up
    assert torch.equal(final["plan"], final["step"]), "the pipeline's path must equal the public step"
    drift = (final["step"] - final["diffusers"]).abs().max()
    print(f"check: plan == step bit for bit; step vs diffusers after {args.steps} steps: max |diff| {drift:.2e}")
    print(
        f"shape {shape}, {args.steps} steps, {args.variance_type}, {args.threads} thread(s), torch {torch.__version__}"
    )
    names = list(run)
    us = {name: [] for name in names}
    for repeat in range(args.repeats):
        order = names[repeat % 3 :] + names[: repeat % 3]
        for name in order:
            start = time.perf_counter()
            run[name]()
            us[name].append((time.perf_counter() - start) / args.steps * 1e6)
        print(f"repeat {repeat}: " + ", ".join(f"{name} {us[name][-1]:.1f} us/step" for name in names))
    for name in names:
        print(f"{name}: {spread(us[name], 1)} us/step")
    for name in ("step", "plan"):
        ratios = [mine / theirs for mine, theirs in zip(us[name], us["diffusers"], strict=True)]
        print(f"{name} / diffusers: {spread(ratios)}")


if __name__ == "__main__":
    main()
