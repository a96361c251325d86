"""The model card of a pipeline folder, rendered with huggingface_hub from `model_cards/`.

A card is a function of the folder: the pipeline's own configs, and, when present, the trainer's record
of the run (`training_run.json`), the measurements of `train_scripts/evaluate_ddpm.py`
(`eval_results.json`) and the sample grid (`samples.png`). The trainer, `ddpm_hf.tools.hub.push_pipeline` and
`train_scripts/push_to_hub.py` all render it this way, so the same folder gives the same card.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData, constants

from .run_folder import EVAL_RESULTS_FILE, MODEL_CARD_FILE, SAMPLES_FILE, TRAINING_RUN_FILE, read_json

if TYPE_CHECKING:
    from ..core.pipeline_ddpm import DDPMPipeline

TAGS = ["pytorch", "diffusers", "ddpm", "unconditional-image-generation"]
TASK = "unconditional-image-generation"


def _template(name: str) -> str:
    """A template from the checkout's `model_cards/` (source and editable installs), else from the wheel,
    which installs that folder as the package `ddpm_hf.model_cards` (see setup.py)."""
    checkout = Path(__file__).resolve().parents[2] / "model_cards" / name
    if checkout.is_file():
        return checkout.read_text()
    return resources.files("ddpm_hf.model_cards").joinpath(name).read_text()


def render_model_card(
    folder: Path,
    pipeline: DDPMPipeline,
    repo_or_path: str,
    license: str | None = None,
    space_id: str | None = None,
) -> ModelCard:
    """The card of the pipeline saved in `folder`.

    Args:
        folder: the pipeline folder; its optional `training_run.json`, `eval_results.json` and `samples.png`
            fill the training, results and samples sections.
        pipeline: the pipeline itself (its UNet and scheduler configs and parameter count).
        repo_or_path: what users pass to `from_pretrained` (a Hub repo id once pushed).
        license: the weights' licence; default: the one the run recorded, else none.
        space_id: a Space serving the model (`namespace/name`), which the card links; default: none. (The Hub
            lists it on the model's page by itself, from the Space's `models:`; a card's metadata has no field
            for it.)

    A measurement is a dict with `metric` (`bits_per_dim`, `fid`, ...), `name` (what exactly was measured),
    `value`, `dataset`, `split` and optional `stderr`; each becomes a `model-index` entry. The evaluation's
    measurements come after the trainer's, replacing those of the same name.
    """
    folder = Path(folder)
    run = read_json(folder / TRAINING_RUN_FILE)
    evaluated = (read_json(folder / EVAL_RESULTS_FILE) or {}).get("results") or []
    results = merge_results((run or {}).get("results") or [], evaluated)
    args = (run or {}).get("args", {})
    facts = (run or {}).get("run") or {}
    dataset = facts.get("dataset_id") or facts.get("dataset")
    license = license or args.get("model_license")
    model_name = Path(repo_or_path).name
    card_data = ModelCardData(
        model_name=model_name,
        license=license,
        library_name="diffusers",
        pipeline_tag=TASK,
        tags=TAGS,
        datasets=[args["dataset_name"]] if _is_hub_dataset(args) else None,
        eval_results=[_eval_result(r) for r in results] or None,
    )
    unet, scheduler = pipeline.unet, pipeline.scheduler
    return ModelCard.from_template(
        card_data,
        template_str=_template("ddpm_model_card.md"),
        model_name=model_name,
        repo_or_path=repo_or_path,
        resolution=unet.config.sample_size,
        channels=unet.config.in_channels,
        num_parameters=sum(p.numel() for p in unet.parameters()),
        scheduler=dict(scheduler.config),
        has_samples=(folder / SAMPLES_FILE).is_file(),
        sample_steps=(run or {}).get("run", {}).get("sample_steps") or scheduler.config.num_train_timesteps,
        dataset=dataset,
        dataset_source=facts.get("dataset") if facts.get("dataset") != dataset else None,
        preset=_preset(args),
        args=args,
        run=(run or {}).get("run"),
        results=results,
        metrics={result["metric"] for result in results},
        count=count,
        space_id=space_id,
        space_url=space_id and space_url(space_id),
    )


def write_model_card(
    folder: Path,
    pipeline: DDPMPipeline,
    repo_or_path: str,
    license: str | None = None,
    space_id: str | None = None,
) -> ModelCard:
    """Render the card of `folder` (see `render_model_card`) and write it to `folder/README.md`."""
    card = render_model_card(folder, pipeline, repo_or_path, license, space_id)
    card.save(Path(folder) / MODEL_CARD_FILE)
    return card


def space_url(space_id: str) -> str:
    """The page of the Space `space_id` on the Hub the client talks to (HF_ENDPOINT), where it was pushed."""
    return f"{constants.ENDPOINT}/spaces/{space_id}"


def count(number: int, noun: str, plural: str | None = None) -> str:
    """`number` with thousands separators and `noun`, or its plural (default: `noun` + "s") unless it is 1:
    `1 process`, `2 processes`, `1,617 images`."""
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"


def merge_results(older: list[dict[str, Any]], newer: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`older` measurements but those `newer` measures again (the same name), then `newer`."""
    names = {result["name"] for result in newer}
    return [result for result in older if result["name"] not in names] + newer


def _eval_result(result: dict[str, Any]) -> EvalResult:
    return EvalResult(
        task_type=TASK,
        task_name="Unconditional image generation",
        dataset_type=result["dataset"],
        dataset_name=result["dataset"],
        dataset_split=result.get("split"),
        metric_type=result["metric"],
        metric_name=result["name"],
        metric_value=result["value"],
    )


def _preset(args: dict[str, Any]) -> str:
    """The training table's preset: the one given, else "none", saying so when the run was the default job."""
    if args.get("preset"):
        return args["preset"]
    default_job = not args.get("dataset_name") and not args.get("train_data_dir")
    return "none (the embedded default job)" if default_job else "none"


def _is_hub_dataset(args: dict[str, Any]) -> bool:
    """Whether the run read a Hub dataset (named in the card's header): `--dataset_name` without an image folder
    (which wins over it), and not a local path."""
    name = args.get("dataset_name")
    if not name or args.get("train_data_dir"):
        return False
    return not name.startswith(("/", ".", "~")) and not Path(name).is_dir()
