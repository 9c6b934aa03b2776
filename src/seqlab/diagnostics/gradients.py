"""Gradient diagnostics (seed 004): how far back a loss's gradient reaches, and gradient health in training.

`gradient_flow` measures ‖∂L/∂x_t‖ for every step t from a loss at the last step, for any model (x_t is
the input embedding, or the numeric input itself), and for models built on a `RecurrentStack` also the
total derivative ‖∂L/∂h_t‖ through the recurrence (seed 000's "gradient from the future"), read from
the step-by-step reference runner. `fit_decay` fits log‖g_t‖ = a + b·t: e^{−b} is the factor by which
the gradient shrinks per step back in time. `GradientHealth` is a trainer callback that flags
vanishing (< 1e-7) and exploding (> 1e3) parameter-gradient norms, seed 004's monitoring table.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from seqlab.data.base import IGNORE, Batch, TaskKind
from seqlab.nn.recurrent import RecurrentStack
from seqlab.report.plots import new_figure, save
from seqlab.training.objectives import loss_sum
from seqlab.training.trainer import Callback, Trainer

LOG = logging.getLogger("seqlab.gradients")


@dataclass
class Decay:
    """log‖g_t‖ ≈ intercept + slope·t (natural log); `per_step` = e^{−slope}: the factor per step back in time."""

    slope: float
    intercept: float
    per_step: float


@dataclass
class GradientFlow:
    """Per-step gradient norms (mean over the batch) of a loss at the last step; index 0 is t = 1."""

    input_norms: np.ndarray
    hidden_norms: np.ndarray | None = None
    input_decay: Decay | None = None
    hidden_decay: Decay | None = None

    @property
    def length(self) -> int:
        return len(self.input_norms)

    def norms(self, which: str = "hidden") -> np.ndarray:
        """‖∂L/∂h_t‖ (`hidden`, when measured) or ‖∂L/∂x_t‖ (`input`)."""
        if which == "hidden" and self.hidden_norms is not None:
            return self.hidden_norms
        return self.input_norms

    def ratio(self, which: str = "hidden") -> float:
        """‖g_1‖ / ‖g_T‖: what reaches the first step relative to the last."""
        norms = self.norms(which)
        return float(norms[0] / norms[-1]) if norms[-1] > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_norms": self.input_norms.tolist(),
            "hidden_norms": None if self.hidden_norms is None else self.hidden_norms.tolist(),
            "input_decay_per_step": None if self.input_decay is None else self.input_decay.per_step,
            "hidden_decay_per_step": None if self.hidden_decay is None else self.hidden_decay.per_step,
        }


def fit_decay(norms: np.ndarray) -> Decay | None:
    """Least-squares line through (t, ln‖g_t‖) over the steps with a positive, finite norm."""
    t = np.arange(1, len(norms) + 1, dtype=np.float64)
    keep = np.isfinite(norms) & (norms > 0)
    if keep.sum() < 2:
        return None
    slope, intercept = np.polyfit(t[keep], np.log(norms[keep]), 1)
    return Decay(float(slope), float(intercept), float(math.exp(-slope)))


def _stacks(model: nn.Module) -> list[RecurrentStack]:
    return [module for module in model.modules() if isinstance(module, RecurrentStack)]


@contextlib.contextmanager
def reference_runner(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Run the model's first RecurrentStack step by step; the list receives its top layer's h_t, one per step."""
    stacks = _stacks(model)
    captured: list[torch.Tensor] = []
    if not stacks:
        yield captured
        return
    stack = stacks[0]

    def forward(x: torch.Tensor, lengths: torch.Tensor | None = None, state: Any = None) -> tuple[torch.Tensor, Any]:
        outputs, final, steps = stack.forward_reference(x, lengths, state)
        captured.extend(steps)
        return outputs, final

    stack.forward = forward  # type: ignore[method-assign]
    try:
        yield captured
    finally:
        del stack.forward


@contextlib.contextmanager
def input_capture(model: nn.Module, batch: Batch, input_module: nn.Module | None) -> Iterator[tuple[Batch, list[torch.Tensor]]]:
    """Make the per-step inputs x_t a node whose gradient we can ask for: the output of `input_module`
    (default: the model's first nn.Embedding), or the numeric inputs themselves."""
    module = input_module or next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    captured: list[torch.Tensor] = []
    if module is None:
        inputs = batch["inputs"].float().detach().requires_grad_(True)
        captured.append(inputs)
        yield {**batch, "inputs": inputs}, captured
        return
    handle = module.register_forward_hook(lambda _m, _i, output: captured.append(output))
    try:
        yield batch, captured
    finally:
        handle.remove()


def last_step_targets(batch: Batch, kind: TaskKind) -> Batch:
    """Token tasks: keep only each sequence's last valid target, so the loss sits at the last step."""
    if kind != "tokens":
        return batch
    targets = batch["targets"]
    last = (targets != IGNORE).long().cumsum(1).argmax(1)  # the last non-ignored position
    kept = torch.full_like(targets, IGNORE)
    rows = torch.arange(targets.shape[0])
    kept[rows, last] = targets[rows, last]
    return {**batch, "targets": kept}


