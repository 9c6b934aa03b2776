"""Feedforward-era tasks (seed 000): Boolean gates such as XOR, and linearly separable 2-D points."""

from __future__ import annotations

from typing import Literal

import torch

from seqlab.registry import Spec
from seqlab.data.base import Batch, GeneratedTask, TaskInfo
from seqlab.registry import TASKS

TRUTH_TABLES: dict[str, tuple[int, int, int, int]] = {
    # outputs for inputs (0,0), (0,1), (1,0), (1,1)
    "and": (0, 0, 0, 1),
    "or": (0, 1, 1, 1),
    "nand": (1, 1, 1, 0),
    "xor": (0, 1, 1, 0),
}
GATE_INPUTS = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])


def gate_dataset(gate: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The four rows of a two-input gate's truth table: inputs (4, 2) and targets (4,)."""
    return GATE_INPUTS.clone(), torch.tensor(TRUTH_TABLES[gate])


class LogicSpec(Spec):
    name: Literal["logic"] = "logic"
    gate: Literal["and", "or", "nand", "xor"] = "xor"


class LogicTask(GeneratedTask):
    """Rows of a truth table drawn uniformly; evaluation is the whole table."""

    def __init__(self, spec: LogicSpec, seed: int) -> None:
        super().__init__(seed, eval_size=4)
        self.inputs, self.targets = gate_dataset(spec.gate)
        self.info = TaskInfo(kind="classify", output_dim=2, input_dim=2, sequence=False)

    def generate(self, n: int, rng: torch.Generator) -> Batch:
        rows = torch.randint(0, 4, (n,), generator=rng)
        return {"inputs": self.inputs[rows], "targets": self.targets[rows]}

    def eval_set(self, split: str) -> Batch:
        return {"inputs": self.inputs, "targets": self.targets}


class BlobsSpec(Spec):
    name: Literal["blobs"] = "blobs"
    margin: float = 0.5
    eval_size: int = 512


class BlobsTask(GeneratedTask):
    """Linearly separable 2-D points: label = [w·x > 0] with no point closer than `margin` to the line."""

    def __init__(self, spec: BlobsSpec, seed: int) -> None:
        super().__init__(seed, eval_size=spec.eval_size)
        self.margin = spec.margin
        angle = torch.rand(1, generator=torch.Generator().manual_seed(seed)).item() * 6.283
        self.normal = torch.tensor([torch.cos(torch.tensor(angle)).item(), torch.sin(torch.tensor(angle)).item()])
        self.info = TaskInfo(kind="classify", output_dim=2, input_dim=2, sequence=False)

    def generate(self, n: int, rng: torch.Generator) -> Batch:
        points = torch.rand(n, 2, generator=rng) * 4 - 2
        side = points @ self.normal
        sign = torch.where(side >= 0, 1.0, -1.0)
        points = points + (self.margin * sign).unsqueeze(1) * self.normal  # push away from the line
        return {"inputs": points, "targets": (sign > 0).long()}


@TASKS.register("logic", LogicSpec)
def build_logic(spec: LogicSpec, seed: int) -> LogicTask:
    return LogicTask(spec, seed)


@TASKS.register("blobs", BlobsSpec)
def build_blobs(spec: BlobsSpec, seed: int) -> BlobsTask:
    return BlobsTask(spec, seed)
