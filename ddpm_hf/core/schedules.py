"""Beta schedules of the forward process q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I).

Every schedule is computed in float64 (the authors compute their schedule in numpy float64 and cast
only when a coefficient is used); the names follow diffusers' `beta_schedule` values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal (2021) Eq. 17: alphabar(t) = f(t) / f(0), f(t) = cos(((t/T + s) / (1 + s)) pi/2)^2."""
    t = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    f = np.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return np.minimum(1 - f[1:] / f[:-1], max_beta)


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Lin et al. (2023) Algorithm 1: shift and scale sqrt(alphabar) so that alphabar_T = 0, keeping alphabar_1."""
    sqrt_alphabar = np.sqrt(np.cumprod(1 - betas))
    first, last = sqrt_alphabar[0], sqrt_alphabar[-1]
    sqrt_alphabar = (sqrt_alphabar - last) * first / (first - last)
    alphabar = sqrt_alphabar**2
    return 1 - np.concatenate([alphabar[:1], alphabar[1:] / alphabar[:-1]])


def make_betas(
    beta_schedule: str,
    num_timesteps: int,
    beta_start: float,
    beta_end: float,
    trained_betas: Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """The float64 betas beta_1..beta_T of a named schedule, or `trained_betas` as given.

    Raises:
        ValueError: for an unknown schedule, `num_timesteps < 1`, a beta range outside (0, 1) or with
            `beta_start > beta_end`, or `trained_betas` of the wrong length or outside (0, 1).
    """
    if not isinstance(num_timesteps, (int, np.integer)) or isinstance(num_timesteps, bool) or num_timesteps < 1:
        raise ValueError(f"`num_train_timesteps` must be an integer >= 1, got {num_timesteps!r}.")
    if trained_betas is not None:
        betas = np.asarray(trained_betas, dtype=np.float64).reshape(-1)
        if betas.shape[0] != num_timesteps:
            raise ValueError(
                f"`trained_betas` has {betas.shape[0]} values but `num_train_timesteps` is {num_timesteps}; "
                "they must match."
            )
        _check_open_unit_interval("trained_betas", betas)
        return betas
    if beta_schedule not in BETA_SCHEDULES:
        raise ValueError(f"`beta_schedule` must be one of {list(BETA_SCHEDULES)}, got {beta_schedule!r}.")
    if beta_schedule == "squaredcos_cap_v2":
        return cosine_betas(num_timesteps)
    _check_open_unit_interval("beta_start", np.array([beta_start]))
    _check_open_unit_interval("beta_end", np.array([beta_end]))
    if beta_start > beta_end:
        raise ValueError(f"`beta_start` ({beta_start}) must not exceed `beta_end` ({beta_end}).")
    if beta_schedule == "linear":
        return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)
    if beta_schedule == "scaled_linear":
        return np.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=np.float64) ** 2
    sigmoid = 1 / (1 + np.exp(-np.linspace(-6, 6, num_timesteps, dtype=np.float64)))
    return sigmoid * (beta_end - beta_start) + beta_start


def _check_open_unit_interval(name: str, values: np.ndarray) -> None:
    bad = ~((values > 0) & (values < 1))
    if bad.any():
        raise ValueError(f"`{name}` must lie in the open interval (0, 1); got {float(values[bad][0])}.")
