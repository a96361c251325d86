"""The cost of the variational bound (Eq. 5) per image: `ddpm_hf.core.likelihood.bits_per_dim`, full T and estimated.

    .venv/bin/python tests/benchmarks/bench_bound.py [--unet small] [--steps 1000] [--num_timesteps 100]
        [--batch_size 16] [--repeats 5] [--threads 1]

On a batch of `--batch_size` random 8-bit images of the `--unet` preset's shape, with a freshly initialised UNet
in eval mode and `PaperDDPMScheduler(num_train_timesteps=--steps)`, one repeat times, in an order rotated from
repeat to repeat:

  full:         `bits_per_dim(unet, scheduler, x)`, all T terms (T UNet calls on the batch);
  estimate:     `bits_per_dim(..., num_timesteps=--num_timesteps)`, the unbiased estimate (that many calls);
  bare full / bare estimate: the same number of `unet(x_t, t)` calls on one x_t with per-sample timestep tensors
                made before the clock starts, nothing else.

It prints seconds per image of each bound and its ratio to its bare loop (what the bound adds to the network:
q(x_t | x_0), the KL and decoder terms, the MSEs), with median and min-max over repeats. Hooks on the UNet (the
same in every run) also give the time per UNet call spent outside it, and the ratio to the bare loop within
runs (the bound's time over its own UNet time plus the bare loop's time outside the UNet), which leaves out
the drift in speed between runs on a shared machine. Not a test: only ratios within one run mean anything.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from timing import UNetClock, spread  # tests/benchmarks/timing.py, beside this script

from ddpm_hf import PaperDDPMScheduler, bits_per_dim, build_unet


def runners(args: argparse.Namespace, unet: torch.nn.Module) -> dict[str, tuple[Callable[[], object], int]]:
    scheduler = PaperDDPMScheduler(num_train_timesteps=args.steps)
    config = unet.config
    shape = (args.batch_size, config.in_channels, config.sample_size, config.sample_size)
    x = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(0)) / 127.5 - 1

    def bound(num_timesteps: int | None) -> Callable[[], object]:
        return lambda: bits_per_dim(unet, scheduler, x, torch.Generator().manual_seed(1), num_timesteps=num_timesteps)

    def bare(calls: int) -> Callable[[], object]:
        t_batches = [torch.full((args.batch_size,), t, dtype=torch.long) for t in range(calls)]

        @torch.no_grad()
        def loop() -> None:
            for t in t_batches:
                unet(x, t)

        return loop

    estimate = args.num_timesteps
    return {
        "full": (bound(None), args.steps),
        "bare full": (bare(args.steps), args.steps),
        "estimate": (bound(estimate), estimate),
        "bare estimate": (bare(estimate), estimate),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unet", choices=["small", "tiny"], default="small", help="UNet preset of ddpm_hf.")
    parser.add_argument("--steps", type=int, default=1000, help="T, the scheduler's number of diffusion steps.")
    parser.add_argument("--num_timesteps", type=int, default=100, help="Terms of the estimate.")
    parser.add_argument("--batch_size", type=int, default=16, help="Images per bound.")
    parser.add_argument("--repeats", type=int, default=5, help="Rounds of the four runs.")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    unet = build_unet(args.unet).eval()
    run = runners(args, unet)
    for name in ("estimate", "bare estimate"):  # warm-up
        run[name][0]()
    unet_clock = UNetClock(unet)
    print(
        f"unet {args.unet}, T {args.steps}, estimate {args.num_timesteps}, batch {args.batch_size}, "
        f"{args.threads} thread(s), torch {torch.__version__}"
    )
    names = list(run)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    outside: dict[str, list[float]] = {name: [] for name in names}
    within: dict[str, list[float]] = {"full": [], "estimate": []}
    for repeat in range(args.repeats):
        order = names[repeat % 4 :] + names[: repeat % 4]
        in_unet = {}
        for name in order:
            unet_clock.seconds = 0.0
            start = time.perf_counter()
            run[name][0]()
            seconds[name].append(time.perf_counter() - start)
            in_unet[name] = unet_clock.seconds
            outside[name].append((seconds[name][-1] - in_unet[name]) / run[name][1] * 1e6)
        for name in within:
            bare_cost = seconds[f"bare {name}"][-1] - in_unet[f"bare {name}"]
            within[name].append(seconds[name][-1] / (in_unet[name] + bare_cost))
        print(
            f"repeat {repeat}: "
            + ", ".join(f"{name} {seconds[name][-1]:.3f} s ({outside[name][-1]:.0f} us/call outside)" for name in names)
        )
    for name in ("full", "estimate"):
        per_image = [s / args.batch_size for s in seconds[name]]
        ratios = [s / bare for s, bare in zip(seconds[name], seconds[f"bare {name}"], strict=True)]
        calls = run[name][1]
        print(f"{name} bound ({calls} UNet calls): {spread(per_image, 4)} s/image; / bare loop {spread(ratios)}")
        print(
            f"  time outside the UNet per call: bound {spread(outside[name], 1)} us, "
            f"bare loop {spread(outside['bare ' + name], 1)} us; / bare loop within runs {spread(within[name])}"
        )


if __name__ == "__main__":
    main()
