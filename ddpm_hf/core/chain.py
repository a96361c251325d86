"""The quantities of a Gaussian diffusion chain, as named in Ho et al. (2020) and the authors' code.

A chain is defined by its betas. The training chain has the T betas of the schedule; a chain for
sampling with fewer steps over a subsequence S of timesteps has beta'_k = 1 - alphabar_{S_k} /
alphabar_{S_{k-1}} (Nichol & Dhariwal 2021, Sec. 4), which for S = all T steps is the training chain.
Index k = 0..K-1 is the chain's own step; paper time is t = k + 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class DiffusionChain:
    """Float64 CPU tensors of shape `(K,)`, one entry per step of the chain."""

    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    posterior_variance: torch.Tensor
    posterior_log_variance_clipped: torch.Tensor
    posterior_mean_coef1: torch.Tensor
    posterior_mean_coef2: torch.Tensor
    large_log_variance: torch.Tensor

    @classmethod
    def from_betas(cls, betas: np.ndarray | torch.Tensor) -> DiffusionChain:
        betas = torch.as_tensor(betas, dtype=torch.float64).cpu()
        alphas = 1 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
        # Eq. 7: beta-tilde, zero at the first step.
        posterior_variance = betas * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod)
        # The authors replace that zero by the next value before taking logs; a one-step chain has no
        # next value, and its only step never adds noise, so its own beta stands in.
        first = posterior_variance[1:2] if len(betas) > 1 else betas[:1]
        return cls(
            betas=betas,
            alphas=alphas,
            alphas_cumprod=alphas_cumprod,
            alphas_cumprod_prev=alphas_cumprod_prev,
            posterior_variance=posterior_variance,
            posterior_log_variance_clipped=torch.log(torch.cat([first, posterior_variance[1:]])),
            # Eq. 7: mu-tilde = coef1 x_0 + coef2 x_t.
            posterior_mean_coef1=betas * alphas_cumprod_prev.sqrt() / (1 - alphas_cumprod),
            posterior_mean_coef2=(1 - alphas_cumprod_prev) * alphas.sqrt() / (1 - alphas_cumprod),
            # Sec. 3.2, sigma_t^2 = beta_t ("fixedlarge"), first entry replaced as above.
            large_log_variance=torch.log(torch.cat([first, betas[1:]])),
        )

    def respaced(self, timesteps: np.ndarray) -> DiffusionChain:
        """The chain over the ascending subsequence `timesteps` of this chain's steps."""
        if len(timesteps) == len(self.betas):
            return self
        alphas_cumprod = self.alphas_cumprod[torch.as_tensor(timesteps)]
        previous = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
        return DiffusionChain.from_betas(1 - alphas_cumprod / previous)

    def __len__(self) -> int:
        return len(self.betas)
