"""Which images each process trains on at each micro-step, and the batches themselves: a pure function of
(seed, micro-step), so resuming is exact without any data-loader state, whichever path reads the images."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import torch

from .lazy import LazyImages


class StepSampler:
    """Which images each process trains on at each micro-step: a pure function of (seed, micro-step).

    Every epoch is a fresh permutation of the training set (seeded by `seed` and the epoch); each
    micro-step takes the next `batch_size * num_processes` images of it and gives process `rank` its
    own `batch_size` of them, so the processes see disjoint data and a resumed run sees what an
    uninterrupted one would. The last incomplete global batch of an epoch is dropped.
    """

    def __init__(
        self, num_images: int, batch_size: int, num_processes: int, rank: int, seed: int, device: str | None = None
    ):
        self.global_batch = batch_size * num_processes
        if num_images < self.global_batch:
            raise ValueError(
                f"The training set has {num_images} images, fewer than one global batch "
                f"({batch_size} per process x {num_processes} processes)."
            )
        self.num_images, self.batch_size, self.rank, self.seed = num_images, batch_size, rank, seed
        self.device = device
        self.batches_per_epoch = num_images // self.global_batch
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def indices(self, micro_step: int) -> torch.Tensor:
        """This process's image indices at `micro_step`, on `device` (copied there once per epoch)."""
        epoch, position = divmod(micro_step, self.batches_per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            generator = torch.Generator().manual_seed(self._mix(epoch))
            self._order = torch.randperm(self.num_images, generator=generator).to(self.device)
        start = position * self.global_batch + self.rank * self.batch_size
        return self._order[start : start + self.batch_size]

    def _mix(self, *values: int) -> int:
        return int(np.random.SeedSequence([self.seed, *values]).generate_state(1)[0])


def step_generator(seed: int, micro_step: int, rank: int, device: torch.device) -> torch.Generator:
    """The generator of one micro-step's flips, timesteps and noise on one process.

    Its seed mixes (seed, micro-step, rank) with a stream tag of 1, which keeps it apart from the
    sampler's per-epoch seeds (seed, epoch).
    """
    state = int(np.random.SeedSequence([seed, micro_step, rank, 1]).generate_state(1)[0])
    return torch.Generator(device=device).manual_seed(state)


def random_flip(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Each image flipped left-right with probability 1/2, drawn from `generator` (the paper's augmentation)."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


class _MicroStepIndices:
    """A DataLoader's batch sampler: this process's indices at each micro-step from `first`, without end."""

    def __init__(self, sampler: StepSampler, first: int):
        self.sampler, self.first = sampler, first

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (self.sampler.indices(step) for step in itertools.count(self.first))


def _whole_batch(batch: torch.Tensor) -> torch.Tensor:
    return batch  # `LazyImages.__getitems__` already returns the batch as one tensor


def micro_batches(
    images: torch.Tensor | LazyImages, sampler: StepSampler, first: int, num_workers: int = 0, pin_memory: bool = False
) -> Iterator[torch.Tensor]:
    """The uint8 batch `images[sampler.indices(step)]` of each micro-step from `first` on, in order.

    A tensor is indexed where it lives. Images read on demand (a store or encoded files) go through a DataLoader:
    with `num_workers` its worker processes read (and decode) the next batches while the model trains.
    """
    if isinstance(images, torch.Tensor):  # index_select copies whole rows: far faster than advanced indexing
        return (images.index_select(0, sampler.indices(step)) for step in itertools.count(first))
    loader = torch.utils.data.DataLoader(
        images,
        batch_sampler=_MicroStepIndices(sampler, first),
        num_workers=num_workers,
        collate_fn=_whole_batch,
        pin_memory=pin_memory,
        prefetch_factor=2 if num_workers else None,
        generator=torch.Generator(),  # its own: a loader draws its workers' seeds, which must not move torch's global
        # generator (dropout draws from it, and resumed runs must draw what uninterrupted ones do)
    )
    return iter(loader)
