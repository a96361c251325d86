"""Publishing a pipeline folder on the Hub with huggingface_hub.

What goes up: the pipeline (model_index.json, unet/, scheduler/), the model card (README.md), the sample
grid and the run's JSON records; the resumable checkpoints and the tracker logs only when asked. A push in
the background uploads a hard-linked snapshot of the folder, so training neither waits for the upload nor
rewrites files under it. A failed push leaves the folder as it was and says how to push it later.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from concurrent.futures import Future
from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import CommitInfo, HfApi, constants, get_token, hf_hub_download
from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..core.images import enlarged, make_grid
from .model_card import write_model_card
from .run_folder import (
    CHECKPOINTS_DIR,
    DEFAULT_LOGGING_DIR,
    MODEL_CARD_FILE,
    PIPELINE_FILES,
    RUN_FILES,
    SAMPLES_FILE,
)

if TYPE_CHECKING:
    from ..core.pipeline_ddpm import DDPMPipeline

logger = logging.getLogger(__name__)

PUSH_LATER = "python train_scripts/push_to_hub.py --output_dir {folder} --hub_model_id {repo_id}"
SNAPSHOT_PREFIX = ".hub-push-"
PUBLISHED = [*PIPELINE_FILES, MODEL_CARD_FILE, *RUN_FILES]
# Never uploaded: what interrupted checkpoint saves leave behind, and the snapshots of background pushes.
NEVER = [f"{CHECKPOINTS_DIR}/.tmp-checkpoint-*/**", f"{CHECKPOINTS_DIR}/.old-checkpoint-*/**", f"{SNAPSHOT_PREFIX}*/**"]


class HubPushError(RuntimeError):
    """A push to the Hub failed; the local folder is untouched and the message says how to push it later."""


def check_repo_id(repo_id: str, flag: str) -> None:
    """Raise a ValueError naming `flag` unless `repo_id` is `name` or `namespace/name` as the Hub allows."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"{flag} {repo_id!r} is not a Hub repo id: {err}") from None


def upload_patterns(checkpoints: bool = False, logs: bool = False, logging_dir: str = DEFAULT_LOGGING_DIR) -> list[str]:
    """What of an output folder is uploaded (`allow_patterns`): the pipeline, card, sample grid and run records;
    the checkpoints and the tracker logs when asked. Nothing else in the folder goes up."""
    return [
        *PUBLISHED,
        *([f"{CHECKPOINTS_DIR}/**"] if checkpoints else []),
        *([f"{logging_dir.strip('/')}/**"] if logs else []),
    ]


def _uploaded(relative: str, allow: Iterable[str]) -> bool:
    """Whether `upload_folder(allow_patterns=allow, ignore_patterns=NEVER)` uploads the file at `relative`."""
    return any(fnmatch(relative, p) for p in allow) and not any(fnmatch(relative, p) for p in NEVER)


class HubPublisher:
    """One Hub repo, created (or found) on construction, so a bad token or an unreachable Hub fails before
    any training; `push` uploads a folder to it, now or in the background.

    Args:
        repo_id: `name` (in the token's namespace) or `namespace/name`.
        token: a token with write access; default: HF_TOKEN or the cached `hf auth login`.
        private: create the repo private or public; None: the Hub's default. An existing repo keeps its own.
    """

    def __init__(self, repo_id: str, token: str | None = None, private: bool | None = None):
        check_repo_id(repo_id, "repo id")
        if token is None and get_token() is None:
            raise HubPushError(
                f"No Hub token to push {repo_id}: pass --hub_token (or token=), set HF_TOKEN, or run `hf auth login`."
            )
        self.api = HfApi(token=token)
        self._pending: list[Future] = []
        self.repo_id = repo_id
        try:
            self.repo_id = self.api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        except Exception as err:  # the client's HTTP and connection errors have no common base but Exception
            raise HubPushError(f"Could not create or reach the repo {repo_id} on {constants.ENDPOINT}: {err}") from err

    @property
    def url(self) -> str:
        return f"{constants.ENDPOINT}/{self.repo_id}"

    def push(
        self,
        folder: Path,
        commit_message: str,
        allow: Iterable[str] = tuple(PUBLISHED),
        retry_hint: str | None = None,
        create_pr: bool = False,
    ) -> CommitInfo:
        """Upload the `allow` patterns of `folder` as one commit; waits for earlier background pushes first.

        Raises:
            HubPushError: after the client's own retries, ending with `retry_hint`; by default, that the
                folder is unchanged and the command that pushes it later.
        """
        for error in self.wait():
            logger.warning(f"A background push to {self.url} failed ({error}); this push uploads everything again.")
        try:
            return self.api.upload_folder(
                repo_id=self.repo_id,
                folder_path=folder,
                commit_message=commit_message,
                allow_patterns=list(allow),
                ignore_patterns=NEVER,
                create_pr=create_pr,
            )
        except Exception as err:  # see __init__
            if retry_hint is None:
                later = PUSH_LATER.format(folder=folder, repo_id=self.repo_id)
                retry_hint = f"{folder} is complete and unchanged; push it later with:\n    {later}"
            raise HubPushError(f"Pushing {folder} to {self.url} failed: {err}\n{retry_hint}") from err

    def push_in_background(self, folder: Path, commit_message: str, allow: Iterable[str] = tuple(PUBLISHED)) -> Future:
        """Upload a snapshot of `folder` taken now, in huggingface_hub's background worker. The snapshot is
        deleted as soon as its upload ends; `wait()` collects the outcomes."""
        snapshot = make_snapshot(folder, allow)
        future = self.api.upload_folder(
            repo_id=self.repo_id, folder_path=snapshot, commit_message=commit_message, run_as_future=True
        )
        future.add_done_callback(lambda _: shutil.rmtree(snapshot, ignore_errors=True))
        self._pending.append(future)
        return future

    def wait(self) -> list[BaseException]:
        """Wait for the background pushes; returns their errors (the next push uploads everything again)."""
        errors = [error for future in self._pending if (error := future.exception()) is not None]
        self._pending.clear()
        return errors


