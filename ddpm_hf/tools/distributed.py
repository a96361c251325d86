"""Work shared over processes so that N processes compute exactly what one computes.

The work is cut into fixed chunks of a global index range (images to score, samples to draw), chunk k going
to process k mod P with its own generator seeded by (seed, k); the results are gathered in chunk order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object
from tqdm.auto import tqdm

T = TypeVar("T")


def process_state() -> PartialState:
    """This process's place among those of its launch. Without an accelerator, `cpu=True`: only then do the processes
    of `accelerate launch --multi_gpu` form a gloo group (otherwise each is a lone process 0)."""
    return PartialState(cpu=not torch.accelerator.is_available())


def chunk_generator(seed: int, chunk: int, device: torch.device | str) -> torch.Generator:
    """The generator of chunk `chunk`: a pure function of (seed, chunk), whichever process draws it."""
    state = np.random.SeedSequence([seed, chunk]).generate_state(2, dtype=np.uint32)
    return torch.Generator(device).manual_seed(int(state[0]) << 32 | int(state[1]))


def _chunks(num_items: int, batch_size: int) -> list[range]:
    return [range(start, min(start + batch_size, num_items)) for start in range(0, num_items, batch_size)]


def map_chunks(num_items: int, batch_size: int, work: Callable[[int, range], T]) -> list[T]:
    """`work(k, indices)` for this process's chunks; every process gets all results, in chunk order."""
    state = PartialState()
    mine = [
        (k, work(k, chunk))
        for k, chunk in enumerate(_chunks(num_items, batch_size))
        if k % state.num_processes == state.process_index
    ]
    gathered = gather_object(mine) if state.num_processes > 1 else mine
    return [result for _, result in sorted(gathered, key=lambda item: item[0])]


def num_chunks_here(num_items: int, batch_size: int) -> int:
    """How many of the chunks of `map_chunks(num_items, batch_size, ...)` this process works on."""
    state = PartialState()
    return len(range(state.process_index, len(_chunks(num_items, batch_size)), state.num_processes))


def on_every_process(flag: bool) -> bool:
    """Whether `flag` holds on every process: a collective call, which every process makes."""
    return all(gather_object([flag])) if PartialState().num_processes > 1 else flag


def on_main_process(make: Callable[[], T]) -> T | None:
    """`make()` on the main process (None elsewhere); if it raises there, every process raises, so none is
    left waiting in a collective call for a process that has stopped."""
    state = PartialState()
    result, error = None, None
    if state.is_main_process:
        try:
            result = make()
        except Exception as err:  # re-raised below on the main process, as a RuntimeError elsewhere
            error = err
    if state.num_processes > 1:
        (message,) = broadcast_object_list([None if error is None else f"{type(error).__name__}: {error}"])
        if message is not None and error is None:
            raise RuntimeError(f"The main process failed: {message}")
    if error is not None:
        raise error
    return result


def progress_bar(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar (`tqdm(iterable, **kwargs)`) shown on the main process only, so N processes draw one bar."""
    return tqdm(iterable, disable=not PartialState().is_main_process, **kwargs)


def end_processes() -> None:
    """The end of a script's work on several processes: each waits for the others, then leaves the process group,
    so that none exits (tearing its side of the group down) while another still works with it."""
    state = PartialState()
    state.wait_for_everyone()
    state.destroy_process_group()
