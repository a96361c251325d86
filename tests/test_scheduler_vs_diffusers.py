"""Wherever stock diffusers' DDPMScheduler supports the configuration, `step`, `add_noise` and `get_velocity`
agree with it within float32 tolerance."""

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from ddpm_hf import PaperDDPMScheduler

T = 100
TRAINED = np.sort(np.random.default_rng(0).uniform(1e-4, 0.05, T)).tolist()
SCHEDULES = {
    "linear": {"beta_schedule": "linear"},
    "scaled_linear": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    "cosine": {"beta_schedule": "squaredcos_cap_v2"},
    "sigmoid": {"beta_schedule": "sigmoid"},
    "trained": {"trained_betas": TRAINED},
}
CHAINS = {
    "full": {"num_inference_steps": T},
    "leading-10": {"num_inference_steps": 10, "timestep_spacing": "leading"},
    "leading-offset-7": {"num_inference_steps": 7, "timestep_spacing": "leading", "steps_offset": 1},
    "linspace-10": {"num_inference_steps": 10, "timestep_spacing": "linspace"},
    "trailing-10": {"num_inference_steps": 10, "timestep_spacing": "trailing"},
    "trailing-3": {"num_inference_steps": 3, "timestep_spacing": "trailing"},
    "custom": {"timesteps": [97, 60, 41, 12, 3]},
}


def fake_model(x: torch.Tensor, t: int, learned: bool) -> torch.Tensor:
    """A deterministic stand-in for a network: depends on x_t and t; a second half in [-1, 1] for learned_range."""
    out = 0.9 * torch.tanh(0.7 * x + 0.01 * t)
    return torch.cat([out, torch.sin(x + t)], dim=1) if learned else out


def make_pair(num_train_timesteps=T, **config):
    spacing = {k: config.pop(k) for k in ("timestep_spacing", "steps_offset") if k in config}
    spacing.setdefault("timestep_spacing", "trailing")  # the defaults differ: diffusers' is "leading"
    return (
        PaperDDPMScheduler(num_train_timesteps=num_train_timesteps, **config, **spacing),
        DDPMScheduler(num_train_timesteps=num_train_timesteps, **config, **spacing),
    )


def run_both(ours, theirs, chain_args, learned, shape=(2, 3, 4, 4)):
    set_args = {k: v for k, v in chain_args.items() if k in ("num_inference_steps", "timesteps")}
    ours.set_timesteps(**set_args)
    theirs.set_timesteps(**set_args)
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()
    # Both step from the same x_t along our trajectory, so each step is compared on its own (float32 rounding
    # of diffusers' schedule would otherwise compound over the chain).
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    g_ours, g_theirs = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    timesteps = ours.timesteps.tolist()
    for i, t in enumerate(timesteps):
        a = ours.step(fake_model(x, t, learned), t, x, generator=g_ours)
        b = theirs.step(fake_model(x, t, learned), t, x, generator=g_theirs)
        torch.testing.assert_close(a.pred_original_sample, b.pred_original_sample, rtol=1e-4, atol=1e-5)
        last = i == len(timesteps) - 1
        if last and t > 0 and ours.config.variance_type in ("fixed_large", "learned_range"):
            # diffusers adds noise at the chain's last step whenever its timestep is above 0 (it keys on t > 0),
            # with variance beta'_1 here; the paper's last step returns the mean. Ours must return exactly that.
            p = ours.p_mean_variance(fake_model(x, t, learned), t, x)
            assert torch.equal(a.prev_sample, p.mean)
        else:
            torch.testing.assert_close(a.prev_sample, b.prev_sample, rtol=1e-4, atol=1e-5)
        x = a.prev_sample
    return x


@pytest.mark.parametrize("chain", CHAINS)
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_small_log", "fixed_large", "learned_range"])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_sampling_chain_agrees(schedule, variance_type, prediction_type, chain):
    config = {**SCHEDULES[schedule], "variance_type": variance_type, "prediction_type": prediction_type}
    config.update({k: v for k, v in CHAINS[chain].items() if k in ("timestep_spacing", "steps_offset")})
    ours, theirs = make_pair(**config)
    run_both(ours, theirs, CHAINS[chain], learned=variance_type == "learned_range")


