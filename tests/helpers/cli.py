"""What a script's bad flag looks like to its user: one line on stderr, exit status 2, no traceback."""

from collections.abc import Callable

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
