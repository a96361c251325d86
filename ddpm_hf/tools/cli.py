"""What every script of `train_scripts/` does around its work: logging configured once, and clean errors.

The main process shows ddpm_hf's INFO lines ("Resumed from ...", "Saved ...", "Pushed ...", results) and
everyone's warnings, each Python warning once; the other processes show errors only, so N processes print
what one prints. The libraries' own progress bars (datasets, huggingface_hub) follow the same rule.
A bad argument or input, found by the checks made before any work, ends the script with one line on stderr.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# Loggers of the stack whose warnings the main process shows and the others do not.
LIBRARIES = ("accelerate", "datasets", "diffusers", "huggingface_hub", "torch", "transformers")


def configure_logging() -> None:
    """INFO for ddpm_hf and warnings from everything on the main process; errors only on the others."""
    main = _is_main_process()
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        level=logging.WARNING if main else logging.ERROR,
        force=True,
    )
    logging.captureWarnings(True)  # warnings.warn goes through the "py.warnings" logger, silenced off the main one
    logging.getLogger("ddpm_hf").setLevel(logging.INFO if main else logging.ERROR)
    for library in LIBRARIES:
        logging.getLogger(library).setLevel(logging.WARNING if main else logging.ERROR)
    if not main:
        _silence_library_progress_bars()


def _silence_library_progress_bars() -> None:
    import datasets
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    datasets.disable_progress_bars()


@contextmanager
def usage_errors() -> Iterator[None]:
    """Around a script's set-up (parsing and the checks made before any work): a ValueError (or a missing file)
    there ends the script
    with exit status 2 and one line on stderr, `<script>: error: <message>`, from the main process only, as
    argparse reports a bad flag. Errors after the set-up keep their traceback."""
    try:
        yield
    except (ValueError, FileNotFoundError) as error:
        if _is_main_process():
            print(f"{os.path.basename(sys.argv[0])}: error: {error}", file=sys.stderr)
        sys.exit(2)


def _is_main_process() -> bool:
    # From the launcher's environment, not accelerate's PartialState: building that state here would fix the
    # process group's settings before the script's own Accelerator chooses them.
    return os.environ.get("RANK", "0") == "0"
