"""Schedule quantities against closed forms computed here in plain Python floats, and the paper's numbers."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from ddpm_hf import PaperDDPMScheduler

T = 1000


def closed_form_betas(schedule: str, T: int, start: float = 1e-4, end: float = 0.02) -> list[float]:
    if schedule == "linear":
        return [start + (end - start) * i / (T - 1) for i in range(T)]
    if schedule == "scaled_linear":
        return [(math.sqrt(start) + (math.sqrt(end) - math.sqrt(start)) * i / (T - 1)) ** 2 for i in range(T)]
    if schedule == "sigmoid":
        return [start + (end - start) / (1 + math.exp(-(-6 + 12 * i / (T - 1)))) for i in range(T)]

    def f(t: float) -> float:
        return math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2

    return [min(1 - f(i + 1) / f(i), 0.999) for i in range(T)]


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"])
def test_schedule_quantities_match_closed_forms(schedule):
    chain = PaperDDPMScheduler(beta_schedule=schedule).train_chain
    betas = closed_form_betas(schedule, T)
    alphabar, alphabar_prev = [], []
    running = 1.0
    for beta in betas:
        alphabar_prev.append(running)
        running *= 1 - beta
        alphabar.append(running)
    triples = list(zip(betas, alphabar, alphabar_prev, strict=True))
    beta_tilde = [b * (1 - ap) / (1 - a) for b, a, ap in triples]
    expected = {
        "betas": betas,
        "alphas": [1 - b for b in betas],
        "alphas_cumprod": alphabar,
        "alphas_cumprod_prev": alphabar_prev,
        "posterior_variance": beta_tilde,
        "posterior_log_variance_clipped": [math.log(beta_tilde[1])] + [math.log(v) for v in beta_tilde[1:]],
        "posterior_mean_coef1": [b * math.sqrt(ap) / (1 - a) for b, a, ap in triples],
        "posterior_mean_coef2": [(1 - ap) * math.sqrt(1 - b) / (1 - a) for b, a, ap in triples],
        "large_log_variance": [math.log(beta_tilde[1])] + [math.log(b) for b in betas[1:]],
    }
    for name, values in expected.items():
        got = getattr(chain, name)
        assert got.dtype == torch.float64, name
        np.testing.assert_allclose(got.numpy(), values, rtol=1e-11, atol=0, err_msg=name)


def test_float32_schedules_match_diffusers():
    for schedule in ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"]:
        ours = PaperDDPMScheduler(beta_schedule=schedule)
        theirs = DDPMScheduler(beta_schedule=schedule)
        np.testing.assert_allclose(ours.betas.numpy(), theirs.betas.numpy(), rtol=1e-6, err_msg=schedule)
        np.testing.assert_allclose(ours.alphas_cumprod.numpy(), theirs.alphas_cumprod.numpy(), rtol=2e-4)


def test_trained_betas_are_used_as_given():
    betas = np.linspace(0.001, 0.05, 20) ** 1.5
    chain = PaperDDPMScheduler(num_train_timesteps=20, trained_betas=betas.tolist()).train_chain
    assert torch.equal(chain.betas, torch.from_numpy(betas))
    np.testing.assert_allclose(chain.alphas_cumprod.numpy(), np.cumprod(1 - betas), rtol=1e-14)


def test_paper_linear_schedule_endpoint_and_prior_term():
    """Sec. 4: with beta linear from 1e-4 to 0.02, L_T = KL(q(x_T|x_0) || N(0, I)) is about 1e-5 bits/dim."""
    from ddpm_hf import prior_bpd

    scheduler = PaperDDPMScheduler()
    alphabar_T = math.prod(1 - (1e-4 + (0.02 - 1e-4) * i / 999) for i in range(1000))
    assert float(scheduler.alphas_cumprod[-1]) == pytest.approx(alphabar_T, rel=1e-11)
    # sqrt(alphabar_T) ~ 0.0064: the signal left at x_T is well under one 8-bit level (1/127.5).
    assert 4.0e-5 < alphabar_T < 4.1e-5
    x0 = torch.linspace(-1, 1, 3 * 32 * 32, dtype=torch.float64).reshape(1, 3, 32, 32)
    # Closed form per element: 0.5 * (ab x^2 + (1 - ab) - 1 - log(1 - ab)), averaged, in bits.
    per_dim = 0.5 * (alphabar_T * x0**2 - alphabar_T - math.log(1 - alphabar_T))
    expected = float(per_dim.mean()) / math.log(2)
    got = float(prior_bpd(scheduler, x0))
    assert got == pytest.approx(expected, rel=1e-9)
    assert 5e-6 < got < 2e-5


def test_respaced_chain_follows_nichol_dhariwal():
    scheduler = PaperDDPMScheduler()
    scheduler.set_timesteps(10)
    steps = scheduler.timesteps.flip(0).tolist()
    alphabar = scheduler.alphas_cumprod
    expected = [
        1 - float(alphabar[s]) / (float(alphabar[p]) if k else 1.0)
        for k, (s, p) in enumerate(zip(steps, [None, *steps[:-1]], strict=True))
    ]
    np.testing.assert_allclose(scheduler.chain.betas.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(scheduler.chain.alphas_cumprod.numpy(), alphabar[steps].numpy(), rtol=1e-12)
    assert steps[-1] == T - 1, "trailing spacing starts sampling at t = T"


def test_full_chain_is_the_training_chain():
    scheduler = PaperDDPMScheduler()
    scheduler.set_timesteps(T)
    assert scheduler.chain is scheduler.train_chain


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log"])
@pytest.mark.parametrize("steps", [1, 2, 10, 1000])
def test_every_log_variance_is_finite(variance_type, steps):
    scheduler = PaperDDPMScheduler(variance_type=variance_type)
    scheduler.set_timesteps(steps)
    x = torch.randn(2, 3, 4, 4)
    for t in scheduler.timesteps.tolist():
        p = scheduler.p_mean_variance(torch.randn_like(x), t, x)
        assert math.isfinite(p.log_variance)
        out = scheduler.step(torch.randn_like(x), t, x, generator=torch.Generator().manual_seed(t)).prev_sample
        assert torch.isfinite(out).all()
