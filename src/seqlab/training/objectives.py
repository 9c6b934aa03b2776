"""Losses and metrics by task kind, as sums over a batch so micro-batches and processes add up exactly."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqlab.data.base import IGNORE, Batch, TaskKind


def target_count(kind: TaskKind, batch: Batch) -> int:
    """How many targets the batch holds: examples, or non-padding tokens."""
    if kind == "loss":  # the model computes its own loss: one summed term per example
        return int(next(iter(batch.values())).shape[0])
    targets = batch["targets"]
    if kind in ("tokens", "seq2seq", "bits"):
        return int((targets != IGNORE).sum())
    return int(targets.shape[0])


def loss_sum(kind: TaskKind, output: torch.Tensor, batch: Batch, label_smoothing: float = 0.0) -> torch.Tensor:
    """The batch's summed loss: cross-entropy for classes and tokens, squared error for regression, and for
    kind "loss" the model's own per-example losses (batch,) summed (e.g. negative sampling)."""
    if kind == "loss":
        return output.sum()
    targets = batch["targets"]
    if kind == "bits":  # binary cross-entropy of the logits for each asked bit
        asked = targets != IGNORE
        return F.binary_cross_entropy_with_logits(output.float()[asked], targets.float()[asked], reduction="sum")
    if kind == "regress":
        return F.mse_loss(output.reshape(targets.shape).float(), targets.float(), reduction="none").flatten(1).mean(1).sum()
    logits = output.reshape(-1, output.shape[-1]).float()
    return F.cross_entropy(
        logits, targets.reshape(-1), ignore_index=IGNORE, reduction="sum", label_smoothing=label_smoothing
    )


def auxiliary_loss_modules(model: nn.Module) -> list[nn.Module]:
    """The modules that hold an `aux_loss` tensor (set when built, renewed by each forward pass; e.g. a mixture
    of experts' load-balancing loss): the trainer adds their sum to the objective."""
    return [module for module in model.modules() if isinstance(getattr(module, "aux_loss", None), torch.Tensor)]


def auxiliary_loss(modules: list[nn.Module]) -> torch.Tensor | None:
    """The sum of the `aux_loss` of `modules` after a forward pass; None when there are none."""
    return torch.stack([module.aux_loss.float() for module in modules]).sum() if modules else None


def metric_sums(kind: TaskKind, output: torch.Tensor, batch: Batch) -> dict[str, float]:
    """Summed metrics for one batch (divide by `count`): loss (unsmoothed), and accuracy where it applies."""
    sums = {"loss": float(loss_sum(kind, output, batch)), "count": float(target_count(kind, batch))}
    if kind not in ("regress", "loss"):
        targets = batch["targets"]
        predictions = (output > 0).to(targets.dtype) if kind == "bits" else output.argmax(-1)
        valid = targets != IGNORE
        sums["accuracy"] = float(((predictions == targets) & valid).sum())
    return sums


def metric_names(kind: TaskKind) -> list[str]:
    """The figures `evaluate` reports for a task kind (what early stopping may watch)."""
    return ["loss"] if kind in ("regress", "loss") else ["loss", "accuracy"]


def finalize(sums: dict[str, float]) -> dict[str, float]:
    """Turn accumulated sums into means; token tasks also get perplexity."""
    count = max(sums.pop("count", 1.0), 1.0)
    metrics = {key: value / count for key, value in sums.items()}
    return metrics
