"""The job behind `train_scripts/evaluate_ddpm.py`: bits/dim and FID / KID / IS of a pipeline on a dataset,
over several sampler settings (samplers x chain lengths x, for the paper's sampler, reverse variances), written as
JSON, a table, a plot and (when asked) the model card."""

from __future__ import annotations

import csv
import logging
import platform
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from diffusers import UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from tqdm.auto import tqdm

from ..core.pipeline_ddpm import DDPMPipeline
from ..core.samplers import SAMPLERS, TIMESTEP_SPACING, make_scheduler
from ..core.scheduling_ddpm_paper import VARIANCE_TYPES, PaperDDPMScheduler
from ..tools.data import DataArguments, ImageData, load_image_data
from ..tools.distributed import process_state
from ..tools.evaluation import bound_entry, evaluate_bound, fid_entry, generate, sample_metrics, score_samples
from ..tools.hub import source_file
from ..tools.model_card import merge_results, write_model_card
from ..tools.plots import FIGURES_EXTRA, Line, Panel, can_plot, save_panels
from ..tools.run_folder import (
    EVAL_RESULTS_FILE,
    MODEL_CARD_FILE,
    TRAINING_RUN_FILE,
    read_json,
    training_record,
    write_json,
)

logger = logging.getLogger(__name__)  # main process only, by ddpm_hf.tools.cli
METRICS = ("bpd", "fid")
SPLITS = ("test", "train")
FEATURE_SPACES = ("inception", "random")
RESULTS_FILE = "results.json"


