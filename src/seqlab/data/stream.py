"""Parallel streams for truncated backpropagation through time (seed 004).

A streaming task serves `batch_size` endless (or cyclic) streams side by side; the trainer asks for
the window of stream time [start, stop) and carries the recurrent state from one window to the next.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from seqlab.data.base import Batch


class StreamTask(ABC):
    """A task that can serve contiguous windows of `batch_size` parallel streams."""

    @abstractmethod
    def stream_window(self, batch_size: int, start: int, stop: int) -> Batch:
        """`inputs` and `targets` (batch, stop − start) for stream time [start, stop); window n+1 continues window n."""


def batchify(ids: torch.Tensor, streams: int) -> torch.Tensor:
    """Cut a 1-D token sequence into `streams` contiguous rows of equal length (the tail is dropped)."""
    per_stream = ids.numel() // streams
    if per_stream < 2:
        raise ValueError(f"{ids.numel()} tokens cannot feed {streams} streams of at least 2 tokens")
    return ids[: per_stream * streams].view(streams, per_stream)


def cyclic_window(rows: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Columns [start, stop) of `rows`, wrapping around the end (a cyclic stream)."""
    columns = torch.arange(start, stop) % rows.shape[1]
    return rows[:, columns]
