"""What a trained DDPM shows beyond sampling (Ho et al. 2020): progressive generation (Sec. 4.3, Figs. 6-7),
interpolation in latent space (Sec. 4.4, Fig. 8) and progressive lossy compression (Sec. 4.3, Fig. 5, Table 4).

Timesteps are the scheduler's, as everywhere in this package: t in 0..T-1 names x_t = `add_noise(x_0, eps, t)`,
the paper's x_{t+1} (PAPER.md's index convention; the authors' code counts the same way). The reverse step at t
turns x_t into the state at t - 1, and the chain's last step (t = 0) gives the sample x_0.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import torch
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .data import to_model_range
from .evaluation import chunk_generator, map_chunks
from .images import make_grid
from .likelihood import ModelFn, bits_per_dim
from .plots import Line, Panel, save_panels
from .scheduling_ddpm_paper import PaperDDPMScheduler

if TYPE_CHECKING:
    from .pipeline_ddpm import DDPMPipeline, Images

KINDS = ("x0", "x_t")
FINAL_SAMPLE = -1  # the column of the final sample x_0 in an "x_t" grid (the scheduler's `previous_timestep` of 0)
ImageInput = PIL.Image.Image | np.ndarray | torch.Tensor


# ---------------------------------------------------------------------- figures


def labelled_grid(
    rows: Sequence[Sequence[PIL.Image.Image]],
    column_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    scale: int = 1,
    padding: int = 2,
    font_size: int = 12,
) -> PIL.Image.Image:
    """`make_grid` of equally sized images given row by row, optionally enlarged and labelled.

    Args:
        rows: one list of images per row, all rows of the same length.
        column_labels, row_labels: text written above each column / left of each row (white on black).
        scale: each image is enlarged `scale` times with nearest-neighbour resampling, so that tiny images
            (8x8 digits) stay sharp and the labels fit.
        padding: pixels between images, as `make_grid`'s.
        font_size: of the labels.

    Returns:
        The grid; without labels exactly `make_grid(images, ncols=len(rows[0]), padding=padding)` of the scaled
        images, with labels that grid on a canvas widened on the left and heightened on top.
    """
    if not rows or any(len(row) != len(rows[0]) for row in rows):
        raise ValueError(f"`rows` must be non-empty lists of one length; got lengths {[len(r) for r in rows]}.")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"`scale` must be a positive integer, got {scale!r}.")
    images = [image for row in rows for image in row]
    if scale > 1:
        images = [i.resize((i.width * scale, i.height * scale), PIL.Image.Resampling.NEAREST) for i in images]
    grid = make_grid(images, ncols=len(rows[0]), padding=padding)
    if not column_labels and not row_labels:
        return grid
    font = _font(font_size)
    measure = PIL.ImageDraw.Draw(grid)
    width = {text: measure.textlength(text, font=font) for text in [*(column_labels or []), *(row_labels or [])]}
    top = font_size + 2 * padding if column_labels else 0
    left = math.ceil(max(width[text] for text in row_labels)) + 2 * padding if row_labels else 0
    canvas = PIL.Image.new(grid.mode, (grid.width + left, grid.height + top))
    canvas.paste(grid, (left, top))
    draw = PIL.ImageDraw.Draw(canvas)
    cell_width, cell_height = images[0].size
    for j, text in enumerate(column_labels or []):
        center = left + padding + j * (cell_width + padding) + cell_width / 2
        draw.text((center - width[text] / 2, padding), text, fill="white", font=font)
    for i, text in enumerate(row_labels or []):
        middle = top + padding + i * (cell_height + padding) + cell_height / 2
        draw.text((left - padding - width[text], middle - font_size / 2), text, fill="white", font=font)
    return canvas


def _font(size: int) -> PIL.ImageFont.ImageFont | PIL.ImageFont.FreeTypeFont:
    try:
        return PIL.ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: its one bitmap font
        return PIL.ImageFont.load_default()


def timestep_label(timestep: int) -> str:
    """A column label: `t=<timestep>`, or `x_0` for the final sample (`FINAL_SAMPLE`)."""
    return "x_0" if timestep == FINAL_SAMPLE else f"t={timestep}"


# ---------------------------------------------------------------------- progressive generation


@torch.no_grad()
def progressive_grid(
    pipeline: DDPMPipeline,
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

    The pipeline samples once, recording its trajectory (`trajectory_timesteps`); nothing is sampled here.

    Args:
        pipeline: the model.
        batch_size: the number of chains (rows).
        generator: as the pipeline's; the same seed gives the same chains for both kinds.
        num_columns: columns evenly spaced over the chain, first and last included (default 10): over its steps
            for `"x0"` (the last shows the sample), over its states x_T .. x_0 for `"x_t"`.
        trajectory_timesteps: explicit columns instead, timesteps of the chain (and `FINAL_SAMPLE`, -1, for the
            sample in an `"x_t"` grid); shown in sampling order.
        kind: `"x0"`: the model's clipped prediction of x_0 at x_t (Eq. 15), where large-scale features appear
            first and details last; `"x_t"`: the state x_t itself.
        num_inference_steps: a respaced chain of that many steps, as the pipeline's; default all T.
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
    scheduler = pipeline.scheduler
    scheduler.set_timesteps(num_inference_steps or len(scheduler))
    states = scheduler.timesteps.tolist() + ([FINAL_SAMPLE] if kind == "x_t" else [])
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
    output = pipeline(
        batch_size=batch_size,
        generator=generator,
        num_inference_steps=num_inference_steps,
        trajectory_timesteps=[t for t in columns if t != FINAL_SAMPLE],
    )
    frames = output.pred_original_samples if kind == "x0" else output.noisy_samples
    by_timestep = {
        **dict(zip(output.trajectory_timesteps or [], frames or [], strict=True)),
        FINAL_SAMPLE: output.images,
    }
    rows = [[by_timestep[t][b] for t in columns] for b in range(batch_size)]
    column_labels = [timestep_label(t) for t in columns] if labels else None
    return labelled_grid(rows, column_labels, scale=scale), columns


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


@torch.no_grad()
def shared_latent_samples(
    pipeline: DDPMPipeline,
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
        pipeline: the model.
        t: the shared timestep, in 0..T-1 (T - 1 shares only x_T).
        num_samples: how many chains continue from x_t.
        generator: one generator, for x_T, the shared steps and then the batch's steps.
        output_type: `"pil"`, `"np"` or `"pt"`, as the pipeline's.

    Returns:
        `SharedLatentOutput`.
    """
    scheduler, unet = pipeline.scheduler, pipeline.unet
    T = len(scheduler)
    _check_timestep(t, T)
    _check_single_generator(generator)
    scheduler.set_timesteps(T)
    size = unet.config.sample_size
    shape = (1, unet.config.in_channels, *((size, size) if isinstance(size, int) else size))
    x_t = randn_tensor(shape, generator=generator, device=pipeline._execution_device, dtype=torch.float32)
    for s in range(T - 1, t, -1):  # Algorithm 2 from x_T down to x_t, one chain
        model_output = unet(x_t.to(unet.dtype), s, return_dict=False)[0]
        x_t = scheduler.step(model_output, s, x_t, generator=generator).prev_sample
    output = pipeline(
        batch_size=num_samples,
        generator=generator,
        timesteps=list(range(t, -1, -1)),
        latents=x_t.repeat(num_samples, 1, 1, 1),
        output_type=output_type,
        trajectory_timesteps=[t],
    )
    return SharedLatentOutput(
        images=output.images,
        noisy_sample=pipeline._postprocess(x_t, output_type),
        pred_original_sample=output.pred_original_samples[0][:1],
        timestep=t,
    )


