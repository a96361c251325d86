"""Which timesteps a training batch draws: uniformly (Algorithm 1), or by importance (Nichol & Dhariwal 2021,
Sec. 3.3), each draw then reweighted so that the loss stays an unbiased estimate of the uniform one.

Importance sampling matters for the bound L_vlb, whose terms differ by orders of magnitude across t: drawing t
with probability p_t proportional to sqrt(E[L_t^2]) and weighting its loss by 1 / (T p_t) keeps the expectation
and lowers the variance of the gradient (their Eq. 18).
"""

from __future__ import annotations

import torch

TIMESTEP_SAMPLERS = ("uniform", "loss_aware")


class UniformSampler:
    """t ~ U{0..T-1} (Algorithm 1), every weight 1."""

    def __init__(self, num_timesteps: int):
        self.num_timesteps = num_timesteps

    def probabilities(self) -> torch.Tensor:
        """p_t for t = 0..T-1, float64, summing to 1."""
        return torch.full((self.num_timesteps,), 1.0 / self.num_timesteps, dtype=torch.float64)

    def sample(
        self, batch_size: int, generator: torch.Generator, device: torch.device | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`batch_size` timesteps (long) and their importance weights 1 / (T p_t) (float32), on `device`."""
        t = torch.randint(0, self.num_timesteps, (batch_size,), generator=generator, device=device)
        return t, torch.ones(batch_size, device=device)

    def update(self, timesteps: torch.Tensor, losses: torch.Tensor) -> None:
        """Learn from the unweighted per-sample losses of a step (of all processes); uniform learns nothing."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass


class LossSecondMomentSampler(UniformSampler):
    """Improved DDPM's loss-aware sampler: p_t proportional to sqrt(E[L_t^2]) over the last `history` losses
    seen at each t, mixed with `uniform_prob` of the uniform distribution; uniform until every t has `history`
    losses. Its state (the losses seen) is checkpointed with the run, so a resumed run draws the same t."""

    def __init__(self, num_timesteps: int, history: int = 10, uniform_prob: float = 0.001):
        super().__init__(num_timesteps)
        self.history = history
        self.uniform_prob = uniform_prob
        self.losses = torch.zeros(num_timesteps, history, dtype=torch.float64)
        self.counts = torch.zeros(num_timesteps, dtype=torch.long)

    def warmed_up(self) -> bool:
        return bool((self.counts == self.history).all())

    def probabilities(self) -> torch.Tensor:
        if not self.warmed_up():
            return super().probabilities()
        p = self.losses.pow(2).mean(dim=1).sqrt()
        return (1 - self.uniform_prob) * p / p.sum() + self.uniform_prob / self.num_timesteps

    def sample(
        self, batch_size: int, generator: torch.Generator, device: torch.device | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.probabilities()
        t = torch.multinomial(p.to(generator.device), batch_size, replacement=True, generator=generator)
        weights = 1.0 / (self.num_timesteps * p.to(t.device)[t])
        return t.to(device), weights.to(device, torch.float32)

    def update(self, timesteps: torch.Tensor, losses: torch.Tensor) -> None:
        """Append each loss to its timestep's history (the oldest dropped once `history` are kept), in order."""
        for t, loss in zip(timesteps.tolist(), losses.detach().double().cpu().tolist(), strict=True):
            if self.counts[t] == self.history:
                self.losses[t] = torch.roll(self.losses[t], -1)
                self.losses[t, -1] = loss
            else:
                self.losses[t, self.counts[t]] = loss
                self.counts[t] += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"losses": self.losses.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.losses.copy_(state["losses"])
        self.counts.copy_(state["counts"])


def make_timestep_sampler(name: str, num_timesteps: int) -> UniformSampler:
    """The sampler of `TIMESTEP_SAMPLERS` by name."""
    if name == "uniform":
        return UniformSampler(num_timesteps)
    if name == "loss_aware":
        return LossSecondMomentSampler(num_timesteps)
    raise ValueError(f"`timestep_sampler` must be one of {list(TIMESTEP_SAMPLERS)}, got {name!r}.")
