"""Arguments of `train_scripts/train_ddpm.py`: typed dataclasses, the paper's set-ups as presets, and parsing.

Precedence, lowest first: the dataclass defaults (the embedded CPU default job), `--preset`, a
`--config` file (JSON or YAML with the same keys as the flags), then the command line.

After the last step the trainer checks the weights are finite, writes a checkpoint, computes the full bound
(all T terms) on --final_eval_batch_size held-out images, FID if --eval_fid_steps is set, draws the final
sample grid (--num_sample_images over --ddpm_num_inference_steps steps), saves the pipeline and the model
card, and pushes with --push_to_hub; each phase logs a line and shows a progress bar. A quick trial run:
--max_train_steps 20 --final_eval_batch_size 0 --num_sample_images 0.

On SIGTERM (a scheduler's preemption, forwarded to every process by torchrun), every process finishes the current
optimizer step, a checkpoint of it is written (unless --checkpointing_steps 0), and the script exits with status 75
(EX_TEMPFAIL): unfinished, to be continued with --resume_from_checkpoint latest. `accelerate launch` that received the
SIGTERM itself returns 143 (128 + SIGTERM) whatever its workers returned.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from accelerate.tracking import get_available_trackers
from accelerate.utils import LoggerType
from diffusers.optimization import SchedulerType
from transformers import HfArgumentParser

from ..core.losses import LOSS_TYPES
from ..core.schedules import BETA_SCHEDULES
from ..core.scheduling_ddpm_paper import PREDICTION_TYPES, VARIANCE_TYPES
from ..core.timestep_sampling import TIMESTEP_SAMPLERS
from ..core.unets import describe_presets
from ..tools.data import DataArguments
from ..tools.hub import check_repo_id
from ..tools.run_folder import DEFAULT_LOGGING_DIR

DEFAULT_LICENSE = "apache-2.0"
# The enumerated flags' choices, listed by --help and checked again for values from --config files.
# piecewise_constant needs a step rule that no flag gives.
LR_SCHEDULES = tuple(kind.value for kind in SchedulerType if kind != SchedulerType.PIECEWISE_CONSTANT)
# learned_range is trained by the hybrid loss (Nichol & Dhariwal) or the bound; the fixed ones by any loss.
LEARNED_VARIANCE = "learned_range"
MIXED_PRECISIONS = ("no", "fp16", "bf16")
# Every tracker accelerate supports, `all` of those installed, or none.
TRACKERS = (*(kind.value for kind in LoggerType), "none")
IMAGE_CHANNELS = (1, 3)
FEATURE_SPACES = ("inception", "random")
HUB_STRATEGIES = ("end", "every_save")


@dataclass
class ModelArguments:
    unet: str = field(
        default="small",
        metadata={"help": f"A UNet preset: {describe_presets()}; or a UNet2DModel config.json path."},
    )
    channels: int | None = field(
        default=None,
        metadata={
            "help": "Image channels: 1 trains on grayscale, 3 on RGB (images are converted); default: the --unet's.",
            "choices": list(IMAGE_CHANNELS),
        },
    )
    dropout: float | None = field(default=None, metadata={"help": "Override the UNet's dropout."})
    num_train_timesteps: int = field(default=1000, metadata={"help": "T, the number of diffusion steps."})
    beta_schedule: str = field(
        default="linear", metadata={"help": "The betas: linear is the paper's.", "choices": list(BETA_SCHEDULES)}
    )
    beta_start: float = field(default=1e-4, metadata={"help": "beta_1 of the linear-type schedules."})
    beta_end: float = field(default=0.02, metadata={"help": "beta_T of the linear-type schedules."})
    prediction_type: str = field(
        default="epsilon",
        metadata={"help": "What the UNet predicts: epsilon is the paper's.", "choices": list(PREDICTION_TYPES)},
    )
    variance_type: str = field(
        default="fixed_large",
        metadata={
            "help": "Reverse-process variance (Sec. 3.2): fixed for sampling, or learned_range (trained by "
            "--loss_type hybrid or vlb; the default with hybrid), which doubles the UNet's output channels.",
            "choices": list(VARIANCE_TYPES),
        },
    )
    ddpm_num_inference_steps: int | None = field(
        default=None, metadata={"help": "Steps of the sampling chain for sample grids; default: all T."}
    )


@dataclass
class TrainingArguments:
    output_dir: str = field(default="ddpm-digits", metadata={"help": "Where the pipeline, card, samples go."})
    seed: int = field(default=0, metadata={"help": "Seed of everything random: data order, noise, init."})
    train_batch_size: int = field(default=128, metadata={"help": "Images per process per micro-batch."})
    total_batch_size: int | None = field(
        default=None,
        metadata={"help": "Images per optimizer step over all processes and accumulation; sets train_batch_size."},
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    num_epochs: int = field(
        default=100, metadata={"help": "Epochs to train for, unless --max_train_steps is given (presets give it)."}
    )
    max_train_steps: int | None = field(
        default=None, metadata={"help": "Optimizer steps to train for; overrides --num_epochs."}
    )
    loss_type: str = field(
        default="simple",
        metadata={
            "help": "The objective: simple is L_simple (Eq. 14); vlb the true bound L (Eq. 5) with the "
            "--variance_type's variances; hybrid is L_simple + --vlb_weight L_vlb with learned variances "
            "(Nichol & Dhariwal 2021), L_vlb training only the variances.",
            "choices": list(LOSS_TYPES),
        },
    )
    vlb_weight: float = field(default=0.001, metadata={"help": "lambda of --loss_type hybrid (Nichol & Dhariwal)."})
    snr_gamma: float | None = field(
        default=None,
        metadata={
            "help": "Min-SNR-gamma weighting of the squared error (Hang et al. 2023; they use 5), for the simple "
            "and hybrid losses and every --prediction_type; default: off."
        },
    )
    timestep_sampler: str = field(
        default="uniform",
        metadata={
            "help": "How t is drawn: uniform (Algorithm 1), or loss_aware: improved DDPM's importance sampling "
            "(p_t proportional to the root mean square of the last 10 losses at t, each loss reweighted by "
            "1 / (T p_t)); its state is saved in the checkpoints.",
            "choices": list(TIMESTEP_SAMPLERS),
        },
    )
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak learning rate."})
    lr_scheduler: str = field(
        default="constant_with_warmup",
        metadata={"help": "The LR schedule (diffusers.optimization).", "choices": list(LR_SCHEDULES)},
    )
    lr_warmup_steps: int = field(default=100, metadata={"help": "Optimizer steps of linear warmup."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2."})
    adam_weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (0: the paper's Adam)."})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip the gradient norm to this; 0 disables."})
    use_ema: bool = field(default=True, metadata={"help": "Keep an EMA of the weights; it is what is sampled."})
    ema_decay: float = field(default=0.999, metadata={"help": "EMA decay (the paper: 0.9999)."})
    ema_warmup: bool = field(
        default=True,
        metadata={"help": "Warm the decay up as 1 - (1 + step/inv_gamma)^-power; off: fixed decay, as the paper."},
    )
    ema_inv_gamma: float = field(default=1.0, metadata={"help": "EMA warm-up inv_gamma."})
    ema_power: float = field(default=3 / 4, metadata={"help": "EMA warm-up power."})
    mixed_precision: str | None = field(
        default=None,
        metadata={
            "help": "Mixed precision; default: accelerate's config. Noise stays float32.",
            "choices": list(MIXED_PRECISIONS),
        },
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for activation memory."})
    channels_last: bool = field(default=False, metadata={"help": "Use the channels_last memory format."})
    compile: bool = field(default=False, metadata={"help": "torch.compile the UNet."})
    cpu_threads: int | None = field(
        default=None,
        metadata={
            "help": "Torch threads per process when training on the CPU; default: the cores this process may use "
            "(CPU affinity, cgroup quota rounded down) divided among this machine's processes (`accelerate launch` "
            "alone would pin one thread per process). A warning at start-up when threads x processes exceed those "
            "cores or other processes keep them busy: then lower it, run fewer processes or stop the other load."
        },
    )
    allow_tf32: bool = field(default=False, metadata={"help": "Allow TF32 matmuls on Ampere+ GPUs (no-op on CPU)."})
    report_to: str = field(
        default="tensorboard",
        metadata={
            "help": "The tracker (any of accelerate's; `all`: every one installed; `none`). --logger is an alias.",
            "choices": list(TRACKERS),
            "aliases": ["--logger"],
        },
    )
    tracker_project_name: str = field(
        default="ddpm_hf",
        metadata={"help": "The trackers' project; TensorBoard writes to output_dir/logging_dir/<this>."},
    )
    run_name: str | None = field(
        default=None,
        metadata={
            "help": "The run's name in the trackers that name runs (wandb, mlflow, trackio, swanlab, clearml); "
            "default: the output_dir's name."
        },
    )
    logging_dir: str = field(default=DEFAULT_LOGGING_DIR, metadata={"help": "Tracker folder, relative to output_dir."})
    logging_steps: int = field(default=50, metadata={"help": "Log (and check the loss is finite) every N steps."})
    save_images_steps: int | None = field(
        default=None,
        metadata={
            "help": "Write a sample grid (a file and the trackers' images) every N steps; default: at each "
            "--eval_steps evaluation; 0: only the final one."
        },
    )
    num_sample_images: int = field(
        default=64,
        metadata={"help": "Images in each sample grid; 0: no grids (nor samples.png on the card)."},
    )
    eval_steps: int = field(
        default=500,
        metadata={"help": "Estimate the bound on held-out images every N steps; 0: never (nor the final bound)."},
    )
    eval_batch_size: int = field(
        default=64,
        metadata={
            "help": "Held-out images in each evaluation during training, and the images or samples per chunk of "
            "every evaluation (grids, bound, FID): the unit shared among processes, so N processes share a grid "
            "or bound of N chunks or more (for a 64-sample grid on 8 processes, 8). One process computes faster "
            "in fewer, larger chunks."
        },
    )
    final_eval_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Held-out images of the final evaluation, which computes the full bound (all T terms, the "
            "card's bits/dim; about T/--eval_num_timesteps times an estimate's work); default: --eval_batch_size; "
            "0: skip it."
        },
    )
    eval_num_timesteps: int | None = field(
        default=50,
        metadata={
            "help": "During training, estimate the bound from N terms: L_T and L_0 exact, the KL sum by stratified "
            "sampling (unbiased; logged with its standard error as eval/bpd_estimate_<N>_terms); unset: all T terms."
        },
    )
    eval_fid_steps: int = field(
        default=0,
        metadata={"help": "Every N steps (and at the end), FID and KID of samples against the held-out set; 0: never."},
    )
    eval_num_samples: int = field(default=256, metadata={"help": "Samples drawn for each FID evaluation."})
    eval_feature_space: str = field(
        default="inception",
        metadata={
            "help": "inception (needs its weights: --inception_weights or a download) or random (a fixed random "
            "network, for machines without them; comparable only with itself).",
            "choices": list(FEATURE_SPACES),
        },
    )
    inception_weights: str | None = field(
        default=None, metadata={"help": "Path of pt_inception-2015-12-05-6726825d.pth, for machines without network."}
    )
    save_model_steps: int = field(default=0, metadata={"help": "Also save the pipeline every N steps (0: at the end)."})
    checkpointing_steps: int = field(
        default=500, metadata={"help": "Save a resumable checkpoint every N steps and at the last; 0: never."}
    )
    checkpoints_total_limit: int | None = field(default=None, metadata={"help": "Keep only the newest N checkpoints."})
    ddp_timeout: int = field(
        default=1800,
        metadata={
            "help": "Seconds a process waits in one exchange with the others before failing: how long a run hangs when "
            "a machine vanishes without closing its connections (a process that dies is noticed at once). It must "
            "exceed what some processes do while the others wait: each machine's first download and decoding of the "
            "dataset (or build of its --data_mode store) before training, and the main process's writes of a "
            "checkpoint or the pipeline to a slow disk. Raise it for a first run on a large dataset."
        },
    )
    save_on_each_node: bool = field(
        default=False,
        metadata={
            "help": "For machines that do not share --output_dir: each machine's first process finishes every "
            "checkpoint in its own output_dir (weights, optimizer, EMA, LR schedule and the RNG states of that "
            "machine's processes), so each machine can resume from its own disk. Not with a shared output_dir, where "
            "the machines would write the same files; the pipeline, card and logs stay the main process's."
        },
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "A checkpoint folder, or `latest` in output_dir/checkpoints (with none there yet: start fresh)."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Train into an --output_dir that holds another run, replacing its pipeline and checkpoints."},
    )


@dataclass
class HubRepoArguments:
    """Where and what to push; shared by the trainer and `train_scripts/push_to_hub.py`."""

    hub_model_id: str | None = field(
        default=None,
        metadata={"help": "The repo to push to, `name` or `namespace/name`; default: the output_dir's name."},
    )
    hub_private_repo: bool | None = field(
        default=None,
        # Bare `--hub_private_repo` means true, as in diffusers' scripts.
        metadata={
            "help": "Create the repo private (bare or true) or public (false); default: the Hub's.",
            "nargs": "?",
            "const": True,
        },
    )
    hub_token: str | None = field(
        default=None,
        metadata={
            "help": "A Hub token with write access; default: HF_TOKEN or the cached `hf auth login`. Never saved."
        },
    )
    hub_upload_checkpoints: bool = field(
        default=False, metadata={"help": "Also upload the resumable checkpoints (large); default: not."}
    )
    hub_upload_logs: bool = field(default=False, metadata={"help": "Also upload the tracker logs; default: not."})
    model_license: str | None = field(
        default=None,
        metadata={"help": "The licence of the weights on the model card; default: the licence the run recorded."},
    )


@dataclass
class HubArguments(HubRepoArguments):
    push_to_hub: bool = field(
        default=False, metadata={"help": "Push the pipeline, card and sample grid to the Hub at the end of training."}
    )
    hub_strategy: str = field(
        default="end",
        metadata={
            "help": "end: push once, after training; every_save: also push (in the background) at each "
            "--save_model_steps save.",
            "choices": list(HUB_STRATEGIES),
        },
    )
    model_license: str | None = field(
        default=DEFAULT_LICENSE, metadata={"help": "The licence of the trained weights on the model card."}
    )


# Older or alternative names of arguments, accepted in --config files as on the command line.
CONFIG_ALIASES = {"logger": "report_to"}
# Arguments that are never written to a file, a tracker or a card.
SECRET_ARGUMENTS = ("hub_token",)

PRESETS: dict[str, dict[str, Any]] = {
    # Ho et al. (2020), Appendix B: CIFAR-10 32x32.
    "cifar10": {
        "dataset_name": "uoft-cs/cifar10",
        "resolution": 32,
        "random_flip": True,
        "unet": "cifar10",
        "variance_type": "fixed_large",
        "total_batch_size": 128,
        "learning_rate": 2e-4,
        "lr_scheduler": "constant_with_warmup",
        "lr_warmup_steps": 5000,
        "max_grad_norm": 1.0,
        "ema_decay": 0.9999,
        "ema_warmup": False,
        "max_train_steps": 800_000,
        "output_dir": "ddpm-cifar10",
    },
    # CelebA-HQ 256x256 (0.5M steps); the dataset must be given.
    "celebahq": {
        "resolution": 256,
        "random_flip": True,
        "unet": "celebahq",
        "variance_type": "fixed_small",
        "total_batch_size": 64,
        "learning_rate": 2e-5,
        "lr_scheduler": "constant_with_warmup",
        "lr_warmup_steps": 5000,
        "max_grad_norm": 1.0,
        "ema_decay": 0.9999,
        "ema_warmup": False,
        "max_train_steps": 500_000,
        "output_dir": "ddpm-celebahq",
    },
}
# LSUN 256x256: as CelebA-HQ; Bedroom 2.4M steps without flips, Cat 1.8M, Church 1.2M.
PRESETS["lsun"] = {**PRESETS["celebahq"], "max_train_steps": 1_200_000, "output_dir": "ddpm-lsun"}
PRESETS["lsun_church"] = dict(PRESETS["lsun"])
PRESETS["lsun_cat"] = {**PRESETS["lsun"], "max_train_steps": 1_800_000}
PRESETS["lsun_bedroom"] = {**PRESETS["lsun"], "max_train_steps": 2_400_000, "random_flip": False}
# Nichol & Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models", CIFAR-10 (Sec. 2-3 and their
# repository's README): T = 4000, cosine schedule, L_hybrid with learned_range variances, dropout 0.3, Adam at
# 1e-4 without warm-up, batch 128, EMA 0.9999, 500K steps.
PRESETS["improved_cifar10"] = {
    **PRESETS["cifar10"],
    "unet": "improved_cifar10",
    "num_train_timesteps": 4000,
    "beta_schedule": "squaredcos_cap_v2",
    "loss_type": "hybrid",
    "variance_type": "learned_range",
    "learning_rate": 1e-4,
    "lr_scheduler": "constant",
    "lr_warmup_steps": 0,
    "max_train_steps": 500_000,
    "output_dir": "ddpm-improved-cifar10",
}


@dataclass
class DDPMTrainArguments:
    """All arguments, as the trainer reads them (`args.data.resolution`, `args.train.seed`, ...)."""

    data: DataArguments
    model: ModelArguments
    train: TrainingArguments
    hub: HubArguments = field(default_factory=HubArguments)
    preset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """One flat dict of every argument (the form of a `--config` file), without the secret ones."""
        values = {"preset": self.preset}
        for group in (self.data, self.model, self.train, self.hub):
            values.update(dataclasses.asdict(group))
        return {name: value for name, value in values.items() if name not in SECRET_ARGUMENTS}


ARGUMENT_GROUPS = (DataArguments, ModelArguments, TrainingArguments, HubArguments)


def scrub_secrets(argv: list[str]) -> None:
    """Replace, in place, the values of the secret arguments in a command line (trackers such as wandb record
    `sys.argv`); the run keeps its parsed copy."""
    for i, token in enumerate(argv):
        name, equals, _ = token.partition("=")
        if name.lstrip("-").replace("-", "_") in SECRET_ARGUMENTS:
            if equals:
                argv[i] = f"{name}=***"
            elif i + 1 < len(argv):
                argv[i + 1] = "***"


def given_flags(argv: list[str]) -> set[str]:
    """The names of the flags given on a command line (`--name value`, `--name=value`, `--some-name`), as the
    dataclass fields spell them; the same for every script."""
    return {token[2:].split("=")[0].replace("-", "_") for token in argv if token.startswith("--")}


def _field_names() -> set[str]:
    return {f.name for cls in ARGUMENT_GROUPS for f in dataclasses.fields(cls)}


def _read_config_file(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--config {path}: no such file.")
    text = file.read_text()
    values = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(values, dict):
        raise ValueError(f"--config {path} must hold a mapping of argument names to values.")
    for alias, name in CONFIG_ALIASES.items():
        if alias in values:
            values[name] = values.pop(alias)
    unknown = sorted(set(values) - _field_names() - {"preset"})
    if unknown:
        raise ValueError(f"--config {path} has unknown arguments: {unknown}.")
    return values


def parse_train_args(argv: list[str] | None = None) -> DDPMTrainArguments:
    """Parse the command line (`argv`, default `sys.argv[1:]`) into `DDPMTrainArguments`."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(PRESETS), default=None)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)
    file_values = _read_config_file(known.config) if known.config else {}
    preset = known.preset or file_values.pop("preset", None)
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {sorted(PRESETS)}.")
    file_values.pop("preset", None)

    parser = HfArgumentParser(ARGUMENT_GROUPS, description=__doc__)
    parser.add_argument("--preset", choices=sorted(PRESETS), help="One of the paper's set-ups; flags override it.")
    parser.add_argument("--config", help="A JSON or YAML file of arguments; flags override it.")
    parser.set_defaults(**{**PRESETS.get(preset, {}), **file_values})
    data, model, train, hub, *_ = parser.parse_args_into_dataclasses(args=rest)
    given = set(file_values) | given_flags(rest)
    if "train_batch_size" in given and "total_batch_size" not in given:
        train.total_batch_size = None  # a batch size given for this run wins over a preset's total
    if train.loss_type == "hybrid" and "variance_type" not in given and "variance_type" not in PRESETS.get(preset, {}):
        model.variance_type = LEARNED_VARIANCE  # what the hybrid loss trains
    return DDPMTrainArguments(data=data, model=model, train=train, hub=hub, preset=preset)