@dataclass
class EvaluationArguments:
    model: str = field(metadata={"help": "A pipeline folder or a Hub repo id."})
    revision: str | None = field(default=None, metadata={"help": "The Hub revision (branch, tag or commit)."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Where results.json, the table and the plot go; default: eval-<model name>."}
    )
    split: str = field(
        default="test",
        metadata={
            "help": "The images the bound is scored on. test: the held-out images (the dataset's test split, "
            "--eval_data_dir, or the trainer's fixed 10%%); train: the training images."
        },
    )
    fid_split: str = field(
        default="train",
        metadata={"help": "The images samples are compared with: train (the paper's FID, Sec. 4.1) or test."},
    )
    metrics: str = field(
        default="bpd,fid", metadata={"help": "Comma-separated: bpd (the bound), fid (FID, KID and, for Inception, IS)."}
    )
    num_images: int | None = field(
        default=None, metadata={"help": "Score the bound on the first N images of the split; default: all of them."}
    )
    bpd_num_timesteps: int | None = field(
        default=None,
        metadata={"help": "Estimate the bound from N model calls (labelled as an estimate); default: all T terms."},
    )
    batch_size: int = field(default=64, metadata={"help": "Images per model call, for the bound and for sampling."})
    num_samples: int = field(default=1000, metadata={"help": "Samples drawn for FID / KID / IS per setting."})
    scheduler: str = field(
        default="ddpm",
        metadata={
            "help": f"Comma-separated samplers, each crossed with every --num_inference_steps: {', '.join(SAMPLERS)}. "
            "ddpm: the paper's Algorithm 2 (respaced for fewer steps); ddim: DDIM with eta 0; dpm_solver: "
            "DPM-Solver++ of order 3; euler_ancestral; pndm: PLMS (K steps cost K + 1 model calls). All space their "
            f"steps {TIMESTEP_SPACING!r} (the first at t = T - 1); every result row names its sampler, spacing and "
            "model calls."
        },
    )
    num_inference_steps: str | None = field(
        default=None,
        metadata={"help": "Comma-separated lengths of the sampling chain, e.g. 10,25,50,100,250,1000; default: T."},
    )
    variance_type: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated reverse variances of the ddpm sampler, e.g. fixed_small,fixed_large (the other "
            "samplers have none); default: the model's."
        },
    )
    feature_space: str = field(
        default="inception",
        metadata={
            "help": "inception: the FID Inception network (published FID/KID/IS; needs its weights). random: a "
            "fixed-seed random conv net (ddpm_hf.tools.metrics.RandomFeatureSpace), for machines without the weights; "
            "its FID/KID compare only with numbers in that same space and resolution."
        },
    )
    inception_weights: str | None = field(
        default=None, metadata={"help": "pt_inception-2015-12-05-6726825d.pth, for machines without network."}
    )
    stats_cache_dir: str | None = field(
        default=None, metadata={"help": "Cache of the dataset's feature statistics; default: $HF_HOME/ddpm_hf."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the bound's noise and of the samples."})
    update_model_card: bool = field(
        default=False,
        metadata={"help": "Write eval_results.json into the (local) model folder and render its README.md again."},
    )


def _list(value: str | None, name: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    items = [item.strip() for item in (value or "").split(",") if item.strip()]
    if allowed is not None and (bad := [item for item in items if item not in allowed]):
        raise ValueError(f"--{name} takes {', '.join(allowed)}; got {', '.join(bad)}.")
    return items


# The data arguments that choose which images, and how they are cut; taken from the model's own training run
# when none is given.
DATA_CHOICE = (
    "dataset_name",
    "dataset_config_name",
    "train_data_dir",
    "eval_data_dir",
    "image_column",
    "eval_split_fraction",
    "max_train_samples",
    "center_crop",
)


def data_of_run(model: str, revision: str | None, data_args: DataArguments, given: Collection[str]) -> DataArguments:
    """`data_args`, with the data the model was trained on (its `training_run.json`, in its folder or repo) in
    place of the defaults, unless some data flag was given."""
    if any(name in given for name in DATA_CHOICE):
        return data_args
    record = read_json(path) if (path := source_file(model, TRAINING_RUN_FILE, revision=revision)) else None
    trained = (record or {}).get("args") or {}
    kept = [*DATA_CHOICE, *(() if "dataset_label" in given else ("dataset_label",))]
    return replace(data_args, **{name: trained[name] for name in kept if name in trained})


def model_data(
    model: str, revision: str | None, unet: UNet2DModel, data_args: DataArguments, given: Collection[str]
) -> tuple[ImageData, DataArguments]:
    """The images to evaluate `model` on, decoded at its resolution and channel count: the data flags given,
    else the data it was trained on (`data_of_run`); with the data arguments used."""
    resolution = unet.config.sample_size
    data_args = data_of_run(model, revision, data_args, given)
    if "resolution" in given and data_args.resolution != resolution:
        raise ValueError(f"--resolution {data_args.resolution}: the model makes {resolution}x{resolution} images.")
    data_args = replace(data_args, resolution=resolution)
    return load_image_data(data_args, channels=unet.config.in_channels), data_args


@dataclass
class Setting:
    """One way of sampling: a sampler (`SAMPLERS`), its reverse variance (ddpm only, else None) and chain length;
    how its timesteps are spaced and how many UNet calls a sample costs."""

    scheduler: str
    variance_type: str | None
    num_inference_steps: int
    timestep_spacing: str
    num_model_calls: int

    @property
    def label(self) -> str:
        return sampler_label(asdict(self))


def sampler_label(row: dict[str, Any]) -> str:
    """A setting's (or result row's) sampler: its name, and its variance for ddpm (e.g. `ddpm fixed_large`)."""
    return row["scheduler"] + (f" {row['variance_type']}" if row["variance_type"] else "")


def sampler_settings(
    base: SchedulerMixin, names: list[str], variances: list[str], steps: list[int]
) -> tuple[list[Setting], list[SchedulerMixin]]:
    """Every (sampler, variance for ddpm, chain length) for a model whose scheduler is `base`, with its scheduler;
    built and their timesteps set once here, so that a config a sampler cannot take fails before any sampling."""
    settings, schedulers = [], []
    for name in names:
        for variance in variances if name == "ddpm" else [None]:
            overrides = {} if variance is None else {"variance_type": variance}
            for num_steps in steps:
                scheduler = make_scheduler(name, base.config, **overrides)
                scheduler.set_timesteps(num_steps)
                spacing = scheduler.config.timestep_spacing
                settings.append(Setting(name, variance, num_steps, spacing, len(scheduler.timesteps)))
                schedulers.append(scheduler)
    return settings, schedulers


class DDPMEvaluator:
    """Checks every argument, loads the model, data and feature network (all before any sampling); `run()`
    evaluates and writes the outputs from the main process."""

    def __init__(self, args: EvaluationArguments, data_args: DataArguments, given: Collection[str] = ()):
        """`given`: the data flags given on the command line (the others default to the model's training data)."""
        self.args, self.state = args, process_state()
        self.metrics = _list(args.metrics, "metrics", METRICS)
        if not self.metrics:
            raise ValueError(f"--metrics needs one or more of {', '.join(METRICS)}.")
        for name in ("split", "fid_split"):
            if getattr(args, name) not in SPLITS:
                raise ValueError(f"--{name} must be one of {', '.join(SPLITS)}, got {getattr(args, name)!r}.")
        if args.feature_space not in FEATURE_SPACES:
            raise ValueError(f"--feature_space must be one of {', '.join(FEATURE_SPACES)}, got {args.feature_space!r}.")
        for name in ("batch_size", "num_samples", "num_images"):
            if (value := getattr(args, name)) is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1, got {value}.")
        local = Path(args.model).is_dir()
        if args.update_model_card and not local:
            raise ValueError(f"--update_model_card writes into the model folder; {args.model} is not a local folder.")
        if args.update_model_card and any(
            Path(args.model, f).is_symlink() for f in (MODEL_CARD_FILE, EVAL_RESULTS_FILE)
        ):
            raise ValueError(
                f"--update_model_card: {args.model} is a Hub cache snapshot (its files are links); copy it."
            )

        with self.state.main_process_first():  # one download into the cache
            self.pipeline = DDPMPipeline.from_pretrained(args.model, revision=args.revision).to(self.state.device)
        self.pipeline.set_progress_bar_config(disable=True)
        # The bound needs the paper's scheduler, whatever scheduler the folder was saved with.
        paper = self.pipeline.scheduler
        if not isinstance(paper, PaperDDPMScheduler):
            paper = PaperDDPMScheduler.from_config(paper.config)
        self.paper_scheduler = paper
        unet, T = self.pipeline.unet.eval(), len(paper)
        if args.bpd_num_timesteps is not None and not 2 <= args.bpd_num_timesteps <= T:
            raise ValueError(f"--bpd_num_timesteps must be in 2..{T}, got {args.bpd_num_timesteps}.")
        steps = [int(s) for s in _list(args.num_inference_steps, "num_inference_steps")] or [T]
        if bad := [s for s in steps if not 1 <= s <= T]:
            raise ValueError(f"--num_inference_steps must lie in 1..{T}; got {bad}.")
        names = list(dict.fromkeys(_list(args.scheduler, "scheduler", SAMPLERS)))
        if not names:
            raise ValueError(f"--scheduler needs one or more of {', '.join(SAMPLERS)}.")
        variances = _list(args.variance_type, "variance_type", VARIANCE_TYPES[:4])
        if variances and "ddpm" not in names:
            raise ValueError("--variance_type sets the ddpm sampler's reverse variance; --scheduler has no ddpm.")
        variances = variances or [paper.config.variance_type]
        self.settings, self.schedulers = sampler_settings(paper, names, variances, steps)

        with self.state.main_process_first():  # one decoding into the datasets cache
            data, data_args = model_data(args.model, args.revision, unet, data_args, given)
        splits = {"test": data.eval, "train": data.train}
        self.images, self.fid_images = splits[args.split][: args.num_images], splits[args.fid_split]
        for name, images in ((args.split, self.images), (args.fid_split, self.fid_images)):
            if len(images) < 2:
                raise ValueError(f"The {name} split of {data.source} has fewer than 2 images.")
        self.dataset, self.source = data_args.dataset_id(), data.source
        # What the card calls each split: `test` is the held-out images (the dataset's test or validation split).
        self.split_names = {"test": data.eval_split, "train": "train"}
        self.quality = None
        if "fid" in self.metrics:
            self.quality = sample_metrics(
                args.feature_space, args.inception_weights, self.state.device, args.batch_size, args.seed
            )
        self.output_dir = Path(args.output_dir or f"eval-{Path(args.model).name}")

    def run(self) -> dict[str, Any]:
        """Evaluate, write `results.json` (and, for several settings, the table and plot); returns the results."""
        args, unet = self.args, self.pipeline.unet
        report: dict[str, Any] = {
            "model": args.model,
            "revision": args.revision,
            "dataset": self.source,
            "split": self.split_names[args.split],
            "num_processes": self.state.num_processes,
            "hardware": f"{self.state.num_processes} x {self.state.device.type} ({platform.processor() or 'CPU'})",
            "settings": asdict(args),
        }
        entries: list[dict[str, Any]] = []
        if "bpd" in self.metrics:
            bound = evaluate_bound(
                unet,
                self.paper_scheduler,
                self.images,
                args.batch_size,
                args.bpd_num_timesteps,
                args.seed,
                progress=True,
            )
            report["bound"] = {**bound.to_dict(), "num_images": len(self.images)}
            T = len(self.paper_scheduler)
            entries.append(bound_entry(bound, T, len(self.images), self.dataset, self.split_names[args.split]))
        if "fid" in self.metrics:
            report["quality"] = self._quality()
            for row in report["quality"]:
                how = (
                    f"{row['num_samples']} samples, {sampler_label(row)}, {row['num_inference_steps']} steps "
                    f"({row['timestep_spacing']})"
                )
                split = self.split_names[args.fid_split]
                entries.append(fid_entry(row["fid"], row["feature_space"], how, self.dataset, split))
        report["results"] = entries
        if self.state.is_main_process:
            self._write(report)
        return report

    # ------------------------------------------------------------------ parts

    def _quality(self) -> list[dict[str, Any]]:
        """One row per setting: the setting, the sample count and feature space, and the scores."""
        args = self.args
        rows = []
        original = self.pipeline.scheduler
        settings = list(zip(self.settings, self.schedulers, strict=True))
        try:
            for setting, scheduler in tqdm(settings, desc="FID", disable=not self.state.is_main_process):
                self.pipeline.scheduler = scheduler
                samples = generate(
                    self.pipeline, args.num_samples, args.batch_size, setting.num_inference_steps, args.seed
                )
                scores = score_samples(
                    self.quality, samples, self.fid_images, self.dataset, args.fid_split, args.stats_cache_dir
                )
                row = {**asdict(setting), "num_samples": len(samples), "feature_space": args.feature_space}
                rows.append({**row, **scores})
                if self.state.is_main_process:
                    tqdm.write(f"{setting.label}, {setting.num_inference_steps} steps: FID {rows[-1]['fid']:.4g}")
        finally:
            self.pipeline.scheduler = original
        return rows

    def _write(self, report: dict[str, Any]) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.output_dir / RESULTS_FILE, report)
        rows = report.get("quality") or []
        if len(rows) > 1:
            with open(self.output_dir / "quality_vs_steps.csv", "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
            _plot(rows, self.output_dir / "quality_vs_steps.png")
        if self.args.update_model_card:
            folder = Path(self.args.model)
            earlier = (read_json(folder / EVAL_RESULTS_FILE) or {}).get("results") or []
            results = merge_results(earlier, report["results"])
            write_json(folder / EVAL_RESULTS_FILE, {"results": results})
            repo_id = (training_record(folder).get("run") or {}).get("repo_id")
            write_model_card(folder, self.pipeline, repo_id or str(folder))


def plot_lines(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The quality rows by plot line, one per (sampler, variance) in order of appearance, each sorted by chain
    length; a line is labelled by its sampler, and its variance for ddpm."""
    lines: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        lines.setdefault(sampler_label(row), []).append(row)
    return {label: sorted(mine, key=lambda r: r["num_inference_steps"]) for label, mine in lines.items()}


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    """FID and KID against the chain length, one line per (sampler, variance) (skipped without matplotlib)."""
    if not can_plot():
        logger.warning(f"No {path.name}: plots need matplotlib ({FIGURES_EXTRA}); the table is in the CSV.")
        return
    space, spacing = rows[0]["feature_space"], ", ".join(dict.fromkeys(r["timestep_spacing"] for r in rows))
    fid = Panel("FID", f"sampling steps ({spacing} spacing)", f"FID ({space} features)", log_x=True)
    kid = Panel("KID", f"sampling steps ({spacing} spacing)", f"KID ({space} features)", log_x=True)
    for label, mine in plot_lines(rows).items():
        steps = [r["num_inference_steps"] for r in mine]
        fid.lines.append(Line(steps, [r["fid"] for r in mine], label))
        kid.lines.append(Line(steps, [r["kid_mean"] for r in mine], label, [r["kid_std"] for r in mine]))
    save_panels([fid, kid], path)
