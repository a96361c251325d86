"""Stopping a run of one or many processes when a scheduler asks it to, at a step all processes agree on.

Schedulers (SLURM, Kubernetes, spot-instance managers) end a job by sending SIGTERM, to the launcher or to every
task, and SIGKILL after a grace period; torchrun's agent forwards SIGTERM to its workers and sends SIGKILL 30 s later
(TORCH_ELASTIC_SHUTDOWN_TIMEOUT). Inside `stop_requests`, SIGTERM does not end the process: it sets accelerate's
trigger (`Accelerator.set_trigger`), and the training loop asks `Accelerator.check_trigger()` once per optimizer
step, which all-reduces the flag, so every process sees the request at the same step however late the signal reached
it. The run then writes its checkpoint and raises `Preempted`, whose exit status (`PREEMPTED_EXIT_STATUS`) tells a
requeue script that the run is unfinished and resumable.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from accelerate import Accelerator

# EX_TEMPFAIL of sysexits.h, "a temporary failure; the user is invited to retry": distinct from a crash (1), a usage
# error (2) and death by a signal (128 + N), so that a requeue script or a Kubernetes podFailurePolicy (onExitCodes)
# can tell a run stopped on request, with its checkpoint written, from one that failed.
PREEMPTED_EXIT_STATUS = 75


class Preempted(SystemExit):
    """The run stopped on SIGTERM after the checkpoint of `step`; uncaught, it exits with PREEMPTED_EXIT_STATUS."""

    def __init__(self, step: int):
        super().__init__(PREEMPTED_EXIT_STATUS)
        self.step = step


@contextmanager
def stop_requests(accelerator: Accelerator) -> Iterator[None]:
    """Inside, SIGTERM only sets `accelerator`'s trigger, for `accelerator.check_trigger()` to find; the previous
    handler is restored on leaving. Signal handlers belong to the main thread: elsewhere this changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: accelerator.set_trigger())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