def _mean_norms(grad: torch.Tensor, lengths: torch.Tensor | None) -> np.ndarray:
    """(batch, time, ...) gradients → per-step norm, averaged over the sequences that reach that step."""
    per_example = grad.detach().double().flatten(2).norm(dim=2) if grad.dim() > 2 else grad.detach().double().abs()
    if lengths is None:
        return per_example.mean(0).numpy()
    valid = (torch.arange(per_example.shape[1])[None, :] < lengths[:, None]).double()
    return ((per_example * valid).sum(0) / valid.sum(0).clamp_min(1)).numpy()


def gradient_flow(model: nn.Module, batch: Batch, kind: TaskKind, input_module: nn.Module | None = None) -> GradientFlow:
    """‖∂L/∂x_t‖ (and ‖∂L/∂h_t‖ for recurrent models) for every step t, L the task loss at the last step.

    The model runs in eval mode (no dropout) and its parameters are left untouched (no .grad is written).
    """
    was_training = model.training
    model.eval()
    batch = last_step_targets(batch, kind)
    try:
        with reference_runner(model) as hidden, input_capture(model, batch, input_module) as (fed, inputs):
            output = model(fed)
            loss = loss_sum(kind, output, fed)
            nodes = [inputs[0], *hidden]
            grads = torch.autograd.grad(loss, nodes, allow_unused=True)
    finally:
        model.train(was_training)
    zero = [torch.zeros_like(node) if g is None else g for node, g in zip(nodes, grads)]
    lengths = batch.get("lengths")
    input_norms = _mean_norms(zero[0], lengths)
    hidden_norms = _mean_norms(torch.stack(zero[1:], 1), lengths) if hidden else None
    return GradientFlow(
        input_norms=input_norms,
        hidden_norms=hidden_norms,
        input_decay=fit_decay(input_norms),
        hidden_decay=fit_decay(hidden_norms) if hidden_norms is not None else None,
    )


def plot_gradient_flow(flows: dict[str, GradientFlow], path: Path, which: str = "hidden", title: str = "") -> Path:
    """One log-scale curve of ‖∂L/∂h_t‖ (or ‖∂L/∂x_t‖) against t per model, with its fitted decay per step."""
    fig, (ax,) = new_figure(size=(6.4, 4.0))
    for label, flow in flows.items():
        norms = flow.norms(which)
        decay = flow.hidden_decay if which == "hidden" and flow.hidden_norms is not None else flow.input_decay
        shown = np.where(norms > 0, norms, np.nan)
        suffix = f" (×{decay.per_step:.3g} per step back)" if decay is not None else ""
        ax.plot(np.arange(1, len(norms) + 1), shown, label=label + suffix)
    symbol = "h_t" if which == "hidden" else "x_t"
    ax.set_yscale("log")
    ax.set_xlabel("time step t (loss at the last step)")
    ax.set_ylabel(f"‖∂L/∂{symbol}‖")
    ax.set_title(title or f"Gradient flow back through time: ‖∂L/∂{symbol}‖", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


@dataclass
class GradientHealth(Callback):
    """Flags parameters whose gradient norm is below `vanishing` or above `exploding` (or not finite).

    Every step it logs the smallest and largest parameter-gradient norm and how many parameters were
    flagged; `events` keeps (step, parameter, norm, kind) and, with `warn`, the first flag of each
    parameter is also written to the ``seqlab.gradients`` logger.
    """

    vanishing: float = 1e-7
    exploding: float = 1e3
    warn: bool = True
    events: list[dict[str, Any]] = field(default_factory=list)
    _warned: set[tuple[str, str]] = field(default_factory=set)

    def check(self, model: nn.Module, step: int) -> dict[str, float]:
        norms = {name: float(p.grad.detach().norm()) for name, p in model.named_parameters() if p.grad is not None}
        if not norms:
            return {}
        counts = {"vanishing": 0, "exploding": 0}
        for name, norm in norms.items():
            kind = "exploding" if not math.isfinite(norm) or norm > self.exploding else "vanishing" if norm < self.vanishing else None
            if kind is None:
                continue
            counts[kind] += 1
            self.events.append({"step": step, "parameter": name, "norm": norm, "kind": kind})
            if self.warn and (name, kind) not in self._warned:
                self._warned.add((name, kind))
                LOG.warning("step %d: %s gradient of %s, norm %.3g", step, kind, name, norm)
        return {
            "grad_norm_min": min(norms.values()),
            "grad_norm_max": max(norms.values()),
            "vanishing_params": float(counts["vanishing"]),
            "exploding_params": float(counts["exploding"]),
        }

    def on_after_backward(self, trainer: Trainer, step: int) -> dict[str, float]:
        return self.check(trainer.model, step + 1)
