"""Named samplers for a DDPM: the paper's ancestral sampler and diffusers' fast ones, from one scheduler config.

    >>> from ddpm_hf.core.samplers import make_scheduler
    >>> pipe.scheduler = make_scheduler("ddim", pipe.scheduler.config)
    >>> images = pipe(num_inference_steps=50).images

Every sampler is built from the model's scheduler config (its noise schedule: T, the betas, the prediction type,
clipping) with `from_config`, plus the settings below, stated here so that results can say how they sampled:

- `ddpm`: `PaperDDPMScheduler`, Algorithm 2 of Ho et al. (2020); with K < T steps, the respaced chain of
  Nichol & Dhariwal (2021) (`beta'_k = 1 - alphabar_{S_k} / alphabar_{S_{k-1}}`), variance as configured.
- `ddim`: diffusers' `DDIMScheduler` (Song et al. 2021), `set_alpha_to_one=True` (the last step lands on x_0);
  the pipeline's `eta` (default 0: deterministic DDIM; 1: DDPM-like noise).
- `dpm_solver`: diffusers' `DPMSolverMultistepScheduler`, DPM-Solver++ (Lu et al. 2022) of order 3, the order
  diffusers recommends for unconditional sampling, lower order at the last steps, ending at sigma = 0.
- `euler_ancestral`: diffusers' `EulerAncestralDiscreteScheduler` (Karras et al. 2022's ancestral Euler).
- `pndm`: diffusers' `PNDMScheduler` as PLMS (Liu et al. 2022; `skip_prk_steps=True`, as latent diffusion uses
  it): K steps cost K + 1 model calls (its first timestep is evaluated twice).

Timesteps: all of them space the K steps `"trailing"` (`TIMESTEP_SPACING`; Lin et al. 2023, Table 2): the first
step is at t = T - 1 (pure noise), the others every T/K steps after it. diffusers' default `"leading"` never starts
at t = T - 1 with fewer steps. DDIM and PNDM compute the previous timestep as t - T // K, which matches the next
timestep of a trailing schedule only when K divides T (otherwise it may be off by one timestep).

A config's `_use_default_values` (diffusers' list of keys that took their class default) makes another class use
its own default for those keys; the spacing is passed explicitly for that reason, and the built scheduler's noise
schedule (`alphas_cumprod`) and prediction type are checked against the config's.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Mapping
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    PNDMScheduler,
)
from diffusers.configuration_utils import ConfigMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from .scheduling_ddpm_paper import PaperDDPMScheduler

SAMPLERS: tuple[str, ...] = ("ddpm", "ddim", "dpm_solver", "euler_ancestral", "pndm")
TIMESTEP_SPACING = "trailing"

SCHEDULER_CLASSES: dict[str, type[SchedulerMixin]] = {
    "ddpm": PaperDDPMScheduler,
    "ddim": DDIMScheduler,
    "dpm_solver": DPMSolverMultistepScheduler,
    "euler_ancestral": EulerAncestralDiscreteScheduler,
    "pndm": PNDMScheduler,
}
# Each sampler's settings beyond the model's config (overridable through `make_scheduler(**overrides)`).
SAMPLER_SETTINGS: dict[str, dict[str, Any]] = {
    "ddpm": {},
    "ddim": {"set_alpha_to_one": True},
    "dpm_solver": {"algorithm_type": "dpmsolver++", "solver_order": 3},
    "euler_ancestral": {},
    "pndm": {"skip_prk_steps": True},
}
# The model outputs each sampler can use (diffusers' Euler ancestral and PNDM raise at the first step for x_0).
PREDICTION_TYPES: dict[str, tuple[str, ...]] = {
    "ddpm": ("epsilon", "sample", "v_prediction"),
    "ddim": ("epsilon", "sample", "v_prediction"),
    "dpm_solver": ("epsilon", "sample", "v_prediction"),
    "euler_ancestral": ("epsilon", "v_prediction"),
    "pndm": ("epsilon", "v_prediction"),
}


def make_scheduler(
    name: str, config: Mapping[str, Any] | ConfigMixin, *, timestep_spacing: str = TIMESTEP_SPACING, **overrides: Any
) -> SchedulerMixin:
    """The scheduler of sampler `name` (one of `SAMPLERS`) for a model whose scheduler config is `config`.

    Args:
        name (`str`): `ddpm`, `ddim`, `dpm_solver`, `euler_ancestral` or `pndm` (see the module docstring).
        config (`Mapping` or a scheduler): the model's scheduler config (e.g. `pipe.scheduler.config`), or the
            scheduler itself.
        timestep_spacing (`str`, defaults to `"trailing"`): how `set_timesteps(K)` picks K of the T timesteps.
        overrides: further config values of the scheduler class (e.g. `variance_type="fixed_large"` for `ddpm`,
            `solver_order=2` for `dpm_solver`); a key the class does not take is refused.

    Returns:
        A new scheduler; `.config.timestep_spacing` records the spacing.

    Raises:
        ValueError: for an unknown name, an override the class does not take, or a config whose noise schedule or
            prediction type the class cannot reproduce.
    """
    if name not in SCHEDULER_CLASSES:
        raise ValueError(f"Unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}.")
    cls = SCHEDULER_CLASSES[name]
    if isinstance(config, ConfigMixin):
        config = config.config
    if not isinstance(config, Mapping):
        raise ValueError(
            f"`config` must be a scheduler config (a mapping) or a scheduler, got {type(config).__name__}."
        )
    # A config another sampler left without a variance (DPM-Solver's, below) gets the class's default.
    config = {k: v for k, v in config.items() if not (k == "variance_type" and v is None)}
    settings = {**SAMPLER_SETTINGS[name], "timestep_spacing": timestep_spacing, **overrides}
    if name == "dpm_solver" and config.get("variance_type") in ("learned", "learned_range"):
        # The pipeline hands DPM-Solver the first half of a learned-variance output itself: the scheduler's own
        # slicing assumes 3 image channels. Fixed variances stay in its config (it ignores them).
        settings.setdefault("variance_type", None)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    if unknown := sorted(set(settings) - accepted):
        raise ValueError(f"{cls.__name__} (sampler {name!r}) takes no {', '.join(unknown)}.")
    try:
        scheduler = cls.from_config(config, **settings)
    except (ValueError, NotImplementedError) as error:
        raise ValueError(f"{cls.__name__} (sampler {name!r}) cannot be built from this config: {error}") from error
    _check_same_process(scheduler, config, name)
    return scheduler


def _check_same_process(scheduler: SchedulerMixin, config: Mapping[str, Any], name: str) -> None:
    """The built scheduler must have the config's noise schedule and prediction type: diffusers silently drops
    the config keys a class does not take (e.g. `rescale_betas_zero_snr` for PNDM)."""
    cls = type(scheduler).__name__
    prediction = scheduler.config.get("prediction_type")
    if prediction not in PREDICTION_TYPES[name]:
        raise ValueError(
            f"{cls} (sampler {name!r}) cannot sample a model with prediction_type {prediction!r}; it takes "
            f"{', '.join(PREDICTION_TYPES[name])}."
        )
    if isinstance(scheduler, PaperDDPMScheduler):
        return
    reference = PaperDDPMScheduler.from_config(dict(config))
    if prediction != reference.config.prediction_type:
        raise ValueError(
            f"{cls} (sampler {name!r}) would use prediction_type {prediction!r}; the model's is "
            f"{reference.config.prediction_type!r}."
        )
    alphas_cumprod = getattr(scheduler, "alphas_cumprod", None)
    expected = reference.alphas_cumprod
    # float32 (diffusers) against float64 (ours); a zero-terminal-SNR schedule ends at 2**-24 in diffusers, 0 here.
    if alphas_cumprod is None or not torch.allclose(alphas_cumprod.double(), expected, rtol=1e-4, atol=1e-6):
        raise ValueError(f"{cls} (sampler {name!r}) cannot reproduce the noise schedule of this config.")


def scheduler_name(scheduler: SchedulerMixin) -> str:
    """The sampler name of `scheduler`'s class (`SAMPLERS`), or the class name for any other scheduler."""
    for name, cls in SCHEDULER_CLASSES.items():
        if type(scheduler) is cls:
            return name
    return type(scheduler).__name__


