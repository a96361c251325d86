"""The reverse process of Ho et al. (2020) as a diffusers scheduler, with the authors' formulas.

`PaperDDPMScheduler` reads and writes the configuration of diffusers' `DDPMScheduler` (the same
keys, so either class loads the other's config) and agrees with it wherever diffusers is right. It
differs where diffusers departs from the paper:

- every schedule quantity is float64 (`DiffusionChain`), cast only when applied;
- the log-variances are the authors' (first entry replaced by the second), so `fixed_large_log` is
  finite (diffusers' is NaN) and no variance is clamped at 1e-20;
- the last step of a chain never adds noise, whatever its timestep (diffusers adds noise whenever the
  timestep is above 0, which with `trailing` spacing and `fixed_large` perturbs the final sample);
- `add_noise` computes in float32 at least, so bf16/fp16 inputs keep their noise at small t;
- the default `timestep_spacing` is `trailing`, so a shortened chain starts at t = T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput

from .chain import DiffusionChain
from .schedules import make_betas, rescale_zero_terminal_snr

VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned_range")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
TIMESTEP_SPACINGS = ("leading", "linspace", "trailing")

Timesteps = int | torch.Tensor


@dataclass
class PaperDDPMSchedulerOutput(BaseOutput):
    """Output of `PaperDDPMScheduler.step`.

    Args:
        prev_sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            x_{t-1}, the next model input; `sample`'s dtype.
        pred_original_sample (`torch.Tensor` of the same shape):
            The model's (clipped) prediction of x_0 at this step, in float32 (float64 for float64 input).
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


@dataclass
class PMeanVariance(BaseOutput):
    """p(x_{t-1} | x_t) = N(mean, exp(log_variance)) and the x_0 prediction it is built from.

    `log_variance` is a float for the fixed variance types and a tensor shaped like `mean` for
    `learned_range`.
    """

    mean: torch.Tensor
    log_variance: float | torch.Tensor
    pred_original_sample: torch.Tensor


