"""The FID Inception network: InceptionV3 of TensorFlow's `inception-2015-12-05` graph, in torch.

This is the network behind the published FID, KID and Inception Score numbers (TTUR's and OpenAI's TensorFlow
code, and the torch ports pytorch-fid, torch-fidelity and torchmetrics): its own weights (1008 classes), average
pools that leave the zero padding out of the mean, a max pool in the last block, and TensorFlow 1.x preprocessing
(bilinear resize to 299x299 without half-pixel centres, then (x - 128) / 128 on [0, 255] pixels).

Why it is written here: torchmetrics takes this network from torch-fidelity, which requires torchvision, and a
torchvision wheel does not import beside the CPU build of torch this project pins (pip would pull another torch).
pytorch-fid builds it from torchvision too. The module below has the same parameter names as both, so their
published weight file loads into it unchanged; the weights are never bundled, see `load_fid_inception`.
"""

from __future__ import annotations

import os
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
    """InceptionV3 of the FID: images to 2048-d pool3 features and 1008 class logits.

    Inputs are RGB `(N, 3, H, W)`, either uint8 in [0, 255] or float in [0, 1] (scaled by 255, not rounded).
    They are resized to 299x299 as TensorFlow 1.x did (`resize_bilinear_tf1`) and mapped to [-1, 1] by
    (x - 128) / 128. `forward` returns the pool3 features, so the module also works as the `feature` network
    of torchmetrics' FrechetInceptionDistance / KernelInceptionDistance (with their default `normalize=False`).

    A fresh module has random weights; `load_fid_inception` builds it with the published ones. It never leaves
    evaluation mode (its BatchNorm statistics are the TensorFlow graph's) and its parameters need no gradient.
    """

    num_features = NUM_FEATURES

    def __init__(self) -> None:
        super().__init__()
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
        self.fc = nn.Linear(NUM_FEATURES, NUM_CLASSES)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FIDInceptionV3:
        """Stays in evaluation mode whatever `mode` is."""
        return super().train(False)

    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pool3 features `(N, 2048)` and the logits without the fc bias `(N, 1008)`.

        The Inception Score of Salimans et al. (their TensorFlow code, torch-fidelity's and torchmetrics'
        default) applies the softmax to pool3 @ W without the bias; so do these logits.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"FIDInceptionV3 takes RGB images of shape (N, 3, H, W); got {tuple(images.shape)}.")
        x = images.float() if images.dtype == torch.uint8 else images.float() * 255
        x = (resize_bilinear_tf1(x, INPUT_SIZE) - 128) / 128
        x = F.max_pool2d(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))), kernel_size=3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c):
            x = block(x)
        for block in (self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        pool3 = x.mean(dim=(2, 3))
        return pool3, pool3 @ self.fc.weight.T

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """pool3 features `(N, 2048)` of images as described in the class docstring."""
        return self.features_and_logits(images)[0]


def _how_to_get_weights(hub_path: Path) -> str:
    return (
        f"Get {FID_WEIGHTS_FILENAME} (sha256 starting {WEIGHTS_SHA256_PREFIX}) from {FID_WEIGHTS_URL} on a machine "
        f"with network and pass its path as inception_weights=PATH (--inception_weights PATH on the command line), "
        f"or put it at {hub_path}. torch-fidelity's copy of the same weights, {TORCH_FIDELITY_WEIGHTS_FILENAME} "
        f"({TORCH_FIDELITY_WEIGHTS_URL}), works too."
    )


def locate_inception_weights(allow_download: bool = True) -> Path:
    """Path of the published weight file: the torch hub cache, else a download into it.

    Looks for pytorch-fid's and torch-fidelity's file names in `torch.hub.get_dir()/checkpoints`, where their own
    first use downloads them. If neither is there and `allow_download`, downloads pytorch-fid's file (checking
    its sha256 prefix) to that place; raises `InceptionWeightsUnavailable`, saying how to supply the file, when
    the download fails or is not allowed.
    """
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    for name in (FID_WEIGHTS_FILENAME, TORCH_FIDELITY_WEIGHTS_FILENAME):
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
    except (OSError, RuntimeError) as error:  # URLError and timeouts are OSErrors; a hash mismatch a RuntimeError
        raise InceptionWeightsUnavailable(
            f"The FID Inception weights could not be downloaded (no network?): {error}. " + _how_to_get_weights(target)
        ) from error
    return target


def load_fid_inception(
    weights: str | os.PathLike | None = None, allow_download: bool = True, device: torch.device | str | None = None
) -> FIDInceptionV3:
    """`FIDInceptionV3` with the published weights, in evaluation mode.

    `weights`: a state dict file (`.pth` of pytorch-fid or torch-fidelity, or a `.safetensors` with the same
    names); when None, `locate_inception_weights(allow_download)` finds or downloads it. The state dict must
    match the module exactly (strict loading). Raises `InceptionWeightsUnavailable` when there is no file.
    """
    if weights is None:
        path = locate_inception_weights(allow_download)
    else:
        path = Path(weights)
        if not path.is_file():
            raise InceptionWeightsUnavailable(
                f"No Inception weight file at {path}. "
                + _how_to_get_weights(Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILENAME)
            )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state_dict = load_file(path)
    else:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    model = FIDInceptionV3()
    model.load_state_dict(state_dict, strict=True)
    return model.to(device)