def push_pipeline(
    pipeline: DDPMPipeline,
    repo_id: str,
    *,
    commit_message: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    create_pr: bool = False,
    license: str | None = None,
    num_sample_images: int = 16,
    seed: int = 0,
    **save_kwargs: Any,
) -> CommitInfo:
    """Push `pipeline` to the Hub with this project's model card and a sample grid, as one commit.

    (`pipeline.push_to_hub` is diffusers' own: the pipeline with diffusers' generic card.)

    When the pipeline was loaded from a folder the trainer wrote, or from a repo pushed from one, its run
    record, measurements and sample grid go up with it and fill the card; otherwise `num_sample_images`
    samples (seeded by `seed`, full chain) make the grid, or none when 0.
    """
    if num_sample_images < 0:
        raise ValueError(f"num_sample_images must be >= 0, got {num_sample_images}.")
    publisher = HubPublisher(repo_id, token, private)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pipeline.save_pretrained(folder, **save_kwargs)
        for name in RUN_FILES:
            if (found := source_file(pipeline.name_or_path, name, token)) is not None:
                shutil.copy2(found, folder / name)
        if num_sample_images and not (folder / SAMPLES_FILE).is_file():
            generator = torch.Generator(pipeline.device).manual_seed(seed)
            images = pipeline(batch_size=num_sample_images, generator=generator).images
            enlarged(make_grid(images)).save(folder / SAMPLES_FILE)
        write_model_card(folder, pipeline, publisher.repo_id, license)
        return publisher.push(
            folder,
            commit_message or "Upload DDPMPipeline",
            retry_hint="Nothing was changed on the Hub; call push_pipeline again.",
            create_pr=create_pr,
        )


def source_file(
    name_or_path: str | None, name: str, token: str | None = None, revision: str | None = None
) -> Path | None:
    """`name` beside a pipeline loaded from `name_or_path`: in the folder, or in the Hub repo (its cached copy)."""
    if not name_or_path:
        return None
    if Path(name_or_path).is_dir():
        return Path(name_or_path, name) if Path(name_or_path, name).is_file() else None
    try:
        return Path(hf_hub_download(name_or_path, name, token=token, revision=revision))
    except Exception:  # absent from the repo, or the Hub unreachable: the card goes without it
        return None


def make_snapshot(folder: Path, allow: Iterable[str] = tuple(PUBLISHED)) -> Path:
    """A hidden folder inside `folder` holding the files that `allow` uploads, as they are now, whatever
    happens to `folder` next. The caller deletes it (`remove_snapshots` clears what a crash left).

    The pipeline files are rewritten in place at each save, so they are copied; finished checkpoints are
    never rewritten, only deleted, so they are hard-linked (the snapshot sits inside `folder` to be on its
    file system), which keeps a snapshot of many gigabytes of checkpoints free.
    """
    allow = list(allow)
    snapshot = Path(tempfile.mkdtemp(prefix=SNAPSHOT_PREFIX, dir=folder))
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(SNAPSHOT_PREFIX)]
        for name in files:
            path = Path(root) / name
            relative = path.relative_to(folder).as_posix()
            if not _uploaded(relative, allow):
                continue
            target = snapshot / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if relative.startswith(f"{CHECKPOINTS_DIR}/"):
                with contextlib.suppress(OSError):
                    os.link(path, target)
                    continue
            shutil.copy2(path, target)
    return snapshot


def remove_snapshots(folder: Path) -> None:
    """Delete the snapshots that background pushes interrupted by a crash left in `folder`."""
    for path in Path(folder).glob(f"{SNAPSHOT_PREFIX}*"):
        shutil.rmtree(path, ignore_errors=True)