def check_train_args(args: DDPMTrainArguments) -> None:
    """The checks that need nothing but the arguments; the trainer makes them before any work.

    Raises:
        ValueError: naming the flag and what it accepts.
    """
    data, model, train = args.data, args.model, args.train
    if data.dataset_name is not None and data.train_data_dir is not None:
        raise ValueError("Give --dataset_name or --train_data_dir, not both: they name two sources of training images.")
    if args.preset is not None and data.dataset_name is None and data.train_data_dir is None:
        raise ValueError(
            f"--preset {args.preset} trains {data.resolution}x{data.resolution} images: give --dataset_name or "
            "--train_data_dir (the embedded digits are 8x8)."
        )
    T = model.num_train_timesteps
    ranges = {
        "train_batch_size": (train.train_batch_size, 1),
        "gradient_accumulation_steps": (train.gradient_accumulation_steps, 1),
        "num_sample_images": (train.num_sample_images, 0),
        "eval_batch_size": (train.eval_batch_size, 1),
        "final_eval_batch_size": (train.final_eval_batch_size, 0),
        "checkpoints_total_limit": (train.checkpoints_total_limit, 1),
        "max_train_steps": (train.max_train_steps, 1),
        "num_epochs": (train.num_epochs, 1),
        "total_batch_size": (train.total_batch_size, 1),
        "ddpm_num_inference_steps": (model.ddpm_num_inference_steps, 1, T),
        "eval_num_timesteps": (train.eval_num_timesteps, 2, T),
        "logging_steps": (train.logging_steps, 1),
    }
    ranges["eval_num_samples"] = (train.eval_num_samples, 2)
    every = ("save_images_steps", "eval_steps", "eval_fid_steps", "save_model_steps", "checkpointing_steps")
    for name in (*every, "lr_warmup_steps"):
        ranges[name] = (getattr(train, name), 0)
    for name, (value, low, *high) in ranges.items():
        if value is not None and not (low <= value and (not high or value <= high[0])):
            bound = f"in {low}..{high[0]}" if high else f">= {low}"
            raise ValueError(f"--{name} must be {bound}, got {value}.")
    choices = {
        "beta_schedule": (model.beta_schedule, BETA_SCHEDULES),
        "prediction_type": (model.prediction_type, PREDICTION_TYPES),
        "variance_type": (model.variance_type, VARIANCE_TYPES),
        "loss_type": (train.loss_type, LOSS_TYPES),
        "timestep_sampler": (train.timestep_sampler, TIMESTEP_SAMPLERS),
        "channels": (model.channels, (None, *IMAGE_CHANNELS)),
        "lr_scheduler": (train.lr_scheduler, LR_SCHEDULES),
        "mixed_precision": (train.mixed_precision, (None, *MIXED_PRECISIONS)),
        "report_to": (train.report_to, TRACKERS),
        "eval_feature_space": (train.eval_feature_space, FEATURE_SPACES),
    }
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            shown = ", ".join(str(a) for a in allowed if a is not None)
            raise ValueError(f"--{name} must be one of {shown}, got {value!r}.")
    _check_objective(model, train)
    _check_tracker(train.report_to)
    _check_hub_args(args.hub, train)


