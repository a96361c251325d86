"""The paper's demonstrations of the reverse process (Ho et al. 2020), as pipeline methods: progressive
generation (Sec. 4.3, Figs. 6-7) and interpolation in latent space (Sec. 4.4, Fig. 8).

Timesteps are the scheduler's, as everywhere in this package: t in 0..T-1 names x_t = `add_noise(x_0, eps, t)`,
the paper's x_{t+1} (PAPER.md's index convention; the authors' code counts the same way). The reverse step at t
turns x_t into the state at t - 1, and the chain's last step (t = 0) gives the sample x_0.

Progressive generation works with any scheduler of the pipeline (the x_0 predictions need one whose `step`
returns them); shared latents and interpolation run the paper's chain from an arbitrary t and need
`PaperDDPMScheduler`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .images import ImageInput, image_to_model_range, labelled_grid
from .scheduling_ddpm_paper import PaperDDPMScheduler

KINDS = ("x0", "x_t")
FINAL_SAMPLE = -1  # the column of the final sample x_0 in an "x_t" grid (the scheduler's `previous_timestep` of 0)
Images = list[PIL.Image.Image] | np.ndarray | torch.Tensor


def timestep_label(timestep: int) -> str:
    """A column label: `t=<timestep>`, or `x_0` for the final sample (`FINAL_SAMPLE`)."""
    return "x_0" if timestep == FINAL_SAMPLE else f"t={timestep}"


@dataclass
class SharedLatentOutput(BaseOutput):
    """Output of `shared_latent_samples`, every image in the requested `output_type`.

    Args:
        images: the `num_samples` samples x_0 ~ p(x_0 | x_t), all continuing from one x_t.
        noisy_sample: that x_t (one image, shown in [0, 1] as (x_t + 1) / 2 clipped).
        pred_original_sample: the model's clipped x_0 prediction at that x_t (one image).
        timestep: t.
    """

    images: Images
    noisy_sample: Images
    pred_original_sample: Images
    timestep: int


@dataclass
class InterpolationOutput(BaseOutput):
    """Output of `interpolate`, every image in the requested `output_type`.

    Args:
        images: one decoded x_0 per mixing weight, in the order of `lambdas`.
        lambdas: the mixing weights, from 0 to 1 inclusive, evenly spaced.
        reconstruction_a: the reconstruction of `image_a` (lambda = 0), i.e. `images[:1]`.
        reconstruction_b: the reconstruction of `image_b` (lambda = 1), i.e. `images[-1:]`.
        sources: the two source images as the model saw them.
        timestep: t, the timestep the sources were diffused to.
    """

    images: Images
    lambdas: list[float]
    reconstruction_a: Images
    reconstruction_b: Images
    sources: Images
    timestep: int


def _check_timestep(t: int, T: int) -> None:
    if not isinstance(t, (int, np.integer)) or not 0 <= t < T:
        raise ValueError(
            f"`t` must be a timestep in 0..{T - 1} (the scheduler's, x_t = add_noise(x_0, eps, t)); got {t!r}."
        )


def _chain_states(timesteps: torch.Tensor) -> list[int | float]:
    """A scheduler's timesteps as Python numbers in sampling order, each once (PNDM visits one twice); whole
    numbers as ints (Euler's timesteps are floats)."""
    values = [int(t) if float(t).is_integer() else float(t) for t in timesteps.tolist()]
    return list(dict.fromkeys(values))


def _check_single_generator(generator: torch.Generator | None) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"`generator` must be one torch.Generator (or None), got {type(generator).__name__}.")


