"""A Gradio app for any DDPM pipeline, a folder or a Hub repo: sample with a chosen sampler, watch a sample
emerge from noise (Fig. 6), interpolate between two samples (Fig. 8), and read what the model is.

Requests go through Gradio's queue one at a time (`CONCURRENCY`), at most `QUEUE_SIZE` waiting, each of at
most `MAX_IMAGES` images: memory stays that of one batch, however many people use it. Every input is checked
in the handler too, since the API can send what the sliders would not; a refused input is a message in the
page and the app keeps serving. Gradio is the optional extra `demo` (`pip install "ddpm_hf[demo]"`).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import PIL.Image
import torch

from ..core.images import enlarged, labelled_grid, make_grid
from ..core.paper_sampling import timestep_label
from ..core.pipeline_ddpm import DDPMPipeline
from ..core.samplers import SAMPLERS, make_scheduler
from ..core.scheduling_ddpm_paper import PaperDDPMScheduler
from .hub import source_file
from .model_card import merge_results
from .run_folder import EVAL_RESULTS_FILE, TRAINING_RUN_FILE, read_json

if TYPE_CHECKING:
    import gradio as gr

DEMO_EXTRA = 'pip install "ddpm_hf[demo]"'
MAX_IMAGES = 64  # per request
CONCURRENCY = 1  # requests sampling at once
QUEUE_SIZE = 16  # requests waiting; more are refused with a message
MAX_SEED = 2**31 - 1
DISPLAY_WIDTH = 256  # tiny images are enlarged (nearest-neighbour) to at least this width
SAMPLER_NAMES = {
    "ddpm": "DDPM: the paper's chain (all T steps) or respaced",
    "ddim": "DDIM (eta 0)",
    "dpm_solver": "DPM-Solver++",
    "euler_ancestral": "Euler ancestral",
    "pndm": "PNDM",
}
LAMBDAS = 11  # interpolation weights 0, 0.1, ..., 1: the slider picks one, the strip shows all


@dataclass
class DemoModel:
    """The pipeline served, a copy of it on the paper's scheduler (for trajectories and interpolation), and
    the facts shown about it."""

    pipeline: DDPMPipeline
    paper: DDPMPipeline
    facts: list[tuple[str, str]]

    @property
    def T(self) -> int:
        return self.paper.scheduler.config.num_train_timesteps


def load_model(model: str, revision: str | None = None) -> DemoModel:
    """The pipeline of a folder or Hub repo id, and its facts.

    Raises:
        FileNotFoundError: `model` looks like a path and is no folder.
        ValueError: it cannot be loaded (no such repo or revision, or not a pipeline); before any server starts.
    """
    if not Path(model).is_dir() and (model.startswith((".", "/", "~")) or model.count("/") > 1):
        raise FileNotFoundError(f"--model {model}: no such folder (nor a Hub repo id, `name` or `namespace/name`).")
    try:
        pipeline = DDPMPipeline.from_pretrained(model, revision=revision)
    except (OSError, ValueError) as error:
        raise ValueError(f"--model {model} cannot be loaded as a DDPM pipeline: {error}") from error
    pipeline.set_progress_bar_config(desc="sampling")
    paper = DDPMPipeline(pipeline.unet, PaperDDPMScheduler.from_config(pipeline.scheduler.config))
    paper.set_progress_bar_config(desc="sampling")
    return DemoModel(pipeline, paper, model_facts(model, revision, pipeline))


def model_facts(model: str, revision: str | None, pipeline: DDPMPipeline) -> list[tuple[str, str]]:
    """What the model is, as (fact, value) rows: from its configs, and from its run record and evaluation
    results where the folder or repo has them."""
    unet, scheduler = pipeline.unet.config, pipeline.scheduler.config
    betas = scheduler.beta_schedule + (
        f", {scheduler.beta_start} to {scheduler.beta_end}" if "linear" in scheduler.beta_schedule else ""
    )
    facts = [
        ("model", model + (f" @ {revision}" if revision else "")),
        ("images", f"{unet.sample_size}x{unet.sample_size}, {'grayscale' if unet.in_channels == 1 else 'RGB'}"),
        ("parameters", f"{sum(p.numel() for p in pipeline.unet.parameters()):,}"),
        ("diffusion", f"T = {scheduler.num_train_timesteps}, {betas} betas"),
        ("reverse variance", scheduler.variance_type),
        ("prediction", scheduler.prediction_type),
    ]
    run = _json_beside(model, TRAINING_RUN_FILE, revision)
    if run.get("run"):
        facts.append(("trained", f"{run['run']['global_step']:,} steps on {run['run'].get('dataset_id', '?')}"))
    results = merge_results(
        run.get("results") or [], _json_beside(model, EVAL_RESULTS_FILE, revision).get("results") or []
    )
    for result in results:
        stderr = f" ± {result['stderr']:.2g}" if result.get("stderr") is not None else ""
        facts.append((result["name"], f"{result['value']:.4g}{stderr} ({result['dataset']}, {result['split']})"))
    return facts


def _json_beside(model: str, name: str, revision: str | None) -> dict[str, Any]:
    path = source_file(model, name, revision=revision)
    return (read_json(path) if path is not None else None) or {}


class DemoRequestError(ValueError):
    """An input the app refuses; shown in the page as a message."""


def check_int(name: str, value: float, low: int, high: int) -> int:
    """`value` as an int in low..high, or a `DemoRequestError` naming the control and the range."""
    if value is None or float(value) != int(value) or not low <= int(value) <= high:
        raise DemoRequestError(f"{name} must be a whole number from {low} to {high}; got {value}.")
    return int(value)


def sample(model: DemoModel, num_images: float, seed: float, sampler: str, steps: float) -> list[PIL.Image.Image]:
    """`num_images` samples of the seed with a sampler of `SAMPLER_NAMES` over `steps` reverse steps."""
    num_images = check_int("Number of images", num_images, 1, MAX_IMAGES)
    seed = check_int("Seed", seed, 0, MAX_SEED)
    steps = check_int("Steps", steps, 1, model.T)
    if sampler not in SAMPLERS:
        raise DemoRequestError(f"Sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}.")
    pipe = DDPMPipeline(model.pipeline.unet, make_scheduler(sampler, model.pipeline.scheduler.config))
    pipe.set_progress_bar_config(desc="sampling")
    generator = torch.Generator(pipe.unet.device).manual_seed(seed)
    return pipe(batch_size=num_images, generator=generator, num_inference_steps=steps).images


def trajectory(model: DemoModel, num_rows: float, seed: float, columns: float, steps: float) -> list[PIL.Image.Image]:
    """Progressive generation (Fig. 6) on the paper's chain: the states x_t and the predictions of x_0, one
    chain per row, at `columns` steps from T to 0."""
    num_rows = check_int("Rows", num_rows, 1, 8)
    seed = check_int("Seed", seed, 0, MAX_SEED)
    columns = check_int("Columns", columns, 2, 20)
    steps = check_int("Steps", steps, columns, model.T)
    grids = []
    for kind in ("x_t", "x0"):
        grid, _ = model.paper.progressive_grid(
            num_rows,
            torch.Generator(model.paper.unet.device).manual_seed(seed),
            num_columns=columns,
            kind=kind,
            num_inference_steps=steps,
            scale=_scale(model),
            labels=True,
        )
        grids.append(grid)
    return grids


def interpolation(
    model: DemoModel, seed_a: float, seed_b: float, t: float, weight: float, steps: float
) -> tuple[PIL.Image.Image, PIL.Image.Image]:
    """Interpolation (Fig. 8): two samples (seeds a and b, the paper's chain respaced to `steps`) diffused to t,
    mixed with weights 0, 0.1, ..., 1 and denoised; the strip of all weights and the image at `weight`."""
    seed_a, seed_b = check_int("Seed A", seed_a, 0, MAX_SEED), check_int("Seed B", seed_b, 0, MAX_SEED)
    t = check_int("t", t, 0, model.T - 1)
    steps = check_int("Steps", steps, 1, model.T)
    if weight is None or not 0 <= weight <= 1:
        raise DemoRequestError(f"lambda must lie in [0, 1]; got {weight}.")
    device = model.paper.unet.device
    sources = [
        model.paper(batch_size=1, generator=torch.Generator(device).manual_seed(s), num_inference_steps=steps).images[0]
        for s in (seed_a, seed_b)
    ]
    result = model.paper.interpolate(*sources, t, LAMBDAS, torch.Generator(device).manual_seed(seed_a))
    columns = ["A", *(f"{w:.1f}" for w in result.lambdas), "B"]
    strip = labelled_grid([[sources[0], *result.images, sources[1]]], columns, [timestep_label(t)], _scale(model))
    return strip, enlarged(result.images[round(weight * (LAMBDAS - 1))], DISPLAY_WIDTH)


def _scale(model: DemoModel) -> int:
    size = model.paper.unet.config.sample_size
    return max(1, -(-64 // size))  # cells of at least 64 pixels


def build_demo(model: str, revision: str | None = None) -> gr.Blocks:
    """The app for a pipeline folder or Hub repo id (loaded now: a bad `model` fails before any server starts).
    `build_demo(...).launch()` serves it."""
    try:
        import gradio as gr
    except ImportError as error:
        raise ImportError(f"The demo needs gradio: {DEMO_EXTRA}") from error
    served = load_model(model, revision)
    return _blocks(gr, served)


class ImageFiles:
    """The handlers' images as PNG files, each named by its content and renamed into place once written.

    Gradio writes a returned PIL image into its cache in place (truncate, then write) under a name made of its
    content, so two requests with the same answer (the same seed) can empty a file that a client is still
    downloading. A returned path it copies under a temporary name and renames, as done here: no client ever
    reads a half-written file. The folder goes with this object (the app's handlers hold it) or at exit."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="ddpm_hf-demo-"))
        weakref.finalize(self, shutil.rmtree, self.folder, ignore_errors=True)

    def __call__(self, image: PIL.Image.Image) -> str:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        path = self.folder / f"{hashlib.sha256(data).hexdigest()}.png"
        if not path.exists():
            handle, staging = tempfile.mkstemp(dir=self.folder, suffix=".part")
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.replace(staging, path)
        return str(path)


def _blocks(gr: Any, served: DemoModel) -> gr.Blocks:
    T = served.T

    @contextmanager
    def as_message() -> Iterator[None]:
        try:
            yield
        except DemoRequestError as error:
            raise gr.Error(str(error), print_exception=False) from error

    # Each handler's `progress` tracks the pipelines' tqdm bars, so the page shows the sampling loop's progress.
    tracked = gr.Progress(track_tqdm=True)
    files = ImageFiles()

    def on_sample(num_images, seed, sampler, steps, progress=tracked):
        with as_message():
            images = sample(served, num_images, seed, sampler, steps)
        return files(enlarged(make_grid(images), DISPLAY_WIDTH)), [
            files(enlarged(i, DISPLAY_WIDTH // 2)) for i in images
        ]

    def on_trajectory(num_rows, seed, columns, steps, progress=tracked):
        with as_message():
            return tuple(map(files, trajectory(served, num_rows, seed, columns, steps)))

    def on_interpolate(seed_a, seed_b, t, weight, steps, progress=tracked):
        with as_message():
            return tuple(map(files, interpolation(served, seed_a, seed_b, t, weight, steps)))

    with gr.Blocks(title="DDPM demo") as demo:
        gr.Markdown("# Denoising diffusion probabilistic model\nHo, Jain & Abbeel (2020), served by ddpm_hf.")
        with gr.Tab("Sample"):
            with gr.Row():
                label = f"Number of images (1 to {MAX_IMAGES})"
                num_images = gr.Number(16, precision=0, label=label, elem_id="num-images")
                seed = gr.Number(0, precision=0, label="Seed", elem_id="seed")
                sampler = gr.Dropdown(
                    [(v, k) for k, v in SAMPLER_NAMES.items()], value="ddpm", label="Sampler", elem_id="sampler"
                )
                steps = gr.Slider(
                    1, T, value=min(50, T), step=1, label=f"Steps (T = {T}: the paper's chain)", elem_id="steps"
                )
            run = gr.Button("Sample", variant="primary", elem_id="sample-button")
            grid = gr.Image(label="Samples", type="pil", format="png", elem_id="sample-grid")
            singles = gr.Gallery(label="Single images", format="png", columns=8, elem_id="sample-gallery")
            run.click(on_sample, [num_images, seed, sampler, steps], [grid, singles], api_name="sample")
        with gr.Tab("From noise (Fig. 6)"):
            with gr.Row():
                rows = gr.Slider(1, 8, value=4, step=1, label="Rows", elem_id="chain-rows")
                trajectory_seed = gr.Number(0, precision=0, label="Seed", elem_id="chain-seed")
                columns = gr.Slider(2, 20, value=10, step=1, label="Columns (timesteps shown)", elem_id="chain-columns")
                trajectory_steps = gr.Slider(2, T, value=T, step=1, label="Steps of the chain", elem_id="chain-steps")
            show = gr.Button("Run the chain", variant="primary", elem_id="chain-button")
            states = gr.Image(label="x_t: the state at each step", type="pil", format="png", elem_id="chain-states")
            predictions = gr.Image(
                label="the prediction of x_0 at each step", type="pil", format="png", elem_id="chain-predictions"
            )
            inputs = [rows, trajectory_seed, columns, trajectory_steps]
            show.click(on_trajectory, inputs, [states, predictions], api_name="trajectory")
        with gr.Tab("Interpolation (Fig. 8)"):
            with gr.Row():
                seed_a = gr.Number(0, precision=0, label="Seed A", elem_id="seed-a")
                seed_b = gr.Number(1, precision=0, label="Seed B", elem_id="seed-b")
                t = gr.Slider(0, T - 1, value=T // 2, step=1, label="t: how far both are diffused", elem_id="mix-t")
                weight = gr.Slider(0, 1, value=0.5, step=1 / (LAMBDAS - 1), label="lambda", elem_id="lambda")
                source_steps = gr.Slider(
                    1, T, value=min(100, T), step=1, label="Steps drawing A and B", elem_id="mix-steps"
                )
            mix = gr.Button("Interpolate", variant="primary", elem_id="mix-button")
            strip = gr.Image(label="A, lambda = 0 .. 1, B", type="pil", format="png", elem_id="mix-strip")
            chosen = gr.Image(label="at lambda", type="pil", format="png", elem_id="mix-chosen")
            inputs = [seed_a, seed_b, t, weight, source_steps]
            mix.click(on_interpolate, inputs, [strip, chosen], api_name="interpolate")
        with gr.Tab("The model"):
            gr.Dataframe(
                [list(row) for row in served.facts], headers=["fact", "value"], interactive=False, elem_id="facts"
            )
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return demo
