"""DDPMPipeline with diffusers' schedulers (DDIM, DPM-Solver, Euler ancestral, PNDM) and ddpm_hf.core.samplers.

Every expected image comes from diffusers' loop written out here by hand (x_T times `init_noise_sigma`,
`scale_model_input` before the UNet, `step` with `eta` / `generator` where it takes them) or from stock
`diffusers.DDPMPipeline`, never from our pipeline itself.
"""

import functools
import json

import diffusers
import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    PNDMScheduler,
)

from ddpm_hf import DDPMPipeline, PaperDDPMScheduler, build_unet
from ddpm_hf.core import SAMPLERS, make_scheduler
from ddpm_hf.core.samplers import SCHEDULER_CLASSES, returns_pred_original_sample, scheduler_name

T = 50
STEPS = 10
SHAPE = (2, 3, 8, 8)


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def ddim():
    return DDIMScheduler(num_train_timesteps=T, timestep_spacing="trailing")


def dpm_solver():
    return DPMSolverMultistepScheduler(num_train_timesteps=T, timestep_spacing="trailing")


def euler_ancestral():
    return EulerAncestralDiscreteScheduler(num_train_timesteps=T, timestep_spacing="trailing")


def pndm():
    return PNDMScheduler(num_train_timesteps=T, timestep_spacing="trailing", skip_prk_steps=True)