@pytest.mark.parametrize(
    "clipping",
    [
        {"clip_sample": False},
        {"clip_sample": True, "clip_sample_range": 0.5},
        {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5},
    ],
)
def test_clipping_and_thresholding_agree(clipping):
    ours, theirs = make_pair(prediction_type="epsilon", **clipping)
    run_both(ours, theirs, {"num_inference_steps": 10}, learned=False)


def test_paper_cifar10_sampler_agrees_over_1000_steps():
    ours, theirs = make_pair(num_train_timesteps=1000, variance_type="fixed_large")
    final = run_both(ours, theirs, {"num_inference_steps": 1000}, learned=False)
    assert torch.isfinite(final).all()


def test_diffusers_fixed_large_log_is_nan_and_ours_is_not():
    ours, theirs = make_pair(variance_type="fixed_large_log")
    x = torch.randn(1, 3, 4, 4)
    theirs_out = theirs.step(fake_model(x, 50, False), 50, x, generator=torch.Generator().manual_seed(0))
    assert torch.isnan(theirs_out.prev_sample).all()
    ours_out = ours.step(fake_model(x, 50, False), 50, x, generator=torch.Generator().manual_seed(0))
    large = make_pair(variance_type="fixed_large")[0]
    same = large.step(fake_model(x, 50, False), 50, x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ours_out.prev_sample, same.prev_sample, rtol=0, atol=0)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_add_noise_and_velocity_agree(schedule):
    ours, theirs = make_pair(**SCHEDULES[schedule])
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(8, 3, 4, 4, generator=g) * 2 - 1, torch.randn(8, 3, 4, 4, generator=g)
    t = torch.tensor([0, 1, 5, 20, 50, 90, 98, 99])
    torch.testing.assert_close(ours.add_noise(x0, noise, t), theirs.add_noise(x0, noise, t), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.get_velocity(x0, noise, t), theirs.get_velocity(x0, noise, t), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.add_noise(x0, noise, 20), theirs.add_noise(x0, noise, torch.tensor(20)))


def test_add_noise_keeps_noise_in_bfloat16_at_small_t():
    """diffusers rounds alphabar to bf16 with the inputs, so at t = 0 the noise vanishes; ours computes in float32."""
    ours, theirs = make_pair(num_train_timesteps=1000)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1, torch.randn(4, 3, 8, 8, generator=g)
    t = torch.zeros(4, dtype=torch.long)
    x0_bf, noise_bf = x0.bfloat16(), noise.bfloat16()
    assert torch.equal(theirs.add_noise(x0_bf, noise_bf, t), x0_bf), "the flaw this guards against"
    ours_bf = ours.add_noise(x0_bf, noise_bf, t)
    assert ours_bf.dtype == torch.bfloat16
    exact = (1 - 1e-4) ** 0.5 * x0_bf.double() + 1e-4**0.5 * noise_bf.double()
    # Rounding to bf16 is the only error left: half a unit in the last place, 2^-9 relative.
    assert ((ours_bf.double() - exact).abs() <= exact.abs() * 2**-8).all()
    assert (ours_bf != x0_bf).float().mean() > 0.5


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_predict_x0_inverts_the_forward_process_per_sample(prediction_type):
    """Handed the exact target (eps, x_0 or v), predict_x0 recovers x_0 for per-sample timesteps."""
    scheduler = PaperDDPMScheduler(prediction_type=prediction_type)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(5, 3, 4, 4, generator=g) * 2 - 1, torch.randn(5, 3, 4, 4, generator=g)
    t = torch.tensor([0, 10, 400, 900, 999])
    x_t = scheduler.add_noise(x0, noise, t)
    target = {"epsilon": noise, "sample": x0, "v_prediction": scheduler.get_velocity(x0, noise, t)}[prediction_type]
    # x_t = sqrt(ab) x0 + sqrt(1 - ab) eps is rounded to float32; solving for x0 scales that by up to 1/sqrt(ab).
    torch.testing.assert_close(scheduler.predict_x0(target, t, x_t), x0, rtol=0, atol=2e-3)
    torch.testing.assert_close(scheduler.predict_epsilon(x0, t, x_t), noise, rtol=0, atol=1e-4)


