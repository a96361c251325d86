"""Unconditional image generation with the reverse process of Ho et al. (2020), Algorithm 2, or with any
diffusers scheduler (DDIM, DPM-Solver, Euler ancestral, PNDM, ...) through diffusers' sampling loop."""

from __future__ import annotations

import contextlib
import inspect
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler, DiffusionPipeline, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

from .images import to_unit_range
from .paper_sampling import KINDS, Images, PaperDemonstrationsMixin
from .samplers import returns_pred_original_sample
from .scheduling_ddpm_paper import NoiseBuffer, PaperDDPMScheduler, check_generators

OUTPUT_TYPES = ("pil", "np", "pt")
AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)
LEARNED_VARIANCE_TYPES = ("learned", "learned_range")
# One recorded step: (timestep, the x_0 prediction or None, x_t).
TrajectoryStep = tuple[int | float, torch.Tensor | None, torch.Tensor]


@dataclass
class DDPMPipelineOutput(BaseOutput):
    """Output of `DDPMPipeline.__call__`.

    Args:
        images: the samples x_0 as a list of PIL images, a `(batch, height, width, channels)` float array
            in [0, 1], or a `(batch, channels, height, width)` float tensor in [0, 1].
        trajectory_timesteps (`list[int]`, *optional*): the timesteps t at which the trajectory was recorded,
            in sampling order (descending).
        pred_original_samples (`list`, *optional*): for each of them, the model's x_0 prediction at x_t
            (the paper's progressive generation, Fig. 6), in the format of `images`; None unless `"x0"` was
            among the `trajectory_kinds`.
        noisy_samples (`list`, *optional*): for each of them, x_t itself as the UNet sees it, in the format of
            `images`; None unless `"x_t"` was among the `trajectory_kinds`.
    """

    images: Images
    trajectory_timesteps: list[int] | None = None
    pred_original_samples: list[Images] | None = None
    noisy_samples: list[Images] | None = None