def pipeline(unet, scheduler):
    pipe = DDPMPipeline(unet, scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def calls_of(unet):
    """The UNet's calls from now on (their timesteps), to show what ran."""
    calls = []
    unet.register_forward_pre_hook(lambda module, args: calls.append(float(args[1])))
    return calls


@torch.no_grad()
def hand_loop(unet, scheduler, step_kwargs, generator, steps=STEPS, latents=None, channels=None, record=()):
    """diffusers' documented sampling loop, written out: `step_kwargs(generator)` are the extra arguments of
    `scheduler.step` (eta, generator) for that scheduler; `channels` keeps the first channels of the UNet's output;
    returns the images in [0, 1] and, per timestep in `record`, (x_t as the UNet saw it, the step output)."""
    if isinstance(steps, int):
        scheduler.set_timesteps(steps)
    else:
        scheduler.set_timesteps(timesteps=steps)
    x = torch.randn(SHAPE, generator=generator) if latents is None else latents.clone()
    x = x * scheduler.init_noise_sigma
    seen = {}
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(x, t)
        out = unet(model_input, t).sample
        if channels is not None:
            out = out[:, :channels]
        step = scheduler.step(out, t, x, **step_kwargs(generator))
        if float(t) in record and float(t) not in seen:
            seen[float(t)] = (model_input, step)
        x = step.prev_sample
    return (x / 2 + 0.5).clamp(0, 1), seen


# Each scheduler with the extra arguments its `step` takes, written out by hand.
CASES = {
    "ddim_eta0": (ddim, 0.0, lambda g: {"eta": 0.0, "generator": g}),
    "ddim_eta1": (ddim, 1.0, lambda g: {"eta": 1.0, "generator": g}),
    "dpm_solver": (dpm_solver, 0.0, lambda g: {"generator": g}),
    "euler_ancestral": (euler_ancestral, 0.0, lambda g: {"generator": g}),
    "pndm": (pndm, 0.0, lambda g: {}),  # PNDMScheduler.step takes no generator
}


@pytest.mark.parametrize("case", list(CASES))
def test_pipeline_is_the_diffusers_loop(tiny_unet, case):
    make, eta, step_kwargs = CASES[case]
    expected, _ = hand_loop(tiny_unet, make(), step_kwargs, seeded(3))
    pipe = pipeline(tiny_unet, make())
    images = pipe(batch_size=2, generator=seeded(3), num_inference_steps=STEPS, eta=eta, output_type="pt").images
    # The same float32 operations in the same order on the CPU: bit for bit.
    assert torch.equal(images, expected)
    # Each call resets the scheduler's state (PNDM's and DPM-Solver's past outputs): the same seed, the same images.
    again = pipe(batch_size=2, generator=seeded(3), num_inference_steps=STEPS, eta=eta, output_type="pt").images
    other = pipe(batch_size=2, generator=seeded(4), num_inference_steps=STEPS, eta=eta, output_type="pt").images
    assert torch.equal(again, images) and not torch.allclose(other, images)


def test_ddim_eta_changes_the_samples(tiny_unet):
    """With eta 0 only x_T is random: the same latents give the same images whatever the generator; eta 1 adds
    noise at every step."""
    pipe = pipeline(tiny_unet, ddim())
    latents = torch.randn(SHAPE, generator=seeded(9))

    def sample(seed, eta):
        return pipe(
            batch_size=2, generator=seeded(seed), latents=latents, num_inference_steps=4, output_type="pt", eta=eta
        ).images

    a, b, c, d = sample(1, 0.0), sample(2, 0.0), sample(1, 1.0), sample(2, 1.0)
    assert torch.equal(a, b)
    assert not torch.allclose(c, d) and not torch.allclose(a, c)


@pytest.mark.parametrize("make", [ddim, dpm_solver], ids=["ddim", "dpm_solver"])
def test_equals_stock_diffusers_ddpm_pipeline(tiny_unet, make):
    """Stock DDPMPipeline draws x_T with randn_tensor in the UNet's dtype on the CPU (float32 here, as ours) and
    passes the generator to `step`, which these schedulers take; DDIM gets eta 0 there, its default."""
    stock = diffusers.DDPMPipeline(tiny_unet, make())
    stock.set_progress_bar_config(disable=True)
    theirs = stock(batch_size=2, generator=seeded(7), num_inference_steps=STEPS, output_type="np").images
    ours = pipeline(tiny_unet, make())(batch_size=2, generator=seeded(7), num_inference_steps=STEPS, output_type="np")
    assert np.array_equal(ours.images, theirs)


def test_stock_diffusers_ddpm_pipeline_cannot_sample_with_pndm(tiny_unet):
    """Stock DDPMPipeline passes `generator=` to every `step`; PNDMScheduler.step takes none. Ours passes it only
    where `step` takes it (test_pipeline_is_the_diffusers_loop[pndm])."""
    stock = diffusers.DDPMPipeline(tiny_unet, pndm())
    stock.set_progress_bar_config(disable=True)
    try:
        stock(batch_size=1, generator=seeded(), num_inference_steps=3, output_type="np")
    except TypeError as error:
        assert "generator" in str(error)
    else:
        pytest.skip(f"stock diffusers {diffusers.__version__} DDPMPipeline now samples with PNDMScheduler")


def test_euler_ancestral_differs_from_stock_which_skips_scale_model_input(tiny_unet):
    """Stock DDPMPipeline never calls `scale_model_input`: the UNet sees Euler's state x_t / sqrt(alphabar_t)
    unscaled. Ours equals the documented loop (test_pipeline_is_the_diffusers_loop[euler_ancestral])."""
    stock = diffusers.DDPMPipeline(tiny_unet, euler_ancestral())
    stock.set_progress_bar_config(disable=True)
    theirs = stock(batch_size=2, generator=seeded(5), num_inference_steps=STEPS, output_type="pt").images
    expected, _ = hand_loop(tiny_unet, euler_ancestral(), lambda g: {"generator": g}, seeded(5))
    ours = pipeline(tiny_unet, euler_ancestral())(
        batch_size=2, generator=seeded(5), num_inference_steps=STEPS, output_type="pt"
    ).images
    assert torch.equal(ours, expected)
    assert (ours - theirs).abs().max() > 1e-3


# ---------------------------------------------------------------------------- saving and loading


def test_from_pretrained_with_a_ddim_scheduler(tiny_unet, tmp_path):
    DDPMPipeline(tiny_unet, PaperDDPMScheduler(num_train_timesteps=T)).save_pretrained(tmp_path)
    loaded = DDPMPipeline.from_pretrained(
        tmp_path, scheduler=DDIMScheduler.from_pretrained(tmp_path, subfolder="scheduler")
    )
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.scheduler) is DDIMScheduler and loaded.scheduler.config.num_train_timesteps == T
    got = loaded(batch_size=2, generator=seeded(1), num_inference_steps=STEPS, output_type="pt").images
    in_memory = DDIMScheduler.from_pretrained(tmp_path, subfolder="scheduler")
    expected, _ = hand_loop(tiny_unet, in_memory, lambda g: {"eta": 0.0, "generator": g}, seeded(1))
    assert torch.equal(got, expected)
    same = pipeline(tiny_unet, DDIMScheduler.from_pretrained(tmp_path, subfolder="scheduler"))
    assert torch.equal(same(batch_size=2, generator=seeded(1), num_inference_steps=STEPS, output_type="pt").images, got)


