"""Every script in train_scripts/ answers --help with its usage (a % left unescaped in a help text crashes it)."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "train_scripts").glob("*.py"))


def test_every_script_is_covered():
    assert {s.name for s in SCRIPTS} >= {"train_ddpm.py", "evaluate_ddpm.py", "sample_ddpm.py", "push_to_hub.py"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_help_works(script):
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage:") and "--help" in result.stdout
