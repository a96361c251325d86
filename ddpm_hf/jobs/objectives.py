"""The job behind `train_scripts/compare_objectives.py`: several training objectives, one run each with the same
data, network, steps and seed, then each scored the same way, to reproduce at small scale the ordering of Table 2
of Ho et al. (2020) (and of Table 1's NLL column).

What the papers found on CIFAR-10, which is the ordering this comparison looks for:

- Ho et al. (2020), Tables 1 and 2: with eps prediction, L_simple (Eq. 14) gives the best samples (FID 3.17)
  but a worse bound (<= 3.75 bits/dim) than training on the true variational bound L (FID 13.51,
  <= 3.70 bits/dim); learned diagonal variances with L were unstable.
- Nichol & Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models": L_vlb with learned variances
  (`learned_range`) is hard to optimise because of its gradient noise; importance sampling of t (`loss_aware`,
  their Sec. 3.3) reduces it and gives their best log-likelihoods; L_hybrid = L_simple + lambda L_vlb (lambda =
  0.001) learns the variances while keeping L_simple's sample quality, and its bound lies between the two.
- Hang et al. (2023), "Efficient Diffusion Training via Min-SNR Weighting Strategy": L_simple with each t
  weighted by min(SNR(t), gamma) / SNR(t) (gamma = 5) converges faster.

The objectives are the trainer's flags (`OBJECTIVES`): `vlb` trains the bound with the trainer's --variance_type
(fixed_large by default: Table 2's "L, fixed isotropic Sigma"), `hybrid` learns `learned_range` variances; the
table names each model's variances.

Each run is a `DDPMTrainer` run in `<output_dir>/<objective>/`, checkpointed every `--quality_every_steps`; a run
whose folder holds its finished pipeline is reused and one with checkpoints is resumed, so an interrupted
comparison continues where it stopped. Each trained model is scored by the evaluation job
(`ddpm_hf.jobs.evaluator.DDPMEvaluator`): the full bound on the held-out images (bits/dim, standard error over
images) and FID / KID of samples against the training images at the full chain and at respaced chains; each
checkpoint's EMA weights (as a pipeline folder) at the first respaced chain, for quality against training steps.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..core.pipeline_ddpm import DDPMPipeline
from ..tools import checkpoints
from ..tools.data import DataArguments
from ..tools.metrics import build_feature_space
from ..tools.plots import FIGURES_EXTRA, Line, Panel, can_plot, save_panels
from ..tools.run_folder import (
    CHECKPOINTS_DIR,
    TRAIN_ARGS_FILE,
    holds_pipeline,
    read_json,
    training_record,
    write_json,
)
from .arguments import DDPMTrainArguments, check_train_args, given_flags, parse_train_args
from .evaluator import DATA_CHOICE, FEATURE_SPACES, RESULTS_FILE, DDPMEvaluator, EvaluationArguments
from .trainer import DDPMTrainer

logger = logging.getLogger(__name__)  # main process only, by ddpm_hf.tools.cli

JSON_FILE = "objectives.json"
TABLE_FILE = "objectives.md"
PLOT_FILE = "quality_vs_train_steps.png"
SCORES_DIR = "scores"  # <output_dir>/scores/<objective>/{final,step-<N>}/: the evaluation job's outputs
FINAL_SCORES = "final"
SNAPSHOT_PIPELINE = "pipeline"  # <output_dir>/scores/<objective>/step-<N>/pipeline/: a checkpoint's EMA weights
KID_SCALE = 1e4  # KIDs are shown x 1e4 in the table, as in the README's measurements

# The trainer flags that each objective sets.
OBJECTIVE_FLAGS = ("loss_type", "snr_gamma", "timestep_sampler")
# Trainer flags that the comparison sets itself, refused among the flags passed through, and why.
CONTROLLED_FLAGS = {
    **dict.fromkeys(OBJECTIVE_FLAGS, "each of --objectives sets it"),
    "checkpointing_steps": "--quality_every_steps sets it",
    "checkpoints_total_limit": "every checkpoint is scored (--quality_every_steps)",
    "resume_from_checkpoint": "a run with checkpoints is resumed, a finished one reused",
    "overwrite_output_dir": "a run is reused, resumed or trained afresh as its folder says",
    "push_to_hub": "the comparison does not push its runs",
}
# Defaults of the runs, before the flags passed through (which may change them): the comparison computes the bound
# and samples itself, so the trainer's final full bound and sample grids are skipped and the training time is
# training alone.
RUN_DEFAULTS = ("--final_eval_batch_size", "0", "--num_sample_images", "0")
# Trainer arguments that do not change the trained weights: a finished run is reused whatever they were.
OUTPUT_ONLY_ARGUMENTS = frozenset(
    """output_dir cpu_threads report_to tracker_project_name run_name logging_dir logging_steps save_images_steps
    num_sample_images eval_steps eval_batch_size final_eval_batch_size eval_num_timesteps eval_fid_steps
    eval_num_samples eval_feature_space inception_weights save_model_steps checkpointing_steps checkpoints_total_limit
    ddp_timeout save_on_each_node resume_from_checkpoint overwrite_output_dir ddpm_num_inference_steps push_to_hub
    hub_strategy hub_model_id hub_private_repo hub_upload_checkpoints hub_upload_logs model_license dataset_label
    cache_dir skip_bad_images""".split()
)


@dataclass(frozen=True)
class Objective:
    """One training objective: the trainer's loss, min-SNR weighting and timestep sampler."""

    name: str
    loss_type: str
    timestep_sampler: str
    snr_gamma: float | None
    label: str  # the loss as the table names it
    reference: str

    def settings(self) -> dict[str, Any]:
        return {"loss_type": self.loss_type, "snr_gamma": self.snr_gamma, "timestep_sampler": self.timestep_sampler}

    def trainer_flags(self) -> list[str]:
        """The trainer flags of this objective, given explicitly so that no preset or `--config` file changes them
        (None, no min-SNR weighting, has no flag)."""
        flags = []
        for name, value in self.settings().items():
            if value is not None:
                flags += [f"--{name}", f"{value:g}" if isinstance(value, float) else str(value)]
        return flags