def test_a_pipeline_saved_with_ddim_reloads_with_ddim(tiny_unet, tmp_path):
    pipeline(tiny_unet, ddim()).save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
    assert json.loads((tmp_path / "scheduler" / "scheduler_config.json").read_text())["_class_name"] == "DDIMScheduler"
    loaded = DDPMPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.scheduler) is DDIMScheduler and loaded.scheduler.config.timestep_spacing == "trailing"
    got = loaded(batch_size=2, generator=seeded(2), num_inference_steps=STEPS, output_type="pt").images
    expected, _ = hand_loop(tiny_unet, ddim(), lambda g: {"eta": 0.0, "generator": g}, seeded(2))
    assert torch.equal(got, expected)
    assert type(diffusers.DDPMPipeline.from_pretrained(tmp_path).scheduler) is DDIMScheduler
    # Our scheduler is still saved under diffusers' DDPMScheduler name, and diffusers' is still converted.
    paper = pipeline(tiny_unet, DDPMScheduler(num_train_timesteps=T))
    assert type(paper.scheduler) is PaperDDPMScheduler
    paper.save_pretrained(tmp_path / "paper")
    index = json.loads((tmp_path / "paper" / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "DDPMScheduler"]


# ---------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("make", [dpm_solver, euler_ancestral, pndm, lambda: PaperDDPMScheduler(num_train_timesteps=T)])
def test_eta_needs_a_scheduler_that_takes_it(tiny_unet, make):
    scheduler = make()
    calls = calls_of(tiny_unet)
    with pytest.raises(ValueError, match=rf"`eta` 0.5 is DDIM's; {type(scheduler).__name__}\.step takes no `eta`"):
        pipeline(tiny_unet, scheduler)(num_inference_steps=3, eta=0.5)
    assert calls == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eta": -0.1}, r"`eta` must be a number in \[0, 1\], got -0.1"),
        ({"eta": 2}, r"`eta` must be a number in \[0, 1\], got 2"),
        ({"timesteps": [40, 20, 0]}, r"DDIMScheduler\.set_timesteps takes no custom `timesteps`"),
        ({"timesteps": [40, 20, 0], "num_inference_steps": 3}, "Pass `num_inference_steps` or `timesteps`, not both"),
        ({"num_inference_steps": T + 1}, rf"`num_inference_steps` must be an integer in 1\.\.{T}, got {T + 1}"),
        ({"num_inference_steps": 2.5}, r"`num_inference_steps` must be an integer in 1\.\.50, got 2.5"),
        (
            {"num_inference_steps": 5, "trajectory_timesteps": [48]},
            r"`trajectory_timesteps` \[48\] are not in the sampling chain of DDIM",
        ),
        ({"trajectory_kinds": ("eps",)}, r"`trajectory_kinds` must be one or both of \['x0', 'x_t'\]"),
        ({"latents": torch.zeros(1, 3, 4, 4)}, r"`latents` has shape \(1, 3, 4, 4\); expected \(1, 3, 8, 8\)"),
        ({"output_type": "latent"}, r"`output_type` must be one of"),
    ],
)
def test_bad_arguments_fail_before_sampling(tiny_unet, kwargs, match):
    calls = calls_of(tiny_unet)
    with pytest.raises(ValueError, match=match):
        pipeline(tiny_unet, ddim())(**kwargs)
    assert calls == []


