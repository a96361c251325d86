"""Every script in train_scripts/ answers --help with its usage (a % left unescaped in a help text crashes it)."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "train_scripts").glob("*.py"))


def test_every_script_is_covered():
    assert {s.name for s in SCRIPTS} >= {"train_ddpm.py", "evaluate_ddpm.py", "sample_ddpm.py", "push_to_hub.py"}


@pytest.fixture(scope="module")
def helps() -> dict[str, tuple[str, str, int]]:
    """Each script's `--help` (stdout, stderr, exit status), the scripts started together: each is its own fresh
    interpreter, and most of its time is importing torch, so they overlap well."""
    running = {
        script.name: subprocess.Popen(
            [sys.executable, str(script), "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for script in SCRIPTS
    }
    return {name: (*process.communicate(), process.returncode) for name, process in running.items()}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_help_works(script, helps):
    stdout, stderr, returncode = helps[script.name]
    assert returncode == 0, stderr[-2000:]
    assert stdout.startswith("usage:") and "--help" in stdout