def step_output_fields(scheduler: SchedulerMixin) -> frozenset[str] | None:
    """The fields of the output `scheduler.step` declares it returns (e.g. `{"prev_sample",
    "pred_original_sample"}` for DDIM, `{"prev_sample"}` for DPM-Solver's `SchedulerOutput`), read from its return
    annotation; None when the annotation does not name a `BaseOutput` dataclass."""
    try:
        hints = typing.get_type_hints(type(scheduler).step)
    except Exception:  # unresolvable annotations: unknown
        return None
    returned = hints.get("return")
    candidates = typing.get_args(returned) or (returned,)
    outputs = [
        c for c in candidates if isinstance(c, type) and issubclass(c, BaseOutput) and dataclasses.is_dataclass(c)
    ]
    if not outputs:
        return None
    fields = [frozenset(f.name for f in dataclasses.fields(c)) for c in outputs if dataclasses.is_dataclass(c)]
    return frozenset.intersection(*fields) if fields else None


def returns_pred_original_sample(scheduler: SchedulerMixin) -> bool | None:
    """Whether `scheduler.step` returns the model's x_0 prediction (`pred_original_sample`): True for DDPM, DDIM,
    Euler (ancestral), Heun, LMS, KDPM2; False for DPM-Solver, PNDM, UniPC, DEIS; None when its annotation does
    not say."""
    fields = step_output_fields(scheduler)
    return None if fields is None else "pred_original_sample" in fields