def test_anything_but_a_scheduler_is_refused(tiny_unet):
    with pytest.raises(ValueError, match=r"`scheduler` must be a diffusers scheduler \(SchedulerMixin\), got dict"):
        DDPMPipeline(tiny_unet, {"num_train_timesteps": T})


def test_custom_timesteps_where_set_timesteps_takes_them(tiny_unet):
    timesteps = [45, 30, 12, 3]
    expected, _ = hand_loop(tiny_unet, dpm_solver(), lambda g: {"generator": g}, seeded(), steps=timesteps)
    calls = calls_of(tiny_unet)
    got = pipeline(tiny_unet, dpm_solver())(batch_size=2, generator=seeded(), timesteps=timesteps, output_type="pt")
    assert calls == timesteps and torch.equal(got.images, expected)


def test_the_default_chain_is_all_train_timesteps(tiny_unet):
    calls = calls_of(tiny_unet)
    pipeline(tiny_unet, ddim())(output_type="np")
    assert calls == list(range(T - 1, -1, -1))


# ---------------------------------------------------------------------------- learned variance


@pytest.fixture
def learned_unet():
    torch.manual_seed(0)
    return build_unet("tiny", out_channels=6).eval()


def test_a_learned_range_unet_gives_the_first_half_to_ddim(learned_unet):
    # A DDIM built from a learned_range DDPM config keeps `variance_type` in its config (diffusers copies keys the
    # class does not take); DDIM has no such parameter, so it still gets the eps half only.
    scheduler = DDIMScheduler.from_config(
        PaperDDPMScheduler(num_train_timesteps=T, variance_type="learned_range").config, timestep_spacing="trailing"
    )
    assert scheduler.config.get("variance_type") == "learned_range"
    expected, _ = hand_loop(learned_unet, ddim(), lambda g: {"eta": 0.0, "generator": g}, seeded(), channels=3)
    got = pipeline(learned_unet, scheduler)(
        batch_size=2, generator=seeded(), num_inference_steps=STEPS, output_type="pt"
    )
    assert torch.equal(got.images, expected)
    # Euler ancestral too (it would raise on 6 channels otherwise).
    expected, _ = hand_loop(learned_unet, euler_ancestral(), lambda g: {"generator": g}, seeded(), channels=3)
    got = pipeline(learned_unet, euler_ancestral())(
        batch_size=2, generator=seeded(), num_inference_steps=STEPS, output_type="pt"
    )
    assert torch.equal(got.images, expected)


class SpyDPMSolver(DPMSolverMultistepScheduler):
    """DPM-Solver recording the channels of each model output `step` receives."""

    @functools.wraps(DPMSolverMultistepScheduler.step)
    def step(self, model_output, *args, **kwargs):
        self.__dict__.setdefault("channels", []).append(model_output.shape[1])
        return super().step(model_output, *args, **kwargs)


def test_a_scheduler_with_learned_variance_gets_the_whole_output(learned_unet, tiny_unet):
    learned = SpyDPMSolver(num_train_timesteps=T, timestep_spacing="trailing", variance_type="learned_range")
    pipeline(learned_unet, learned)(batch_size=1, num_inference_steps=4, output_type="pt")
    assert learned.channels == [6] * 4
    plain = SpyDPMSolver(num_train_timesteps=T, timestep_spacing="trailing")
    pipeline(learned_unet, plain)(batch_size=1, num_inference_steps=4, output_type="pt")
    assert plain.channels == [3] * 4
    with pytest.raises(ValueError, match=r"`unet` outputs 3 channels for 3 input channels; SpyDPMSolver .* twice"):
        pipeline(tiny_unet, SpyDPMSolver(num_train_timesteps=T, variance_type="learned_range"))()
    torch.manual_seed(0)
    odd = build_unet("tiny", out_channels=5)
    with pytest.raises(ValueError, match=r"`unet` outputs 5 channels for 3 input channels; DDIMScheduler"):
        pipeline(odd, ddim())()


