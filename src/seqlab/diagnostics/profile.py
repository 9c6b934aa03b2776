"""Time and memory profiles of a computation, measured the same way on CPU and GPU.

Peak memory is counted from the tensors themselves, not from the process: a `TorchDispatchMode` sees
every ATen operation, adds the bytes of each new storage an operation returns (views and in-place
results share an input's storage and add nothing), and subtracts them when the storage is freed (a
weak reference's finaliser). The peak of that running sum is the most tensor memory the computation
held at once beyond what existed before it. It does not see scratch space that a single fused kernel
allocates and frees internally (e.g. inside `aten::lstm` or flash attention), nor allocator caching or
fragmentation — which is what makes it repeatable on a machine shared with other processes, where
resident-set sizes are not.
"""

from __future__ import annotations

import math
import time
import weakref
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class TensorMemoryTracker(TorchDispatchMode):
    """Tracks live bytes of tensor storages created inside the `with` block; `peak` is their maximum."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._tracked: set[int] = set()

    def _release(self, key: int, nbytes: int) -> None:
        if key in self._tracked:
            self._tracked.discard(key)
            self.live -= nbytes

    def __torch_dispatch__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        existing = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key in existing or key in self._tracked or storage.nbytes() == 0:
                continue
            self._tracked.add(key)
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._release, key, storage.nbytes())
        return out


def peak_tensor_bytes(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Run `fn()` once; return its result and the peak bytes of tensor memory it allocated."""
    with TensorMemoryTracker() as tracker:
        result = fn()
    return result, tracker.peak


def best_time(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> float:
    """The fastest of `repeats` wall-clock timings of `fn()` in seconds (after `warmup` untimed calls):
    the minimum is the least disturbed by other processes on a shared machine."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return min(times)


def interleaved_best_times(calls: dict[Any, Callable[[], Any]], repeats: int = 3, warmup: int = 1) -> dict[Any, float]:
    """The fastest of `repeats` timings of every call, taken round-robin (call 1, call 2, …, call 1, …)
    so that a burst of load from other processes spoils one sample of many calls, not every sample of one."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    best = {key: math.inf for key in calls}
    for _ in range(repeats):
        for key, fn in calls.items():
            began = time.perf_counter()
            fn()
            best[key] = min(best[key], time.perf_counter() - began)
    return best


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The least-squares slope b of log y = a + b log x: the exponent of a power law y ∝ x^b."""
    x, y = np.log(np.asarray(xs, dtype=float)), np.log(np.asarray(ys, dtype=float))
    if len(x) < 2 or not np.all(np.isfinite(y)):
        return math.nan
    return float(np.polyfit(x, y, 1)[0])
