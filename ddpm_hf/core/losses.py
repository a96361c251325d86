"""The training objectives: L_simple of Ho et al. (2020) (Algorithm 1, Eq. 14), the true variational bound L
(Eq. 5) and Nichol & Dhariwal's (2021) L_hybrid = L_simple + lambda L_vlb (their Eq. 16), optionally with
min-SNR-gamma weighting (Hang et al. 2023) and importance-sampled timesteps (`timestep_sampling`).

The bound's terms are those of the evaluation (`likelihood.vb_terms_bpd`), one formula for both, computed on x_0
predictions left unclipped so that the gradient reaches every prediction (as the authors' training loss does).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from diffusers.utils import BaseOutput

from .likelihood import mean_flat, vb_terms_bpd
from .scheduling_ddpm_paper import PaperDDPMScheduler
from .timestep_sampling import UniformSampler

LOSS_TYPES = ("simple", "vlb", "hybrid")


@dataclass
class DiffusionLossOutput(BaseOutput):
    """One micro-batch's objective.

    Args:
        loss (`torch.Tensor`, scalar float32): what is minimised: the mean over the batch of `losses` times the
            timesteps' importance weights.
        losses (`torch.Tensor` of shape `(batch_size,)`): each image's loss before importance weighting (what a
            loss-aware timestep sampler learns from).
        timesteps (`torch.Tensor` of shape `(batch_size,)`): the t each image was noised to.
    """

    loss: torch.Tensor
    losses: torch.Tensor
    timesteps: torch.Tensor


def snr(scheduler: PaperDDPMScheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """SNR(t) = alphabar_t / (1 - alphabar_t), the signal-to-noise ratio of q(x_t | x_0) (Eq. 4), float32; from the
    scheduler's float64 table of sqrt(1 / alphabar - 1), cached on the timesteps' device (no copy per step)."""
    like = torch.empty(0, dtype=torch.float64, device=timesteps.device)
    return scheduler._at("sqrt_recipm1_alphas_cumprod", timesteps, like).pow(-2).float()


def min_snr_weights(scheduler: PaperDDPMScheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023, Sec. 3.4), shape `(batch_size,)`.

    The weight on the x_0 error is min(SNR(t), gamma); on a prediction's own error it becomes, since
    ||eps - eps_hat||^2 = SNR ||x_0 - x_0_hat||^2 and ||v - v_hat||^2 = (SNR + 1) ||x_0 - x_0_hat||^2:
    min(SNR, gamma) / SNR for eps, min(SNR, gamma) for x_0 and min(SNR, gamma) / (SNR + 1) for v.
    """
    ratio = snr(scheduler, timesteps)
    clipped = ratio.clamp(max=gamma)
    kind = scheduler.config.prediction_type
    return clipped / ratio if kind == "epsilon" else clipped if kind == "sample" else clipped / (ratio + 1)


