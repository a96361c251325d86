"""The bound of Eq. 5 against numerical integration, closed forms and oracle models."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from ddpm_hf import PaperDDPMScheduler, bits_per_dim, discretized_gaussian_log_likelihood, normal_kl, prior_bpd

LN2 = math.log(2)


@pytest.mark.parametrize("m1,lv1,m2,lv2", [(0.0, 0.0, 0.0, 0.0), (0.3, -1.0, -0.2, 0.5), (1.5, 0.7, 0.1, -2.0)])
def test_normal_kl_against_numerical_integration(m1, lv1, m2, lv2):
    p, q = stats.norm(m1, math.exp(0.5 * lv1)), stats.norm(m2, math.exp(0.5 * lv2))
    expected, _ = integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), -30, 30, epsabs=1e-12)
    got = normal_kl(torch.tensor(m1, dtype=torch.float64), lv1, torch.tensor(m2, dtype=torch.float64), lv2)
    assert float(got) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("mean,log_scale", [(0.0, math.log(0.5)), (0.37, math.log(0.01)), (-0.95, math.log(0.2))])
def test_discretized_gaussian_is_a_distribution_over_256_levels(mean, log_scale):
    levels = torch.linspace(-1, 1, 256, dtype=torch.float64)
    log_p = discretized_gaussian_log_likelihood(levels, torch.full_like(levels, mean), log_scale)
    assert float(log_p.exp().sum()) == pytest.approx(1.0, abs=1e-9)
    # Against the exact normal CDF over the same bins (the tanh approximation is within ~2e-4 of it).
    edges = np.concatenate([[-np.inf], (levels[:-1].numpy() + 1 / 255), [np.inf]])
    exact = np.diff(stats.norm.cdf(edges, loc=mean, scale=math.exp(log_scale)))
    np.testing.assert_allclose(log_p.exp().numpy(), exact, atol=5e-4)


def test_prior_term_is_the_kl_to_the_standard_normal():
    scheduler = PaperDDPMScheduler(num_train_timesteps=10)
    x0 = torch.rand(3, 1, 4, 4, dtype=torch.float64) * 2 - 1
    ab = float(np.prod(1 - np.linspace(1e-4, 0.02, 10)))
    per_dim = 0.5 * (ab * x0**2 + (1 - ab) - 1 - math.log(1 - ab))
    torch.testing.assert_close(prior_bpd(scheduler, x0), per_dim.mean(dim=(1, 2, 3)) / LN2)


def oracle(scheduler, x0):
    """A model that is handed the true x_0 and returns the true noise of x_t (eps-prediction)."""
    ab = scheduler.alphas_cumprod

    def model(x_t, t):
        a = ab[t].to(x_t.dtype).view(-1, 1, 1, 1)
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt()

    return model


def data(batch=2, channels=3, size=4):
    """Images on the 256-level grid of [-1, 1], as the decoder expects."""
    levels = torch.randint(0, 256, (batch, channels, size, size), generator=torch.Generator().manual_seed(0))
    return (levels.double() / 127.5 - 1).clamp(-1, 1)


def test_oracle_with_fixed_small_has_zero_kl_terms():
    scheduler = PaperDDPMScheduler(num_train_timesteps=50, variance_type="fixed_small")
    x0 = data()
    bound = bits_per_dim(oracle(scheduler, x0), scheduler, x0, generator=torch.Generator().manual_seed(0))
    assert bound.terms_bpd.shape == (2, 50)
    assert bound.terms_bpd[:, 1:].abs().max() < 1e-12
    torch.testing.assert_close(bound.total_bpd, bound.terms_bpd[:, 0] + bound.prior_bpd, rtol=1e-12, atol=0)
    assert bound.x0_mse.max() < 1e-20 and bound.eps_mse[:, 1:].max() < 1e-12


def test_oracle_with_fixed_large_pays_only_the_variance_mismatch():
    """Same means, sigma^2 = beta against beta-tilde: KL = 0.5 (-1 + log(b / bt) + bt / b), from the betas alone."""
    T = 50
    scheduler = PaperDDPMScheduler(num_train_timesteps=T, variance_type="fixed_large")
    x0 = data()
    bound = bits_per_dim(oracle(scheduler, x0), scheduler, x0, generator=torch.Generator().manual_seed(0))
    betas = np.linspace(1e-4, 0.02, T)
    ab = np.cumprod(1 - betas)
    beta_tilde = betas[1:] * (1 - ab[:-1]) / (1 - ab[1:])
    expected = 0.5 * (-1 + np.log(betas[1:] / beta_tilde) + beta_tilde / betas[1:]) / LN2
    np.testing.assert_allclose(bound.terms_bpd[0, 1:].numpy(), expected, rtol=1e-9)


def test_bound_is_batched_and_calls_the_model_without_grad(tiny_unet):
    scheduler = PaperDDPMScheduler(num_train_timesteps=20)
    x0 = data().float()
    grad_states = []

    def model(x_t, t):
        grad_states.append(torch.is_grad_enabled())
        return tiny_unet(x_t, t)

    both = bits_per_dim(model, scheduler, x0, generator=[torch.Generator().manual_seed(i) for i in range(2)])
    assert grad_states == [False] * 20
    for i in range(2):
        one = bits_per_dim(tiny_unet, scheduler, x0[i : i + 1], generator=[torch.Generator().manual_seed(i)])
        torch.testing.assert_close(one.total_bpd, both.total_bpd[i : i + 1], rtol=1e-5, atol=1e-5)
    assert torch.isfinite(both.total_bpd).all() and (both.total_bpd > 0).all()


def test_bound_with_learned_range_and_a_plain_function():
    scheduler = PaperDDPMScheduler(num_train_timesteps=20, variance_type="learned_range")
    x0 = data().float()

    def model(x_t, t):  # returns a tensor, not an object with .sample
        return torch.cat([torch.zeros_like(x_t), torch.full_like(x_t, 0.3)], dim=1)

    bound = bits_per_dim(model, scheduler, x0, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(bound.terms_bpd).all() and (bound.terms_bpd[:, 1:] >= 0).all()


def test_bound_leaves_the_sampling_chain_alone():
    scheduler = PaperDDPMScheduler(num_train_timesteps=20)
    scheduler.set_timesteps(5)
    x0 = data()
    bits_per_dim(oracle(scheduler, x0), scheduler, x0)
    assert scheduler.timesteps.tolist() == [19, 15, 11, 7, 3]


def test_decoder_term_against_the_exact_discretized_normal():
    """A model whose x_0 prediction is off by 0.01: L_0 = -log of the N(clip(x_0 + 0.01), beta-tilde_2) mass of
    x_0's bin (edge bins open), computed here with scipy from the betas; the tanh CDF is within ~2e-4 of it."""
    T = 50
    scheduler = PaperDDPMScheduler(num_train_timesteps=T, variance_type="fixed_small")
    x0 = data()
    ab = scheduler.alphas_cumprod

    def model(x_t, t):  # the eps for which predict_x0 returns x0 + 0.01
        a = ab[t].to(x_t.dtype).view(-1, 1, 1, 1)
        return (x_t - a.sqrt() * (x0 + 0.01)) / (1 - a).sqrt()

    bound = bits_per_dim(model, scheduler, x0, generator=torch.Generator().manual_seed(0))
    betas = np.linspace(1e-4, 0.02, T)
    abar = np.cumprod(1 - betas)
    std = math.sqrt(betas[1] * (1 - abar[0]) / (1 - abar[1]))
    x = x0.numpy()
    mean = np.clip(x + 0.01, -1, 1)  # the predicted x_0 is clipped; at t = 0 the posterior mean is x_0 itself
    upper = np.where(x > 0.999, np.inf, x + 1 / 255)
    lower = np.where(x < -0.999, -np.inf, x - 1 / 255)
    mass = stats.norm.cdf(upper, mean, std) - stats.norm.cdf(lower, mean, std)
    expected = -np.log(mass).mean(axis=(1, 2, 3)) / LN2
    np.testing.assert_allclose(bound.terms_bpd[:, 0].numpy(), expected, rtol=2e-3)
    assert expected.min() > 0.5, "the offset makes the decoder term substantial"


