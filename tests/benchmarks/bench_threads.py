"""Training steps with torch's threads oversubscribed: 2 threads against 1 beside a busy process, and without it.

    .venv/bin/python tests/benchmarks/bench_threads.py [--unet small] [--batch 128] [--steps 8] [--repeats 6]
        [--threads 2] [--fewer 1] [--quiet 0.25]

A step is the trainer's work on the network: forward, L_simple, backward and an AdamW step of the `--unet` preset on
a batch of its shape (the default job's: `small`, 8x8 grayscale, 128 images). Four runs per repeat, in an order
rotated from repeat to repeat so that the load of other processes falls on each alike:

  idle many / idle fewer:  `--threads` / `--fewer` torch threads, nothing of this script's beside them;
  busy many / busy fewer:  the same beside a busy-looping Python process pinned to the last CPU.

It first prints what the start-up check of ddpm_hf.tools.cpu_threads says of `--threads` beside the busy process.
Each run gives ms per step (after one untimed step) and the load of other processes on this process's CPUs during
the run, in cores (the CPUs' busy time less this script's and its busy child's). Per run kind: the median and
min-max over all repeats, then over the quiet runs (others' load under `--quiet` cores); the same for the ratios
within repeats. Not a test: timings on shared machines are noisy, so only ratios within one run mean anything.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import psutil
import torch
from timing import spread  # tests/benchmarks/timing.py, beside this script

from ddpm_hf import PaperDDPMScheduler, build_unet

RUNS = ("idle many", "idle fewer", "busy many", "busy fewer")
RATIOS = [("busy many", "busy fewer"), ("idle many", "idle fewer"), ("busy many", "idle many")]


@contextmanager
def busy_process(cpu: int) -> Iterator[None]:
    """A Python process looping on `cpu` for the duration."""
    code = f"import os; os.sched_setaffinity(0, {{{cpu}}}); print('ready', flush=True)\nwhile True: pass"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        process.stdout.readline()
        yield
    finally:
        process.kill()
        process.wait()


def training_step(unet: str, batch: int) -> Callable[[], None]:
    """One forward-backward-update of a fresh `unet` preset on a fixed batch of its shape."""
    torch.manual_seed(0)
    model = build_unet(unet)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    channels, size = model.config.in_channels, model.config.sample_size
    x_t = torch.randn(batch, channels, size, size)
    t = torch.randint(0, len(PaperDDPMScheduler()), (batch,))
    noise = torch.randn_like(x_t)

    def step() -> None:
        loss = torch.nn.functional.mse_loss(model(x_t, t).sample, noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def ms_per_step(step: Callable[[], None], threads: int, steps: int) -> tuple[float, float]:
    """Milliseconds per step with `threads` torch threads over `steps` steps after an untimed one, and the cores'
    worth of CPU time that processes other than this one and its children spent on its CPUs meanwhile."""
    torch.set_num_threads(threads)
    step()  # the thread pool resized, the caches warm
    psutil.cpu_percent(percpu=True)  # starts the CPUs' clock
    own = own_cpu_seconds()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - start
    percents = psutil.cpu_percent(percpu=True)
    busy = sum(percents[cpu] for cpu in os.sched_getaffinity(0)) / 100
    return elapsed / steps * 1e3, max(0.0, busy - (own_cpu_seconds() - own) / elapsed)


def start_up_check(threads: int) -> str:
    """The warning of ddpm_hf.tools.cpu_threads' start-up check for `threads` threads, from a process of its own: a
    sibling of the busy process, which would be part of this script's job (its child) to the check."""
    code = f"from ddpm_hf.tools.cpu_threads import warn_if_oversubscribed as w; print(w({threads}, 1) or 'no warning')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return result.stdout.strip()


def own_cpu_seconds() -> float:
    me = psutil.Process()
    return sum(sum(process.cpu_times()[:2]) for process in [me, *me.children()])


def summary(label: str, values: list[float], digits: int) -> str:
    return f"{label} {spread(values, digits)} over {len(values)}" if values else f"{label} none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unet", default="small", help="UNet preset of ddpm_hf.")
    parser.add_argument("--batch", type=int, default=128, help="Images per step.")
    parser.add_argument("--steps", type=int, default=8, help="Timed steps per run.")
    parser.add_argument("--repeats", type=int, default=6, help="Rounds of the four runs.")
    parser.add_argument("--threads", type=int, default=2, help="The many threads (the default on 2 cores).")
    parser.add_argument("--fewer", type=int, default=1, help="The fewer threads (what the check advises).")
    parser.add_argument("--quiet", type=float, default=0.25, help="Others' load (cores) of a quiet run, at most.")
    args = parser.parse_args()

    step = training_step(args.unet, args.batch)
    busy_cpu = max(os.sched_getaffinity(0))
    with busy_process(busy_cpu):
        print(f"start-up check with {args.threads} threads: {start_up_check(args.threads)}")
    print(
        f"unet {args.unet}, batch {args.batch}, {args.steps} steps per run, CPUs {sorted(os.sched_getaffinity(0))}, "
        f"busy process on CPU {busy_cpu}, torch {torch.__version__}"
    )
    threads = {"many": args.threads, "fewer": args.fewer}
    ms: dict[str, list[float]] = {name: [] for name in RUNS}
    load: dict[str, list[float]] = {name: [] for name in RUNS}
    for repeat in range(args.repeats):
        for name in RUNS[repeat % 4 :] + RUNS[: repeat % 4]:
            with busy_process(busy_cpu) if name.startswith("busy") else nullcontext():
                run_ms, run_load = ms_per_step(step, threads[name.split()[1]], args.steps)
            ms[name].append(run_ms)
            load[name].append(run_load)
        runs = ", ".join(f"{name} {ms[name][-1]:.0f} ms (others {load[name][-1]:.1f})" for name in RUNS)
        print(f"repeat {repeat}: {runs}")
    print(f"ms/step; many: {args.threads} threads, fewer: {args.fewer}")
    for name in RUNS:
        quiet = [m for m, other in zip(ms[name], load[name], strict=True) if other < args.quiet]
        print(f"  {name}: {summary('all', ms[name], 1)}; {summary('quiet', quiet, 1)}")
    print("ratios within repeats")
    for a, b in RATIOS:
        pairs = list(zip(ms[a], ms[b], load[a], load[b], strict=True))
        quiet = [x / y for x, y, load_a, load_b in pairs if max(load_a, load_b) < args.quiet]
        print(f"  {a} / {b}: {summary('all', [x / y for x, y, *_ in pairs], 2)}; {summary('quiet', quiet, 2)}")


if __name__ == "__main__":
    main()