def _check_objective(model: ModelArguments, train: TrainingArguments) -> None:
    """The loss must train what the model has: learned variances need a bound term, hybrid needs them."""
    learned = model.variance_type == LEARNED_VARIANCE
    if train.loss_type == "hybrid" and not learned:
        raise ValueError(
            f"--loss_type hybrid learns the variances: --variance_type must be {LEARNED_VARIANCE} (its default with "
            f"hybrid), got {model.variance_type}."
        )
    if train.loss_type == "simple" and learned:
        raise ValueError(
            f"--variance_type {LEARNED_VARIANCE} is trained by --loss_type hybrid or vlb; L_simple trains no variance."
        )
    if train.snr_gamma is not None and (train.loss_type == "vlb" or not train.snr_gamma > 0):
        raise ValueError(
            "--snr_gamma weights the squared error of --loss_type simple or hybrid and must be positive; got "
            f"{train.snr_gamma} with --loss_type {train.loss_type}."
        )
    if not train.vlb_weight > 0:
        raise ValueError(f"--vlb_weight must be positive, got {train.vlb_weight}.")


def _check_tracker(report_to: str) -> None:
    """A named tracker must be installed (accelerate would only warn and log nowhere)."""
    installed = [str(tracker) for tracker in get_available_trackers()]
    if report_to not in ("all", "none", *installed):
        raise ValueError(f"--report_to {report_to} needs its package: pip install {report_to}.")


def _check_hub_args(hub: HubArguments, train: TrainingArguments) -> None:
    if hub.hub_strategy not in HUB_STRATEGIES:
        raise ValueError(f"--hub_strategy must be one of {', '.join(HUB_STRATEGIES)}, got {hub.hub_strategy!r}.")
    if hub.push_to_hub and hub.hub_strategy == "every_save" and not train.save_model_steps:
        raise ValueError("--hub_strategy every_save pushes at each --save_model_steps save: give --save_model_steps.")
    if hub.push_to_hub:
        check_repo_id(hub.hub_model_id or Path(train.output_dir).resolve().name, "--hub_model_id")
