"""What the benchmark scripts share: a clock of the time spent inside a UNet's forward calls, the summary of
repeated measurements (scripts, not tests: only ratios within one run mean anything), and the command line that
launches a script on several processes."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch


class UNetClock:
    """Wall time spent inside the UNet's forward calls (hooks on the module, the same for every run)."""

    def __init__(self, unet: torch.nn.Module):
        self.seconds = 0.0
        self._start = 0.0
        unet.register_forward_pre_hook(self._enter)
        unet.register_forward_hook(self._exit)

    def _enter(self, module: torch.nn.Module, args: tuple) -> None:
        self._start = time.perf_counter()

    def _exit(self, module: torch.nn.Module, args: tuple, output: object) -> None:
        self.seconds += time.perf_counter() - self._start


def spread(values: list[float], digits: int = 3) -> str:
    """`median m (min a, max b)` of repeated measurements."""
    return f"median {statistics.median(values):.{digits}f} (min {min(values):.{digits}f}, max {max(values):.{digits}f})"


def accelerate_launch(num_processes: int, script: str, *args: str) -> list[str]:
    """`accelerate launch` of `script` on `num_processes` processes of this machine (more than one: torchrun, gloo on
    the CPU), no config file."""
    command = [str(Path(sys.executable).parent / "accelerate"), "launch", "--num_processes", str(num_processes)]
    command += ["--multi_gpu"] * (num_processes > 1)
    return [*command, "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", script, *args]