# ---------------------------------------------------------------------------- trajectories


def test_trajectory_with_ddim(tiny_unet):
    record = [49, 24, 4]  # trailing: 49, 44, .., 4
    expected, seen = hand_loop(tiny_unet, ddim(), lambda g: {"eta": 0.0, "generator": g}, seeded(), record=record)
    out = pipeline(tiny_unet, ddim())(
        batch_size=2, generator=seeded(), num_inference_steps=STEPS, output_type="pt", trajectory_timesteps=[4, 49, 24]
    )
    assert out.trajectory_timesteps == record and torch.equal(out.images, expected)
    for k, t in enumerate(record):
        model_input, step = seen[t]
        assert torch.equal(out.noisy_samples[k], (model_input / 2 + 0.5).clamp(0, 1))
        assert torch.equal(out.pred_original_samples[k], (step.pred_original_sample / 2 + 0.5).clamp(0, 1))
    # DDIM's last step (to alphabar = 1) lands on its x_0 prediction.
    assert torch.equal(out.pred_original_samples[-1], out.images)
    states = pipeline(tiny_unet, ddim())(
        batch_size=2, generator=seeded(), num_inference_steps=STEPS, trajectory_timesteps=[24], trajectory_kinds="x_t"
    )
    assert states.pred_original_samples is None and len(states.noisy_samples) == 1


def test_trajectory_of_euler_records_x_t_as_the_unet_sees_it(tiny_unet):
    record = [49, 24]
    _, seen = hand_loop(tiny_unet, euler_ancestral(), lambda g: {"generator": g}, seeded(), record=record)
    out = pipeline(tiny_unet, euler_ancestral())(
        batch_size=2, generator=seeded(), num_inference_steps=STEPS, output_type="pt", trajectory_timesteps=record
    )
    for k, t in enumerate(record):
        model_input, step = seen[t]  # model_input = x / sqrt(sigma^2 + 1): x_t of the DDPM chain
        assert torch.equal(out.noisy_samples[k], (model_input / 2 + 0.5).clamp(0, 1))
        assert torch.equal(out.pred_original_samples[k], (step.pred_original_sample / 2 + 0.5).clamp(0, 1))


@pytest.mark.parametrize("make", [dpm_solver, pndm], ids=["dpm_solver", "pndm"])
def test_trajectory_of_x0_needs_a_scheduler_that_returns_it(tiny_unet, make):
    calls = calls_of(tiny_unet)
    name = type(make()).__name__
    with pytest.raises(ValueError, match=rf"{name}\.step returns no x_0 prediction \(`pred_original_sample`\)"):
        pipeline(tiny_unet, make())(num_inference_steps=STEPS, trajectory_timesteps=[24])
    assert calls == []
    # The states x_t alone need nothing of the scheduler (PNDM visits its second timestep twice: the first visit).
    record = [49, 44]
    kwargs = (lambda g: {"generator": g}) if make is dpm_solver else (lambda g: {})
    _, seen = hand_loop(tiny_unet, make(), kwargs, seeded(), record=record)
    out = pipeline(tiny_unet, make())(
        batch_size=2,
        generator=seeded(),
        num_inference_steps=STEPS,
        output_type="pt",
        trajectory_timesteps=record,
        trajectory_kinds=("x_t",),
    )
    assert out.trajectory_timesteps == record and out.pred_original_samples is None
    for k, t in enumerate(record):
        assert torch.equal(out.noisy_samples[k], (seen[t][0] / 2 + 0.5).clamp(0, 1))


# ---------------------------------------------------------------------------- options of the generic loop


