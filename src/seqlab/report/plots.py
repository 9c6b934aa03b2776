"""Shared plotting helpers (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def new_figure(columns: int = 1, rows: int = 1, size: tuple[float, float] = (4.2, 3.4)) -> tuple[Figure, list]:
    """A figure with a grid of axes (returned as a flat list)."""
    fig, axes = plt.subplots(rows, columns, figsize=(size[0] * columns, size[1] * rows), squeeze=False)
    return fig, [ax for row in axes for ax in row]


def save(fig: Figure, path: Path) -> Path:
    """Save a figure as PNG and release it."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
