"""The three data paths (in memory, decoded store, decoded on the fly) on a synthetic image folder: memory per
process as the set grows 10x, images/s each path delivers, and the store's build time against its processes.

    .venv/bin/python tests/benchmarks/bench_data.py [--images 2000] [--size 64] [--repeats 3] [--workdir DIR]

1. Two folders of JPEGs (`--images` and 10x as many, `--size` pixels square, smooth random colours plus noise)
   are generated once into the work folder.
2. Memory: for each path and folder, `accelerate launch --multi_gpu --num_processes 2` runs this file's `--worker`
   on both processes: each loads the data (the store built beforehand, as a later run finds it) and reads 40
   batches of 64 of its own indices; a thread samples the process's unique memory (USS: pages no other process
   maps) and its private dirty part every 20 ms (`PeakMemory`), and the peaks of each process are printed. Flat
   means the 10x set leaves them where they were.
3. Speed: in one process with one torch thread, batches of 64 read from each path (on the fly with 0 and 2
   DataLoader workers), in turn, `--repeats` times; images/s with median and spread, and the ratio to in memory.
4. Build: the 10x store built from scratch with 1 and 2 processes (`--data_store_num_proc`), in turn.
Not a test: timings on shared machines are noisy, so only ratios within one run mean anything.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))

MODES = ("in_memory", "store", "on_the_fly")
BATCH = 64


def make_folder(folder: Path, count: int, size: int) -> Path:
    """`count` JPEGs of `size` x `size`: a random colour gradient plus noise (decoding cost like photographs')."""
    if folder.is_dir() and len(list(folder.iterdir())) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, size)[:, None, None]
    for i in range(count):
        low, high = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        pixels = low + (high - low) * ramp + rng.normal(0, 20, (size, size, 3))
        PIL.Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)
    return folder


def data_args(folder: Path, mode: str, stores: Path, size: int, **more):
    from ddpm_hf.tools.data import DataArguments

    return DataArguments(
        train_data_dir=str(folder), resolution=size, data_mode=mode, data_store_dir=str(stores), **more
    )


class PeakMemory:
    """This process's peak unique memory, sampled every 20 ms by a thread from /proc/self/smaps_rollup: USS
    (Private_Clean + Private_Dirty, what psutil calls uss) and its Private_Dirty part (memory the process wrote: its
    own heap and tensors). The rest of USS is clean file pages only this process maps (e.g. the Arrow files' headers
    it read), which the kernel can drop under memory pressure."""

    def __init__(self):
        self.uss = self.dirty = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        fields = {}
        with open("/proc/self/smaps_rollup") as rollup:
            for line in rollup:
                name, value, *_ = line.split()
                fields[name.rstrip(":")] = int(value) * 1024 if value.isdigit() else 0
        self.uss = max(self.uss, fields["Private_Clean"] + fields["Private_Dirty"])
        self.dirty = max(self.dirty, fields["Private_Dirty"])

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._read()
            time.sleep(0.02)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._read()
        return {"uss_mib": self.uss / 2**20, "dirty_mib": self.dirty / 2**20}


def worker(folder: Path, mode: str, stores: Path, size: int) -> None:
    """One of two processes: load the data, read 40 batches of its indices, print its peak USS (MiB)."""
    from ddpm_hf.tools.data import StepSampler, load_image_data, micro_batches
    from ddpm_hf.tools.distributed import process_state

    state = process_state()
    peak = PeakMemory()
    data = load_image_data(data_args(folder, mode, stores, size), channels=3, local_processes=2)
    sampler = StepSampler(len(data.train), BATCH, state.num_processes, state.process_index, seed=0)
    batches = micro_batches(data.train, sampler, 0)
    checksum = sum(int(next(batches).sum()) for _ in range(40))
    print(json.dumps({"rank": state.process_index, **peak.stop(), "checksum": checksum}))
    state.wait_for_everyone()


def peak_memory(folder: Path, mode: str, stores: Path, size: int) -> list[dict[str, float]]:
    from timing import accelerate_launch

    command = accelerate_launch(2, __file__, "--worker", str(folder), mode, str(stores), str(size))
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return sorted(rows, key=lambda row: row["rank"])


def images_per_second(images, workers: int, steps: int = 30) -> float:
    from ddpm_hf.tools.data import StepSampler, micro_batches

    sampler = StepSampler(len(images), BATCH, 1, 0, seed=0)
    batches = micro_batches(images, sampler, 0, num_workers=workers)
    next(batches)  # start-up (workers, first maps) not counted
    start = time.perf_counter()
    for _ in range(steps):
        next(batches)
    return steps * BATCH / (time.perf_counter() - start)


def build_seconds(folder: Path, stores: Path, size: int, num_proc: int) -> float:
    from ddpm_hf.tools.data import load_image_data

    shutil.rmtree(stores, ignore_errors=True)
    start = time.perf_counter()
    load_image_data(data_args(folder, "store", stores, size, data_store_num_proc=num_proc), channels=3)
    return time.perf_counter() - start


def main() -> None:
    from timing import spread

    from ddpm_hf.tools.data import load_image_data

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default="/tmp/ddpm_hf-bench-data")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the trainer's processes on a loaded machine; two threads stall on each other there
    work = Path(args.workdir)
    folders = [make_folder(work / f"images-{n}", n, args.size) for n in (args.images, 10 * args.images)]
    stores = work / "stores"
    for folder in folders:  # built beforehand: the memory runs measure what a run that finds the store uses
        load_image_data(data_args(folder, "store", stores, args.size), channels=3)

    print(f"\nPeak USS (of it private dirty) per process, MiB, 2 processes, {args.size}x{args.size} RGB, rank 0 / 1")
    print("| path | " + " | ".join(f"{len(list(f.iterdir())):,} images" for f in folders) + " |\n|---|---|---|")
    for mode in MODES:
        peaks = [peak_memory(folder, mode, stores, args.size) for folder in folders]
        cells = [" / ".join(f"{p['uss_mib']:.0f} ({p['dirty_mib']:.0f})" for p in pair) for pair in peaks]
        print(f"| {mode} | " + " | ".join(cells) + " |")

    big = folders[1]
    held = {mode: load_image_data(data_args(big, mode, stores, args.size), channels=3).train for mode in MODES}
    runs = [("in_memory", 0), ("store", 0), ("on_the_fly", 0), ("on_the_fly", 2)]
    rates: dict[tuple[str, int], list[float]] = {run: [] for run in runs}
    for _ in range(args.repeats):
        for mode, workers in runs:
            rates[(mode, workers)].append(images_per_second(held[mode], workers))
    print(f"\nImages/s read in batches of {BATCH}, one process, {args.repeats} repeats in turn")
    base = rates[("in_memory", 0)]
    for (mode, workers), values in rates.items():
        ratios = [value / ref for value, ref in zip(values, base, strict=True)]
        print(f"- {mode}, {workers} workers: {spread(values, 0)}; x in memory: {spread(ratios, 4)}")

    build = {1: [], 2: []}
    for _ in range(args.repeats):
        for num_proc in build:
            build[num_proc].append(build_seconds(big, work / "build-stores", args.size, num_proc))
    print(f"\nStore build of the {len(list(big.iterdir())):,} images (s)")
    for num_proc, values in build.items():
        print(f"- num_proc {num_proc}: {spread(values, 1)}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