class PaperDDPMScheduler(SchedulerMixin, ConfigMixin):
    """Ancestral sampling of Ho et al. (2020), Algorithm 2, and the quantities of its variational bound.

    Args:
        num_train_timesteps (`int`, defaults to 1000): T, the number of diffusion steps.
        beta_start (`float`, defaults to 1e-4): beta_1 for the `linear`, `scaled_linear` and `sigmoid` schedules.
        beta_end (`float`, defaults to 0.02): beta_T for those schedules.
        beta_schedule (`str`, defaults to `"linear"`): `linear` (the paper's), `scaled_linear`,
            `squaredcos_cap_v2` (Nichol & Dhariwal's cosine) or `sigmoid`.
        trained_betas (`np.ndarray` or `list[float]`, *optional*): the T betas, overriding the schedule.
        variance_type (`str`, defaults to `"fixed_small"`): sigma_t^2 of the reverse process (Sec. 3.2):
            `fixed_small` / `fixed_small_log` give beta-tilde_t, `fixed_large` / `fixed_large_log` give beta_t
            (the `_log` names are kept for diffusers configs; all four use the authors' log-variances);
            `learned_range` interpolates their logs with a second half of model output channels
            (Nichol & Dhariwal 2021, Eq. 15).
        clip_sample (`bool`, defaults to `True`): clip the predicted x_0 to `[-clip_sample_range, clip_sample_range]`.
        prediction_type (`str`, defaults to `"epsilon"`): what the model predicts: `epsilon` (the paper's),
            `sample` (x_0) or `v_prediction` (Salimans & Ho 2022).
        thresholding (`bool`, defaults to `False`): dynamic thresholding of x_0 (Saharia et al. 2022), not clipping.
        dynamic_thresholding_ratio (`float`, defaults to 0.995): the percentile of |x_0| used by thresholding.
        clip_sample_range (`float`, defaults to 1.0): the clipping bound of `clip_sample`.
        sample_max_value (`float`, defaults to 1.0): the largest threshold of dynamic thresholding.
        timestep_spacing (`str`, defaults to `"trailing"`): how `set_timesteps(n)` picks n of the T timesteps:
            `trailing` and `linspace` start at t = T; `leading` (diffusers' default) does not.
        steps_offset (`int`, defaults to 0): added to the `leading` timesteps.
        rescale_betas_zero_snr (`bool`, defaults to `False`): rescale the schedule to alphabar_T = 0 (Lin et al. 2023);
            needs `prediction_type` `v_prediction` or `sample`.
    """

    _compatibles: ClassVar[list[str]] = [e.name for e in KarrasDiffusionSchedulers]
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        variance_type: str = "fixed_small",
        clip_sample: bool = True,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "trailing",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
    ):
        _check_choice("variance_type", variance_type, VARIANCE_TYPES)
        _check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        _check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        if not clip_sample_range > 0:
            raise ValueError(f"`clip_sample_range` must be positive, got {clip_sample_range!r}.")
        if rescale_betas_zero_snr and prediction_type == "epsilon":
            raise ValueError(
                "`rescale_betas_zero_snr=True` makes alphabar_T = 0, where x_0 cannot be recovered from an epsilon "
                "prediction; use `prediction_type` 'v_prediction' or 'sample'."
            )
        betas = make_betas(beta_schedule, num_train_timesteps, beta_start, beta_end, trained_betas)
        if rescale_betas_zero_snr:
            betas = rescale_zero_terminal_snr(betas)
        self.train_chain = DiffusionChain.from_betas(betas)
        self.betas = self.train_chain.betas
        self.alphas = self.train_chain.alphas
        self.alphas_cumprod = self.train_chain.alphas_cumprod
        alphas_cumprod = self.alphas_cumprod
        # Coefficients by timestep 0..T-1: the forward process's, of the training chain ...
        self._forward_tables = {
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt(),
            "sqrt_recip_alphas_cumprod": alphas_cumprod.rsqrt(),
            "sqrt_recipm1_alphas_cumprod": (1 / alphas_cumprod - 1).sqrt(),
        }
        # ... and the reverse process's, of the sampling chain (`_use_chain`); copies cached per device.
        self._tables: dict[str, torch.Tensor] = {}
        self._device_tables: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}
        self._plans: dict[tuple[torch.device, torch.dtype], SamplingPlan] = {}
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self.custom_timesteps = False
        self._use_chain(np.arange(num_train_timesteps - 1, -1, -1, dtype=np.int64), device=None)

    # ------------------------------------------------------------------ timesteps

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """Choose the timesteps of the sampling chain, in descending order, and its respaced coefficients.

        Args:
            num_inference_steps (`int`, *optional*): K in 1..T, spaced by `timestep_spacing`.
            device (`str` or `torch.device`, *optional*): where `self.timesteps` is put.
            timesteps (`list[int]`, *optional*): custom timesteps, strictly descending, in 0..T-1;
                exclusive with `num_inference_steps`.
        """
        T = self.config.num_train_timesteps
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("Pass exactly one of `num_inference_steps` and `timesteps`.")
        if timesteps is not None:
            given = np.asarray(timesteps).reshape(-1)
            chosen = given.astype(np.int64)
            if (chosen != given).any():
                raise ValueError(f"`timesteps` must be integers; got {list(timesteps)}.")
            if len(chosen) == 0 or (np.diff(chosen) >= 0).any():
                raise ValueError(f"`timesteps` must be a non-empty, strictly descending list; got {list(timesteps)}.")
            if chosen[0] >= T or chosen[-1] < 0:
                raise ValueError(f"`timesteps` must lie in 0..{T - 1}; got {list(timesteps)}.")
        else:
            if not isinstance(num_inference_steps, (int, np.integer)) or not 1 <= num_inference_steps <= T:
                raise ValueError(f"`num_inference_steps` must be an integer in 1..{T}, got {num_inference_steps!r}.")
            chosen = self._spaced_timesteps(int(num_inference_steps))
        self.custom_timesteps = timesteps is not None
        self.num_inference_steps = len(chosen)
        self._use_chain(chosen, device)

    def _spaced_timesteps(self, n: int) -> np.ndarray:
        """Table 2 of Lin et al. (2023), as diffusers spaces them."""
        T, spacing = self.config.num_train_timesteps, self.config.timestep_spacing
        if spacing == "linspace":
            chosen = np.linspace(0, T - 1, n).round()[::-1]
        elif spacing == "leading":
            chosen = np.arange(n)[::-1] * (T // n) + self.config.steps_offset
        else:
            chosen = np.round(T - np.arange(n) * (T / n)) - 1
        chosen = chosen.astype(np.int64)
        if chosen[0] >= T:
            raise ValueError(f"`steps_offset` {self.config.steps_offset} puts a timestep past T - 1 = {T - 1}.")
        return chosen

    def _use_chain(self, descending: np.ndarray, device: str | torch.device | None) -> None:
        self.timesteps = torch.from_numpy(descending.copy()).to(device)
        self._timestep_list = descending.tolist()
        ascending = descending[::-1].copy()
        self.chain = chain = self.train_chain.respaced(ascending)
        self._index_of_timestep = {int(t): k for k, t in enumerate(descending)}
        on_chain = torch.from_numpy(ascending)

        def by_timestep(values: torch.Tensor) -> torch.Tensor:
            """Chain values placed at their timesteps; NaN at timesteps off the chain."""
            return torch.full((len(self),), math.nan, dtype=torch.float64).index_copy_(0, on_chain, values)

        self._tables = {
            **self._forward_tables,
            "posterior_mean_coef1": by_timestep(chain.posterior_mean_coef1),
            "posterior_mean_coef2": by_timestep(chain.posterior_mean_coef2),
            "posterior_variance": by_timestep(chain.posterior_variance),
            "posterior_log_variance_clipped": by_timestep(chain.posterior_log_variance_clipped),
            "large_log_variance": by_timestep(chain.large_log_variance),
            "log_betas": by_timestep(chain.betas.log()),
        }
        self._device_tables.clear()
        self._plans.clear()

    def index_for_timestep(self, timestep: int | torch.Tensor) -> int:
        """The position k of `timestep` in `self.timesteps` (sampling order): k = 0 is the first step (t = T - 1 for
        the full chain), k = K - 1 the last, noise-free one. Every step index in this package means this."""
        t = int(timestep)
        if t not in self._index_of_timestep:
            shown = self._timestep_list[:5] + (["..."] if len(self._timestep_list) > 5 else [])
            raise ValueError(f"`timestep` {t} is not in the current schedule {shown}; see `set_timesteps`.")
        return self._index_of_timestep[t]

    def is_last_step(self, timestep: int | torch.Tensor) -> bool:
        """Whether `timestep` is the chain's last step, which returns the mean without noise (Algorithm 2)."""
        return self.index_for_timestep(timestep) == len(self._timestep_list) - 1

    def previous_timestep(self, timestep: int | torch.Tensor) -> int | torch.Tensor:
        """The timestep after `timestep` in the current chain, -1 after the last one; a 0-d tensor on the input's
        device for a tensor, as diffusers' `DDPMScheduler.previous_timestep` returns."""
        k = self.index_for_timestep(timestep)
        previous = self._timestep_list[k + 1] if k + 1 < len(self._timestep_list) else -1
        if isinstance(timestep, torch.Tensor):
            return torch.tensor(previous, device=timestep.device)
        return previous

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """The identity: DDPM feeds x_t to the model unscaled (kept for diffusers' scheduler API)."""
        return sample

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    # ------------------------------------------------------------------ forward process

    def _at(self, name: str, timesteps: Timesteps, like: torch.Tensor) -> float | torch.Tensor:
        """Entry `timesteps` of a float64 table: a float for an int, else a tensor broadcastable to `like`.

        Tensors are gathered from a copy of the table cached on `like`'s device, so no host-device
        synchronisation happens; for the same reason only CPU tensors have their range checked.
        """
        T = len(self)
        table = self._tables[name]
        if not isinstance(timesteps, torch.Tensor):
            if int(timesteps) != timesteps or not 0 <= timesteps < T:
                raise ValueError(f"`timesteps` must be integers in 0..{T - 1}; got {timesteps!r}.")
            return float(table[int(timesteps)])
        if timesteps.is_floating_point() or timesteps.is_complex():
            raise ValueError(f"`timesteps` must be an integer tensor; got dtype {timesteps.dtype}.")
        if timesteps.device.type == "cpu" and timesteps.numel() > 0:
            low, high = int(timesteps.min()), int(timesteps.max())
            if low < 0 or high >= T:
                raise ValueError(f"`timesteps` must lie in 0..{T - 1}; got values from {low} to {high}.")
        key = (name, like.device, like.dtype)
        if key not in self._device_tables:
            self._device_tables[key] = table.to(device=like.device, dtype=like.dtype)
        values = self._device_tables[key][timesteps.to(like.device)]
        return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: Timesteps) -> torch.Tensor:
        """q(x_t | x_0), Eq. 4: x_t = sqrt(alphabar_t) x_0 + sqrt(1 - alphabar_t) eps.

        Args:
            original_samples (`torch.Tensor` of shape `(batch_size, ...)`): x_0.
            noise (`torch.Tensor` of the same shape): eps.
            timesteps (`int` or `torch.Tensor` of shape `()` or `(batch_size,)`): t (0-based) per sample.

        Returns:
            `torch.Tensor`: x_t in `original_samples`' dtype, computed in float32 at least so that
            half-precision inputs keep their noise at small t.
        """
        x0, eps = upcast(original_samples), upcast(noise)
        x_t = (
            self._at("sqrt_alphas_cumprod", timesteps, x0) * x0
            + self._at("sqrt_one_minus_alphas_cumprod", timesteps, x0) * eps
        )
        return x_t.to(original_samples.dtype)

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: Timesteps) -> torch.Tensor:
        """v = sqrt(alphabar_t) eps - sqrt(1 - alphabar_t) x_0 (Salimans & Ho 2022), in `sample`'s dtype."""
        x0, eps = upcast(sample), upcast(noise)
        v = (
            self._at("sqrt_alphas_cumprod", timesteps, x0) * eps
            - self._at("sqrt_one_minus_alphas_cumprod", timesteps, x0) * x0
        )
        return v.to(sample.dtype)

    # ------------------------------------------------------------------ reverse process

    def predict_x0(self, model_output: torch.Tensor, timestep: Timesteps, sample: torch.Tensor) -> torch.Tensor:
        """x_0 implied by the model output at x_t = `sample` (Eq. 15 for epsilon), unclipped, float32 at least."""
        out, x_t = upcast(model_output), upcast(sample)
        kind = self.config.prediction_type
        if kind == "epsilon":
            return (
                self._at("sqrt_recip_alphas_cumprod", timestep, x_t) * x_t
                - self._at("sqrt_recipm1_alphas_cumprod", timestep, x_t) * out
            )
        if kind == "v_prediction":
            return (
                self._at("sqrt_alphas_cumprod", timestep, x_t) * x_t
                - self._at("sqrt_one_minus_alphas_cumprod", timestep, x_t) * out
            )
        return out

    def predict_epsilon(
        self, pred_original_sample: torch.Tensor, timestep: Timesteps, sample: torch.Tensor
    ) -> torch.Tensor:
        """eps implied by an x_0 prediction at x_t = `sample`: Eq. 4 solved for eps (finite where alphabar_t = 0)."""
        x0, x_t = upcast(pred_original_sample), upcast(sample)
        return (x_t - self._at("sqrt_alphas_cumprod", timestep, x_t) * x0) / self._at(
            "sqrt_one_minus_alphas_cumprod", timestep, x_t
        )

    def q_posterior(
        self, original_sample: torch.Tensor, sample: torch.Tensor, timestep: Timesteps
    ) -> tuple[torch.Tensor, float | torch.Tensor, float | torch.Tensor]:
        """q(x_{t-1} | x_t, x_0) of the current chain (Eqs. 6-7): mean, variance and clipped log-variance.

        `timestep` is an int of the chain, or a tensor of them per sample (NaN results off the chain).
        """
        self._check_on_chain(timestep)
        x0, x_t = upcast(original_sample), upcast(sample)
        mean = (
            self._at("posterior_mean_coef1", timestep, x_t) * x0 + self._at("posterior_mean_coef2", timestep, x_t) * x_t
        )
        return (
            mean,
            self._at("posterior_variance", timestep, mean),
            self._at("posterior_log_variance_clipped", timestep, mean),
        )

    def p_mean_variance(self, model_output: torch.Tensor, timestep: Timesteps, sample: torch.Tensor) -> PMeanVariance:
        """p(x_{t-1} | x_t) of the current chain: the posterior mean at the (clipped) predicted x_0 and sigma_t^2.

        Args:
            model_output (`torch.Tensor`): shaped like `sample`, or with twice its channels for `learned_range`.
            timestep (`int` or `torch.Tensor` of shape `(batch_size,)`): t, timesteps of the current chain.
            sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`): x_t.
        """
        self._check_on_chain(timestep)
        model_output, predicted_variance = self._split_output(model_output, sample)
        x0 = self._clip(self.predict_x0(model_output, timestep, sample))
        mean, _, log_variance_small = self.q_posterior(x0, sample, timestep)
        if self.config.variance_type == "learned_range":
            # Nichol & Dhariwal Eq. 15: v interpolates between log beta-tilde_t and log beta_t.
            frac = (upcast(predicted_variance) + 1) / 2
            log_variance = frac * self._at("log_betas", timestep, mean) + (1 - frac) * log_variance_small
        elif self.config.variance_type.startswith("fixed_small"):
            log_variance = log_variance_small
        else:
            log_variance = self._at("large_log_variance", timestep, mean)
        return PMeanVariance(mean=mean, log_variance=log_variance, pred_original_sample=x0)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> PaperDDPMSchedulerOutput | tuple:
        """One step of Algorithm 2: x_{t-1} = mean + [not the last step] sigma_t z, z ~ N(0, I).

        The update is `SamplingPlan.step`'s, the one formula of Algorithm 2 in this package, in float32 (float64 for
        float64 inputs); this method checks its inputs and draws z with `generator`.

        Args:
            model_output (`torch.Tensor`): the model's prediction at (x_t, t); twice `sample`'s channels for
                `learned_range`.
            timestep (`int` or 0-d `torch.Tensor`): t, one of `self.timesteps` (a Python int avoids a
                device synchronisation).
            sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`): x_t.
            generator (`torch.Generator` or a list of `batch_size` of them, *optional*): the noise source.
            return_dict (`bool`, defaults to `True`): return a `PaperDDPMSchedulerOutput` rather than a tuple.

        Returns:
            `PaperDDPMSchedulerOutput` or `(prev_sample, pred_original_sample)`.
        """
        check_generators(generator, sample.shape[0])
        self._split_output(model_output, sample)
        k = self.index_for_timestep(timestep)
        dtype = torch.promote_types(upcast(sample).dtype, upcast(model_output).dtype)
        plan = self.sampling_plan(sample.device, dtype)
        noise = None if k == len(plan) - 1 else NoiseBuffer(sample.shape, generator, sample.device, dtype)
        prev_sample, pred_original_sample = plan.step(k, model_output, sample.to(dtype), noise)
        prev_sample = prev_sample.to(sample.dtype)
        if not return_dict:
            return prev_sample, pred_original_sample
        return PaperDDPMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)

    def sampling_plan(self, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> SamplingPlan:
        """The current chain's per-step coefficients on `device`, for a sampling loop without synchronisation.

        Built on the first call after `set_timesteps` and cached until the next one, per device and dtype. `step`
        runs through it too.

        Args:
            device (`str` or `torch.device`, defaults to `"cpu"`): where x_t lives (the model's device).
            dtype (`torch.dtype`, defaults to `torch.float32`): x_t's dtype, `torch.float32` or `torch.float64`.
        """
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"`dtype` must be torch.float32 or torch.float64, got {dtype}.")
        key = (torch.device(device), dtype)
        if key not in self._plans:
            self._plans[key] = SamplingPlan(self, *key)
        return self._plans[key]

    def _check_on_chain(self, timestep: Timesteps) -> None:
        """An int must be a timestep of the current chain (tensors are not checked: that would synchronise)."""
        if not isinstance(timestep, torch.Tensor):
            self.index_for_timestep(timestep)

    def _split_output(
        self, model_output: torch.Tensor, sample: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        learned = self.config.variance_type == "learned_range"
        channels = sample.shape[1] * (2 if learned else 1)
        expected = (sample.shape[0], channels, *sample.shape[2:])
        if tuple(model_output.shape) != expected:
            raise ValueError(
                f"`model_output` has shape {tuple(model_output.shape)}; expected {expected} for a sample of shape "
                f"{tuple(sample.shape)} with variance_type {self.config.variance_type!r}."
            )
        if learned:
            return torch.split(model_output, sample.shape[1], dim=1)
        return model_output, None

    def _clip(self, x0: torch.Tensor) -> torch.Tensor:
        if self.config.thresholding:
            return self._threshold_sample(x0)
        if self.config.clip_sample:
            return x0.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)
        return x0

    def _threshold_sample(self, x0: torch.Tensor) -> torch.Tensor:
        """Dynamic thresholding (Saharia et al. 2022): clip each x_0 to its percentile s >= 1 and divide by s."""
        flat = x0.reshape(x0.shape[0], -1)
        s = torch.quantile(flat.abs(), self.config.dynamic_thresholding_ratio, dim=1)
        s = s.clamp(min=1, max=self.config.sample_max_value).unsqueeze(1)
        return (torch.clamp(flat, -s, s) / s).reshape(x0.shape)


