"""The model card written beside a trained pipeline, rendered with huggingface_hub from `model_cards/`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from .training_args import DDPMTrainArguments


def _template(name: str) -> str:
    """A template from the checkout's `model_cards/` (source and editable installs), else from the wheel,
    which installs that folder as the package `ddpm_hf.model_cards` (see setup.py)."""
    checkout = Path(__file__).resolve().parents[1] / "model_cards" / name
    if checkout.is_file():
        return checkout.read_text()
    return resources.files("ddpm_hf.model_cards").joinpath(name).read_text()


TAGS = ["pytorch", "diffusers", "ddpm", "unconditional-image-generation"]


def write_model_card(output_dir: Path, args: DDPMTrainArguments, run: dict[str, Any]) -> ModelCard:
    """Render `model_cards/ddpm_model_card.md` for a run and write it to `output_dir/README.md`.

    Args:
        output_dir: the pipeline folder; its name titles the card.
        args: every argument of the run (the card lists the hyperparameters from them).
        run: what the run was: `dataset`, `num_train_images`, `num_eval_images`, `channels`,
            `num_parameters`, `global_step`, `max_steps`, `per_process_batch_size`, `effective_batch_size`,
            `num_processes`, `precision`, `hardware`.
    """
    card_data = ModelCardData(
        library_name="diffusers",
        pipeline_tag="unconditional-image-generation",
        tags=TAGS,
        datasets=[args.data.dataset_name] if args.data.dataset_name else None,
    )
    template = _template("ddpm_model_card.md")
    card = ModelCard.from_template(
        card_data,
        template_str=template,
        model_name=output_dir.name,
        repo_or_path=str(output_dir),
        **args.to_dict(),
        **run,
    )
    card.save(output_dir / "README.md")
    return card
