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
import statistics
import time
import weakref
from typing import Any, Callable, Mapping, Sequence, TypeVar

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry, sdpa_flop_count

K = TypeVar("K")


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


class OperationCounter(TorchDispatchMode):
    """Counts the arithmetic of every ATen operation run inside the `with` block, in `operations`: a matrix
    product (mm, bmm, addmm, fused attention) counts torch's FLOP formula (2·m·n·k), any other operation
    that computes new values one per output element (elementwise maps, reductions, scans), and views
    (outputs sharing an input's storage) nothing; `calls` counts the operations that compute, one each
    (on a CPU thread, the kernels run one after another). Counts, unlike times, do not change with machine
    load or CPU kind."""

    def __init__(self) -> None:
        super().__init__()
        self.operations = 0
        self.calls = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.operations += int(formula(*args, **(kwargs or {}), out_val=out))
            self.calls += 1
            return out
        if func._overloadpacket is torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
            query, key, value = args[:3]
            self.operations += int(sdpa_flop_count(query.shape, key.shape, value.shape))
            self.calls += 1
            return out
        if func._overloadpacket in FUSED_RNN:
            self.operations += FUSED_RNN[func._overloadpacket](*args)
            self.calls += 1
            return out
        existing = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        computed = sum(t.numel() for t in tree_leaves(out)
                       if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in existing)
        self.operations += computed
        self.calls += computed > 0
        return out


def _elements(sequence: torch.Tensor) -> int:
    return sequence.shape[0] * sequence.shape[1] if sequence.dim() == 3 else sequence.shape[0]


# torch's fused recurrent kernels: 2 FLOPs per entry of each weight matrix (W x_t, U h_{t−1}) per sequence element
FUSED_RNN: dict[Any, Callable[..., int]] = {
    torch.ops.aten.mkldnn_rnn_layer: lambda x, w_ih, w_hh, *rest: 2 * _elements(x) * (w_ih.numel() + w_hh.numel()),
    torch.ops.aten.lstm: lambda x, hx, params, *rest: 2 * _elements(x) * sum(w.numel() for w in params if w.dim() == 2),
}


def operation_count(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Run `fn()` once; return its result and the operations it performed (see `OperationCounter`)."""
    with OperationCounter() as counter:
        result = fn()
    return result, counter.operations


def median_times(calls: Mapping[K, Callable[[], Any]], repeats: int = 5, warmup: int = 1,
                 min_seconds: float = 0.0) -> dict[K, float]:
    """Median seconds per call of each of `calls`, from `repeats` samples taken round-robin (call 1, call 2,
    …, call 1, …) after `warmup` untimed calls of each. A burst of load from other processes then spoils
    one sample of many calls rather than every sample of one, and the median ignores it. A call faster
    than `min_seconds` is looped within each sample until the sample lasts that long."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    loops: dict[K, int] = {}
    for key, fn in calls.items():
        began = time.perf_counter()
        fn()
        once = max(time.perf_counter() - began, 1e-9)
        loops[key] = max(1, math.ceil(min_seconds / once))
    samples: dict[K, list[float]] = {key: [] for key in calls}
    for _ in range(repeats):
        for key, fn in calls.items():
            began = time.perf_counter()
            for _ in range(loops[key]):
                fn()
            samples[key].append((time.perf_counter() - began) / loops[key])
    return {key: statistics.median(values) for key, values in samples.items()}


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The least-squares slope b of log y = a + b log x: the exponent of a power law y ∝ x^b."""
    x, y = np.log(np.asarray(xs, dtype=float)), np.log(np.asarray(ys, dtype=float))
    if len(x) < 2 or not np.all(np.isfinite(y)):
        return math.nan
    return float(np.polyfit(x, y, 1)[0])