# ---------------------------------------------------------------------- interpolation


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


@torch.no_grad()
def interpolate(
    pipeline: DDPMPipeline,
    image_a: ImageInput,
    image_b: ImageInput,
    t: int,
    num_weights: int = 11,
    generator: torch.Generator | None = None,
    output_type: str = "pil",
) -> InterpolationOutput:
    """Interpolation in latent space (Sec. 4.4, Fig. 8): diffuse both sources to x_t, mix, denoise.

    x_t^a ~ q(x_t | x_0^a) and x_t^b ~ q(x_t | x_0^b) (Eq. 4), the mixture x_t = (1 - lambda) x_t^a + lambda x_t^b for
    each lambda, then x_0 ~ p(x_0 | x_t) by the reverse process from t. The larger t, the coarser and more varied
    the interpolations (T - 1 gives new samples); lambda = 0 and 1 reconstruct the sources.

    The two sources get independent noise: q is a stochastic encoder of each (Sec. 4.4), and the authors'
    `interpolate` draws x_t^a and x_t^b by two `q_sample` calls (its comment asks, and leaves open, whether to
    use one noise). With one noise the mixture would simply be the diffused pixel-space blend of the sources.
    Both encodings and the reverse chain's noise are shared by all lambdas (the paper: "We fixed the noise for
    different values of lambda"), so the images differ only through lambda; the result is a function of the
    generator's state.

    Args:
        pipeline: the model.
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
    T = len(pipeline.scheduler)
    _check_timestep(t, T)
    if not isinstance(num_weights, int) or num_weights < 2:
        raise ValueError(f"`num_weights` must be an integer >= 2 (lambda = 0 and 1 included), got {num_weights!r}.")
    _check_single_generator(generator)
    if generator is None:
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
    config = pipeline.unet.config
    size = config.sample_size
    shape = (config.in_channels, *((size, size) if isinstance(size, int) else size))
    device = pipeline._execution_device
    x0 = torch.stack([_model_range(image_a, shape, "image_a"), _model_range(image_b, shape, "image_b")]).to(device)
    noise = randn_tensor(x0.shape, generator=generator, device=device, dtype=torch.float32)
    x_t = pipeline.scheduler.add_noise(x0, noise, t)  # Eq. 4 for each source
    lambdas = torch.linspace(0, 1, num_weights, device=device).view(-1, 1, 1, 1)
    mixed = (1 - lambdas) * x_t[:1] + lambdas * x_t[1:]  # exactly x_t^a at lambda = 0 and x_t^b at 1
    # Every lambda's chain draws the same noise: one copy of the generator's state per row.
    generators = [torch.Generator(generator.device).set_state(generator.get_state()) for _ in range(num_weights)]
    images = pipeline(
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
        sources=pipeline._postprocess(x0, output_type),
        timestep=t,
    )


def _model_range(image: ImageInput, shape: tuple[int, int, int], name: str) -> torch.Tensor:
    """One image in the data range as a float32 `(channels, height, width)` tensor in [-1, 1]."""
    if isinstance(image, PIL.Image.Image):
        image = np.asarray(image.convert("L" if shape[0] == 1 else "RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3):
            raise ValueError(f"`{name}`: a numpy image must be (height, width[, channels]); got {image.shape}.")
        image = torch.from_numpy(np.array(image)).reshape(*image.shape[:2], -1).permute(2, 0, 1)
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"`{name}` must be a PIL image, a numpy array or a tensor; got {type(image).__name__}.")
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if tuple(image.shape) != shape:
        raise ValueError(
            f"`{name}` is {'x'.join(map(str, image.shape))} (channels x height x width); the model takes "
            f"{'x'.join(map(str, shape))} images. Images are not resized here: resize it first."
        )
    if image.dtype == torch.uint8:
        return to_model_range(image, None, False)
    if not image.is_floating_point():
        raise ValueError(f"`{name}` must be uint8 in [0, 255] or float in [0, 1]; got dtype {image.dtype}.")
    image = image.float()
    if image.min() < 0 or image.max() > 1:
        raise ValueError(
            f"`{name}` is a float image with values in [{image.min():.3g}, {image.max():.3g}]; float images must "
            "lie in [0, 1] (uint8 ones in [0, 255])."
        )
    return image * 2 - 1


def _check_timestep(t: int, T: int) -> None:
    if not isinstance(t, (int, np.integer)) or not 0 <= t < T:
        raise ValueError(
            f"`t` must be a timestep in 0..{T - 1} (the scheduler's, x_t = add_noise(x_0, eps, t)); got {t!r}."
        )


def _check_single_generator(generator: torch.Generator | None) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"`generator` must be one torch.Generator (or None), got {type(generator).__name__}.")


# ---------------------------------------------------------------------- rate-distortion


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
            `ddpm_hf.evaluation.evaluate_bound` gives for the same images, batch size and seed.
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

    Each batch is one `bits_per_dim` call over all T terms with the noise of `ddpm_hf.evaluation.evaluate_bound`
    (chunk k of the index range drawn from `chunk_generator(seed, k)`; shared among processes the same way), so
    the end point is that function's bound on the same images, batch size and seed.

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
    parameter = next(unet.parameters(), None) if isinstance(unet, torch.nn.Module) else None
    device = parameter.device if parameter is not None else torch.device("cpu")

    def work(k: int, indices: range) -> tuple[torch.Tensor, ...]:
        x0 = to_model_range(images[indices.start : indices.stop].to(device), None, False)
        bound = bits_per_dim(unet, scheduler, x0, chunk_generator(seed, k, device), progress)
        parts = (bound.total_bpd, bound.prior_bpd, bound.terms_bpd, bound.x0_mse)
        return tuple(part.double().cpu() for part in parts)

    total, prior, terms, x0_mse = (
        torch.cat(parts) for parts in zip(*map_chunks(len(images), batch_size, work), strict=True)
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
