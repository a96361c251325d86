"""Every script in train_scripts/ answers --help with its usage (a % left unescaped in a help text crashes it)."""

from pathlib import Path

import pytest
from helpers.cli import script_help

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "train_scripts").glob("*.py"))


def test_every_script_is_covered():
    assert {s.name for s in SCRIPTS} >= {"train_ddpm.py", "evaluate_ddpm.py", "sample_ddpm.py", "push_to_hub.py"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_help_works(script):
    stdout = script_help(script)
    assert stdout.startswith("usage:") and "--help" in stdout
