"""The training objectives against independent computations: L_vlb's terms against the paper's Eq. 12 and a
decoder computed with the exact normal CDF, against the evaluation bound's own terms; L_hybrid's stopped
gradient; min-SNR-gamma weights against the closed form; the loss-aware timestep sampler's weights keep the
loss unbiased."""

import math

import numpy as np
import pytest
import torch

from ddpm_hf import PaperDDPMScheduler
from ddpm_hf.core.likelihood import vb_terms_bpd
from ddpm_hf.core.losses import DiffusionLoss, min_snr_weights
from ddpm_hf.core.timestep_sampling import LossSecondMomentSampler, UniformSampler, make_timestep_sampler

T = 40
LN2 = math.log(2)


def linear_schedule(T: int = T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """beta, alpha and alphabar of the paper's linear schedule, in float64 numpy (not the package's tables)."""
    betas = np.linspace(1e-4 * 1000 / T, 0.02 * 1000 / T, T)
    alphas = 1 - betas
    return betas, alphas, np.cumprod(alphas)


def draws(batch: int = 6, channels: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(batch, channels, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    eps_hat = noise + 0.3 * torch.randn(x0.shape, generator=g)
    return x0, noise, eps_hat


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_vlb_kl_terms_are_eq_12s_weighted_squared_error(variance_type):
    """With fixed variances both Gaussians share sigma_t^2, so L_{t-1} is Eq. 12's
    beta_t^2 / (2 sigma_t^2 alpha_t (1 - alphabar_t)) ||eps - eps_theta||^2 (per dimension, in nats)."""
    betas, alphas, alphabar = linear_schedule()
    kwargs = {"beta_start": betas[0], "beta_end": betas[-1], "variance_type": variance_type}
    loss = DiffusionLoss(PaperDDPMScheduler(num_train_timesteps=T, **kwargs), "vlb")
    x0, noise, eps_hat = draws()
    t = torch.tensor([1, 2, 5, 17, 30, T - 1])
    x_t = loss.scheduler.add_noise(x0, noise, t)
    got = loss.vlb(eps_hat, x0, x_t, t).double()

    alphabar_prev = np.concatenate([[1.0], alphabar[:-1]])
    posterior = betas * (1 - alphabar_prev) / (1 - alphabar)
    sigma2 = posterior if variance_type == "fixed_small" else np.concatenate([[posterior[1]], betas[1:]])
    tn = t.numpy()
    weight = betas[tn] ** 2 / (2 * sigma2[tn] * alphas[tn] * (1 - alphabar[tn]))
    if variance_type == "fixed_large":  # the variances differ: the KL adds its variance part
        ratio = posterior[tn] / sigma2[tn]
        weight_var = 0.5 * (ratio - 1 - np.log(ratio))
    else:
        weight_var = np.zeros(len(tn))
    squared = ((noise - eps_hat) ** 2).mean(dim=(1, 2, 3)).double().numpy()
    expected = T * (weight * squared + weight_var) / LN2
    np.testing.assert_allclose(got.numpy(), expected, rtol=2e-4)


def test_vlb_at_t0_is_the_discretized_decoder_with_the_exact_normal_cdf():
    """L_0 = -log p(x_0 | x_1): the mass of N(mu, sigma^2) on each pixel's bin of width 2/255 (the edge bins open),
    computed here with the exact CDF (the authors' tanh approximation differs by < 1e-3)."""
    betas, _, alphabar = linear_schedule()
    loss = DiffusionLoss(PaperDDPMScheduler(num_train_timesteps=T, beta_start=betas[0], beta_end=betas[-1]), "vlb")
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, 256, (3, 1, 4, 4), generator=g).double() / 127.5 - 1
    x0[0, 0, 0, :2] = torch.tensor([-1.0, 1.0])  # the open edge bins
    noise = torch.randn(x0.shape, generator=g).double()
    eps_hat = noise + 0.2 * torch.randn(x0.shape, generator=g).double()  # means near the data, off by ~1 bin
    t = torch.zeros(3, dtype=torch.long)
    x_t = loss.scheduler.add_noise(x0, noise, t)
    got = loss.vlb(eps_hat, x0, x_t, t).double()

    mean = (x_t.numpy() - math.sqrt(1 - alphabar[0]) * eps_hat.numpy()) / math.sqrt(alphabar[0])  # x_0 prediction
    sigma = math.sqrt(betas[1] * (1 - alphabar[0]) / (1 - alphabar[1]))  # fixed_small's clipped variance at t = 0
    cdf = np.vectorize(lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2))))
    x = x0.numpy()
    upper = np.where(x > 0.999, 1.0, cdf((x + 1 / 255 - mean) / sigma))
    lower = np.where(x < -0.999, 0.0, cdf((x - 1 / 255 - mean) / sigma))
    nll = -np.log(np.maximum(upper - lower, 1e-12)).reshape(3, -1).mean(axis=1)
    np.testing.assert_allclose(got.numpy(), T * nll / LN2, rtol=2e-3)


