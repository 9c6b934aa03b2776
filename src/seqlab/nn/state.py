"""Model state as a pytree: a tensor, or a dict / list / tuple / dataclass of them (None and plain values kept).

Recurrent states, key/value caches and fast weights are all such trees with batch-first tensors, so one
`map_state` detaches them for truncated BPTT, moves them between devices, and reorders them for beam search.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from torch import Tensor


def map_state(state: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """The same tree with `fn` applied to every tensor in it."""
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, dict):
        return {key: map_state(value, fn) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(map_state(part, fn) for part in state)
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        return dataclasses.replace(state, **{f.name: map_state(getattr(state, f.name), fn) for f in dataclasses.fields(state)})
    return state


def state_tensors(state: Any) -> list[Tensor]:
    """Every tensor of the tree, in order."""
    found: list[Tensor] = []

    def collect(tensor: Tensor) -> Tensor:
        found.append(tensor)
        return tensor

    map_state(state, collect)
    return found
