"""Checkpoint folders: written under a temporary name and renamed when complete, so `latest` never
points at a half-written one; pruned to a total limit only after a new one is complete. On machines that do not
share a disk, a machine's copy holds the shared files and its own processes' files (`missing_files` says what one
process lacks)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from accelerate.utils import RNG_STATE_NAME

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")
# The one file of a checkpoint that each process writes for itself (accelerate's RNG states); the others are
# written once per checkpoint folder.
_PROCESS_FILE = re.compile(rf"^{RNG_STATE_NAME}_\d+\.pkl$")


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"checkpoint-{step}"


def temporary_dir(root: Path, step: int) -> Path:
    return root / f".tmp-checkpoint-{step}"


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def finish(root: Path, step: int, state: dict, total_limit: int | None) -> Path:
    """Record `state` in the temporary folder of `step`, rename it into place, then prune old ones."""
    tmp, final = temporary_dir(root, step), checkpoint_dir(root, step)
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
    if final.exists():  # a checkpoint of the same step (from an earlier attempt) stays until this one is in place
        replaced = final.rename(root / f".old-checkpoint-{step}")
        tmp.rename(final)
        shutil.rmtree(replaced)
    else:
        tmp.rename(final)
    if total_limit is not None:
        for old in complete_checkpoints(root)[:-total_limit]:
            shutil.rmtree(old)
    return final


def remove_unfinished(root: Path) -> None:
    """Delete what interrupted saves left behind (temporary and replaced folders)."""
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith((".tmp-checkpoint-", ".old-checkpoint-")):
                shutil.rmtree(path)


def resolve(resume_from: str, root: Path) -> Path:
    """The checkpoint folder that `--resume_from_checkpoint` names (`latest` or a path)."""
    if resume_from == "latest":
        found = complete_checkpoints(root)
        if not found:
            raise ValueError(f"--resume_from_checkpoint latest: no complete checkpoint in {root}.")
        return found[-1]
    path = Path(resume_from)
    if not (path / STATE_FILE).is_file():
        raise ValueError(f"--resume_from_checkpoint {resume_from} is not a complete checkpoint (no {STATE_FILE}).")
    return path


def read_state(path: Path) -> dict:
    return json.loads((path / STATE_FILE).read_text())


def _process_file(process_index: int) -> str:
    """The name of the file of process `process_index` in a checkpoint (its RNG states)."""
    return f"{RNG_STATE_NAME}_{process_index}.pkl"


def shared_files(path: Path) -> list[str]:
    """The files of checkpoint `path` that every process loads: all but the processes' own."""
    return sorted(p.name for p in path.iterdir() if not _PROCESS_FILE.match(p.name))


def missing_files(path: Path, shared: list[str], process_index: int) -> list[str]:
    """What process `process_index` loads from checkpoint `path` (the `shared` files and its own) and does not find
    there: the folder itself when it is absent."""
    if not path.is_dir():
        return [f"{path}/"]
    return [name for name in (*shared, _process_file(process_index)) if not (path / name).exists()]