@pytest.mark.parametrize("variance_type", ["fixed_large", "learned_range"])
def test_training_vlb_equals_the_evaluation_bounds_terms(variance_type):
    """Per-sample timesteps, t = 0 among them, give each image the evaluation's term at its own t (computed one t at
    a time, as the bound does) times T."""
    channels = 3
    scheduler = PaperDDPMScheduler(num_train_timesteps=T, variance_type=variance_type, clip_sample=False)
    loss = DiffusionLoss(scheduler, "vlb")
    x0, noise, eps_hat = draws(channels=channels)
    if variance_type == "learned_range":
        eps_hat = torch.cat([eps_hat, torch.rand(eps_hat.shape, generator=torch.Generator().manual_seed(2)) * 2 - 1], 1)
    t = torch.tensor([0, 3, 0, T - 1, 11, 1])
    x_t = scheduler.add_noise(x0, noise, t)
    got = loss.vlb(eps_hat, x0, x_t, t)
    for i, ti in enumerate(t.tolist()):
        term, _ = vb_terms_bpd(scheduler, eps_hat[i : i + 1], x0[i : i + 1], x_t[i : i + 1], ti)
        torch.testing.assert_close(got[i], T * term[0], rtol=1e-5, atol=1e-6)


def test_the_bound_is_taken_on_unclipped_predictions():
    """The x_0 prediction is not clipped in the loss (clipping stops its gradient); the evaluation's clips."""
    scheduler = PaperDDPMScheduler(num_train_timesteps=T, clip_sample=True)
    loss = DiffusionLoss(scheduler, "vlb")
    x0, noise, _ = draws()
    t = torch.full((6,), T - 1)
    x_t = scheduler.add_noise(x0, noise, t)
    eps_hat = (-3 * noise).requires_grad_()  # far off: x_0 predictions beyond [-1, 1]
    loss.vlb(eps_hat, x0, x_t, t).sum().backward()
    assert (eps_hat.grad != 0).float().mean() > 0.99


