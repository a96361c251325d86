"""Progressive lossy compression (Ho et al. 2020, Sec. 4.3, Fig. 5, Table 4): rate and distortion at every
reverse step, from the full bound of Eq. 5 on a test set, shared over processes as the evaluation is.

Timesteps are the scheduler's: t in 0..T-1 names x_t = `add_noise(x_0, eps, t)`, the paper's x_{t+1}.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.likelihood import ModelFn
from ..core.scheduling_ddpm_paper import PaperDDPMScheduler
from .evaluation import bound_by_chunks
from .plots import Line, Panel, save_panels


@dataclass
class RateDistortion:
    """Progressive lossy compression (Sec. 4.3, Algorithms 3-4, Fig. 5, Table 4), averaged over a test set.

    The receiver gets x_T (costing L_T), then x_{t} for t = T-2 .. 0, each at the cost of its KL term of Eq. 5,
    and at every state predicts x_0. Row k (reverse step k + 1) is the state at timestep `timesteps[k]`:

    Args:
        timesteps (`list[int]`): T-1 .. 0, the state x_t received (the paper's x_{t+1}).
        reverse_steps (`list[int]`): 1 .. T, Table 4's "reverse process time" T - t' + 1 (t' = t + 1, paper time).
        rate_bpd (`torch.Tensor` of shape `(T,)`): bits/dim sent so far, L_T + the KL terms from T down to t + 1
            (the paper's L_{T-1} .. L_{t+1}); L_T at the first row, the bound minus L_0 at the last.
        distortion_rmse (`torch.Tensor` of shape `(T,)`): the RMSE sqrt(||x_0 - x0_hat||^2 / D) of the clipped
            x_0 prediction at that state on the [0, 255] scale, per image, then averaged.
        prior_bpd (`float`): L_T. decoder_bpd (`float`): L_0, what the last step (lossless) adds.
        total_bpd (`float`): the bound of Eq. 5, = `rate_bpd[-1] + decoder_bpd` up to rounding; the mean that
            `ddpm_hf.tools.evaluation.evaluate_bound` gives for the same images, batch size and seed.
        num_images (`int`): the test images averaged over.
    """

    timesteps: list[int]
    reverse_steps: list[int]
    rate_bpd: torch.Tensor
    distortion_rmse: torch.Tensor
    prior_bpd: float
    decoder_bpd: float
    total_bpd: float
    num_images: int

    def rows(self) -> list[dict[str, float]]:
        """The table, one dict per reverse step."""
        return [
            {"reverse_step": step, "timestep": t, "rate_bpd": rate, "distortion_rmse": distortion}
            for step, t, rate, distortion in zip(
                self.reverse_steps, self.timesteps, self.rate_bpd.tolist(), self.distortion_rmse.tolist(), strict=True
            )
        ]

    def to_csv(self, path: str | Path) -> None:
        """The table as CSV: reverse_step, timestep, rate_bpd, distortion_rmse."""
        with open(path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=["reverse_step", "timestep", "rate_bpd", "distortion_rmse"])
            writer.writeheader()
            writer.writerows(self.rows())

    def to_json(self, path: str | Path) -> None:
        """The summary (prior, decoder and total bits/dim, number of images) and the table as JSON."""
        summary = {name: getattr(self, name) for name in ("prior_bpd", "decoder_bpd", "total_bpd", "num_images")}
        Path(path).write_text(json.dumps({**summary, "rows": self.rows()}, indent=2))

    def plot(self, path: str | Path) -> None:
        """Fig. 5's three panels as a PNG: distortion and rate against reverse steps, distortion against rate."""
        steps, rate, distortion = self.reverse_steps, self.rate_bpd.tolist(), self.distortion_rmse.tolist()
        rmse = "RMSE [0, 255]"
        save_panels(
            [
                Panel("Distortion vs. reverse steps", "reverse process steps", rmse, [Line(steps, distortion)]),
                Panel("Rate vs. reverse steps", "reverse process steps", "rate (bits/dim)", [Line(steps, rate)]),
                Panel("Distortion vs. rate", "rate (bits/dim)", rmse, [Line(rate, distortion)]),
            ],
            path,
        )


@torch.no_grad()
def rate_distortion(
    unet: torch.nn.Module | ModelFn,
    scheduler: PaperDDPMScheduler,
    images: torch.Tensor,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
) -> RateDistortion:
    """Rate and distortion at every reverse step (Sec. 4.3, Fig. 5), from the full bound of Eq. 5 on `images`.

    The bound is computed by `ddpm_hf.tools.evaluation.bound_by_chunks`, as `evaluate_bound` computes it (one
    `bits_per_dim` call over all T terms per chunk of the images, chunk k with the noise of
    `chunk_generator(seed, k)`, shared among processes), so the end point is that function's bound on the same
    images, batch size and seed.

    Args:
        unet: the model, called as `unet(x_t, t)` (see `bits_per_dim`); in eval mode.
        scheduler: its schedule, prediction type, variance type and clipping.
        images (`torch.Tensor` of shape `(N, channels, height, width)`, uint8): the test images as decoded.
        batch_size: images per `bits_per_dim` call.
        seed: of the noise.
        progress: show a progress bar over t per batch.

    Returns:
        `RateDistortion`.
    """
    if images.ndim != 4 or images.dtype != torch.uint8 or len(images) == 0:
        raise ValueError(
            f"`images` must be a non-empty uint8 tensor (N, channels, height, width); got {images.dtype} "
            f"{tuple(images.shape)}."
        )
    total, prior, terms, x0_mse = bound_by_chunks(
        unet,
        scheduler,
        images,
        lambda bound: (bound.total_bpd, bound.prior_bpd, bound.terms_bpd, bound.x0_mse),
        batch_size,
        seed=seed,
        progress=progress,
    )
    T = terms.shape[1]
    # Bits sent after the state at timestep t: L_T and the KL terms of columns t+1 .. T-1 (L_{T-1} .. L_{t+1}).
    kl = terms[:, 1:]
    sent = torch.cat([kl.flip(1).cumsum(1).flip(1), kl.new_zeros(len(kl), 1)], dim=1) + prior[:, None]
    # Sec. 4.3: distortion sqrt(||x_0 - x0_hat||^2 / D) on [0, 255]; x0_mse is on [-1, 1], 127.5 times smaller.
    rmse = x0_mse.sqrt() * 127.5
    return RateDistortion(
        timesteps=list(range(T - 1, -1, -1)),
        reverse_steps=list(range(1, T + 1)),
        rate_bpd=sent.mean(0).flip(0),
        distortion_rmse=rmse.mean(0).flip(0),
        prior_bpd=float(prior.mean()),
        decoder_bpd=float(terms[:, 0].mean()),
        total_bpd=float(total.mean()),
        num_images=len(images),
    )
