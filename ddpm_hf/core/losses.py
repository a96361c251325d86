"""The training objective of Ho et al. (2020): L_simple, Algorithm 1 (Eq. 14)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F

from .scheduling_ddpm_paper import PaperDDPMScheduler


def l_simple(
    model: torch.nn.Module,
    scheduler: PaperDDPMScheduler,
    x0: torch.Tensor,
    generator: torch.Generator,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    channels_last: bool = False,
) -> torch.Tensor:
    """Algorithm 1's loss || target - model(x_t, t) ||^2, t ~ U{0..T-1}, eps ~ N(0, I), drawn from `generator`.

    The target is eps (Eq. 14), x_0 or v per `scheduler.config.prediction_type`. Noise and x_t are float32 and
    only the model runs under `autocast()`, so bf16/fp16 training keeps the small-t noise.

    Args:
        model: called as `model(x_t, t).sample`, e.g. a `UNet2DModel`.
        scheduler: the forward process q(x_t | x_0) (Eq. 4) and the prediction type.
        x0 (`torch.Tensor` of shape `(batch_size, channels, height, width)`): data in [-1, 1].
        generator: the source of t and eps.
        autocast: a context manager factory the model runs under (mixed precision).
        channels_last: feed x_t in the channels-last memory format.

    Returns:
        The scalar loss, float32.
    """
    t = torch.randint(0, len(scheduler), (x0.shape[0],), generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    x_t = scheduler.add_noise(x0, noise, t)
    kind = scheduler.config.prediction_type
    target = noise if kind == "epsilon" else x0 if kind == "sample" else scheduler.get_velocity(x0, noise, t)
    if channels_last:
        x_t = x_t.contiguous(memory_format=torch.channels_last)
    with autocast():
        prediction = model(x_t, t).sample
    return F.mse_loss(prediction.float(), target)