def test_a_diffusers_style_loop_with_tensor_timesteps():
    """The usual loop `for t in scheduler.timesteps` passes 0-d tensors to the model and to step."""
    ours, theirs = make_pair()
    for scheduler in (ours, theirs):
        scheduler.set_timesteps(10)
    x_ours = x_theirs = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    g_ours, g_theirs = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for t in ours.timesteps:
        x_ours = ours.step(fake_model(x_ours, int(t), False), t, x_ours, generator=g_ours).prev_sample
        x_theirs = theirs.step(fake_model(x_theirs, int(t), False), t, x_theirs, generator=g_theirs).prev_sample
    torch.testing.assert_close(x_ours, x_theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_step_keeps_the_sample_dtype_and_computes_in_float32_or_better(dtype):
    scheduler = PaperDDPMScheduler(num_train_timesteps=T)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    out = scheduler.step(fake_model(x, 50, False).to(dtype), 50, x.to(dtype), generator=torch.Generator())
    assert out.prev_sample.dtype == dtype
    assert out.pred_original_sample.dtype == torch.promote_types(dtype, torch.float32)
    exact = scheduler.step(fake_model(x, 50, False).to(dtype).double(), 50, x.to(dtype).double())
    torch.testing.assert_close(out.pred_original_sample.double(), exact.pred_original_sample, rtol=0, atol=1e-5)


def test_posterior_with_per_sample_timesteps_matches_scalar_calls():
    scheduler = PaperDDPMScheduler(num_train_timesteps=T, variance_type="learned_range")
    scheduler.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    x0, x_t = torch.rand(3, 3, 4, 4, generator=g) * 2 - 1, torch.randn(3, 3, 4, 4, generator=g)
    out = torch.randn(3, 6, 4, 4, generator=g)
    steps = [99, 49, 9]
    mean, var, log_var = scheduler.q_posterior(x0, x_t, torch.tensor(steps))
    p = scheduler.p_mean_variance(out, torch.tensor(steps), x_t)
    for i, t in enumerate(steps):
        m, v, lv = scheduler.q_posterior(x0[i : i + 1], x_t[i : i + 1], t)
        torch.testing.assert_close(mean[i : i + 1], m)
        assert float(var[i]) == pytest.approx(v) and float(log_var[i]) == pytest.approx(lv)
        pi = scheduler.p_mean_variance(out[i : i + 1], t, x_t[i : i + 1])
        torch.testing.assert_close(p.mean[i : i + 1], pi.mean)
        torch.testing.assert_close(p.log_variance[i : i + 1], pi.log_variance)


def test_last_step_is_the_posterior_mean_as_diffusers_computes_it():
    """At a chain's last step diffusers' fixed_small adds noise of std 1e-10 only: its output is the mean that
    every variance type must return there (ours adds no noise; diffusers' fixed_large would)."""
    for variance_type in ("fixed_large", "learned_range"):
        ours = PaperDDPMScheduler(num_train_timesteps=T, variance_type=variance_type)
        reference = DDPMScheduler(num_train_timesteps=T, variance_type="fixed_small", timestep_spacing="trailing")
        for scheduler in (ours, reference):
            scheduler.set_timesteps(10)
        last = ours.timesteps[-1].item()
        assert last == 9
        x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
        learned = variance_type == "learned_range"
        got = ours.step(fake_model(x, last, learned), last, x, generator=torch.Generator()).prev_sample
        want = reference.step(fake_model(x, last, False), last, x, generator=torch.Generator()).prev_sample
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chain", [{"num_inference_steps": 7}, {"timesteps": [15, 9, 4, 0]}])
def test_previous_timestep_is_diffusers(chain):
    """A tensor in, a tensor out, equal to diffusers'; an int in, an int out; -1 after the last step."""
    ours, theirs = make_pair(num_train_timesteps=20, timestep_spacing="trailing")
    ours.set_timesteps(**chain)
    theirs.set_timesteps(**chain)
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()
    for t in theirs.timesteps:
        expected = theirs.previous_timestep(t)
        got = ours.previous_timestep(t)
        assert isinstance(got, torch.Tensor) and got.ndim == 0 and int(got) == int(expected)
        assert ours.previous_timestep(int(t)) == int(expected) and isinstance(ours.previous_timestep(int(t)), int)
    assert int(ours.previous_timestep(ours.timesteps[-1])) == -1
    assert ours.index_for_timestep(ours.timesteps[0]) == 0 and ours.is_last_step(ours.timesteps[-1])