OBJECTIVES: dict[str, Objective] = {
    objective.name: objective
    for objective in (
        Objective("simple", "simple", "uniform", None, "L_simple", "Ho et al. 2020, Eq. 14"),
        Objective("simple_snr5", "simple", "uniform", 5.0, "L_simple, min-SNR-5", "Hang et al. 2023"),
        Objective("vlb", "vlb", "uniform", None, "L_vlb", "Ho et al. 2020, Eq. 5"),
        Objective("vlb_is", "vlb", "loss_aware", None, "L_vlb", "Nichol & Dhariwal 2021, Sec. 3.3"),
        Objective("hybrid", "hybrid", "uniform", None, "L_hybrid", "Nichol & Dhariwal 2021, Sec. 3.1"),
        Objective("hybrid_is", "hybrid", "loss_aware", None, "L_hybrid", "Nichol & Dhariwal 2021, Secs. 3.1, 3.3"),
    )
}


def describe(objective: Objective) -> str:
    """The objective for `--help` and the table: its loss, weighting and timestep sampler, and its source."""
    sampler = "importance-sampled t" if objective.timestep_sampler == "loss_aware" else "uniform t"
    return f"{objective.label}, {sampler} ({objective.reference})"


@dataclass
class ComparisonArguments:
    output_dir: str = field(
        default="objectives",
        metadata={
            "help": f"Where each run goes (<output_dir>/<objective>/), with the scores ({SCORES_DIR}/), "
            f"{JSON_FILE}, {TABLE_FILE} and {PLOT_FILE}. Run again to continue: finished runs are reused."
        },
    )
    objectives: str = field(
        default=",".join(OBJECTIVES),
        metadata={
            "help": "Comma-separated objectives, one training run each: "
            + "; ".join(f"{o.name}: {describe(o)}" for o in OBJECTIVES.values())
            + "."
        },
    )
    seed: int = field(
        default=0, metadata={"help": "Seed of every run (data order, noise, initial weights) and of the scoring."}
    )
    quality_every_steps: int = field(
        default=300,
        metadata={
            "help": "Checkpoint every N training steps (the trainer's --checkpointing_steps) and score FID / KID "
            "of each checkpoint's EMA weights at the first --num_inference_steps, for quality against training "
            "steps; 0: the final model only (and no checkpoints, so an interrupted run starts again)."
        },
    )
    num_inference_steps: str = field(
        default="100",
        metadata={
            "help": "Comma-separated lengths of respaced sampling chains scored besides the full chain of T steps, "
            "each in 1..T; the first is also the one scored along training."
        },
    )
    num_samples: int = field(default=256, metadata={"help": "Samples drawn for FID / KID, per chain and model."})
    feature_space: str = field(
        default="random",
        metadata={
            "help": "FID / KID features: random (a fixed random network, needs no weights; its numbers compare "
            "only with each other) or inception (the FID Inception network; needs its weights).",
            "choices": list(FEATURE_SPACES),
        },
    )
    inception_weights: str | None = field(
        default=None, metadata={"help": "pt_inception-2015-12-05-6726825d.pth, for --feature_space inception."}
    )
    num_bound_images: int | None = field(
        default=None,
        metadata={"help": "Score the full bound on the first N held-out images; default: all of them."},
    )
    batch_size: int = field(default=64, metadata={"help": "Images per model call, for the bound and for sampling."})
    stats_cache_dir: str | None = field(
        default=None, metadata={"help": "Cache of the training images' feature statistics; default: $HF_HOME/ddpm_hf."}
    )


