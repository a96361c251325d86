"""The layout of a run's output folder, in one place: what the trainer writes, the evaluation reads and
updates, the card describes and the Hub receives.

    model_index.json, unet/, scheduler/   the pipeline (EMA weights), loadable by stock diffusers
    README.md                             the model card
    samples.png                           the final sample grid
    train_args.json                       every argument of the run (no secrets)
    training_run.json                     the run's record: arguments, facts (data, steps, hardware, time), results
    eval_results.json                     measurements of `train_scripts/evaluate_ddpm.py --update_model_card`
    samples/step-<N>.png                  grids during training
    checkpoints/checkpoint-<N>/           resumable checkpoints (`ddpm_hf.tools.checkpoints`)
    logs/                                 tracker logs (`--logging_dir`)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

PIPELINE_INDEX = "model_index.json"
PIPELINE_FILES = (PIPELINE_INDEX, "unet/*", "scheduler/*")
MODEL_CARD_FILE = "README.md"
SAMPLES_FILE = "samples.png"
TRAIN_ARGS_FILE = "train_args.json"
TRAINING_RUN_FILE = "training_run.json"
EVAL_RESULTS_FILE = "eval_results.json"
RUN_FILES = (TRAINING_RUN_FILE, EVAL_RESULTS_FILE, TRAIN_ARGS_FILE, SAMPLES_FILE)
SAMPLES_DIR = "samples"
CHECKPOINTS_DIR = "checkpoints"
DEFAULT_LOGGING_DIR = "logs"


def read_json(path: Path) -> Any:
    """The JSON in `path`, or None when there is no such file."""
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, value: Any) -> None:
    Path(path).write_text(json.dumps(value, indent=2))


def holds_pipeline(folder: Path) -> bool:
    return (Path(folder) / PIPELINE_INDEX).is_file()


def training_record(folder: Path) -> dict[str, Any]:
    """The run's `training_run.json` in `folder` (empty when absent)."""
    return read_json(Path(folder) / TRAINING_RUN_FILE) or {}


def step_samples_path(folder: Path, step: int) -> Path:
    return Path(folder) / SAMPLES_DIR / f"step-{step}.png"


def remove_run(folder: Path, logging_dir: str = DEFAULT_LOGGING_DIR) -> None:
    """Delete what a run wrote into `folder` (pipeline, card, records, samples, checkpoints, tracker logs), so that
    a run replacing it (--overwrite_output_dir) leaves nothing of the old one behind; other files stay."""
    folder = Path(folder)
    for name in (PIPELINE_INDEX, MODEL_CARD_FILE, *RUN_FILES):
        (folder / name).unlink(missing_ok=True)
    for name in ("unet", "scheduler", SAMPLES_DIR, CHECKPOINTS_DIR, logging_dir):
        shutil.rmtree(folder / name, ignore_errors=True)
