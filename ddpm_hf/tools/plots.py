"""Line plots of the evaluation and of the paper's figures, drawn with matplotlib (the `figures` extra)."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

FIGURES_EXTRA = 'pip install "ddpm_hf[figures]"'


@dataclass
class Line:
    xs: Sequence[float]
    ys: Sequence[float]
    label: str | None = None
    errors: Sequence[float] | None = None  # symmetric error bars on ys


@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    lines: list[Line] = field(default_factory=list)
    log_x: bool = False


def can_plot() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def save_panels(panels: Sequence[Panel], path: str | Path) -> None:
    """The panels side by side, as a PNG at `path`.

    Raises:
        ImportError: matplotlib is missing, naming the extra that installs it.
    """
    if not can_plot():
        raise ImportError(f"Plots need matplotlib: {FIGURES_EXTRA}")
    # A Figure of its own, not pyplot's: no backend switch and no global state in the caller's session.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.2 * len(panels), 3.6))
    axes = figure.subplots(1, len(panels), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for line in panel.lines:
            ax.errorbar(line.xs, line.ys, yerr=line.errors, label=line.label, marker="o" if len(line.xs) < 50 else None)
        if panel.log_x:
            ax.set_xscale("log")
        ax.set(title=panel.title, xlabel=panel.xlabel, ylabel=panel.ylabel)
        if any(line.label for line in panel.lines):
            ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
