"""DistributedDataParallel when launched by ``torchrun``: which process this is, its share of a batch,
and sums over all processes. In a single process every method is the identity."""

from __future__ import annotations

import contextlib
import os
from typing import ContextManager

import torch
import torch.distributed as dist
from torch import nn

from seqlab.data.base import Batch


def slice_batch(batch: Batch, start: int, stop: int) -> Batch:
    return {key: value[start:stop] for key, value in batch.items()}


def split_batch(batch: Batch, parts: int) -> list[Batch]:
    """Split along the batch dimension into `parts` nearly equal pieces (empty pieces dropped)."""
    n = next(iter(batch.values())).shape[0]
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [slice_batch(batch, a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


class Distributed:
    """The process group this run belongs to (world size 1 without torchrun)."""

    def __init__(self) -> None:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            self.world_size, self.rank = 1, 0
            return
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and os.environ.get("SEQLAB_BACKEND") != "gloo" else "gloo"
            dist.init_process_group(backend=backend)
        self.world_size, self.rank = dist.get_world_size(), dist.get_rank()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, configured: str) -> torch.device:
        """The configured device; under torchrun with CUDA, this process's own GPU (LOCAL_RANK)."""
        device = torch.device(configured)
        if device.type == "cuda" and self.world_size > 1:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        return device

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module the loop calls: `model` itself, or its DDP wrapper."""
        if self.world_size == 1:
            return model
        device_ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def share(self, batch: Batch) -> Batch:
        """This process's share of a global batch."""
        return batch if self.world_size == 1 else split_batch(batch, self.world_size)[self.rank]

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """`value` summed over every process (in place)."""
        if self.world_size > 1:
            dist.all_reduce(value)
        return value

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether any process says `flag`, so all of them take the same branch."""
        return bool(self.sum(torch.tensor(float(flag), device=device)) > 0)

    def no_sync(self, module: nn.Module, last: bool) -> ContextManager[None]:
        """Skip the gradient all-reduce on every micro-batch but the last."""
        if last or self.world_size == 1:
            return contextlib.nullcontext()
        return module.no_sync()  # type: ignore[operator]