def test_channels_last_and_latents_with_euler(tiny_unet):
    latents = torch.randn(SHAPE, generator=seeded(8))
    expected, _ = hand_loop(tiny_unet, euler_ancestral(), lambda g: {"generator": g}, seeded(1), latents=latents)
    pipe = pipeline(tiny_unet, euler_ancestral())
    got = pipe(batch_size=2, generator=seeded(1), latents=latents, num_inference_steps=STEPS, output_type="pt")
    assert torch.equal(got.images, expected)
    assert torch.equal(latents, torch.randn(SHAPE, generator=seeded(8))), "the caller's latents are left unchanged"
    layouts = []
    hook = tiny_unet.register_forward_pre_hook(
        lambda module, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    nhwc = pipe(
        batch_size=2,
        generator=seeded(1),
        latents=latents,
        num_inference_steps=STEPS,
        output_type="pt",
        channels_last=True,
    ).images
    hook.remove()
    assert layouts == [True] * STEPS
    # Channels-last convolutions round differently.
    torch.testing.assert_close(nhwc, expected, rtol=0, atol=1e-5)
    images, *_ = pipe(batch_size=2, generator=seeded(1), num_inference_steps=3, return_dict=False)
    assert len(images) == 2 and images[0].size == (8, 8) and images[0].mode == "RGB"


def test_autocast_runs_the_unet_in_low_precision_and_the_step_in_float32(tiny_unet):
    scheduler = ddim()
    seen = {"unet": set(), "step": set()}
    tiny_unet.register_forward_hook(
        lambda module, args, out: seen["unet"].add((torch.is_autocast_enabled("cpu"), out[0].dtype))
    )
    step = scheduler.step

    @functools.wraps(step)
    def watched(model_output, timestep, sample, **kwargs):
        seen["step"].add((torch.is_autocast_enabled("cpu"), model_output.dtype, sample.dtype))
        return step(model_output, timestep, sample, **kwargs)

    scheduler.step = watched
    expected, _ = hand_loop(tiny_unet, ddim(), lambda g: {"eta": 0.0, "generator": g}, seeded())
    seen["unet"].clear()
    got = pipeline(tiny_unet, scheduler)(
        batch_size=2, generator=seeded(), num_inference_steps=STEPS, output_type="pt", autocast_dtype=torch.bfloat16
    ).images
    assert seen["unet"] == {(True, torch.bfloat16)} and seen["step"] == {(False, torch.float32, torch.float32)}
    assert not torch.equal(got, expected)
    torch.testing.assert_close(got, expected, rtol=0, atol=0.05)


def test_compile_with_another_scheduler(tiny_unet, monkeypatch):
    compiled = []

    def fake_compile(module):
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    expected, _ = hand_loop(tiny_unet, pndm(), lambda g: {}, seeded(), steps=3)
    got = pipeline(tiny_unet, pndm())(
        batch_size=2, generator=seeded(), num_inference_steps=3, output_type="pt", compile=True
    )
    assert compiled == [tiny_unet] and torch.equal(got.images, expected)


# ---------------------------------------------------------------------------- named samplers


def test_make_scheduler_builds_every_sampler(tiny_unet):
    config = PaperDDPMScheduler(num_train_timesteps=T, beta_end=0.05, variance_type="fixed_large").config
    reference = PaperDDPMScheduler(num_train_timesteps=T, beta_end=0.05)
    expected_classes = {
        "ddpm": PaperDDPMScheduler,
        "ddim": DDIMScheduler,
        "dpm_solver": DPMSolverMultistepScheduler,
        "euler_ancestral": EulerAncestralDiscreteScheduler,
        "pndm": PNDMScheduler,
    }
    assert tuple(expected_classes) == SAMPLERS and expected_classes == SCHEDULER_CLASSES
    for name in SAMPLERS:
        scheduler = make_scheduler(name, config)
        assert type(scheduler) is expected_classes[name] and scheduler_name(scheduler) == name
        assert scheduler.config.timestep_spacing == "trailing" and scheduler.config.num_train_timesteps == T
        assert scheduler.config.beta_end == 0.05
        torch.testing.assert_close(scheduler.alphas_cumprod.double(), reference.alphas_cumprod, rtol=1e-5, atol=0)
        scheduler.set_timesteps(5)
        assert float(scheduler.timesteps[0]) == T - 1  # the first step is at pure noise
        images = pipeline(tiny_unet, scheduler)(
            batch_size=1, generator=seeded(), num_inference_steps=5, output_type="pt"
        )
        assert torch.isfinite(images.images).all()
    assert make_scheduler("ddpm", config).config.variance_type == "fixed_large"
    assert make_scheduler("ddpm", config, variance_type="fixed_small").config.variance_type == "fixed_small"
    assert make_scheduler("ddim", make_scheduler("ddpm", config)).config.set_alpha_to_one
    dpm = make_scheduler("dpm_solver", config)
    assert dpm.config.solver_order == 3 and dpm.config.algorithm_type == "dpmsolver++"
    # A fixed variance stays (DPM-Solver ignores it), so the config turns back into the model's own.
    assert dpm.config.variance_type == "fixed_large"
    assert make_scheduler("ddpm", dpm).config.variance_type == "fixed_large"
    assert make_scheduler("ddim", dpm).config.timestep_spacing == "trailing"
    # A learned variance is left to the pipeline (DPM-Solver's own slicing assumes 3 channels); back in ours, the
    # config says nothing of it and our default applies.
    learned = make_scheduler("dpm_solver", {**config, "variance_type": "learned_range"})
    assert learned.config.variance_type is None
    assert make_scheduler("ddpm", learned).config.variance_type == PaperDDPMScheduler().config.variance_type
    assert make_scheduler("pndm", config).config.skip_prk_steps
    assert make_scheduler("ddim", config, timestep_spacing="leading").config.timestep_spacing == "leading"
    assert [returns_pred_original_sample(make_scheduler(n, config)) for n in SAMPLERS] == [
        True,
        True,
        False,
        True,
        False,
    ]


def test_make_scheduler_spaces_trailing_even_where_the_config_says_the_spacing_was_a_default():
    """diffusers' `_use_default_values` makes another class take its own default for the keys listed (DDIM's
    default spacing is "leading"); the spacing is passed explicitly."""
    config = {**PaperDDPMScheduler(num_train_timesteps=T).config, "_use_default_values": ["timestep_spacing"]}
    assert DDIMScheduler.from_config(config).config.timestep_spacing == "leading"
    for name in SAMPLERS:
        assert make_scheduler(name, config).config.timestep_spacing == "trailing"


@pytest.mark.parametrize(
    ("name", "config", "overrides", "match"),
    [
        ("heun", {}, {}, r"Unknown sampler 'heun'; choose one of ddpm, ddim, dpm_solver, euler_ancestral, pndm"),
        ("ddim", {}, {"variance_type": "fixed_large"}, r"DDIMScheduler \(sampler 'ddim'\) takes no variance_type"),
        ("pndm", {"prediction_type": "sample"}, {}, r"PNDMScheduler .* cannot sample a model with prediction_type"),
        (
            "euler_ancestral",
            {"prediction_type": "sample"},
            {},
            r"EulerAncestralDiscreteScheduler .* cannot sample a model with prediction_type 'sample'",
        ),
        (
            "pndm",
            {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True},
            {},
            r"PNDMScheduler \(sampler 'pndm'\) cannot reproduce the noise schedule",
        ),
        (
            "ddim",
            {"beta_schedule": "sigmoid"},
            {},
            r"DDIMScheduler \(sampler 'ddim'\) cannot be built from this config",
        ),
    ],
)
def test_make_scheduler_refuses(name, config, overrides, match):
    with pytest.raises(ValueError, match=match):
        make_scheduler(name, PaperDDPMScheduler(num_train_timesteps=T, **config).config, **overrides)