class DDPMPipeline(DiffusionPipeline, PaperDemonstrationsMixin):
    """Sampling from a DDPM: x_T ~ N(0, I), then `scheduler.step` from t = T down to the chain's last step.

    Components:
        unet (`UNet2DModel`): the denoising network eps_theta(x_t, t) (or x_0 / v, per the scheduler).
        scheduler (`SchedulerMixin`): `PaperDDPMScheduler` (the paper's Algorithm 2, sampled by a lean loop);
            diffusers' `DDPMScheduler`, given to the constructor or `from_pretrained`, is converted to it, so folders
            and Hub repos made by diffusers load as they are (one assigned later to `pipe.scheduler` stays diffusers'
            and samples through its loop). Any other diffusers scheduler (`DDIMScheduler`,
            `DPMSolverMultistepScheduler`, `EulerAncestralDiscreteScheduler`, `PNDMScheduler`, ...) samples
            through diffusers' documented loop (see `__call__`); `ddpm_hf.core.samplers.make_scheduler` builds
            them from the model's config.

    `save_pretrained` writes a folder that stock `diffusers.DDPMPipeline.from_pretrained` loads: with our
    scheduler it declares diffusers' `DDPMScheduler`; any other scheduler is saved as itself. Load with another
    scheduler by passing it: `DDPMPipeline.from_pretrained(folder, scheduler=DDIMScheduler.from_pretrained(folder,
    subfolder="scheduler"))`.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: UNet2DModel, scheduler: SchedulerMixin):
        super().__init__()
        if isinstance(scheduler, DDPMScheduler):
            scheduler = PaperDDPMScheduler.from_config(scheduler.config)
        _check_scheduler(scheduler)
        self.register_modules(unet=unet, scheduler=scheduler)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int | None = None,
        timesteps: list[int] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        trajectory_timesteps: Sequence[int] | None = None,
        channels_last: bool = False,
        compile: bool = False,
        autocast_dtype: torch.dtype | None = None,
        eta: float = 0.0,
        trajectory_kinds: str | Sequence[str] = KINDS,
    ) -> DDPMPipelineOutput | tuple:
        """Generate images.

        With `PaperDDPMScheduler`, the loop adds nothing per step to the UNet call but the update of Algorithm 2:
        the scheduler's coefficients are looked up once (`PaperDDPMScheduler.sampling_plan`), the noise is drawn
        in place, and nothing waits for the device (but see `generator`).

        With any other scheduler, diffusers' documented loop: `scheduler.set_timesteps`, x_T times
        `scheduler.init_noise_sigma`, then per timestep `scheduler.scale_model_input(x_t, t)` into the UNet and
        `scheduler.step(model_output, t, x_t, eta=eta, generator=generator)`, passing `eta` and `generator` only to
        a `step` that takes them. (Stock `diffusers.DDPMPipeline` skips `scale_model_input`, which Euler-type
        schedulers need, and passes `generator` to every `step`, which PNDM's refuses.) A UNet with twice the
        image channels (a `learned_range` model) gives such a scheduler the first half of its output, the
        eps / x_0 / v prediction, unless the scheduler's own config has a `variance_type` of `"learned"` or
        `"learned_range"`. The state x_t stays float32.

        Args:
            batch_size (`int`, defaults to 1): the number of images.
            generator (`torch.Generator` or a list of `batch_size` of them, *optional*): for x_T and every step's
                noise; a list makes each image reproducible on its own. CPU generators give the same images on
                every device, but on a GPU their noise is copied to it at every step (which waits for it); a
                generator on the UNet's device draws the noise in place there.
            num_inference_steps (`int`, *optional*): K steps of a respaced chain (Nichol & Dhariwal 2021) for
                `PaperDDPMScheduler`, the scheduler's K steps otherwise (e.g. 50 for DDIM, 20 for DPM-Solver);
                defaults to the scheduler's `num_train_timesteps` T (for ours, the paper's sampler), as stock
                `diffusers.DDPMPipeline` does.
            timesteps (`list[int]`, *optional*): explicit descending timesteps instead of `num_inference_steps`,
                for a scheduler whose `set_timesteps` takes them (ours, DPM-Solver; not DDIM, Euler, PNDM).
            latents (`torch.Tensor` of shape `(batch_size, channels, height, width)`, *optional*): x_T; drawn
                from `generator` when not given.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"` or `"pt"`.
            return_dict (`bool`, defaults to `True`): return a `DDPMPipelineOutput` rather than a tuple.
            trajectory_timesteps (`Sequence[int]` or `torch.Tensor`, *optional*): timesteps of the sampling chain
                at which to record x_t and the x_0 prediction (the first visit of each, for a scheduler that visits
                a timestep twice).
            channels_last (`bool`, defaults to `False`): run the UNet in the channels-last (NHWC) memory format:
                its weights are converted in place (same values; they stay converted) and x_t of shape
                `(batch_size, channels, height, width)` is kept channels-last. Images equal the default's up to
                the rounding of the convolution kernels.
            compile (`bool`, defaults to `False`): run the UNet through `torch.compile(unet)`, compiled at the
                first step and kept on the pipeline for later calls (torch recompiles when its guards fail, e.g.
                for a new batch size). Compiling takes a while, notably on a CPU.
            autocast_dtype (`torch.dtype`, *optional*): `torch.bfloat16` or `torch.float16`: the UNet runs under
                `torch.autocast` in that dtype, while x_t, the noise and the scheduler's update stay float32.
                A dtype `torch.autocast` does not support on the device raises a ValueError.
            eta (`float`, defaults to 0.0): DDIM's eta in [0, 1] (Song et al. 2021, Eq. 16, as diffusers'
                `DDIMPipeline` names it): 0 is deterministic DDIM, 1 has DDPM's posterior variance. Passed to a
                `scheduler.step` that takes an `eta`; a non-zero eta with any other scheduler raises a ValueError.
            trajectory_kinds (`str` or `Sequence[str]`, defaults to `("x0", "x_t")`): what to record at
                `trajectory_timesteps`: `"x0"`, the x_0 prediction (`pred_original_samples`; needs a scheduler whose
                `step` returns `pred_original_sample`, e.g. ours, DDIM, Euler ancestral, not DPM-Solver or PNDM),
                and/or `"x_t"`, the state (`noisy_samples`; any scheduler). The x_t recorded is the UNet's input,
                `scheduler.scale_model_input(x_t, t)`: for sigma-parameterised schedulers (Euler), whose state is
                x_t / sqrt(alphabar_t), that is x_t itself.

        Returns:
            `DDPMPipelineOutput`, or a tuple of its non-empty fields.

        Example:
            >>> from ddpm_hf import DDPMPipeline
            >>> pipe = DDPMPipeline.from_pretrained("google/ddpm-cifar10-32")
            >>> image = pipe(generator=torch.Generator().manual_seed(0)).images[0]
            >>> from diffusers import DDIMScheduler
            >>> pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
            >>> image = pipe(num_inference_steps=50, generator=torch.Generator().manual_seed(0)).images[0]
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {list(OUTPUT_TYPES)}, got {output_type!r}.")
        for name, flag in (("channels_last", channels_last), ("compile", compile)):
            if not isinstance(flag, bool):
                raise ValueError(f"`{name}` must be True or False, got {flag!r}.")
        check_generators(generator, batch_size)
        config = self.unet.config
        size = config.sample_size
        shape = (batch_size, config.in_channels, *((size, size) if isinstance(size, int) else size))
        if latents is not None and tuple(latents.shape) != shape:
            raise ValueError(f"`latents` has shape {tuple(latents.shape)}; expected {shape}.")
        scheduler = self.scheduler
        _check_scheduler(scheduler)
        step_parameters = inspect.signature(scheduler.step).parameters  # inspected once per call
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
            raise ValueError(f"`eta` must be a number in [0, 1], got {eta!r}.")
        if eta != 0 and "eta" not in step_parameters:
            raise ValueError(
                f"`eta` {eta} is DDIM's; {type(scheduler).__name__}.step takes no `eta` (pass eta=0.0 or use a "
                "scheduler that takes one, e.g. DDIMScheduler)."
            )
        kinds = (trajectory_kinds,) if isinstance(trajectory_kinds, str) else tuple(trajectory_kinds)
        if not kinds or not set(kinds) <= set(KINDS):
            raise ValueError(f"`trajectory_kinds` must be one or both of {list(KINDS)}, got {list(kinds)!r}.")
        record = set() if trajectory_timesteps is None else {_timestep_key(t) for t in trajectory_timesteps}
        if not isinstance(scheduler, PaperDDPMScheduler):
            return self._call_scheduler(
                shape=shape,
                generator=generator,
                num_inference_steps=num_inference_steps,
                timesteps=timesteps,
                latents=latents,
                output_type=output_type,
                return_dict=return_dict,
                record=record,
                kinds=kinds,
                channels_last=channels_last,
                compile=compile,
                autocast_dtype=autocast_dtype,
                eta=eta,
                step_parameters=step_parameters,
            )
        variance_type = self.scheduler.config.variance_type
        out_channels = config.in_channels * (2 if variance_type == "learned_range" else 1)
        if config.out_channels != out_channels:
            raise ValueError(
                f"`unet` outputs {config.out_channels} channels; the scheduler's variance_type {variance_type!r} "
                f"needs {out_channels} for {config.in_channels} input channels."
            )
        device = self._execution_device
        autocast = _autocast(device, autocast_dtype)
        if num_inference_steps is None and timesteps is None:
            num_inference_steps = self.scheduler.config.num_train_timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device, timesteps=timesteps)
        # The state x_t stays float32 whatever the UNet's dtype; the scheduler's arithmetic is float32.
        plan = self.scheduler.sampling_plan(device, torch.float32)
        if not record <= set(plan.timesteps):
            raise ValueError(
                f"`trajectory_timesteps` {sorted(record - set(plan.timesteps))} are not in the sampling chain."
            )

        sample = _initial_sample(shape, generator, latents, device, channels_last)
        noise = NoiseBuffer(shape, generator, device, torch.float32)
        denoise = self._denoiser(channels_last, compile, autocast)
        trajectory = []
        # Under autocast, an outer disabled autocast keeps the scheduler's update out of it and keeps autocast's
        # cache of the weights cast to `autocast_dtype` alive from step to step (the outermost exit clears it).
        outer = contextlib.nullcontext() if autocast is None else torch.autocast(device.type, enabled=False)
        with outer:
            for k in self.progress_bar(range(len(plan))):
                model_output = denoise(sample, plan.model_timesteps[k])
                prev_sample, pred_original_sample = plan.step(k, model_output, sample, noise)
                if plan.timesteps[k] in record:
                    trajectory.append((plan.timesteps[k], pred_original_sample, sample))
                sample = prev_sample

        self.maybe_free_model_hooks()
        return self._output(sample, trajectory, kinds, output_type, return_dict)

    def _call_scheduler(
        self,
        *,
        shape: tuple[int, ...],
        generator: torch.Generator | list[torch.Generator] | None,
        num_inference_steps: int | None,
        timesteps: Sequence[int] | None,
        latents: torch.Tensor | None,
        output_type: str,
        return_dict: bool,
        record: set[int | float],
        kinds: tuple[str, ...],
        channels_last: bool,
        compile: bool,
        autocast_dtype: torch.dtype | None,
        eta: float,
        step_parameters: Mapping[str, inspect.Parameter],
    ) -> DDPMPipelineOutput | tuple:
        """`__call__` with a scheduler other than ours: diffusers' loop, every argument checked before sampling."""
        scheduler, name = self.scheduler, type(self.scheduler).__name__
        keep_channels = self._model_output_channels(scheduler)
        needs_x0 = bool(record) and "x0" in kinds
        if needs_x0 and returns_pred_original_sample(scheduler) is False:
            raise ValueError(
                f"{name}.step returns no x_0 prediction (`pred_original_sample`), so `trajectory_timesteps` cannot "
                "record one: pass trajectory_kinds=('x_t',) to record the states x_t only, or use a scheduler that "
                "returns it (PaperDDPMScheduler, DDIMScheduler, EulerAncestralDiscreteScheduler)."
            )
        device = self._execution_device
        autocast = _autocast(device, autocast_dtype)
        T = scheduler.config.num_train_timesteps
        if timesteps is not None:
            if num_inference_steps is not None:
                raise ValueError("Pass `num_inference_steps` or `timesteps`, not both.")
            if "timesteps" not in inspect.signature(scheduler.set_timesteps).parameters:
                raise ValueError(
                    f"{name}.set_timesteps takes no custom `timesteps`; pass `num_inference_steps` instead."
                )
            scheduler.set_timesteps(timesteps=[int(t) for t in timesteps], device=device)
        else:
            if num_inference_steps is None:
                num_inference_steps = T
            integer = isinstance(num_inference_steps, int) and not isinstance(num_inference_steps, bool)
            if not integer or not 1 <= num_inference_steps <= T:
                raise ValueError(f"`num_inference_steps` must be an integer in 1..{T}, got {num_inference_steps!r}.")
            scheduler.set_timesteps(num_inference_steps, device=device)
        chain = [_timestep_key(t) for t in scheduler.timesteps.tolist()]  # read once: no synchronisation per step
        if not record <= set(chain):
            raise ValueError(
                f"`trajectory_timesteps` {sorted(record - set(chain))} are not in the sampling chain of {name}."
            )

        # After set_timesteps, which some schedulers' sigma depends on.
        sample = _initial_sample(shape, generator, latents, device, channels_last, scheduler.init_noise_sigma)
        step_kwargs: dict[str, Any] = {}
        if "eta" in step_parameters:
            step_kwargs["eta"] = eta
        if "generator" in step_parameters:
            step_kwargs["generator"] = generator
        denoise = self._denoiser(channels_last, compile, autocast)
        trajectory: list[TrajectoryStep] = []
        recorded: set[int | float] = set()
        # As in the paper's loop: the scheduler's update stays out of autocast.
        outer = contextlib.nullcontext() if autocast is None else torch.autocast(device.type, enabled=False)
        with outer:
            for k, t in enumerate(self.progress_bar(scheduler.timesteps)):
                model_input = scheduler.scale_model_input(sample, t)
                model_output = denoise(model_input, t)
                if keep_channels is not None:
                    model_output = model_output[:, :keep_channels]
                if model_output.dtype != sample.dtype:
                    model_output = model_output.to(sample.dtype)
                step = scheduler.step(model_output, t, sample, **step_kwargs)
                if chain[k] in record and chain[k] not in recorded:  # a timestep visited twice: the first visit
                    pred_original_sample = getattr(step, "pred_original_sample", None)
                    if needs_x0 and pred_original_sample is None:
                        raise ValueError(
                            f"{name}.step returned no x_0 prediction (`pred_original_sample`) at t = {chain[k]}; "
                            "pass trajectory_kinds=('x_t',) to record the states x_t only."
                        )
                    trajectory.append((chain[k], pred_original_sample, model_input))
                    recorded.add(chain[k])
                sample = step.prev_sample

        self.maybe_free_model_hooks()
        return self._output(sample, trajectory, kinds, output_type, return_dict)

    def _model_output_channels(self, scheduler: SchedulerMixin) -> int | None:
        """How many leading channels of the UNet's output `scheduler.step` gets: None for all of them, the image
        channels for a learned-variance UNet (twice the image channels) with a scheduler that has no variance
        input. Raises a ValueError for any other channel count."""
        config = self.unet.config
        channels, out_channels = config.in_channels, config.out_channels
        learned = _learns_variance(scheduler)
        if out_channels == 2 * channels and not learned:
            return channels  # the eps / x_0 / v prediction, as improved-diffusion's DDIM takes it
        if out_channels == (2 if learned else 1) * channels:
            return None
        needs = "twice its input channels" if learned else "its input channels or twice them (learned variance)"
        raise ValueError(
            f"`unet` outputs {out_channels} channels for {channels} input channels; {type(scheduler).__name__} "
            f"(variance_type {scheduler.config.get('variance_type')!r}) needs {needs}."
        )

    def _output(
        self,
        sample: torch.Tensor,
        trajectory: list[TrajectoryStep],
        kinds: tuple[str, ...],
        output_type: str,
        return_dict: bool,
    ) -> DDPMPipelineOutput | tuple:
        """The output of `__call__`: x_0 and the recorded trajectory, post-processed."""
        output = DDPMPipelineOutput(images=self._postprocess(sample, output_type))
        if trajectory:
            output.trajectory_timesteps = [t for t, _, _ in trajectory]
            if "x0" in kinds:
                output.pred_original_samples = [self._postprocess(x0, output_type) for _, x0, _ in trajectory]
            if "x_t" in kinds:
                output.noisy_samples = [self._postprocess(x_t, output_type) for _, _, x_t in trajectory]
        return output if return_dict else output.to_tuple()

    def _denoiser(
        self, channels_last: bool, compile: bool, autocast: torch.autocast | None
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The UNet as `(x_t, t) -> output`, in its dtype, memory format, compiled and under autocast as asked."""
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
        unet = self._compiled_unet() if compile else self.unet
        dtype = self.unet.dtype  # read once: diffusers walks every submodule to find it

        def denoise(sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            return unet(sample if sample.dtype == dtype else sample.to(dtype), timestep, return_dict=False)[0]

        if autocast is None:
            return denoise

        def denoise_in_autocast(sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            with autocast:
                return denoise(sample, timestep)

        return denoise_in_autocast

    def _compiled_unet(self) -> Callable[..., tuple[torch.Tensor, ...]]:
        """`torch.compile(self.unet)`, made once and kept on the pipeline (made again if `unet` is replaced)."""
        cached = getattr(self, "_compiled_unet_cache", None)
        if cached is None or cached[0] is not self.unet:
            cached = self._compiled_unet_cache = (self.unet, torch.compile(self.unet))
        return cached[1]

    def _postprocess(self, sample: torch.Tensor, output_type: str) -> Images:
        """[-1, 1] model space to [0, 1] images in the requested format."""
        images = to_unit_range(sample)
        if output_type == "pt":
            return images.contiguous()
        images = images.cpu().permute(0, 2, 3, 1).numpy()
        return images if output_type == "np" else self.numpy_to_pil(images)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> DDPMPipeline:
        """diffusers' `from_pretrained` (a folder or a Hub repo id, `revision=`, `token=`, the cache, offline
        mode); a repo or revision that the Hub does not have raises an OSError that names it."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except (OSError, ValueError) as err:
            reason = missing_on_hub(str(pretrained_model_name_or_path), kwargs.get("revision"), kwargs.get("token"))
            if reason is None:
                raise
            raise OSError(reason) from err

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Save as diffusers does (safetensors weights). With `PaperDDPMScheduler`, `model_index.json` declares
        diffusers' `DDPMScheduler` so that stock diffusers loads the folder (this pipeline converts it back); any
        other scheduler is declared as itself (e.g. `DDIMScheduler`) and reloads as such."""
        if not isinstance(self.scheduler, PaperDDPMScheduler):
            super().save_pretrained(save_directory, **kwargs)
            return
        own = self.config["scheduler"]
        self.register_to_config(scheduler=("diffusers", "DDPMScheduler"))
        try:
            super().save_pretrained(save_directory, **kwargs)
        finally:
            self.register_to_config(scheduler=own)


def _check_scheduler(scheduler: object) -> None:
    """A diffusers scheduler with the sampling API (`set_timesteps`, `step`), else a ValueError."""
    if not isinstance(scheduler, SchedulerMixin):
        raise ValueError(f"`scheduler` must be a diffusers scheduler (SchedulerMixin), got {type(scheduler).__name__}.")
    if not (callable(getattr(scheduler, "set_timesteps", None)) and callable(getattr(scheduler, "step", None))):
        raise ValueError(f"{type(scheduler).__name__} has no `set_timesteps` and `step`: it cannot sample here.")


def _learns_variance(scheduler: SchedulerMixin) -> bool:
    """Whether `scheduler` takes a learned variance (the UNet's second half): its class takes a `variance_type`
    and its config sets it to "learned" or "learned_range". (A class without that parameter may still carry a
    `variance_type` in its config, left there by `from_config` from a DDPM config: it does not count.)"""
    takes = "variance_type" in inspect.signature(type(scheduler).__init__).parameters
    return takes and scheduler.config.get("variance_type") in LEARNED_VARIANCE_TYPES


def _timestep_key(timestep: int | float | torch.Tensor) -> int | float:
    """A timestep as a Python number to compare and report: an int when it is a whole number (DDPM, DDIM, and
    Euler's float timesteps of a trailing schedule), else a float."""
    value = float(timestep)
    return int(value) if value.is_integer() else value


def _initial_sample(
    shape: tuple[int, ...],
    generator: torch.Generator | list[torch.Generator] | None,
    latents: torch.Tensor | None,
    device: torch.device,
    channels_last: bool,
    init_noise_sigma: float = 1.0,
) -> torch.Tensor:
    """x_T in float32 on `device`: drawn from `generator`, or the caller's `latents` (left unchanged), times the
    scheduler's `init_noise_sigma`, in the channels-last memory format when asked."""
    if latents is None:
        sample = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
    else:
        sample = latents.to(device=device, dtype=torch.float32)
    if init_noise_sigma != 1.0:
        sample = sample * init_noise_sigma
    if channels_last:
        sample = sample.contiguous(memory_format=torch.channels_last)
    return sample


def _autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast | None:
    """`torch.autocast` to `dtype` on `device`'s type, checked to take effect there; `None` for no autocast."""
    if dtype is None:
        return None
    if dtype not in AUTOCAST_DTYPES:
        raise ValueError(f"`autocast_dtype` must be None, torch.bfloat16 or torch.float16, got {dtype!r}.")
    unsupported = (
        f"`autocast_dtype` {dtype} is not supported by torch.autocast on {device.type} (torch {torch.__version__})"
    )
    if not torch.amp.is_autocast_available(device.type):
        raise ValueError(f"{unsupported}; pass autocast_dtype=None.")
    try:
        with warnings.catch_warnings():
            # torch warns and disables autocast for a dtype the device lacks; the check below says so instead.
            warnings.simplefilter("ignore", UserWarning)
            autocast = torch.autocast(device.type, dtype=dtype)
        with autocast:
            works = torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == dtype
    except RuntimeError as error:
        raise ValueError(f"{unsupported}: {error}") from error
    if not works:
        other = torch.bfloat16 if dtype == torch.float16 else torch.float16
        raise ValueError(f"{unsupported}; try {other} or None.")
    return autocast


def missing_on_hub(name_or_path: str, revision: str | None = None, token: str | bool | None = None) -> str | None:
    """Why `name_or_path` at `revision` cannot load, when the Hub says the repo or the revision does not
    exist; None when it is a local path, the Hub is off (HF_HUB_OFFLINE) or unreachable, or both exist."""
    if constants.HF_HUB_OFFLINE or Path(name_or_path).exists():
        return None
    try:
        HfApi(token=token).model_info(name_or_path, revision=revision)
    except RepositoryNotFoundError:
        return (
            f"{name_or_path} is neither a local folder nor a model repo on {constants.ENDPOINT} (or the repo is "
            "private and no token with access to it was given)."
        )
    except RevisionNotFoundError:
        return f"The repo {name_or_path} on {constants.ENDPOINT} has no revision {revision!r} (branch, tag or commit)."
    except Exception:  # unreachable, or not a repo id at all: the loader's own error says more
        return None
    return None
