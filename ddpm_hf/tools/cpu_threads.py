"""torch's CPU threads: as many as the cores this process may really use, shared among this machine's processes,
and one warning at start-up when they would wait for cores that are taken.

torch's OpenMP threads meet at a barrier after every parallel region, so a thread whose core is held by another
process holds up all of them. On a 2-core machine (tests/benchmarks/bench_threads.py, the default job's step): 83 ms
per step with 2 threads alone, 320 ms with 2 threads beside one busy process, 119 ms with 1 thread beside it; 1.8 to
15 s with 2 threads when other processes loaded the second core too.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import psutil
import torch

logger = logging.getLogger(__name__)

# How long the start-up check watches the CPUs' load: a few scheduler ticks (10 ms each) on every CPU.
LOAD_SAMPLE_SECONDS = 0.25
# Cores of other load tolerated before warning: the background noise of a shared machine, not a busy process.
LOAD_TOLERANCE = 0.5


def available_cores(root: Path = Path("/")) -> int:
    """The cores this process may use: its CPU affinity, capped by the CPU quota of its cgroup and of the cgroups
    above it (v2 or v1), at least 1. A fractional quota is rounded down (1.5 cores give 1): more threads than the
    quota get the process throttled in every period, which stalls OpenMP threads in the middle of a parallel region
    as a taken core does; the rest of the quota serves the Python thread, the data and the logging. `root` is where
    /proc and /sys are found (tests give fake cgroup files)."""
    cores = len(_affinity())
    quota = _cgroup_quota(root)
    return max(1, cores if quota is None else min(cores, math.floor(quota)))


def local_processes() -> int:
    """This machine's processes of the job: LOCAL_WORLD_SIZE, which torchrun (and so `accelerate launch`) sets."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def threads_per_process(local_processes: int, root: Path = Path("/")) -> int:
    """This process's share of the available cores, at least 1."""
    return max(1, available_cores(root) // local_processes)


def set_cpu_threads(requested: int | None, check: bool = True) -> int:
    """Set torch's threads to `requested` (--cpu_threads) or this process's share of the available cores and return
    the count; with `check` (one process per machine is enough), warn when this machine's processes oversubscribe
    the cores."""
    processes = local_processes()
    threads = requested or threads_per_process(processes)
    torch.set_num_threads(threads)
    if check:
        warn_if_oversubscribed(threads, processes)
    return threads


def other_load(seconds: float = LOAD_SAMPLE_SECONDS) -> float:
    """The cores' worth of CPU time that processes outside this job spend on this process's CPUs over `seconds`:
    the CPUs' busy time (a VM's steal time included: its core was taken by the host) minus this job's own.

    A sample rather than the load average: it sees only this process's CPUs and the present (the 1-minute average
    lags a minute, counts the whole machine and cannot leave this job's own start-up work out)."""
    job = _job_processes()
    before = _cpu_seconds(job)
    start = time.perf_counter()
    percents = psutil.cpu_percent(interval=seconds, percpu=True)
    elapsed = time.perf_counter() - start
    after = _cpu_seconds(job)
    own = sum(after[pid] - before[pid] for pid in after.keys() & before.keys()) / elapsed
    busy = sum(percents[cpu] for cpu in _affinity() if cpu < len(percents)) / 100
    return max(0.0, busy - own)


def warn_if_oversubscribed(
    threads: int, processes: int, root: Path = Path("/"), measure_load: Callable[[], float] = other_load
) -> str | None:
    """Log (and return) one warning when `threads` x `processes` on this machine exceed the available cores, or,
    failing that, the cores left free by other processes' load as `measure_load` measures it, with `LOAD_TOLERANCE`
    of slack."""
    cores, wanted = available_cores(root), threads * processes
    if wanted > cores:
        reason = f"{_threads(threads, processes)} need {wanted} cores; available: {cores} (CPU affinity, cgroup quota)"
        advice = _advice(threads, processes, cores // processes, busy=False)
    else:
        load = measure_load()
        free = min(cores, len(_affinity()) - load)
        if wanted <= free + LOAD_TOLERANCE:
            return None
        reason = f"Other processes keep {load:.1f} cores of this process's CPUs busy, leaving {free:.1f} of the "
        reason += f"{cores} available for {_threads(threads, processes)}"
        advice = _advice(threads, processes, math.floor(free + LOAD_TOLERANCE) // processes, busy=True)
    message = f"{reason}: {advice}; threads waiting for a taken core can make training many times slower."
    logger.warning(message)
    return message


def _threads(threads: int, processes: int) -> str:
    return f"{threads} torch thread{'s' * (threads > 1)} x {processes} process{'es' * (processes > 1)}"


def _advice(threads: int, processes: int, fit: int, busy: bool) -> str:
    """What to do, in one clause: stop the other load, fewer threads (`fit`, when any fit), fewer processes."""
    options = ["stop the other load"] if busy else []
    if 0 < fit < threads:
        options.append(f"pass --cpu_threads {fit}")
    if processes > 1:
        options.append("run fewer processes")
    return ", or ".join(options)


def _affinity() -> set[int]:
    """The CPUs this process may run on (all of them where the OS has no affinity call)."""
    if hasattr(os, "sched_getaffinity"):
        return os.sched_getaffinity(0)
    return set(range(os.cpu_count() or 1))


def _cgroup_quota(root: Path) -> float | None:
    """The smallest CPU quota, in cores, of this process's cgroups and their ancestors; None without any."""
    quotas = [quota for folder in _cgroup_folders(root) if (quota := _quota(folder)) is not None]
    return min(quotas, default=None)


def _cgroup_folders(root: Path) -> Iterator[Path]:
    """The folders that may hold this process's CPU quota, from its cgroup up to the hierarchy's root, for cgroup v2
    (`0::/path` in /proc/self/cgroup) and v1's cpu controller (`4:cpu,cpuacct:/path`), at their usual mounts. In a
    container the path can be the host's, absent under the container's mount: then only the mount's root, the
    container's own cgroup, exists and is read."""
    for line in (_read(root / "proc/self/cgroup") or "").splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers and "cpu" not in controllers.split(","):
            continue
        mount = root / "sys/fs/cgroup" / controllers  # v2: /sys/fs/cgroup; v1: /sys/fs/cgroup/cpu,cpuacct
        cgroup = PurePosixPath(path)
        for folder in [cgroup, *cgroup.parents]:
            yield mount / folder.relative_to("/")


def _quota(folder: Path) -> float | None:
    """The CPU quota in cores of one cgroup folder: v2's `cpu.max` ("quota period", or "max period" without one),
    else v1's `cpu.cfs_quota_us` (-1 without one) over `cpu.cfs_period_us`; None when unlimited or absent."""
    v2 = _read(folder / "cpu.max")
    quota, period = v2.split() if v2 else (_read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us"))
    if quota in (None, "max", "-1") or period is None:
        return None
    return int(quota) / int(period)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _job_processes() -> list[psutil.Process]:
    """This process and its children; under torchrun (LOCAL_WORLD_SIZE set), its launcher and all the launcher's
    descendants, the other workers of this machine among them."""
    head = psutil.Process()
    if "LOCAL_WORLD_SIZE" in os.environ:
        head = head.parent() or head
    return [head, *head.children(recursive=True)]


def _cpu_seconds(processes: list[psutil.Process]) -> dict[int, float]:
    """Each live process's user + system CPU seconds so far, by pid."""
    seconds = {}
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            seconds[process.pid] = times.user + times.system
    return seconds
