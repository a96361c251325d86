"""The pipeline's lean sampling loop and its options: no per-step synchronisation, the fast path equal to the
public `step`, in-place noise, channels-last, mixed precision and torch.compile; no timings."""

import collections
import math
import types

import diffusers
import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from ddpm_hf import DDPMPipeline, PaperDDPMScheduler, build_unet
from ddpm_hf.core.scheduling_ddpm_paper import NoiseBuffer, SamplingPlan

T = 20
CPU = torch.device("cpu")


def make_pipe(unet, **config):
    pipe = DDPMPipeline(unet, PaperDDPMScheduler(num_train_timesteps=T, **config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------- no synchronisation per step

# What makes the host wait for the device: reading a value (item, bool, int, float, index, tolist, numpy),
# nonzero (its size depends on the data), or a copy to the host.
SYNC_OPS = {"_local_scalar_dense", "nonzero", "is_nonzero", "equal", "_assert_async"}
SYNC_FUNCTIONS = {"item", "tolist", "numpy", "cpu", "nonzero", "__bool__", "__int__", "__float__", "__index__"}


class SyncWatch(TorchDispatchMode):
    """Counts the calls that synchronise, at the dispatcher (C++ callers too) and at the Python API, while `armed`."""

    def __init__(self):
        super().__init__()
        self.armed = False
        self.seen = collections.Counter()
        watch = self

        class Functions(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                if watch.armed and getattr(func, "__name__", "") in SYNC_FUNCTIONS:
                    watch.seen[func.__name__] += 1
                return func(*args, **(kwargs or {}))

        self.functions = Functions()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.armed and func.overloadpacket.__name__ in SYNC_OPS:
            self.seen[f"aten.{func.overloadpacket.__name__}"] += 1
        return func(*args, **(kwargs or {}))

    def sampling_loop(self, pipe, **kwargs):
        """Run `pipe` and count from its first UNet call (set-up excluded) to its return."""
        arm = pipe.unet.register_forward_pre_hook(lambda module, args: setattr(self, "armed", True))
        try:
            with self.functions, self:
                pipe(**kwargs)
        finally:
            arm.remove()
            self.armed = False
        return dict(self.seen)


@pytest.mark.parametrize(
    "variance_type,options",
    [("fixed_small", {}), ("fixed_large", {"channels_last": True, "autocast_dtype": torch.bfloat16})],
)
def test_sampling_loop_never_synchronises(tiny_unet, variance_type, options):
    pipe = make_pipe(tiny_unet, variance_type=variance_type)
    kwargs = {
        "batch_size": 2,
        "num_inference_steps": 6,
        "output_type": "pt",
        "trajectory_timesteps": [19, 2],
        **options,
    }
    assert SyncWatch().sampling_loop(pipe, generator=seeded(), **kwargs) == {}
    assert SyncWatch().sampling_loop(pipe, generator=[seeded(1), seeded(2)], **kwargs) == {}


def test_the_sync_watch_sees_diffusers_per_step_lookups(tiny_unet):
    """The same watch on stock diffusers: its scheduler finds the previous timestep with `nonzero` every step."""
    stock = diffusers.DDPMPipeline(unet=tiny_unet, scheduler=diffusers.DDPMScheduler(num_train_timesteps=T))
    stock.set_progress_bar_config(disable=True)
    seen = SyncWatch().sampling_loop(stock, batch_size=2, num_inference_steps=6, output_type="pt")
    assert seen["aten.nonzero"] >= 5 and seen["aten._local_scalar_dense"] >= 5


# ---------------------------------------------------------------------------- Algorithm 2, once


def fake_model(x, t, learned):
    """A deterministic stand-in for a network; a second half in [-1, 1] for learned_range."""
    out = 0.9 * torch.tanh(0.7 * x + 0.01 * t)
    return torch.cat([out, torch.sin(x + t)], dim=1) if learned else out


def algorithm_2(scheduler, model_output, t, x, generator):
    """Algorithm 2 written out from the scheduler's per-timestep tables (`p_mean_variance`, Python-float
    coefficients, `randn_tensor` noise), independently of `SamplingPlan`: what `step` computed before it ran
    through the plan."""
    p = scheduler.p_mean_variance(model_output, t, x)
    prev = p.mean
    if t != scheduler.timesteps[-1]:
        noise = randn_tensor(x.shape, generator=generator, dtype=p.mean.dtype)
        log_variance = p.log_variance
        std = (0.5 * log_variance).exp() if isinstance(log_variance, torch.Tensor) else math.exp(0.5 * log_variance)
        prev = prev + std * noise
    return prev.to(x.dtype), p.pred_original_sample


@pytest.mark.parametrize("chain", [{"num_inference_steps": T}, {"num_inference_steps": 6}, {"timesteps": [17, 9, 4]}])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large_log", "learned_range"])
@pytest.mark.parametrize("clipping", ["clip", "threshold", "none"])
def test_step_and_the_plan_equal_algorithm_2_bit_for_bit(chain, prediction_type, variance_type, clipping):
    scheduler = PaperDDPMScheduler(
        num_train_timesteps=T,
        prediction_type=prediction_type,
        variance_type=variance_type,
        clip_sample=clipping == "clip",
        thresholding=clipping == "threshold",
    )
    scheduler.set_timesteps(**chain)
    plan = scheduler.sampling_plan(CPU, torch.float32)
    assert plan.timesteps == scheduler.timesteps.tolist()
    learned = variance_type == "learned_range"
    x = torch.randn(3, 2, 4, 4, generator=seeded(0))
    reference_generator, step_generator = seeded(1), seeded(1)
    noise = NoiseBuffer(x.shape, seeded(1), CPU, torch.float32)
    for k, t in enumerate(plan.timesteps):
        assert int(plan.model_timesteps[k]) == t and scheduler.index_for_timestep(t) == k
        # The model output in bfloat16 too: every path computes in float32 from it.
        out = fake_model(x, t, learned).to(torch.bfloat16 if k % 2 else torch.float32)
        expected, expected_x0 = algorithm_2(scheduler, out, t, x, reference_generator)
        stepped = scheduler.step(out, t, x, generator=step_generator)
        x_fast, x0_fast = plan.step(k, out, x, noise)
        for got, got_x0 in ((stepped.prev_sample, stepped.pred_original_sample), (x_fast, x0_fast)):
            assert torch.equal(got, expected) and got.dtype == torch.float32
            assert torch.equal(got_x0, expected_x0)
        x = expected


def test_sampling_plan_in_float64():
    scheduler = PaperDDPMScheduler(num_train_timesteps=T, variance_type="fixed_large")
    scheduler.set_timesteps(T)
    plan = scheduler.sampling_plan(CPU, torch.float64)
    x = torch.randn(2, 1, 3, 3, generator=seeded(0), dtype=torch.float64)
    generator, noise = seeded(1), NoiseBuffer(x.shape, seeded(1), CPU, torch.float64)
    for k, t in enumerate(plan.timesteps):
        out = fake_model(x, t, learned=False)
        reference, _ = algorithm_2(scheduler, out, t, x, generator)
        fast, _ = plan.step(k, out, x, noise)
        assert torch.equal(fast, reference) and fast.dtype == torch.float64
        x = reference


def test_sampling_plan_is_built_once_per_set_timesteps():
    scheduler = PaperDDPMScheduler(num_train_timesteps=T)
    scheduler.set_timesteps(5)
    plan = scheduler.sampling_plan(CPU)
    assert scheduler.sampling_plan("cpu", torch.float32) is plan
    scheduler.set_timesteps(5)
    assert scheduler.sampling_plan(CPU) is not plan
    with pytest.raises(ValueError, match=r"`dtype` must be torch.float32 or torch.float64, got torch.bfloat16"):
        scheduler.sampling_plan(CPU, torch.bfloat16)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_pipeline_equals_a_loop_of_the_public_step(tiny_unet, variance_type):
    pipe = make_pipe(tiny_unet, variance_type=variance_type)
    for steps, generator in ((T, seeded(3)), (4, [seeded(4), seeded(5)])):
        got = pipe(batch_size=2, generator=generator, num_inference_steps=steps, output_type="pt").images
        generator = seeded(3) if steps == T else [seeded(4), seeded(5)]
        scheduler = PaperDDPMScheduler.from_config(pipe.scheduler.config)
        scheduler.set_timesteps(steps)
        x = randn_tensor((2, 3, 8, 8), generator=generator, dtype=torch.float32)
        with torch.no_grad():
            for t in scheduler.timesteps:
                x = scheduler.step(tiny_unet(x, t).sample, int(t), x, generator=generator).prev_sample
        assert torch.equal(got, (x / 2 + 0.5).clamp(0, 1))


def test_the_callers_latents_are_left_unchanged(tiny_unet):
    """x_T given on the device in float32 is x_t itself at the first step: the update must not write into it."""
    latents = torch.randn(2, 3, 8, 8, generator=seeded(0))
    kept = latents.clone()
    make_pipe(tiny_unet)(batch_size=2, latents=latents, generator=seeded(1), num_inference_steps=3, output_type="pt")
    assert torch.equal(latents, kept)


@pytest.mark.parametrize("generator", ["one", "list", "global"])
def test_noise_buffer_draws_randn_tensor_numbers_in_place(generator):
    shape = (3, 2, 4, 4)

    def make():
        if generator == "global":
            torch.manual_seed(7)
            return None
        return seeded(7) if generator == "one" else [seeded(7), seeded(8), seeded(9)]

    buffer = NoiseBuffer(shape, make(), CPU, torch.float32)
    drawn = [buffer.draw().clone() for _ in range(3)]
    assert buffer.draw() is buffer.noise and buffer.noise.data_ptr() == buffer.draw().data_ptr()
    reference = make()
    for z in drawn:
        assert torch.equal(z, randn_tensor(shape, generator=reference, dtype=torch.float32))


def test_noise_buffer_checks_its_generators():
    with pytest.raises(ValueError, match="a list of 2 generators; expected one per sample"):
        NoiseBuffer((3, 1, 2, 2), [seeded(), seeded()], CPU, torch.float32)
    on_gpu = types.SimpleNamespace(device=torch.device("cuda"))  # as a CUDA generator, on a CPU-only machine
    with pytest.raises(ValueError, match="Cannot draw cpu noise from a generator on cuda"):
        NoiseBuffer((1, 1, 2, 2), on_gpu, CPU, torch.float32)


# ---------------------------------------------------------------------------- options


def test_channels_last_gives_the_same_images(tiny_unet):
    pipe = make_pipe(tiny_unet)
    expected = pipe(batch_size=2, generator=seeded(2), output_type="pt").images
    layouts = []
    hook = tiny_unet.register_forward_pre_hook(
        lambda module, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    got = pipe(batch_size=2, generator=seeded(2), output_type="pt", channels_last=True).images
    hook.remove()
    assert layouts == [True] * T
    assert tiny_unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert got.is_contiguous()
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_runs_the_unet_in_low_precision_and_the_update_in_float32(tiny_unet, dtype, monkeypatch):
    pipe = make_pipe(tiny_unet)
    expected = pipe(batch_size=2, generator=seeded(1), output_type="pt").images
    seen = {"unet": set(), "step": set()}
    hook = tiny_unet.register_forward_hook(
        lambda module, args, out: seen["unet"].add(
            (args[0].dtype, torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), out[0].dtype)
        )
    )
    plan_step = SamplingPlan.step

    def watched_step(plan, k, model_output, sample, noise):
        prev_sample, x0 = plan_step(plan, k, model_output, sample, noise)
        seen["step"].add(
            (sample.dtype, torch.is_autocast_enabled("cpu"), prev_sample.dtype, x0.dtype, noise.noise.dtype)
        )
        return prev_sample, x0

    monkeypatch.setattr(SamplingPlan, "step", watched_step)
    got = pipe(batch_size=2, generator=seeded(1), output_type="pt", autocast_dtype=dtype).images
    hook.remove()
    # The UNet gets float32 x_t and runs under autocast (its output is low precision) ...
    assert seen["unet"] == {(torch.float32, True, dtype, dtype)}
    # ... while the update of x_t, its noise and the x_0 prediction are float32 and outside autocast.
    assert seen["step"] == {(torch.float32, False, torch.float32, torch.float32, torch.float32)}
    assert not torch.is_autocast_enabled("cpu")
    assert not torch.equal(got, expected)
    torch.testing.assert_close(got, expected, rtol=0, atol=0.05)


def test_compile_compiles_the_unet_once_and_keeps_it(tiny_unet, monkeypatch):
    compiled = []

    def fake_compile(module):
        calls = []

        def run(*args, **kwargs):
            calls.append(args[1])
            return module(*args, **kwargs)

        compiled.append((module, calls))
        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    pipe = make_pipe(tiny_unet)
    expected = pipe(batch_size=1, generator=seeded(), num_inference_steps=3, output_type="pt").images
    assert compiled == []
    for _ in range(2):
        got = pipe(batch_size=1, generator=seeded(), num_inference_steps=3, output_type="pt", compile=True).images
        assert torch.equal(got, expected)
    assert len(compiled) == 1 and compiled[0][0] is tiny_unet
    assert [int(t) for t in compiled[0][1]] == [19, 12, 6] * 2
    pipe.unet = build_unet("tiny").eval()
    pipe(batch_size=1, num_inference_steps=2, output_type="pt", compile=True)
    assert len(compiled) == 2 and compiled[1][0] is pipe.unet


class NoOpAutocast:
    """torch.autocast as on a device without the requested dtype: it warns and stays off."""

    def __init__(self, device_type, dtype=None, enabled=True):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"channels_last": "yes"}, r"`channels_last` must be True or False, got 'yes'"),
        ({"compile": 1}, r"`compile` must be True or False, got 1"),
        ({"autocast_dtype": torch.float32}, r"`autocast_dtype` must be None, torch.bfloat16 or torch.float16, got"),
        ({"autocast_dtype": "bf16"}, r"`autocast_dtype` must be None, torch.bfloat16 or torch.float16, got 'bf16'"),
        ({"autocast_dtype": torch.float16, "no_autocast": True}, r"not supported by torch.autocast on cpu .*bfloat16"),
    ],
)
def test_bad_options_fail_before_sampling(tiny_unet, monkeypatch, kwargs, match):
    if kwargs.pop("no_autocast", False):
        monkeypatch.setattr(torch, "autocast", NoOpAutocast)
    calls = []
    tiny_unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    with pytest.raises(ValueError, match=match):
        make_pipe(tiny_unet)(**kwargs)
    assert calls == []


def test_a_unet_without_the_variance_channels_fails_before_sampling(tiny_unet):
    with pytest.raises(ValueError, match=r"`unet` outputs 3 channels; .*'learned_range' needs 6 for 3 input channels"):
        make_pipe(tiny_unet, variance_type="learned_range")()
    torch.manual_seed(0)
    learned = make_pipe(build_unet("tiny", out_channels=6), variance_type="learned_range")
    assert learned(batch_size=1, num_inference_steps=3, output_type="pt").images.shape == (1, 3, 8, 8)
