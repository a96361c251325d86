"""Sampling speed in one process: (a) this package's pipeline, (b) stock diffusers' pipeline, (c) a bare UNet loop.

    .venv/bin/python tests/benchmarks/bench_sampling.py [--unet small] [--steps 1000] [--batch_size 16]
        [--repeats 7] [--threads 1]

All three use the same UNet (a freshly initialised preset, in eval mode) and the same batch:

(a) `ddpm_hf.DDPMPipeline(unet, PaperDDPMScheduler())`, `num_inference_steps=--steps`, `output_type="pt"`.
(b) `diffusers.DDPMPipeline(unet, diffusers.DDPMScheduler.from_config(a's scheduler config))`: the same betas,
    variance type, clipping and `trailing` timesteps, so the same chain (at 1000 steps diffusers' default
    `leading` spacing gives the same timesteps too); the same `num_inference_steps` and `output_type`.
(c) x_T drawn as (a) draws it, then one `unet(x, t, return_dict=False)` per timestep of the chain, called as (a)
    calls it, with 0-d timestep tensors made before the clock starts and the same x each time (no update of
    x, no noise), then the same final mapping to [0, 1] as the `"pt"` output of (a) and (b).
So a - c is everything the pipeline adds to the UNet: the update of Algorithm 2, the noise, the bookkeeping.
Progress bars are off in (a) and (b). Each repeat runs a, b and c once, in an order rotated from repeat to
repeat so that the machine's noise hits them alike; per repeat it prints the times and the ratios a/c and a/b,
then their median and min-max over repeats. Not a test: only ratios within one run mean anything.

On a shared machine the speed of a run drifts by tens of percent from one run to the next, so the script also
times each run's UNet forward calls (hooks, installed for a, b and c alike) and prints the time per step spent
outside them: each pipeline's own cost, measured within its run. "a/c within runs" divides a's time by a's UNet
time plus c's time outside the UNet (and likewise for b): the ratios above without the drift between runs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import diffusers
import torch
from diffusers.utils.torch_utils import randn_tensor
from timing import UNetClock, spread  # tests/benchmarks/timing.py, beside this script

from ddpm_hf import DDPMPipeline, PaperDDPMScheduler, build_unet


def build(unet_preset: str) -> tuple[DDPMPipeline, diffusers.DDPMPipeline]:
    torch.manual_seed(0)
    unet = build_unet(unet_preset).eval()
    ours = DDPMPipeline(unet, PaperDDPMScheduler())
    stock = diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler.from_config(ours.scheduler.config))
    for pipe in (ours, stock):
        pipe.set_progress_bar_config(disable=True)
    return ours, stock


def runners(ours: DDPMPipeline, stock: diffusers.DDPMPipeline, steps: int, batch_size: int) -> dict[str, Callable]:
    unet = ours.unet
    config = unet.config
    shape = (batch_size, config.in_channels, config.sample_size, config.sample_size)
    ours.scheduler.set_timesteps(steps)
    timesteps = list(ours.scheduler.timesteps.unbind())

    def pipeline_a() -> torch.Tensor:
        return ours(
            batch_size, generator=torch.Generator().manual_seed(0), num_inference_steps=steps, output_type="pt"
        )[0]

    def diffusers_b() -> torch.Tensor:
        return stock(
            batch_size, generator=torch.Generator().manual_seed(0), num_inference_steps=steps, output_type="pt"
        )[0]

    @torch.no_grad()
    def bare_c() -> torch.Tensor:
        x = randn_tensor(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
        for t in timesteps:
            unet(x, t, return_dict=False)
        return (x / 2 + 0.5).clamp(0, 1)

    return {"a": pipeline_a, "b": diffusers_b, "c": bare_c}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unet", choices=["small", "tiny"], default="small", help="UNet preset of ddpm_hf.")
    parser.add_argument("--steps", type=int, default=1000, help="Sampling steps (and UNet calls) per run.")
    parser.add_argument("--batch_size", type=int, default=16, help="Images per run.")
    parser.add_argument("--repeats", type=int, default=7, help="Rounds of a, b and c.")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ours, stock = build(args.unet)
    # The same chain: diffusers' images from the same seed agree with ours to float32 rounding of its schedule.
    steps = min(args.steps, 20)
    a = ours(4, generator=torch.Generator().manual_seed(1), num_inference_steps=steps, output_type="pt")[0]
    b = stock(4, generator=torch.Generator().manual_seed(1), num_inference_steps=steps, output_type="pt")[0]
    print(f"check: {steps}-step images of (a) and (b) from one seed differ by at most {(a - b).abs().max():.2e}")

    run = runners(ours, stock, args.steps, args.batch_size)
    for fn in runners(ours, stock, 5, args.batch_size).values():  # warm-up
        fn()
    unet_clock = UNetClock(ours.unet)
    print(
        f"unet {args.unet}, {args.steps} steps, batch {args.batch_size}, {args.threads} thread(s), "
        f"torch {torch.__version__}, diffusers {diffusers.__version__}"
    )
    names = ["a", "b", "c"]
    ratios: dict[str, list[float]] = {"a/c": [], "a/b": [], "a/c within": [], "a/b within": []}
    outside: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        order = names[repeat % 3 :] + names[: repeat % 3]
        seconds, in_unet = {}, {}
        for name in order:
            unet_clock.seconds = 0.0
            start = time.perf_counter()
            run[name]()
            seconds[name] = time.perf_counter() - start
            in_unet[name] = unet_clock.seconds
            outside[name].append((seconds[name] - in_unet[name]) / args.steps * 1e6)
        ratios["a/c"].append(seconds["a"] / seconds["c"])
        ratios["a/b"].append(seconds["a"] / seconds["b"])
        # The same ratios with a's own UNet time in both numerator and denominator: drift-free.
        for other in ("c", "b"):
            cost = seconds[other] - in_unet[other]
            ratios[f"a/{other} within"].append(seconds["a"] / (in_unet["a"] + cost))
        print(
            f"repeat {repeat} ({''.join(order)}): "
            + ", ".join(
                f"{name} {seconds[name]:.3f} s ({outside[name][-1]:.0f} us/step outside the UNet)" for name in names
            )
            + f"; a/c {ratios['a/c'][-1]:.3f}, a/b {ratios['a/b'][-1]:.3f}"
        )
    print(f"a/c (pipeline / bare UNet loop): {spread(ratios['a/c'])} over {args.repeats} repeats")
    print(f"a/b (pipeline / stock diffusers): {spread(ratios['a/b'])} over {args.repeats} repeats")
    for name in names:
        print(f"{name}: time outside the UNet's forward {spread(outside[name], 1)} us/step")
    for other in ("c", "b"):
        within = spread(ratios[f"a/{other} within"])
        print(f"a/{other} within runs (a's UNet time + {other}'s time outside it, as {other}): {within}")


if __name__ == "__main__":
    main()