class SamplingPlan:
    """Algorithm 2's update, with every coefficient looked up once: the chain's tables in sampling order, on one device.

    This is the only place the update is written: `PaperDDPMScheduler.step` calls it, and the pipeline's loop calls
    it directly. A loop over `step(k, ...)` for k = 0..K-1 makes no host-device synchronisation, no lookup by
    timestep and no Python-float arithmetic; x_t, the noise and the arithmetic are in `dtype`.

    Attributes:
        timesteps (`list[int]`): the chain's timesteps t in sampling order (descending); step k is at `timesteps[k]`,
            as `PaperDDPMScheduler.index_for_timestep` numbers them.
        model_timesteps (`list[torch.Tensor]`): the same as 0-d long tensors on `device`, to pass to the model.
        device (`torch.device`), dtype (`torch.dtype`): where x_t lives and its dtype.
    """

    def __init__(self, scheduler: PaperDDPMScheduler, device: torch.device, dtype: torch.dtype):
        self.device, self.dtype = device, dtype
        self.timesteps: list[int] = list(scheduler._timestep_list)
        self.model_timesteps = list(scheduler.timesteps.to(device).unbind())
        self._last = len(self.timesteps) - 1
        config = scheduler.config
        # `PaperDDPMScheduler._clip`, decided once.
        self._threshold = scheduler._threshold_sample if config.thresholding else None
        self._clip_range = config.clip_sample_range if config.clip_sample and not config.thresholding else None

        def column(values: torch.Tensor | str) -> list[torch.Tensor]:
            """A float64 table by timestep (or its name), in sampling order, as 0-d tensors of `dtype` on `device`."""
            values = scheduler._tables[values] if isinstance(values, str) else values
            return list(values[self.timesteps].to(device=device, dtype=dtype).unbind())

        # x_0 = a x_t - b out: Eq. 15 for epsilon (a = 1/sqrt(alphabar_t), b = sqrt(1/alphabar_t - 1)), or
        # a = sqrt(alphabar_t), b = sqrt(1 - alphabar_t) for v; a sample prediction is x_0 itself.
        names = {
            "epsilon": ("sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod"),
            "v_prediction": ("sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod"),
        }.get(config.prediction_type)
        self._x0_coefs = None if names is None else list(zip(column(names[0]), column(names[1]), strict=True))
        # Eq. 7: mu-tilde(x_t, x_0) = coef1 x_0 + coef2 x_t.
        self._mean_coefs = list(zip(column("posterior_mean_coef1"), column("posterior_mean_coef2"), strict=True))
        self._learned = config.variance_type == "learned_range"
        if self._learned:
            # Nichol & Dhariwal Eq. 15 interpolates log beta_t and log beta-tilde_t with the model's second half.
            self._log_variances = list(zip(column("log_betas"), column("posterior_log_variance_clipped"), strict=True))
        else:
            # sigma_t = exp(log sigma_t^2 / 2), computed in float64 and rounded once to `dtype` (Sec. 3.2).
            small = config.variance_type.startswith("fixed_small")
            name = "posterior_log_variance_clipped" if small else "large_log_variance"
            stds = [math.exp(0.5 * v) for v in scheduler._tables[name].tolist()]
            self._stds = column(torch.tensor(stds, dtype=torch.float64))

    def __len__(self) -> int:
        return len(self.timesteps)

    def step(
        self, k: int, model_output: torch.Tensor, sample: torch.Tensor, noise: NoiseBuffer | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Step k of the chain (t = `timesteps[k]`): x_{t-1} = mu-tilde(x_t, x_0) + [k < K - 1] sigma_t z.

        Args:
            k (`int`): the step, 0 for the first (t = T for the full chain).
            model_output (`torch.Tensor`): the model's prediction at (x_t, t), twice `sample`'s channels for
                `learned_range`; rounded to `dtype` first.
            sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)` and dtype `dtype`): x_t,
                left unchanged.
            noise (`NoiseBuffer`): draws z ~ N(0, I) in place, at every step but the last (None there).

        Returns:
            `(prev_sample, pred_original_sample)`: x_{t-1} and the (clipped) x_0 prediction, new tensors of `dtype`.
        """
        out = model_output
        if self._learned:
            out, predicted_variance = out.chunk(2, dim=1)
        if out.dtype != self.dtype:
            out = out.to(self.dtype)
        if self._x0_coefs is None:
            x0 = out
        else:
            a, b = self._x0_coefs[k]
            x0 = sample * a
            x0 -= out * b
        if self._threshold is not None:
            x0 = self._threshold(x0)
        elif self._clip_range is not None:
            x0 = x0.clamp(-self._clip_range, self._clip_range)
        coef1, coef2 = self._mean_coefs[k]
        prev_sample = x0 * coef1
        prev_sample += sample * coef2
        if k == self._last:
            return prev_sample, x0
        z = noise.draw()
        if self._learned:
            log_beta, log_beta_tilde = self._log_variances[k]
            frac = (predicted_variance.to(self.dtype) + 1) / 2
            z *= (0.5 * (frac * log_beta + (1 - frac) * log_beta_tilde)).exp()
        else:
            z *= self._stds[k]
        prev_sample += z
        return prev_sample, x0


class NoiseBuffer:
    """z ~ N(0, I) drawn in place into one preallocated tensor: the numbers diffusers' `randn_tensor` draws.

    As `randn_tensor` does, a CPU generator draws on the CPU (then copies to `device`) and a list of generators
    draws one row each; each draw is `Tensor.normal_` (what `torch.randn(..., out=...)` runs), allocating nothing.

    Args:
        shape (`tuple[int, ...]`): `(batch_size, ...)`.
        generator (`torch.Generator` or a list of `batch_size` of them, *optional*): the source; the default
            generator of the drawing device when `None`.
        device (`torch.device`), dtype (`torch.dtype`): of the noise.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | list[torch.Generator] | None,
        device: torch.device,
        dtype: torch.dtype,
    ):
        check_generators(generator, shape[0])
        generators = generator if isinstance(generator, list) else [generator]
        draws_on = generators[0].device if generators[0] is not None else device
        if draws_on.type not in ("cpu", device.type):
            raise ValueError(f"Cannot draw {device} noise from a generator on {draws_on}.")
        self.noise = torch.empty(shape, device=device, dtype=dtype)
        on_cpu = draws_on.type == "cpu" and device.type != "cpu"
        self._drawn = torch.empty(shape, dtype=dtype) if on_cpu else self.noise
        rows = self._drawn.split(1) if len(generators) > 1 else [self._drawn]
        self._draws = list(zip(rows, generators, strict=True))

    def draw(self) -> torch.Tensor:
        """Fresh noise in the buffer (the same tensor every time, overwritten)."""
        for out, generator in self._draws:
            out.normal_(generator=generator)
        if self._drawn is not self.noise:
            self.noise.copy_(self._drawn)
        return self.noise


def upcast(x: torch.Tensor) -> torch.Tensor:
    """`x` in float32, or float64 if it already is."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {list(allowed)}, got {value!r}.")


def check_generators(generator: torch.Generator | list[torch.Generator] | None, batch_size: int) -> None:
    """A list of generators must hold one per sample."""
    if isinstance(generator, list) and len(generator) != batch_size:
        raise ValueError(
            f"`generator` is a list of {len(generator)} generators; expected one per sample ({batch_size})."
        )
