"""Attention maps: heatmaps of α (source tokens across, target tokens down; Bahdanau et al. 2014, Figure 3),
hard alignments read off them, and the alignment error rate against a gold alignment (Och & Ney 2003).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from seqlab.report.plots import new_figure, save

Link = tuple[int, int]  # (target position, source position)


def draw_attention(ax, weights: np.ndarray, source: Sequence[str], target: Sequence[str], title: str = "") -> None:
    """Draw one heatmap of `weights` (target, source) on `ax`, tokens as tick labels."""
    ax.imshow(weights, cmap="Greys", vmin=0.0, vmax=max(float(weights.max()), 1e-9), aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(source)))
    ax.set_xticklabels(source, rotation=90, fontsize=7)
    ax.set_yticks(range(len(target)))
    ax.set_yticklabels(target, fontsize=7)
    ax.xaxis.tick_top()
    if title:
        ax.set_title(title, fontsize=8, pad=4)


def save_attention_map(
    weights: torch.Tensor | np.ndarray, source: Sequence[str], target: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Write the heatmap of one sentence's attention (target tokens × source tokens) as a PNG."""
    matrix = _as_array(weights)[: len(target), : len(source)]
    width = max(3.0, 0.28 * len(source) + 1.5)
    height = max(2.5, 0.28 * len(target) + 1.2)
    fig, axes = new_figure(size=(width, height))
    draw_attention(axes[0], matrix, source, target, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save(fig, path)


def alignment_from_attention(weights: torch.Tensor | np.ndarray) -> set[Link]:
    """Hard alignment: each target position linked to the source position it attends to most."""
    matrix = _as_array(weights)
    return {(j, int(i)) for j, i in enumerate(matrix.argmax(axis=1))}


def alignment_error_rate(predicted: Iterable[Link], sure: Iterable[Link], possible: Iterable[Link] = ()) -> float:
    """AER = 1 − (|A∩S| + |A∩P|) / (|A| + |S|), with the possible links P including the sure links S."""
    A, S = set(predicted), set(sure)
    P = S | set(possible)
    if not A and not S:
        return 0.0
    return 1.0 - (len(A & S) + len(A & P)) / (len(A) + len(S))


def _as_array(weights: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(weights, torch.Tensor):
        return weights.detach().float().cpu().numpy()
    return np.asarray(weights, dtype=float)