# ---------------------------------------------------------------------- checking the command line


def parse_objectives(value: str) -> list[Objective]:
    """The objectives named in `--objectives` (comma-separated, in order, without repeats).

    Raises:
        ValueError: an unknown or missing name, naming the flag and the names it takes.
    """
    names = list(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    bad = [name for name in names if name not in OBJECTIVES]
    if not names or bad:
        got = f"unknown {', '.join(bad)}" if bad else f"{value!r}"
        raise ValueError(f"--objectives takes comma-separated names among {', '.join(OBJECTIVES)}; got {got}.")
    return [OBJECTIVES[name] for name in names]


def parse_step_counts(value: str, T: int) -> list[int]:
    """The respaced chain lengths of `--num_inference_steps`, each in 1..T, without repeats.

    Raises:
        ValueError: naming the flag and what it takes.
    """
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items or not all(item.isdigit() and 1 <= int(item) <= T for item in items):
        raise ValueError(
            f"--num_inference_steps takes comma-separated chain lengths in 1..{T} (T, the --num_train_timesteps); "
            f"got {value!r}."
        )
    return list(dict.fromkeys(int(item) for item in items))


def check_passed_flags(trainer_argv: list[str]) -> None:
    """The trainer flags passed through may not set what the comparison sets itself.

    Raises:
        ValueError: naming the flag and why.
    """
    for name in sorted(given_flags(trainer_argv) & set(CONTROLLED_FLAGS)):
        raise ValueError(f"--{name} is not passed to the trainer here: {CONTROLLED_FLAGS[name]}.")


def check_comparison_args(args: ComparisonArguments) -> None:
    """Ranges and choices of the comparison's own flags.

    Raises:
        ValueError: naming the flag and what it takes.
    """
    lowest = {"quality_every_steps": 0, "num_samples": 2, "batch_size": 1, "num_bound_images": 2}
    for name, low in lowest.items():
        if (value := getattr(args, name)) is not None and value < low:
            raise ValueError(f"--{name} must be >= {low}, got {value}.")
    if args.feature_space not in FEATURE_SPACES:
        raise ValueError(f"--feature_space must be one of {', '.join(FEATURE_SPACES)}, got {args.feature_space!r}.")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("compare_objectives runs in one process; start it with python, not several processes.")


def run_argv(trainer_argv: list[str], objective: Objective | None, run_dir: Path, seed: int, every: int) -> list[str]:
    """A run's trainer command line: the comparison's defaults, the flags passed through, then what the
    comparison sets (the objective's flags, the folder, the seed, the checkpoints), which win."""
    own = objective.trainer_flags() if objective is not None else []
    fixed = ["--output_dir", str(run_dir), "--seed", str(seed), "--checkpointing_steps", str(every)]
    return [*RUN_DEFAULTS, *trainer_argv, *own, *fixed]


def objective_train_args(objective: Objective, argv: list[str]) -> DDPMTrainArguments:
    """The trainer's arguments for `objective`'s run, checked as the trainer checks them.

    Raises:
        ValueError: the trainer does not take the objective's flags, or a `--config` file overrides them.
    """
    flags = " ".join(objective.trainer_flags())
    try:
        args = parse_train_args(argv)
        check_train_args(args)
    except ValueError as error:
        raise ValueError(
            f"--objectives {objective.name} trains with `{flags}`, which this trainer refuses: {error}"
        ) from error
    parsed = args.to_dict()
    for name, wanted in objective.settings().items():
        if (value := parsed[name]) != wanted:
            raise ValueError(f"--objectives {objective.name} needs {name} = {wanted}; the trainer flags give {value}.")
    return args


# ---------------------------------------------------------------------- the runs


@dataclass
class PlannedRun:
    """One objective's training run: its arguments, folder, and what to do (`train`, `resume` or `reuse`)."""

    objective: Objective
    args: DDPMTrainArguments
    run_dir: Path
    action: str
    argv: list[str]
    wall_seconds: float | None = None  # of the training done by this invocation

    @property
    def scores_dir(self) -> Path:
        return self.run_dir.parent / SCORES_DIR / self.objective.name


def finished(run_dir: Path) -> bool:
    """Whether `run_dir` holds a pipeline saved after the run's last step."""
    facts = training_record(run_dir).get("run") or {}
    step, last = facts.get("global_step"), facts.get("max_steps")
    return holds_pipeline(run_dir) and step is not None and last is not None and step >= last


def differing_arguments(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The arguments that change the trained weights and differ between a saved run and this one (those that only
    one of them knows are skipped)."""
    common = (set(saved) & set(now)) - OUTPUT_ONLY_ARGUMENTS
    return sorted(name for name in common if saved[name] != now[name])


def plan_run(objective: Objective, args: DDPMTrainArguments, argv: list[str], run_dir: Path) -> PlannedRun:
    """Reuse a finished run, resume one with checkpoints, or train afresh (replacing what an earlier, unfinished
    attempt left without a checkpoint).

    Raises:
        ValueError: the folder holds a run of other arguments.
    """
    has_checkpoints = bool(checkpoints.complete_checkpoints(run_dir / CHECKPOINTS_DIR))
    if finished(run_dir) or has_checkpoints:
        saved = training_record(run_dir).get("args") or read_json(run_dir / TRAIN_ARGS_FILE) or {}
        if differ := differing_arguments(saved, args.to_dict()):
            shown = ", ".join(f"{name}: {saved[name]!r} there, {args.to_dict()[name]!r} now" for name in differ)
            raise ValueError(
                f"{run_dir} holds a run of objective {objective.name} with other arguments ({shown}); choose "
                "another --output_dir or delete that folder."
            )
    if finished(run_dir):
        return PlannedRun(objective, args, run_dir, "reuse", argv)
    if has_checkpoints:
        return PlannedRun(objective, args, run_dir, "resume", [*argv, "--resume_from_checkpoint", "latest"])
    fresh = [*argv, "--overwrite_output_dir"] if run_dir.exists() else argv
    return PlannedRun(objective, args, run_dir, "train", fresh)


def train_run(run: PlannedRun) -> None:
    """Train (or resume) `run` in this process through `DDPMTrainer`, timing it; a fresh run drops the scores of
    whatever was in its folder before."""
    if run.action == "reuse":
        logger.info(f"{run.objective.name}: reusing the finished run in {run.run_dir} (not retrained)")
        return
    if run.action == "train":
        shutil.rmtree(run.scores_dir, ignore_errors=True)
    logger.info(f"{run.objective.name}: {'resuming' if run.action == 'resume' else 'training'} in {run.run_dir}")
    started = time.perf_counter()
    DDPMTrainer(parse_train_args(run.argv)).train()
    run.wall_seconds = time.perf_counter() - started
    if not finished(run.run_dir):
        raise RuntimeError(f"{run.run_dir}: the trainer ended without saving the final pipeline.")


# ---------------------------------------------------------------------- scoring


def checkpoint_weights(checkpoint: Path, use_ema: bool) -> list[torch.Tensor] | dict[str, torch.Tensor]:
    """The weights the trainer samples at `checkpoint`: the EMA's shadow parameters (in `UNet2DModel.parameters()`
    order, from the custom state accelerate saved for the EMA), or the trained weights without an EMA.

    Raises:
        FileNotFoundError: the checkpoint holds no EMA state though the run kept one.
    """
    if not use_ema:
        return {name.removeprefix("_orig_mod."): w for name, w in load_file(checkpoint / "model.safetensors").items()}
    for path in sorted(checkpoint.glob("custom_checkpoint_*.pkl")):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # another object's state (the LR schedule) need not load as plain tensors
            continue
        if isinstance(state, dict) and "shadow_params" in state:
            return state["shadow_params"]
    raise FileNotFoundError(f"{checkpoint} holds no EMA state (custom_checkpoint_*.pkl with shadow_params).")


def snapshot_pipeline(run_dir: Path, checkpoint: Path, use_ema: bool, destination: Path) -> Path:
    """The pipeline of `run_dir` with the weights of one of its checkpoints, saved to `destination` (once)."""
    if holds_pipeline(destination):
        return destination
    pipe = DDPMPipeline.from_pretrained(run_dir)
    weights = checkpoint_weights(checkpoint, use_ema)
    if isinstance(weights, dict):
        pipe.unet.load_state_dict(weights)
    else:
        with torch.no_grad():
            for parameter, value in zip(pipe.unet.parameters(), weights, strict=True):
                parameter.copy_(value)
    pipe.save_pretrained(destination)
    return destination


def evaluation_args(
    args: ComparisonArguments, model: Path, out: Path, steps: list[int], bound: bool
) -> EvaluationArguments:
    """The evaluation job's arguments for one model: the full bound (when `bound`) on the held-out images, and FID /
    KID of `num_samples` samples against the training images for each chain length in `steps`."""
    return EvaluationArguments(
        model=str(model),
        output_dir=str(out),
        split="test",
        fid_split="train",
        metrics="bpd,fid" if bound else "fid",
        num_images=args.num_bound_images,
        batch_size=args.batch_size,
        num_samples=args.num_samples,
        scheduler="ddpm",
        num_inference_steps=",".join(str(s) for s in steps),
        feature_space=args.feature_space,
        inception_weights=args.inception_weights,
        stats_cache_dir=args.stats_cache_dir,
        seed=args.seed,
    )


def evaluate(eval_args: EvaluationArguments, data_args: DataArguments) -> dict[str, Any]:
    """The evaluation job's report for one model, on the run's own data; read back from its `results.json` when an
    earlier comparison wrote it with the same settings."""
    cached = read_json(Path(eval_args.output_dir) / RESULTS_FILE) or {}
    now = {k: v for k, v in asdict(eval_args).items() if k not in ("model", "output_dir")}
    before = {k: v for k, v in (cached.get("settings") or {}).items() if k not in ("model", "output_dir")}
    if before == now:
        logger.info(f"Reusing the scores in {eval_args.output_dir}")
        return cached
    return DDPMEvaluator(eval_args, data_args, given=DATA_CHOICE).run()


def quality_row(row: dict[str, Any]) -> dict[str, Any]:
    """FID and KID (mean and spread over subsets) of one chain, with what produced them."""
    keys = ("num_inference_steps", "variance_type", "num_samples", "feature_space", "fid", "kid_mean", "kid_std")
    return {key: row[key] for key in keys}


def score_final(run: PlannedRun, args: ComparisonArguments, steps: list[int]) -> dict[str, Any]:
    """The finished model's bound and its FID / KID at every chain length in `steps`."""
    logger.info(f"{run.objective.name}: the full bound and FID / KID at {', '.join(map(str, steps))} steps")
    out = run.scores_dir / FINAL_SCORES
    report = evaluate(evaluation_args(args, run.run_dir, out, steps, bound=True), run.args.data)
    return {"bound": report["bound"], "quality": [quality_row(row) for row in report["quality"]]}


def score_checkpoints(run: PlannedRun, args: ComparisonArguments, num_steps: int) -> list[dict[str, Any]]:
    """FID / KID at `num_steps` sampling steps of each checkpoint before the last step, with its training step."""
    last = training_record(run.run_dir)["run"]["global_step"]
    points = []
    for checkpoint in checkpoints.complete_checkpoints(run.run_dir / CHECKPOINTS_DIR):
        step = checkpoints.read_state(checkpoint)["global_step"]
        if step >= last:
            continue  # the final model, scored by `score_final`
        logger.info(f"{run.objective.name}: FID / KID of training step {step} at {num_steps} sampling steps")
        out = run.scores_dir / f"step-{step}"
        model = snapshot_pipeline(run.run_dir, checkpoint, run.args.train.use_ema, out / SNAPSHOT_PIPELINE)
        report = evaluate(evaluation_args(args, model, out, [num_steps], bound=False), run.args.data)
        points.append({"train_step": step, **quality_row(report["quality"][0])})
    return points


def loss_label(run: PlannedRun) -> str:
    """The objective's loss as the table names it, with lambda for L_hybrid (Nichol & Dhariwal's Eq. 16)."""
    weight = run.args.to_dict().get("vlb_weight")
    if run.objective.loss_type == "hybrid" and weight is not None:
        return f"{run.objective.label}, lambda {weight:g}"
    return run.objective.label


def objective_row(run: PlannedRun, args: ComparisonArguments, steps: list[int]) -> dict[str, Any]:
    """Everything measured for one objective: its settings, training, bound, and quality (final and along
    training)."""
    facts = training_record(run.run_dir)["run"]
    final = score_final(run, args, steps)
    curve_steps = steps[1] if len(steps) > 1 else steps[0]
    at_curve = next(row for row in final["quality"] if row["num_inference_steps"] == curve_steps)
    curve = [*score_checkpoints(run, args, curve_steps), {"train_step": facts["global_step"], **at_curve}]
    return {
        "objective": run.objective.name,
        "loss": loss_label(run),
        "reference": run.objective.reference,
        **run.objective.settings(),
        "vlb_weight": run.args.to_dict().get("vlb_weight") if run.objective.loss_type == "hybrid" else None,
        "variance_type": final["quality"][0]["variance_type"],
        "run_dir": str(run.run_dir),
        "reused": run.action == "reuse",
        "train_steps": facts["global_step"],
        "train_seconds": facts.get("train_seconds"),
        "wall_seconds": run.wall_seconds,
        "num_parameters": facts.get("num_parameters"),
        **final,
        "quality_vs_train_steps": {"num_inference_steps": curve_steps, "points": curve},
    }


# ---------------------------------------------------------------------- outputs


def _kid(row: dict[str, Any]) -> str:
    return f"{row['kid_mean'] * KID_SCALE:.3g} ± {row['kid_std'] * KID_SCALE:.2g}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds:.1f} s" if seconds < 100 else f"{seconds:.0f} s"


def markdown_table(rows: list[dict[str, Any]], steps: list[int]) -> str:
    """One line per objective: loss, timestep sampler, variances, bits/dim ± SE, FID and KID at each chain length,
    training time."""
    header = ["objective", "loss", "t sampler", "variance", "bits/dim ± SE"]
    for s in steps:
        header += [f"FID ({s} steps)", f"KID x 1e4 ({s} steps)"]
    header.append("training time")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        bound = row["bound"]
        cells = [row["objective"], row["loss"], row["timestep_sampler"], row["variance_type"]]
        cells.append(f"{bound['bpd']:.4f} ± {bound['stderr']:.4f}")
        by_steps = {q["num_inference_steps"]: q for q in row["quality"]}
        for s in steps:
            cells += [f"{by_steps[s]['fid']:.4g}", _kid(by_steps[s])]
        cells.append(_duration(row["train_seconds"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_quality(rows: list[dict[str, Any]], path: Path) -> bool:
    """FID and KID (with its spread over subsets) against training steps, a line per objective; False (with a
    warning) without matplotlib."""
    if not can_plot():
        logger.warning(f"No {path.name}: plots need matplotlib ({FIGURES_EXTRA}); the numbers are in {JSON_FILE}.")
        return False
    first = rows[0]["quality_vs_train_steps"]
    steps, space = first["num_inference_steps"], first["points"][0]["feature_space"]
    fid = Panel(f"FID, {steps} sampling steps", "training steps", f"FID ({space} features)")
    kid = Panel(f"KID, {steps} sampling steps", "training steps", f"KID ({space} features)")
    for row in rows:
        points = row["quality_vs_train_steps"]["points"]
        xs = [p["train_step"] for p in points]
        fid.lines.append(Line(xs, [p["fid"] for p in points], row["objective"]))
        kid.lines.append(Line(xs, [p["kid_mean"] for p in points], row["objective"], [p["kid_std"] for p in points]))
    save_panels([fid, kid], path)
    return True


# ---------------------------------------------------------------------- the job

REPORT_NOTES = {
    "bound": "The full variational bound (Eq. 5, all T terms) in bits/dim on the held-out images: mean over images "
    "and its standard error (stderr); prior_bpd is L_T, decoder_bpd L_0.",
    "quality": "FID and KID of num_samples samples against the training images in feature_space, for each chain "
    "length (num_inference_steps; T is the full chain, fewer steps a respaced chain); kid_std is the spread of "
    "KID over its random subsets.",
    "quality_vs_train_steps": "The same at one chain length for each checkpoint's EMA weights and the final model.",
    "train_seconds": "The trainer's wall time of the run (training, checkpoints and its own evaluations, if any), "
    "summed over resumed parts.",
    "wall_seconds": "Wall time of this invocation's training of the run (set-up included); null when reused.",
}


class ObjectiveComparison:
    """Checks every argument and plans every run (all before any training); `run()` trains, scores and writes."""

    def __init__(self, args: ComparisonArguments, trainer_argv: list[str]):
        """`trainer_argv`: the trainer flags given to every run (`train_scripts/train_ddpm.py --help`)."""
        check_comparison_args(args)
        check_passed_flags(trainer_argv)
        self.args, self.output_dir = args, Path(args.output_dir)
        self.objectives = parse_objectives(args.objectives)
        try:
            base = parse_train_args(run_argv(trainer_argv, None, self.output_dir, args.seed, args.quality_every_steps))
            check_train_args(base)
        except ValueError as error:
            shown = " ".join(trainer_argv) or "(none)"
            raise ValueError(f"the flags passed to train_ddpm.py ({shown}): {error}") from error
        self.T = base.model.num_train_timesteps
        self.steps = [self.T, *(s for s in parse_step_counts(args.num_inference_steps, self.T) if s != self.T)]
        build_feature_space(args.feature_space, args.inception_weights)  # missing weights stop the job now
        self.runs = []
        for objective in self.objectives:
            run_dir = self.output_dir / objective.name
            argv = run_argv(trainer_argv, objective, run_dir, args.seed, args.quality_every_steps)
            train_args = objective_train_args(objective, argv)
            self.runs.append(plan_run(objective, train_args, argv, run_dir))
        self.trainer_argv = trainer_argv

    def run(self) -> dict[str, Any]:
        """Train (or reuse) every run, score each, write the JSON, the table and the plot; returns the report."""
        for run in self.runs:
            train_run(run)
        rows = [objective_row(run, self.args, self.steps) for run in self.runs]
        table = markdown_table(rows, self.steps)
        report = {
            "notes": REPORT_NOTES,
            "settings": {**asdict(self.args), "trainer_flags": self.trainer_argv},
            "num_train_timesteps": self.T,
            "num_inference_steps": self.steps,
            "objectives": rows,
            "table": table,
        }
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.output_dir / JSON_FILE, report)
        (self.output_dir / TABLE_FILE).write_text(table + "\n")
        plot_quality(rows, self.output_dir / PLOT_FILE)
        logger.info(f"Wrote {JSON_FILE}, {TABLE_FILE} and {PLOT_FILE} to {self.output_dir}")
        return report
