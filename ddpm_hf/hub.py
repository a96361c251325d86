"""Publishing a pipeline folder on the Hub with huggingface_hub.

What goes up: the pipeline (model_index.json, unet/, scheduler/), the model card (README.md), the sample
grid and the run's JSON records; the resumable checkpoints and the tracker logs only when asked. A push in
the background uploads a hard-linked snapshot of the folder, so training neither waits for the upload nor
rewrites files under it. A failed push leaves the folder as it was and says how to push it later.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from concurrent.futures import Future
from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import CommitInfo, HfApi, constants, get_token
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .images import make_grid
from .model_card import EVAL_RESULTS_FILE, SAMPLES_FILE, TRAIN_ARGS_FILE, TRAINING_RUN_FILE, write_model_card

if TYPE_CHECKING:
    from .pipeline_ddpm import DDPMPipeline

PUSH_LATER = "python train_scripts/push_to_hub.py --output_dir {folder} --hub_model_id {repo_id}"
SNAPSHOT_PREFIX = ".hub-push-"
WRITE_ONCE = "checkpoints"
# Never uploaded: what interrupted checkpoint saves leave behind, and the snapshots of background pushes.
UNFINISHED = ["checkpoints/.tmp-checkpoint-*", "checkpoints/.old-checkpoint-*", f"{SNAPSHOT_PREFIX}*"]


class HubPushError(RuntimeError):
    """A push to the Hub failed; the local folder is untouched and the message says how to push it later."""


def check_repo_id(repo_id: str, flag: str) -> None:
    """Raise a ValueError naming `flag` unless `repo_id` is `name` or `namespace/name` as the Hub allows."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"{flag} {repo_id!r} is not a Hub repo id: {err}") from None


def missing_on_hub(name_or_path: str, revision: str | None = None, token: str | bool | None = None) -> str | None:
    """Why `name_or_path` at `revision` cannot load, when the Hub says the repo or the revision does not
    exist; None when it is a local path, the Hub is off (HF_HUB_OFFLINE) or unreachable, or both exist."""
    if constants.HF_HUB_OFFLINE or Path(name_or_path).exists():
        return None
    try:
        HfApi(token=token).model_info(name_or_path, revision=revision)
    except RepositoryNotFoundError:
        return (
            f"{name_or_path} is neither a local folder nor a model repo on {constants.ENDPOINT} (or the repo is "
            "private and no token with access to it was given)."
        )
    except RevisionNotFoundError:
        return f"The repo {name_or_path} on {constants.ENDPOINT} has no revision {revision!r} (branch, tag or commit)."
    except Exception:  # unreachable, or not a repo id at all: the loader's own error says more
        return None
    return None


def ignore_patterns(checkpoints: bool = False, logs: bool = False, logging_dir: str = "logs") -> list[str]:
    """The `upload_folder` ignore patterns of an output folder: checkpoints and logs unless asked for."""
    patterns = [f"{p}/**" for p in UNFINISHED]
    if not checkpoints:
        patterns.append("checkpoints/**")
    if not logs:
        patterns.append(f"{logging_dir.strip('/')}/**")
    return patterns


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
        self._pending: list[tuple[Future, Path]] = []
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
        ignore: Iterable[str] = (),
        retry_hint: str | None = None,
        create_pr: bool = False,
    ) -> CommitInfo:
        """Upload `folder` (but the `ignore` patterns) as one commit; waits for earlier background pushes first.

        Raises:
            HubPushError: after the client's own retries, ending with `retry_hint`; by default, that the
                folder is unchanged and the command that pushes it later.
        """
        self.wait()
        try:
            return self.api.upload_folder(
                repo_id=self.repo_id,
                folder_path=folder,
                commit_message=commit_message,
                ignore_patterns=list(ignore),
                create_pr=create_pr,
            )
        except Exception as err:  # see __init__
            if retry_hint is None:
                later = PUSH_LATER.format(folder=folder, repo_id=self.repo_id)
                retry_hint = f"{folder} is complete and unchanged; push it later with:\n    {later}"
            raise HubPushError(f"Pushing {folder} to {self.url} failed: {err}\n{retry_hint}") from err

    def push_in_background(self, folder: Path, commit_message: str, ignore: Iterable[str] = ()) -> Future:
        """Upload a snapshot of `folder` taken now, in huggingface_hub's background worker; `wait()` collects it."""
        snapshot = make_snapshot(folder, ignore)
        future = self.api.upload_folder(
            repo_id=self.repo_id, folder_path=snapshot, commit_message=commit_message, run_as_future=True
        )
        self._pending.append((future, snapshot))
        return future

    def wait(self) -> list[BaseException]:
        """Wait for the background pushes; returns their errors (the next push uploads everything again)."""
        errors = []
        for future, snapshot in self._pending:
            if (error := future.exception()) is not None:
                errors.append(error)
            shutil.rmtree(snapshot, ignore_errors=True)
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
    """`DDPMPipeline.push_to_hub`: the pipeline, its card and a sample grid, as one commit.

    When the pipeline was loaded from a folder the trainer wrote, that folder's run record, measurements and
    sample grid go up with it and fill the card; otherwise `num_sample_images` samples (seeded by `seed`,
    full chain) make the grid, or none when 0.
    """
    if num_sample_images < 0:
        raise ValueError(f"num_sample_images must be >= 0, got {num_sample_images}.")
    publisher = HubPublisher(repo_id, token, private)
    source = Path(pipeline.name_or_path or "")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pipeline.save_pretrained(folder, **save_kwargs)
        for name in (TRAINING_RUN_FILE, EVAL_RESULTS_FILE, TRAIN_ARGS_FILE, SAMPLES_FILE):
            if pipeline.name_or_path and (source / name).is_file():
                shutil.copy2(source / name, folder / name)
        if num_sample_images and not (folder / SAMPLES_FILE).is_file():
            generator = torch.Generator(pipeline.device).manual_seed(seed)
            make_grid(pipeline(batch_size=num_sample_images, generator=generator).images).save(folder / SAMPLES_FILE)
        write_model_card(folder, pipeline, publisher.repo_id, license)
        return publisher.push(
            folder,
            commit_message or "Upload DDPMPipeline",
            retry_hint="Nothing was changed on the Hub; call push_to_hub again.",
            create_pr=create_pr,
        )


def make_snapshot(folder: Path, ignore: Iterable[str] = ()) -> Path:
    """A hidden folder inside `folder` holding its files but the `ignore` patterns as they are now, whatever
    happens to `folder` next. The caller deletes it.

    The pipeline files are rewritten in place at each save, so they are copied; finished checkpoints are
    never rewritten, only deleted, so they are hard-linked (the snapshot sits inside `folder` to be on its
    file system), which keeps a snapshot of many gigabytes of checkpoints free.
    """
    ignore = [*ignore, *(f"{p}/**" for p in UNFINISHED)]
    snapshot = Path(tempfile.mkdtemp(prefix=SNAPSHOT_PREFIX, dir=folder))
    for root, _, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            relative = path.relative_to(folder).as_posix()
            if any(fnmatch(relative, pattern) for pattern in ignore):
                continue
            target = snapshot / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if relative.startswith(f"{WRITE_ONCE}/"):
                with contextlib.suppress(OSError):
                    os.link(path, target)
                    continue
            shutil.copy2(path, target)
    return snapshot
