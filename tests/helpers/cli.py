"""What a script's flags look like to its user: `--help`, and a bad flag (one line on stderr, exit status 2, no
traceback)."""

import contextlib
import io
import runpy
from collections.abc import Callable
from pathlib import Path

import pytest


def usage_error(capsys: pytest.CaptureFixture, main: Callable[[list[str]], object], argv: list[str]) -> str:
    """Run a script's `main(argv)` (its module named as the script) expecting argparse's kind of error; returns the
    line it printed."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", [f"{main.__module__}.py"])
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and "Traceback" not in error
    return error


def script_help(script: Path) -> str:
    """What `python script --help` prints, the script run as `__main__` in this process (a fresh interpreter would
    spend seconds importing what the tests have imported already); fails unless it exits with status 0."""
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        patch.setattr("sys.argv", [str(script), "--help"])
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code in (0, None), f"{script.name} --help exited with {exit_info.value.code}"
    return out.getvalue()