def test_learned_range_bound_against_the_closed_form():
    """Oracle mean, constant v: the model's log-variance is frac log(beta) + (1 - frac) log(beta-tilde),
    frac = (v + 1) / 2, and each KL term is the variance mismatch alone."""
    T, v = 30, 0.4
    scheduler = PaperDDPMScheduler(num_train_timesteps=T, variance_type="learned_range")
    x0 = data()
    eps_model = oracle(scheduler, x0)

    def model(x_t, t):
        return torch.cat([eps_model(x_t, t), torch.full_like(x_t, v)], dim=1)

    bound = bits_per_dim(model, scheduler, x0, generator=torch.Generator().manual_seed(0))
    betas = np.linspace(1e-4, 0.02, T)
    ab = np.cumprod(1 - betas)
    log_tilde = np.log(betas[1:] * (1 - ab[:-1]) / (1 - ab[1:]))
    frac = (v + 1) / 2
    log_model = frac * np.log(betas[1:]) + (1 - frac) * log_tilde
    expected = 0.5 * (-1 + log_model - log_tilde + np.exp(log_tilde - log_model)) / LN2
    np.testing.assert_allclose(bound.terms_bpd[1, 1:].numpy(), expected, rtol=1e-9)


def test_zero_terminal_snr_bound_is_finite():
    scheduler = PaperDDPMScheduler(num_train_timesteps=20, rescale_betas_zero_snr=True, prediction_type="sample")
    assert float(scheduler.alphas_cumprod[-1]) == 0.0
    x0 = data()
    bound = bits_per_dim(lambda x_t, t: x0, scheduler, x0, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(bound.total_bpd).all()
    assert torch.isfinite(bound.eps_mse).all()


def test_stratified_estimate_is_unbiased_against_the_closed_form():
    """With the oracle and sigma^2 = beta every KL term is the closed form c_t of the betas, whatever the noise: an
    estimate must be L_T + L_0 + sum_k n_k c_{t_k} for its drawn t_k, and average to the full L_T + L_0 + sum_t c_t."""
    T, K, n = 50, 6, 4000
    scheduler = PaperDDPMScheduler(num_train_timesteps=T, variance_type="fixed_large")
    x0 = data(batch=1).repeat(n, 1, 1, 1)
    betas = np.linspace(1e-4, 0.02, T)
    ab = np.cumprod(1 - betas)
    beta_tilde = betas[1:] * (1 - ab[:-1]) / (1 - ab[1:])
    c = np.concatenate([[np.nan], 0.5 * (-1 + np.log(betas[1:] / beta_tilde) + beta_tilde / betas[1:]) / LN2])
    estimate = bits_per_dim(oracle(scheduler, x0), scheduler, x0, torch.Generator().manual_seed(0), num_timesteps=K)
    assert estimate.is_estimate and estimate.terms_bpd.shape == (n, K)
    assert sum(estimate.term_weights) == T and estimate.term_weights[0] == 1 and estimate.timesteps[0] == 0
    drawn = estimate.sampled_timesteps.numpy()
    starts, weights = np.array(estimate.timesteps), np.array(estimate.term_weights)
    assert ((drawn >= starts) & (drawn < starts + weights)).all()
    assert len({tuple(row) for row in drawn}) > n // 2  # each image draws its own timesteps
    kl_sum = (c[drawn[:, 1:]] * weights[1:]).sum(axis=1)
    expected = estimate.prior_bpd.numpy() + estimate.terms_bpd[:, 0].numpy() + kl_sum
    np.testing.assert_allclose(estimate.total_bpd.numpy(), expected, rtol=1e-9)
    full = bits_per_dim(oracle(scheduler, x0[:1]), scheduler, x0[:1], torch.Generator().manual_seed(1))
    truth = full.total_bpd.item()
    np.testing.assert_allclose(truth, full.prior_bpd.item() + full.terms_bpd[0, 0].item() + np.nansum(c), rtol=1e-9)
    total = estimate.total_bpd.numpy()
    stderr = total.std(ddof=1) / math.sqrt(n)
    assert stderr > 0 and abs(total.mean() - truth) < 4 * stderr


def test_estimate_per_image_generators_and_the_full_bound(tiny_unet):
    scheduler = PaperDDPMScheduler(num_train_timesteps=20)
    x0 = data().float()
    both = bits_per_dim(tiny_unet, scheduler, x0, [torch.Generator().manual_seed(i) for i in range(2)], num_timesteps=5)
    for i in range(2):
        one = bits_per_dim(tiny_unet, scheduler, x0[i : i + 1], [torch.Generator().manual_seed(i)], num_timesteps=5)
        assert torch.equal(one.sampled_timesteps, both.sampled_timesteps[i : i + 1])
        torch.testing.assert_close(one.total_bpd, both.total_bpd[i : i + 1], rtol=1e-5, atol=1e-5)
    # K = T is the full bound itself, term for term.
    generator = torch.Generator().manual_seed(3)
    full = bits_per_dim(tiny_unet, scheduler, x0, generator)
    again = bits_per_dim(tiny_unet, scheduler, x0, torch.Generator().manual_seed(3), num_timesteps=20)
    assert not full.is_estimate and not again.is_estimate and torch.equal(full.total_bpd, again.total_bpd)
    assert full.timesteps == list(range(20)) and full.term_weights == [1] * 20