def test_hybrid_stops_the_means_gradient_in_l_vlb():
    """d L_hybrid / d eps-part = d L_simple / d eps-part; d L_hybrid / d v-part = lambda d L_vlb / d v-part."""
    scheduler = PaperDDPMScheduler(num_train_timesteps=T, variance_type="learned_range")
    hybrid = DiffusionLoss(scheduler, "hybrid", vlb_weight=0.01)
    x0, noise, eps_hat = draws()
    v = torch.rand(eps_hat.shape, generator=torch.Generator().manual_seed(3)) * 2 - 1
    t = torch.tensor([0, 1, 5, 20, 33, T - 1])
    x_t = scheduler.add_noise(x0, noise, t)
    output = torch.cat([eps_hat, v], 1).requires_grad_()
    hybrid._losses(output, x0, noise, x_t, t).sum().backward()

    eps_part = eps_hat.clone().requires_grad_()
    ((eps_part - noise) ** 2).mean(dim=(1, 2, 3)).sum().backward()
    torch.testing.assert_close(output.grad[:, :3], eps_part.grad)
    v_part = v.clone().requires_grad_()
    (0.01 * DiffusionLoss(scheduler, "vlb").vlb(torch.cat([eps_hat, v_part], 1), x0, x_t, t)).sum().backward()
    torch.testing.assert_close(output.grad[:, 3:], v_part.grad)
    assert v_part.grad.abs().sum() > 0


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_min_snr_weights_are_the_closed_form(prediction_type):
    """Hang et al. weight the x_0 error by min(SNR, gamma); each prediction's weight turns its own error into that."""
    _, _, alphabar = linear_schedule(1000)
    scheduler = PaperDDPMScheduler(prediction_type=prediction_type)
    t = torch.tensor([0, 10, 100, 400, 999])
    ratio = alphabar[t.numpy()] / (1 - alphabar[t.numpy()])
    gamma = 5.0
    expected = {
        "epsilon": np.minimum(ratio, gamma) / ratio,
        "sample": np.minimum(ratio, gamma),
        "v_prediction": np.minimum(ratio, gamma) / (ratio + 1),
    }[prediction_type]
    np.testing.assert_allclose(min_snr_weights(scheduler, t, gamma).double().numpy(), expected, rtol=1e-5)

    # The weighted error of the prediction equals min(SNR, gamma) times the error of the x_0 it implies.
    x0, noise, eps_hat = draws(batch=5)
    x_t = scheduler.add_noise(x0, noise, t)
    target = DiffusionLoss(scheduler).target(x0, noise, t)
    prediction = target + 0.1 * (eps_hat - noise)
    x0_hat = scheduler.predict_x0(prediction, t, x_t)
    weighted = min_snr_weights(scheduler, t, gamma) * ((prediction - target) ** 2).mean(dim=(1, 2, 3))
    x0_error = torch.from_numpy(np.minimum(ratio, gamma)).float() * ((x0_hat - x0) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(weighted, x0_error, rtol=1e-3, atol=1e-7)


def test_simple_is_algorithm_1():
    """L_simple = mean ||eps - eps_theta(sqrt(alphabar) x_0 + sqrt(1 - alphabar) eps, t)||^2, t then eps drawn."""
    betas, _, alphabar = linear_schedule()
    scheduler = PaperDDPMScheduler(num_train_timesteps=T, beta_start=betas[0], beta_end=betas[-1])
    model = torch.nn.Conv2d(3, 3, 3, padding=1)
    seen = {}

    class Wrapped(torch.nn.Module):
        def forward(self, x, t):
            seen["t"] = t
            return type("Out", (), {"sample": model(x) + t.view(-1, 1, 1, 1) / T})()

    x0, _, _ = draws()
    out = DiffusionLoss(scheduler)(Wrapped(), x0, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    t, noise = torch.randint(0, T, (6,), generator=g), torch.randn(x0.shape, generator=g)
    ab = torch.from_numpy(alphabar[t.numpy()]).float().view(-1, 1, 1, 1)
    with torch.no_grad():
        predicted = model(ab.sqrt() * x0 + (1 - ab).sqrt() * noise) + t.view(-1, 1, 1, 1) / T
    assert torch.equal(out.timesteps, t) and torch.equal(seen["t"], t)
    torch.testing.assert_close(out.loss, ((predicted - noise) ** 2).mean(), rtol=1e-5, atol=1e-6)


def test_loss_aware_sampling_is_uniform_until_warm_then_proportional_to_the_rms_loss():
    sampler = LossSecondMomentSampler(4, history=3, uniform_prob=0.1)
    per_t = torch.tensor([1.0, 2.0, 4.0, 8.0])
    for _ in range(3):
        assert torch.equal(sampler.probabilities(), torch.full((4,), 0.25, dtype=torch.float64))
        sampler.update(torch.arange(4), per_t)
    assert sampler.warmed_up()
    np.testing.assert_allclose(sampler.probabilities().numpy(), 0.9 * np.array([1, 2, 4, 8]) / 15 + 0.1 / 4)
    sampler.update(torch.tensor([3, 3]), torch.tensor([0.0, 0.0]))  # the oldest two of t = 3 replaced
    assert sampler.losses[3].tolist() == [8.0, 0.0, 0.0]
    rms = np.array([1, 2, 4, math.sqrt(64 / 3)])
    np.testing.assert_allclose(sampler.probabilities().numpy(), 0.9 * rms / rms.sum() + 0.1 / 4)


def test_importance_weights_keep_the_loss_unbiased():
    """E_{t ~ p}[L_t / (T p_t)] = mean_t L_t exactly, and the sampled estimate agrees within its standard error."""
    T_small = 50
    losses = torch.from_numpy(np.exp(-np.arange(T_small) / 5.0) + 0.01)
    sampler = LossSecondMomentSampler(T_small)
    for _ in range(sampler.history):
        sampler.update(torch.arange(T_small), losses)
    p = sampler.probabilities()
    assert not torch.allclose(p, torch.full_like(p, 1 / T_small)), "not uniform"
    torch.testing.assert_close((p * losses / (T_small * p)).sum(), losses.mean())
    t, weights = sampler.sample(200_000, torch.Generator().manual_seed(0), "cpu")
    estimates = weights.double() * losses[t]
    standard_error = estimates.std() / math.sqrt(len(t))
    assert abs(estimates.mean() - losses.mean()) < 4 * standard_error
    uniform = losses[torch.randint(0, T_small, (200_000,), generator=torch.Generator().manual_seed(0))]
    assert estimates.std() < 0.5 * uniform.std(), "importance sampling lowers the variance"


def test_the_sampler_state_round_trips():
    a, b = LossSecondMomentSampler(10), LossSecondMomentSampler(10)
    for step in range(12):
        a.update(torch.arange(10), torch.rand(10, generator=torch.Generator().manual_seed(step)))
    b.load_state_dict(a.state_dict())
    draws_a = a.sample(64, torch.Generator().manual_seed(5), "cpu")
    draws_b = b.sample(64, torch.Generator().manual_seed(5), "cpu")
    assert torch.equal(draws_a[0], draws_b[0]) and torch.equal(draws_a[1], draws_b[1])
    fresh = LossSecondMomentSampler(10).sample(64, torch.Generator().manual_seed(5), "cpu")
    assert not torch.equal(fresh[0], draws_a[0]), "the state decides the draws"
    assert isinstance(make_timestep_sampler("uniform", 10), UniformSampler)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss_type": "hybrid"}, "'hybrid' trains learned variances: .* must be 'learned_range'"),
        ({"loss_type": "nll"}, r"`loss_type` must be one of \['simple', 'vlb', 'hybrid'\], got 'nll'"),
        ({"loss_type": "vlb", "snr_gamma": 5.0}, "`snr_gamma` weights the squared error"),
        ({"snr_gamma": 0.0}, "must be positive"),
    ],
)
def test_bad_objectives_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DiffusionLoss(PaperDDPMScheduler(num_train_timesteps=T), **kwargs)
    with pytest.raises(ValueError, match="'simple' cannot train the variances"):
        DiffusionLoss(PaperDDPMScheduler(num_train_timesteps=T, variance_type="learned_range"))
