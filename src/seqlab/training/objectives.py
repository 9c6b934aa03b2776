"""Losses and metrics by task kind, as sums over a batch so micro-batches and processes add up exactly."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from seqlab.data.base import IGNORE, Batch, TaskKind


def target_count(kind: TaskKind, batch: Batch) -> int:
    """How many targets the batch holds: examples, or non-padding tokens."""
    targets = batch["targets"]
    if kind in ("tokens", "seq2seq"):
        return int((targets != IGNORE).sum())
    return int(targets.shape[0])


def loss_sum(kind: TaskKind, output: torch.Tensor, batch: Batch, label_smoothing: float = 0.0) -> torch.Tensor:
    """The batch's summed loss: cross-entropy for classes and tokens, squared error for regression."""
    targets = batch["targets"]
    if kind == "regress":
        return F.mse_loss(output.reshape(targets.shape).float(), targets.float(), reduction="none").flatten(1).mean(1).sum()
    logits = output.reshape(-1, output.shape[-1]).float()
    return F.cross_entropy(
        logits, targets.reshape(-1), ignore_index=IGNORE, reduction="sum", label_smoothing=label_smoothing
    )


def metric_sums(kind: TaskKind, output: torch.Tensor, batch: Batch) -> dict[str, float]:
    """Summed metrics for one batch (divide by `count`): loss (unsmoothed), and accuracy where it applies."""
    sums = {"loss": float(loss_sum(kind, output, batch)), "count": float(target_count(kind, batch))}
    if kind != "regress":
        targets = batch["targets"]
        predictions = output.argmax(-1)
        valid = targets != IGNORE
        sums["accuracy"] = float(((predictions == targets) & valid).sum())
    return sums


def finalize(sums: dict[str, float]) -> dict[str, float]:
    """Turn accumulated sums into means; token tasks also get perplexity."""
    count = max(sums.pop("count", 1.0), 1.0)
    metrics = {key: value / count for key, value in sums.items()}
    return metrics
