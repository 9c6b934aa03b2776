"""The window arithmetic of truncated backpropagation through time (Williams & Peng 1990; seed 004).

Update n consumes k1 new steps of every stream, [n·k1, (n+1)·k1), with a loss at each of them, and the
gradient of every loss flows back at most k2 steps:

- k2 ≥ k1 (BPTT(k2; k1)): rerun the last k2 steps from the detached state saved where they begin;
  the loss at the newest step reaches back exactly k2 steps, the oldest new step k2 − k1 + 1.
- k2 < k1: run the k1 new steps in pieces of k2 counted back from the newest step, and detach the
  state between pieces; the newest loss reaches back exactly k2 steps.

k1 = k2 is plain chunked training: each update runs one chunk from the previous chunk's final state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from seqlab.nn.state import map_state


@dataclass(frozen=True)
class Window:
    """Stream times of one update: run [start, stop), losses on [stop − k1, stop)."""

    start: int
    stop: int
    first_loss: int
    carry_at: int  # the next update's `start`: its state is kept (detached)
    detach_at: tuple[int, ...]  # cut the gradient here (k2 < k1)

    def segments(self) -> list[tuple[int, int]]:
        """Consecutive pieces [a, b) split wherever the state is kept or detached."""
        cuts = sorted({self.start, self.stop, self.carry_at, *self.detach_at})
        return [(a, b) for a, b in zip(cuts, cuts[1:]) if a >= self.start and b <= self.stop]


def window(update: int, k1: int, k2: int) -> Window:
    """The window of optimiser update `update` (0-based)."""
    stop = (update + 1) * k1
    start = max(0, stop - max(k1, k2))
    carry_at = max(0, stop + k1 - max(k1, k2))
    detach_at = tuple(range(stop - k2, stop - k1, -k2)) if k2 < k1 else ()
    return Window(start, stop, stop - k1, carry_at, detach_at)


def detach_state(state: Any) -> Any:
    """The same state cut from the graph: the gradient stops here."""
    return map_state(state, torch.Tensor.detach)