class DiffusionLoss:
    """The objective of a training run, as a callable on a model and a batch of x_0.

    Args:
        scheduler: the forward process (Eq. 4), the prediction and variance types; for `hybrid` its
            `variance_type` must be `learned_range` (the model outputs twice the image channels).
        loss_type: `simple` (L_simple, Eq. 14: the mean squared error of the eps, x_0 or v prediction), `vlb`
            (the bound L of Eq. 5 with the scheduler's variances, fixed or learned: T L_{t-1} at a drawn t, L_0 at
            t = 0, which sums in expectation to L without its constant L_T) or `hybrid` (L_simple + `vlb_weight`
            L_vlb with the mean's gradient stopped in L_vlb, so L_vlb trains only the variances).
        snr_gamma: weight the squared error of `simple` and `hybrid` by `min_snr_weights`; None for none.
        vlb_weight: lambda of `hybrid` (Nichol & Dhariwal: 0.001).
        timestep_sampler: draws t and its importance weight; uniform (Algorithm 1) by default.
    """

    def __init__(
        self,
        scheduler: PaperDDPMScheduler,
        loss_type: str = "simple",
        snr_gamma: float | None = None,
        vlb_weight: float = 0.001,
        timestep_sampler: UniformSampler | None = None,
    ):
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"`loss_type` must be one of {list(LOSS_TYPES)}, got {loss_type!r}.")
        learned = scheduler.config.variance_type == "learned_range"
        if loss_type == "hybrid" and not learned:
            raise ValueError(
                "`loss_type` 'hybrid' trains learned variances: the scheduler's `variance_type` must be "
                f"'learned_range', got {scheduler.config.variance_type!r}."
            )
        if loss_type == "simple" and learned:
            raise ValueError(
                "`loss_type` 'simple' cannot train the variances of `variance_type` 'learned_range': "
                "use 'hybrid' or 'vlb'."
            )
        if snr_gamma is not None and (loss_type == "vlb" or not snr_gamma > 0):
            raise ValueError(
                f"`snr_gamma` weights the squared error of 'simple' and 'hybrid' and must be positive; "
                f"got {snr_gamma!r} with `loss_type` {loss_type!r}."
            )
        self.scheduler = scheduler
        self.loss_type, self.snr_gamma, self.vlb_weight = loss_type, snr_gamma, vlb_weight
        self.timestep_sampler = timestep_sampler or UniformSampler(len(scheduler))
        self._bound_scheduler: PaperDDPMScheduler | None = None

    def __call__(
        self,
        model: torch.nn.Module,
        x0: torch.Tensor,
        generator: torch.Generator,
        autocast: Callable[[], AbstractContextManager] = nullcontext,
        channels_last: bool = False,
    ) -> DiffusionLossOutput:
        """The objective on a batch: t from the timestep sampler, then eps ~ N(0, I), both from `generator`.

        Args:
            model: called as `model(x_t, t).sample`, e.g. a `UNet2DModel`.
            x0 (`torch.Tensor` of shape `(batch_size, channels, height, width)`): data in [-1, 1].
            generator: the source of t and eps.
            autocast: a context manager factory the model runs under (mixed precision). Noise and x_t are float32
                and only the model runs under it, so bf16/fp16 training keeps the small-t noise.
            channels_last: feed x_t in the channels-last memory format.
        """
        t, weights = self.timestep_sampler.sample(x0.shape[0], generator, x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device)
        x_t = self.scheduler.add_noise(x0, noise, t)
        with autocast():
            output = model(x_t.contiguous(memory_format=torch.channels_last) if channels_last else x_t, t).sample
        output = output.float()
        losses = self._losses(output, x0, noise, x_t, t)
        return DiffusionLossOutput(loss=(losses * weights).mean(), losses=losses.detach(), timesteps=t)

    def _losses(
        self, output: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        if self.loss_type == "vlb":
            return self.vlb(output, x0, x_t, t)
        prediction, variance = output.split(x0.shape[1], dim=1) if self.loss_type == "hybrid" else (output, None)
        squared_error = mean_flat((prediction - self.target(x0, noise, t)) ** 2)
        if self.snr_gamma is not None:
            squared_error = squared_error * min_snr_weights(self.scheduler, t, self.snr_gamma)
        if variance is None:
            return squared_error
        # Nichol & Dhariwal Sec. 3.1: L_vlb sees the mean as a constant, so it trains only the variances.
        return squared_error + self.vlb_weight * self.vlb(torch.cat([prediction.detach(), variance], 1), x0, x_t, t)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the model's prediction is regressed on: eps (Eq. 14), x_0 or v, per the prediction type."""
        kind = self.scheduler.config.prediction_type
        return noise if kind == "epsilon" else x0 if kind == "sample" else self.scheduler.get_velocity(x0, noise, t)

    def vlb(self, output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """L_vlb per image in bits/dim: T times the bound's term at t (`vb_terms_bpd`), an unbiased estimate of
        L - L_T for t uniform (Eq. 5)."""
        if self._bound_scheduler is None:  # the bound's terms on unclipped x_0: clipping would stop their gradient
            self._bound_scheduler = PaperDDPMScheduler.from_config(
                self.scheduler.config, clip_sample=False, thresholding=False
            )
        terms, _ = vb_terms_bpd(self._bound_scheduler, output, x0, x_t, t)
        return len(self.scheduler) * terms.float()


def l_simple(
    model: torch.nn.Module,
    scheduler: PaperDDPMScheduler,
    x0: torch.Tensor,
    generator: torch.Generator,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    channels_last: bool = False,
) -> torch.Tensor:
    """Algorithm 1's loss || target - model(x_t, t) ||^2, t ~ U{0..T-1}, eps ~ N(0, I), drawn from `generator`:
    `DiffusionLoss(scheduler)(...)`'s scalar loss. The target is eps (Eq. 14), x_0 or v per the prediction type."""
    return DiffusionLoss(scheduler)(model, x0, generator, autocast, channels_last).loss
