"""The paper's figures of what a DDPM does beyond sampling, for a trained pipeline (a folder or Hub repo):

    python train_scripts/paper_figures.py --model ddpm-digits --output_dir figures
    python train_scripts/paper_figures.py --model me/ddpm-cifar10 --dataset_name uoft-cs/cifar10 \\
        --figures interpolation,rate_distortion --rd_num_images 1000
    python train_scripts/paper_figures.py --model ddpm-digits --figures progressive --scheduler ddim \\
        --num_inference_steps 50

Writes to --output_dir:
    progressive_x0.png, progressive_xt.png   progressive generation (Sec. 4.3, Fig. 6): rows are samples, columns
                                             reverse steps; the x_0 predictions, then the states x_t
    shared_latent.png                        samples sharing x_t (Fig. 7): per row x_t, its x_0 prediction, samples
    interpolation.png                        interpolating two test images (Sec. 4.4, Figs. 8-9), a row per t
    rate_distortion.png / .csv / .json       progressive lossy compression (Sec. 4.3, Fig. 5, Table 4)

Timesteps are the scheduler's (0..T-1, the paper's t - 1). The data flags are the trainer's; without any, the data
the model was trained on (its training_run.json), else the embedded digits. The test images are the held-out split,
read at the model's resolution. `--scheduler` samples the progressive figures with another sampler
(`ddpm_hf.core.samplers`); one whose step gives no x_0 prediction (dpm_solver, pndm) makes progressive_xt.png only.
The other figures always run the paper's chain (PaperDDPMScheduler). The work is done by the pipeline's methods
(`ddpm_hf.core.paper_sampling`) and `ddpm_hf.tools.rate_distortion`. Each figure shows progress bars (on the main
process) and prints a line when written.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import HfArgumentParser

from ddpm_hf import DDPMPipeline, PaperDDPMScheduler
from ddpm_hf.core.images import labelled_grid
from ddpm_hf.core.paper_sampling import timestep_label
from ddpm_hf.core.samplers import SAMPLERS, make_scheduler, returns_pred_original_sample
from ddpm_hf.jobs.arguments import DataArguments, given_flags
from ddpm_hf.jobs.evaluator import model_data
from ddpm_hf.tools.cli import configure_logging, usage_errors
from ddpm_hf.tools.distributed import progress_bar
from ddpm_hf.tools.plots import FIGURES_EXTRA, can_plot
from ddpm_hf.tools.rate_distortion import rate_distortion

FIGURES = ("progressive", "shared", "interpolation", "rate_distortion")


@dataclass
class FigureArguments:
    model: str = field(metadata={"help": "A pipeline folder or a Hub repo id."})
    revision: str | None = field(default=None, metadata={"help": "The Hub revision (branch, tag or commit)."})
    output_dir: str = field(default="paper-figures", metadata={"help": "Where the PNGs and the tables are written."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing into a non-empty `--output_dir`."}
    )
    figures: str = field(
        default=",".join(FIGURES), metadata={"help": f"Comma-separated figures to make: {', '.join(FIGURES)}."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of every figure's noise (and of the rate-distortion bound)."})
    num_samples: int = field(
        default=8, metadata={"help": "Rows of the progressive figures; samples per shared latent."}
    )
    num_columns: int = field(default=10, metadata={"help": "Reverse steps shown by the progressive figures."})
    num_inference_steps: int | None = field(
        default=None, metadata={"help": "Steps of the progressive figures' (respaced) chain; default: all T."}
    )
    scheduler: str | None = field(
        default=None,
        metadata={
            "help": f"The progressive figures' sampler: {', '.join(SAMPLERS)}, built from the model's scheduler "
            "config with 'trailing' timesteps; dpm_solver and pndm give no x_0 predictions, so only "
            "progressive_xt.png. The other figures always run the paper's chain. Default: the pipeline's own."
        },
    )
    shared_t: str | None = field(
        default=None,
        metadata={"help": "Comma-separated timesteps of the shared latents; default: T/4, T/2, 3T/4 and T (minus 1)."},
    )
    interpolation_t: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated timesteps to interpolate at; default: 0, T/8, 2T/8 .. T (minus 1), as Fig. 9."
        },
    )
    num_lambdas: int = field(default=11, metadata={"help": "Mixing weights from 0 to 1 inclusive (paper: 11)."})
    interpolation_pair: str = field(
        default="0,1", metadata={"help": "Indices in the test split of the two images to interpolate."}
    )
    rd_num_images: int = field(
        default=128, metadata={"help": "Test images of the rate-distortion curve (each costs T model calls)."}
    )
    batch_size: int = field(default=64, metadata={"help": "Images per model call for the rate-distortion bound."})
    image_size: int = field(
        default=48,
        metadata={"help": "Smallest side in pixels of each image in the PNGs: small images are enlarged (nearest)."},
    )


def _timesteps(value: str | None, fractions: tuple[float, ...], T: int, flag: str) -> list[int]:
    """Comma-separated timesteps, checked to lie in 0..T-1; default: round(f * T) - 1 (at least 0) per fraction f."""
    steps = [int(s) for s in value.split(",") if s.strip()] if value else [max(0, round(f * T) - 1) for f in fractions]
    if not steps or (bad := [s for s in steps if not 0 <= s < T]):
        raise ValueError(f"--{flag} must list timesteps in 0..{T - 1}; got {bad or value!r}.")
    return steps


def main(argv: list[str] | None = None) -> list[Path]:
    argv = sys.argv[1:] if argv is None else argv
    configure_logging()
    with usage_errors():
        parser = HfArgumentParser((FigureArguments, DataArguments), description=__doc__)
        args, data_args = parser.parse_args_into_dataclasses(args=argv)
        if os.path.isdir(args.output_dir) and os.listdir(args.output_dir) and not args.overwrite_output_dir:
            raise ValueError(
                f"--output_dir {args.output_dir} is not empty; pass --overwrite_output_dir to write into it."
            )
        figures = [f.strip() for f in args.figures.split(",") if f.strip()]
        if not figures or (bad := sorted(set(figures) - set(FIGURES))):
            raise ValueError(f"--figures takes {', '.join(FIGURES)}; got {bad or args.figures!r}.")
        if "rate_distortion" in figures and not can_plot():
            raise ValueError(f"The rate-distortion figure needs matplotlib: {FIGURES_EXTRA}")
        if args.scheduler is not None and args.scheduler not in SAMPLERS:
            raise ValueError(f"--scheduler takes {', '.join(SAMPLERS)}; got {args.scheduler!r}.")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = DDPMPipeline.from_pretrained(args.model, revision=args.revision).to(device)
    pipe.unet.eval()
    # The progressive figures' sampler (default: the pipeline's own) on the same UNet; the paper's chain for the others.
    progressive = pipe
    if args.scheduler is not None or not isinstance(pipe.scheduler, PaperDDPMScheduler):
        own = pipe.scheduler
        progressive = DDPMPipeline(pipe.unet, own if args.scheduler is None else make_scheduler(args.scheduler, own))
        pipe.scheduler = PaperDDPMScheduler.from_config(own.config)
    T, size = len(pipe.scheduler), pipe.unet.config.sample_size
    scale = max(1, math.ceil(args.image_size / (size if isinstance(size, int) else min(size))))
    shared_t = _timesteps(args.shared_t, (0.25, 0.5, 0.75, 1.0), T, "shared_t")
    interpolation_t = _timesteps(args.interpolation_t, tuple(k / 8 for k in range(9)), T, "interpolation_t")
    test_images = None
    if {"interpolation", "rate_distortion"} & set(figures):
        test_images = model_data(args.model, args.revision, pipe.unet, data_args, given_flags(argv))[0].eval
        pair = [int(i) for i in args.interpolation_pair.split(",")]
        if len(pair) != 2 or not all(0 <= i < len(test_images) for i in pair):
            raise ValueError(f"--interpolation_pair needs two indices in 0..{len(test_images) - 1}; got {pair}.")

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def bars(desc: str) -> None:
        """The pipelines' progress bars over reverse steps, labelled `desc`, shown on the main process only."""
        for pipeline in (pipe, progressive):
            pipeline.set_progress_bar_config(desc=desc, leave=False, disable=not PartialState().is_main_process)

    def seeded() -> torch.Generator:
        return torch.Generator().manual_seed(args.seed)

    def save(image, name: str, started: float) -> None:
        image.save(out / name)
        written.append(out / name)
        print(f"{name}: {image.width}x{image.height} ({time.perf_counter() - started:.1f} s)")

    if "progressive" in figures:
        for kind, name in (("x0", "progressive_x0.png"), ("x_t", "progressive_xt.png")):
            if kind == "x0" and returns_pred_original_sample(progressive.scheduler) is False:
                print(f"{name}: skipped, {type(progressive.scheduler).__name__}.step gives no x_0 prediction")
                continue
            started = time.perf_counter()
            bars(name.removesuffix(".png"))
            grid, _ = progressive.progressive_grid(
                args.num_samples,
                seeded(),
                num_columns=args.num_columns,
                kind=kind,
                num_inference_steps=args.num_inference_steps,
                scale=scale,
                labels=True,
            )
            save(grid, name, started)

    if "shared" in figures:
        started, rows = time.perf_counter(), []
        for t in progress_bar(shared_t, desc="shared_latent"):
            bars(f"shared_latent t={t}")
            shared = pipe.shared_latent_samples(t, args.num_samples, seeded())
            rows.append([*shared.noisy_sample, *shared.pred_original_sample, *shared.images])
        columns = ["x_t", "pred. x0", *(f"#{i + 1}" for i in range(args.num_samples))]
        save(labelled_grid(rows, columns, [timestep_label(t) for t in shared_t], scale), "shared_latent.png", started)

    if "interpolation" in figures:
        started, rows = time.perf_counter(), []
        for t in progress_bar(interpolation_t, desc="interpolation"):
            bars(f"interpolation t={t}")
            result = pipe.interpolate(test_images[pair[0]], test_images[pair[1]], t, args.num_lambdas, seeded())
            rows.append([result.sources[0], *result.images, result.sources[1]])
        weights = [f"{w:.2g}" for w in result.lambdas[1:-1]]
        columns = ["source", "rec.", *weights, "rec.", "source"]
        save(
            labelled_grid(rows, columns, [timestep_label(t) for t in interpolation_t], scale),
            "interpolation.png",
            started,
        )

    if "rate_distortion" in figures:
        started = time.perf_counter()
        images = test_images[: args.rd_num_images]
        curve = rate_distortion(pipe.unet, pipe.scheduler, images, args.batch_size, args.seed, progress=True)
        curve.to_csv(out / "rate_distortion.csv")
        curve.to_json(out / "rate_distortion.json")
        curve.plot(out / "rate_distortion.png")
        written += [out / f"rate_distortion.{ext}" for ext in ("csv", "json", "png")]
        print(
            f"rate_distortion.png/.csv/.json ({time.perf_counter() - started:.1f} s): {curve.num_images} images, "
            f"bound {curve.total_bpd:.4f} bits/dim = rate {curve.rate_bpd[-1]:.4f} + L_0 {curve.decoder_bpd:.4f}; "
            f"L_T {curve.prior_bpd:.2e}; distortion {curve.distortion_rmse[0]:.2f} -> {curve.distortion_rmse[-1]:.2f} "
            "RMSE [0, 255]"
        )
    return written


if __name__ == "__main__":
    main()
