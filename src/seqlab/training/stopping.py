"""Stopping rules: the best validation figure so far (early stopping, the `best` checkpoint) and divergence."""

from __future__ import annotations

import math
from typing import Any, Literal

from seqlab.config import EarlyStopping

StopReason = Literal["steps", "early_stopping", "time_budget", "diverged", "callback"]


def diverged(figures: dict[str, float]) -> str | None:
    """Which of a record's figures is NaN or infinite (the run can only get worse from there), else None."""
    for key, value in figures.items():
        if isinstance(value, float) and not math.isfinite(value):
            return f"{key} is {value}"
    return None


class BestTracker:
    """Tracks the best value of the early-stopping metric and the evaluations since it improved.

    A non-finite value never counts as an improvement, so a diverged evaluation can never become `best`.
    """

    def __init__(self, rule: EarlyStopping | None) -> None:
        self.rule = rule
        self.metric, self.mode, self.delta = (rule.metric, rule.mode, rule.min_delta) if rule else ("loss", "min", 0.0)
        self.best: float | None = None
        self.bad_evals = 0

    def update(self, metrics: dict[str, float]) -> bool:
        """Record one evaluation; True when it is the best so far."""
        value = metrics[self.metric]
        if not math.isfinite(value):
            self.bad_evals += 1
            return False
        if self.best is None:
            better = True
        elif self.mode == "min":
            better = value < self.best - self.delta
        else:
            better = value > self.best + self.delta
        if better:
            self.best, self.bad_evals = value, 0
        else:
            self.bad_evals += 1
        return better

    @property
    def patience_spent(self) -> bool:
        return self.rule is not None and self.bad_evals >= self.rule.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad_evals = state["best"], state["bad_evals"]
