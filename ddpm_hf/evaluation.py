"""Evaluating a DDPM as the paper reports it: the bound in bits/dim on a test split (Table 2) and FID /
KID / IS of samples (Table 1), from one process or many.

The work is cut into fixed chunks of the global index range (images to score, samples to draw), chunk k
going to process k mod P with its own generator seeded by (seed, k); the results are gathered in chunk
order. N processes therefore compute exactly what one computes, only faster.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object

from .data import to_model_range
from .likelihood import VariationalBound, bits_per_dim
from .scheduling_ddpm_paper import PaperDDPMScheduler
from .training_args import DataArguments

if TYPE_CHECKING:
    from .pipeline_ddpm import DDPMPipeline

T = TypeVar("T")


def chunk_generator(seed: int, chunk: int, device: torch.device | str) -> torch.Generator:
    """The generator of chunk `chunk`: a pure function of (seed, chunk), whichever process draws it."""
    state = np.random.SeedSequence([seed, chunk]).generate_state(2, dtype=np.uint32)
    return torch.Generator(device).manual_seed(int(state[0]) << 32 | int(state[1]))


def _chunks(num_items: int, batch_size: int) -> list[range]:
    return [range(start, min(start + batch_size, num_items)) for start in range(0, num_items, batch_size)]


def map_chunks(num_items: int, batch_size: int, work) -> list:
    """`work(k, indices)` for this process's chunks; every process gets all results, in chunk order."""
    state = PartialState()
    mine = [
        (k, work(k, chunk))
        for k, chunk in enumerate(_chunks(num_items, batch_size))
        if k % state.num_processes == state.process_index
    ]
    gathered = gather_object(mine) if state.num_processes > 1 else mine
    return [result for _, result in sorted(gathered, key=lambda item: item[0])]


@dataclass
class BoundResult:
    """The bound of Eq. 5 over a set of images, in bits/dim."""

    per_image_bpd: torch.Tensor  # (N,) float64, on the CPU
    prior_bpd: float  # mean L_T
    decoder_bpd: float  # mean L_0
    num_timesteps: int  # the terms computed: T for the full bound
    is_estimate: bool

    @classmethod
    def from_bound(cls, bound: VariationalBound) -> BoundResult:
        """The summary of `bits_per_dim`'s output for one batch."""
        return cls(
            bound.total_bpd.double().cpu(),
            bound.prior_bpd.mean().item(),
            bound.terms_bpd[:, 0].mean().item(),
            len(bound.timesteps),
            bound.is_estimate,
        )

    @property
    def mean(self) -> float:
        return float(self.per_image_bpd.mean())

    @property
    def stderr(self) -> float:
        """The standard error of the mean over images (0 for one image)."""
        n = len(self.per_image_bpd)
        return float(self.per_image_bpd.std() / math.sqrt(n)) if n > 1 else 0.0


@torch.no_grad()
def evaluate_bound(
    unet: torch.nn.Module,
    scheduler: PaperDDPMScheduler,
    images: torch.Tensor,
    batch_size: int = 64,
    num_timesteps: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> BoundResult:
    """The bound in bits/dim of each of `images` (uint8 `(N, C, H, W)`, the dataset as decoded), over all T
    terms or, with `num_timesteps`, the labelled strided estimate; the images are shared among processes."""
    device = next(unet.parameters()).device

    def work(k: int, indices: range) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x0 = to_model_range(images[indices.start : indices.stop].to(device), None, False)
        bound = bits_per_dim(unet, scheduler, x0, chunk_generator(seed, k, device), progress, num_timesteps)
        return bound.total_bpd.double().cpu(), bound.prior_bpd.double().cpu(), bound.terms_bpd[:, 0].double().cpu()

    results = map_chunks(len(images), batch_size, work)
    total, prior, decoder = (torch.cat(parts) for parts in zip(*results, strict=True))
    T = len(scheduler)
    steps = T if num_timesteps is None else num_timesteps
    return BoundResult(total, float(prior.mean()), float(decoder.mean()), steps, steps < T)


@torch.no_grad()
def generate(
    pipeline: DDPMPipeline,
    num_samples: int,
    batch_size: int = 64,
    num_inference_steps: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """`num_samples` samples as uint8 `(N, C, H, W)` on the CPU, rounded as the pipeline's PIL output is;
    shared among processes, sample i the same whatever the number of processes."""
    device = pipeline.unet.device

    def work(k: int, indices: range) -> torch.Tensor:
        images = pipeline(
            batch_size=len(indices),
            generator=chunk_generator(seed, k, device),
            num_inference_steps=num_inference_steps,
            output_type="pt",
        ).images
        return (images * 255).round().to(torch.uint8).cpu()

    return torch.cat(map_chunks(num_samples, batch_size, work))


def bound_entry(bound: BoundResult, T: int, num_images: int, dataset: str, split: str, note: str = "") -> dict:
    """The bound as a model-card measurement (`ddpm_hf.model_card`), saying how it was computed."""
    how = f"strided estimate over {bound.num_timesteps} of {T} timesteps" if bound.is_estimate else f"all {T} terms"
    return {
        "metric": "bits_per_dim",
        "name": f"NLL bound, bits/dim ({how}; {num_images} {split} images{note})",
        "value": bound.mean,
        "stderr": bound.stderr,
        "dataset": dataset,
        "split": split,
    }


def fid_entry(fid: float, feature_space: str, how: str, dataset: str, split: str) -> dict:
    """An FID as a model-card measurement; in the random feature space it is labelled as not comparable."""
    inception = feature_space == "inception"
    kind = "Inception" if inception else "random features, not comparable to Inception"
    return {
        "metric": "fid" if inception else "fid_random_features",
        "name": f"FID ({kind}; {how})",
        "value": fid,
        "dataset": dataset,
        "split": split,
    }


def dataset_id(data_args: DataArguments) -> str:
    """A short name of the data the arguments select: the Hub dataset, the image folder's name, or the digits."""
    if data_args.dataset_name:
        return data_args.dataset_name
    return Path(data_args.train_data_dir).name if data_args.train_data_dir else "sklearn-digits"


def stats_dataset(name: str, images: torch.Tensor) -> str:
    """The dataset part of a statistics cache key: `name`, the channel count and a hash of the decoded images,
    so that another crop, split file, colour mode or dataset version never reuses the wrong statistics."""
    digest = hashlib.sha256(images.cpu().contiguous().numpy().tobytes()).hexdigest()[:12]
    return f"{name}-{images.shape[1]}ch-{digest}"


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
