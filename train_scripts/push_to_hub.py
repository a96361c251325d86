"""Push a folder that train_ddpm.py wrote (or any saved DDPMPipeline) to the Hub, e.g. after a failed push.

    python train_scripts/push_to_hub.py --output_dir ddpm-digits --hub_model_id me/ddpm-digits

The folder itself is not changed: the model card is rendered again for the repo id into the upload only
(`--keep_card` uploads README.md as it is). Checkpoints and logs stay local unless asked for. `--space_id`
also makes a Space serving the Gradio demo of the commit just pushed, which the card links.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from ddpm_hf import DDPMPipeline
from ddpm_hf.jobs.arguments import HubRepoArguments
from ddpm_hf.tools.cli import configure_logging, usage_errors
from ddpm_hf.tools.hub import HubPublisher, make_snapshot, upload_patterns
from ddpm_hf.tools.model_card import write_model_card
from ddpm_hf.tools.run_folder import (
    DEFAULT_LOGGING_DIR,
    MODEL_CARD_FILE,
    PIPELINE_INDEX,
    holds_pipeline,
    training_record,
)
from ddpm_hf.tools.space import check_space, push_space, space_repo_id


@dataclass
class PushArguments:
    output_dir: str = field(metadata={"help": "The folder to push: a saved pipeline (model_index.json inside)."})
    commit_message: str = field(default="Upload DDPMPipeline", metadata={"help": "The commit's message."})
    keep_card: bool = field(default=False, metadata={"help": "Upload README.md as it is instead of rendering it."})
    space_id: str | None = field(
        default=None,
        metadata={
            "help": "Also create or update this Space (`name`, in the model repo's namespace, or `namespace/name`) "
            "serving the Gradio demo of the commit pushed; the card links it (not with --keep_card). Private "
            "with --hub_private_repo. Needs gradio installed: its version is the Space's."
        },
    )


def main(argv: list[str] | None = None) -> str:
    configure_logging()
    with usage_errors():
        parser = HfArgumentParser((PushArguments, HubRepoArguments), description=__doc__)
        args, hub = parser.parse_args_into_dataclasses(args=argv)
        folder = Path(args.output_dir)
        if not holds_pipeline(folder):
            raise ValueError(f"--output_dir {folder} holds no saved pipeline (no {PIPELINE_INDEX}).")
        if args.space_id is not None:
            check_space(args.space_id)
        pipeline = None if args.keep_card else DDPMPipeline.from_pretrained(folder)
        publisher = HubPublisher(hub.hub_model_id or folder.resolve().name, hub.hub_token, hub.hub_private_repo)
        space_id = args.space_id and space_repo_id(args.space_id, publisher.repo_id)
    logging_dir = (training_record(folder).get("args") or {}).get("logging_dir", DEFAULT_LOGGING_DIR)
    allow = upload_patterns(hub.hub_upload_checkpoints, hub.hub_upload_logs, logging_dir)
    snapshot = make_snapshot(folder, allow)
    try:
        if pipeline is not None:
            (snapshot / MODEL_CARD_FILE).unlink(missing_ok=True)
            write_model_card(snapshot, pipeline, publisher.repo_id, hub.model_license, space_id)
        commit = publisher.push(
            snapshot, args.commit_message, allow, retry_hint=f"{folder} is unchanged; run this command again."
        )
    finally:
        shutil.rmtree(snapshot)
    print(f"Pushed {folder} to {commit.commit_url}")
    if space_id:
        print(f"Space: {push_space(publisher.api, space_id, publisher.repo_id, commit.oid, hub.hub_private_repo)}")
    return commit.commit_url


if __name__ == "__main__":
    main()