class PaperDemonstrationsMixin:
    """The demonstrations as methods of `DDPMPipeline`, which provides `__call__`, `scheduler`, `unet` and
    `_postprocess`."""

    def _require_paper_scheduler(self, method: str) -> PaperDDPMScheduler:
        """The pipeline's scheduler, which must be ours: `method` runs the paper's chain from an arbitrary t."""
        scheduler = self.scheduler
        if not isinstance(scheduler, PaperDDPMScheduler):
            raise ValueError(
                f"`{method}` runs the paper's reverse chain (Algorithm 2) from an arbitrary timestep t, which needs "
                f"PaperDDPMScheduler; the pipeline's scheduler is {type(scheduler).__name__}. Set "
                "`pipe.scheduler = PaperDDPMScheduler.from_config(pipe.scheduler.config)` (or "
                "`make_scheduler('ddpm', ...)`) first."
            )
        return scheduler

    @torch.no_grad()
    def progressive_grid(
        self,
        batch_size: int = 4,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_columns: int | None = None,
        trajectory_timesteps: Sequence[int] | None = None,
        kind: str = "x0",
        num_inference_steps: int | None = None,
        scale: int = 1,
        labels: bool = False,
    ) -> tuple[PIL.Image.Image, list[int]]:
        """Progressive generation (Sec. 4.3, Fig. 6): one reverse chain per row, shown at several steps left to right.

        The pipeline samples once, recording its trajectory (`trajectory_timesteps`); nothing is sampled here. Any
        scheduler of the pipeline works for `"x_t"`; `"x0"` needs one whose `step` returns the x_0 prediction
        (ours, DDIM, Euler ancestral; not DPM-Solver or PNDM, for which the pipeline raises a ValueError).

        Args:
            batch_size: the number of chains (rows).
            generator: as the pipeline's; the same seed gives the same chains for both kinds.
            num_columns: columns evenly spaced over the chain, first and last included (default 10): over its steps
                for `"x0"` (the last shows the last prediction: the sample for ours and DDIM), over its states
                x_T .. x_0 for `"x_t"`.
            trajectory_timesteps: explicit columns instead, timesteps of the chain (and `FINAL_SAMPLE`, -1, for the
                sample in an `"x_t"` grid); shown in sampling order.
            kind: `"x0"`: the model's clipped prediction of x_0 at x_t (Eq. 15), where large-scale features appear
                first and details last; `"x_t"`: the state x_t itself (as the UNet sees it).
            num_inference_steps: a chain of that many steps (respaced for ours), as the pipeline's; default all T.
            scale: nearest-neighbour enlargement of every image (see `labelled_grid`).
            labels: write each column's timestep above it.

        Returns:
            `(grid, timesteps)`: a `batch_size` x `len(timesteps)` grid of PIL images and the timestep of each column
            (descending, `FINAL_SAMPLE` last if shown).
        """
        if kind not in KINDS:
            raise ValueError(f"`kind` must be one of {list(KINDS)}, got {kind!r}.")
        if num_columns is not None and trajectory_timesteps is not None:
            raise ValueError("Pass `num_columns` or `trajectory_timesteps`, not both.")
        scheduler = self.scheduler
        scheduler.set_timesteps(num_inference_steps or scheduler.config.num_train_timesteps)
        states = _chain_states(scheduler.timesteps) + ([FINAL_SAMPLE] if kind == "x_t" else [])
        if trajectory_timesteps is None:
            num_columns = 10 if num_columns is None else num_columns
            if not isinstance(num_columns, int) or not 2 <= num_columns <= len(states):
                raise ValueError(f"`num_columns` must be an integer in 2..{len(states)}, got {num_columns!r}.")
            columns = [states[k] for k in np.linspace(0, len(states) - 1, num_columns).round().astype(int)]
        else:
            columns = sorted({int(t) for t in trajectory_timesteps}, reverse=True)
            if not columns or not set(columns) <= set(states):
                raise ValueError(
                    f"`trajectory_timesteps` {sorted(set(columns) - set(states))} are not in the {kind} states of the "
                    f"chain ({states[0]} .. {states[-1]})."
                )
        output = self(
            batch_size=batch_size,
            generator=generator,
            num_inference_steps=num_inference_steps,
            trajectory_timesteps=[t for t in columns if t != FINAL_SAMPLE],
            trajectory_kinds=(kind,),
        )
        frames = output.pred_original_samples if kind == "x0" else output.noisy_samples
        by_timestep = {
            **dict(zip(output.trajectory_timesteps or [], frames or [], strict=True)),
            FINAL_SAMPLE: output.images,
        }
        rows = [[by_timestep[t][b] for t in columns] for b in range(batch_size)]
        column_labels = [timestep_label(t) for t in columns] if labels else None
        return labelled_grid(rows, column_labels, scale=scale), columns

    @torch.no_grad()
    def shared_latent_samples(
        self,
        t: int,
        num_samples: int = 4,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
    ) -> SharedLatentOutput:
        """Samples that share the latent x_t (Sec. 4.3, Fig. 7): the larger t, the less they share beyond coarse
        features.

        One reverse chain (Algorithm 2, all T steps) runs from x_T ~ N(0, I) down to x_t, then `num_samples`
        independent chains continue from that x_t to x_0 through the pipeline (`latents` and the sub-chain of
        timesteps t .. 0, which has the full chain's coefficients). The authors' `p_sample_loop_trajectory` does
        the same with `repeat_noise_steps`: one x_T and one noise for the whole batch for the first steps.

        Args:
            t: the shared timestep, in 0..T-1 (T - 1 shares only x_T).
            num_samples: how many chains continue from x_t.
            generator: one generator, for x_T, the shared steps and then the batch's steps.
            output_type: `"pil"`, `"np"` or `"pt"`, as the pipeline's.

        Returns:
            `SharedLatentOutput`.
        """
        scheduler, unet = self._require_paper_scheduler("shared_latent_samples"), self.unet
        T = len(scheduler)
        _check_timestep(t, T)
        _check_single_generator(generator)
        scheduler.set_timesteps(T)
        size = unet.config.sample_size
        shape = (1, unet.config.in_channels, *((size, size) if isinstance(size, int) else size))
        x_t = randn_tensor(shape, generator=generator, device=self._execution_device, dtype=torch.float32)
        for s in range(T - 1, t, -1):  # Algorithm 2 from x_T down to x_t, one chain
            model_output = unet(x_t.to(unet.dtype), s, return_dict=False)[0]
            x_t = scheduler.step(model_output, s, x_t, generator=generator).prev_sample
        output = self(
            batch_size=num_samples,
            generator=generator,
            timesteps=list(range(t, -1, -1)),
            latents=x_t.repeat(num_samples, 1, 1, 1),
            output_type=output_type,
            trajectory_timesteps=[t],
        )
        return SharedLatentOutput(
            images=output.images,
            noisy_sample=self._postprocess(x_t, output_type),
            pred_original_sample=output.pred_original_samples[0][:1],
            timestep=t,
        )

    @torch.no_grad()
    def interpolate(
        self,
        image_a: ImageInput,
        image_b: ImageInput,
        t: int,
        num_weights: int = 11,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
    ) -> InterpolationOutput:
        """Interpolation in latent space (Sec. 4.4, Fig. 8): diffuse both sources to x_t, mix, denoise.

        x_t^a ~ q(x_t | x_0^a) and x_t^b ~ q(x_t | x_0^b) (Eq. 4), the mixture
        x_t = (1 - lambda) x_t^a + lambda x_t^b for each lambda, then x_0 ~ p(x_0 | x_t) by the reverse process
        from t. The larger t, the coarser and more varied the interpolations (T - 1 gives new samples);
        lambda = 0 and 1 reconstruct the sources.

        The two sources get independent noise: q is a stochastic encoder of each (Sec. 4.4), and the authors'
        `interpolate` draws x_t^a and x_t^b by two `q_sample` calls (its comment asks, and leaves open, whether to
        use one noise). With one noise the mixture would simply be the diffused pixel-space blend of the sources.
        Both encodings and the reverse chain's noise are shared by all lambdas (the paper: "We fixed the noise for
        different values of lambda"), so the images differ only through lambda; the result is a function of the
        generator's state.

        Args:
            image_a, image_b: the sources, of the model's size and channels (they are not resized): PIL images
                (converted to the model's mode, L or RGB), numpy arrays `(height, width[, channels])` or tensors
                `(channels, height, width)` / `(1, channels, height, width)`; uint8 in [0, 255] or float in [0, 1].
            t: the timestep the sources are diffused to, in 0..T-1.
            num_weights: the number of lambdas, evenly spaced from 0 to 1 inclusive (at least 2).
            generator: one generator, for the encodings and the reverse chain (default: seeded from torch's global
                generator).
            output_type: `"pil"`, `"np"` or `"pt"`, as the pipeline's.

        Returns:
            `InterpolationOutput`.
        """
        T = len(self._require_paper_scheduler("interpolate"))
        _check_timestep(t, T)
        if not isinstance(num_weights, int) or num_weights < 2:
            raise ValueError(f"`num_weights` must be an integer >= 2 (lambda = 0 and 1 included), got {num_weights!r}.")
        _check_single_generator(generator)
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
        config = self.unet.config
        size = config.sample_size
        shape = (config.in_channels, *((size, size) if isinstance(size, int) else size))
        device = self._execution_device
        x0 = torch.stack(
            [image_to_model_range(image_a, shape, "image_a"), image_to_model_range(image_b, shape, "image_b")]
        ).to(device)
        noise = randn_tensor(x0.shape, generator=generator, device=device, dtype=torch.float32)
        x_t = self.scheduler.add_noise(x0, noise, t)  # Eq. 4 for each source
        lambdas = torch.linspace(0, 1, num_weights, device=device).view(-1, 1, 1, 1)
        mixed = (1 - lambdas) * x_t[:1] + lambdas * x_t[1:]  # exactly x_t^a at lambda = 0 and x_t^b at 1
        # Every lambda's chain draws the same noise: one copy of the generator's state per row.
        generators = [torch.Generator(generator.device).set_state(generator.get_state()) for _ in range(num_weights)]
        images = self(
            batch_size=num_weights,
            generator=generators,
            timesteps=list(range(t, -1, -1)),
            latents=mixed,
            output_type=output_type,
        ).images
        return InterpolationOutput(
            images=images,
            lambdas=lambdas.flatten().tolist(),
            reconstruction_a=images[:1],
            reconstruction_b=images[-1:],
            sources=self._postprocess(x0, output_type),
            timestep=t,
        )
