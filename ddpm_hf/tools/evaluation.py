"""Evaluating a DDPM as the paper reports it: the bound in bits/dim on a test split (Table 2) and FID /
KID / IS of samples (Table 1), from one process or many.

Images and samples are shared over processes in fixed chunks (`ddpm_hf.tools.distributed`), so N
processes compute exactly what one computes, only faster. The trainer and the evaluation job score
through the same functions here.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from accelerate import PartialState

from ..core.images import to_model_range, to_uint8
from ..core.likelihood import ModelFn, VariationalBound, bits_per_dim
from ..core.scheduling_ddpm_paper import PaperDDPMScheduler
from .distributed import chunk_generator, map_chunks, on_main_process
from .metrics import ImageQualityMetrics, build_feature_space

if TYPE_CHECKING:
    from ..core.pipeline_ddpm import DDPMPipeline

HASH_SLICE = 1024  # images read at a time to hash a dataset


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "bpd": self.mean,
            "stderr": self.stderr,
            "prior_bpd": self.prior_bpd,
            "decoder_bpd": self.decoder_bpd,
            "num_timesteps": self.num_timesteps,
            "is_estimate": self.is_estimate,
        }


@torch.no_grad()
def bound_by_chunks(
    unet: torch.nn.Module | ModelFn,
    scheduler: PaperDDPMScheduler,
    images: torch.Tensor,
    keep: Callable[[VariationalBound], tuple[torch.Tensor, ...]],
    batch_size: int = 64,
    num_timesteps: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> tuple[torch.Tensor, ...]:
    """`bits_per_dim` on uint8 `images` `(N, C, H, W)` in chunks of `batch_size`, chunk k with the noise of
    `chunk_generator(seed, k)`, shared among processes; `keep(bound)` picks the per-image tensors to return, each
    concatenated over all N images in float64 on the CPU (only those cross between processes). With `progress`, the
    main process shows a bar over each of its chunks' terms."""
    parameter = next(unet.parameters(), None) if isinstance(unet, torch.nn.Module) else None
    device = parameter.device if parameter is not None else torch.device("cpu")
    progress = progress and PartialState().is_main_process

    def work(k: int, indices: range) -> tuple[torch.Tensor, ...]:
        x0 = to_model_range(images[indices.start : indices.stop].to(device))
        bound = bits_per_dim(unet, scheduler, x0, chunk_generator(seed, k, device), progress, num_timesteps)
        return tuple(part.double().cpu() for part in keep(bound))

    return tuple(torch.cat(parts) for parts in zip(*map_chunks(len(images), batch_size, work), strict=True))


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
    terms or, with `num_timesteps`, its labelled unbiased estimate from that many terms (`bits_per_dim`); the images
    are shared among processes (`bound_by_chunks`)."""
    total, prior, decoder = bound_by_chunks(
        unet,
        scheduler,
        images,
        lambda bound: (bound.total_bpd, bound.prior_bpd, bound.terms_bpd[:, 0]),
        batch_size,
        num_timesteps,
        seed,
        progress,
    )
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
    progress: bool = True,
    **call_kwargs: Any,
) -> torch.Tensor:
    """`num_samples` samples as uint8 `(N, C, H, W)` on the CPU, rounded as the pipeline's PIL output is;
    shared among processes in chunks of `batch_size`, chunk k drawn with `chunk_generator(seed, k)`, so sample i is
    the same whatever the number of processes (and changes with `batch_size`). `call_kwargs` go to the pipeline
    (e.g. `eta`); with `progress`, the main process shows a bar over each of its chunks' reverse steps."""
    device = pipeline.unet.device
    num_chunks = -(-num_samples // batch_size)
    show = progress and PartialState().is_main_process

    def work(k: int, indices: range) -> torch.Tensor:
        desc = f"sampling {indices.start + 1}-{indices.stop} of {num_samples}" if num_chunks > 1 else "sampling"
        pipeline.set_progress_bar_config(disable=not show, desc=desc, leave=False)
        images = pipeline(
            batch_size=len(indices),
            generator=chunk_generator(seed, k, device),
            num_inference_steps=num_inference_steps,
            output_type="pt",
            **call_kwargs,
        ).images
        return to_uint8(images).cpu()

    return torch.cat(map_chunks(num_samples, batch_size, work))


def sample_metrics(
    feature_space: str, inception_weights: str | None, device: torch.device, batch_size: int, seed: int
) -> ImageQualityMetrics:
    """The FID / KID / IS scorer, on every process (each computes the features of its share of the images in
    chunks of `batch_size`), built before any sampling: first on the main process, which fetches the Inception
    weights once and whose failure (no weights, no torchmetrics) stops every process at once, then on the others."""

    def build() -> ImageQualityMetrics:
        space = build_feature_space(feature_space, inception_weights, device=device)
        return ImageQualityMetrics(space, batch_size=batch_size, seed=seed)

    built = on_main_process(build)
    return build() if built is None else built


def score_samples(
    metrics: ImageQualityMetrics,
    samples: torch.Tensor,
    real: torch.Tensor,
    dataset: str,
    split: str,
    stats_cache_dir: str | None = None,
) -> dict[str, float]:
    """FID, KID (and IS in the Inception space) of uint8 `samples` against the uint8 `real` images (a tensor, or
    anything with `len`, `.shape` and slices, such as a memory-mapped dataset), whose statistics are read from the
    cache (keyed by `dataset`, `split` and a hash of the images) or computed once per `metrics` object. A
    collective call: every process makes it with the same images, shares the feature extraction and gets the
    scores."""
    if metrics.num_real == 0:
        metrics.add_real_cached(
            stats_dataset(dataset, real), split, real.shape[-1], len(real), lambda: [real], stats_cache_dir
        )
    metrics.reset_fake()
    metrics.add_fake(samples)
    return metrics.compute()


def bound_entry(bound: BoundResult, T: int, num_images: int, dataset: str, split: str, note: str = "") -> dict:
    """The bound as a model-card measurement (`ddpm_hf.tools.model_card`), saying how it was computed."""
    how = f"unbiased estimate from {bound.num_timesteps} of {T} terms" if bound.is_estimate else f"all {T} terms"
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


def stats_dataset(name: str, images: torch.Tensor) -> str:
    """The dataset part of a statistics cache key: `name`, the channel count and a hash of the decoded images
    (their bytes, read `HASH_SLICE` images at a time as from a memory-mapped dataset), so that another crop, split
    file, colour mode or dataset version never reuses the wrong statistics."""
    digest = hashlib.sha256()
    for start in range(0, len(images), HASH_SLICE):
        digest.update(images[start : start + HASH_SLICE].cpu().contiguous().numpy().tobytes())
    return f"{name}-{images.shape[1]}ch-{digest.hexdigest()[:12]}"
