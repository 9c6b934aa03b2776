"""The recurrent era's experiments: registration, their helpers, and one quick run's structure
(the tour command checks every verdict: `seqlab tour --quick --only vanishing-gradients ...`)."""

from __future__ import annotations

import math

import torch

from seqlab.experiments import EXPERIMENTS, Context
from seqlab.experiments.base import StopAt, fit, quiet_config
from seqlab.experiments.recurrent import scale_spectral_radius
from seqlab.training import Trainer

NAMES = ("vanishing-gradients", "exploding-gradients", "long-range-memory", "bidirectional", "fixed-window", "truncated-bptt")


def test_experiments_are_registered_with_claim_source_and_threshold() -> None:
    for name in NAMES:
        exp = EXPERIMENTS[name]
        assert exp.era in ("recurrent", "gated") and exp.claim and exp.source.startswith("seed") and exp.threshold


def tiny_adding(steps: int):
    return quiet_config({"name": "adding", "length": 6, "eval_size": 16},
                        {"name": "rnn", "cell": "elman", "hidden_size": 8, "init": "orthogonal"},
                        {"steps": steps, "batch_size": 8})


def test_stop_at_target_ends_training_once_reached() -> None:
    stopper = StopAt("loss", math.inf, every=2)
    result = fit(tiny_adding(10), callbacks=(stopper,))
    assert result.steps == 2 and stopper.reached_at == 2 and len(stopper.curve) == 1
    never = StopAt("loss", -1.0, every=3)
    result = fit(tiny_adding(7), callbacks=(never,))
    assert result.steps == 7 and never.reached_at is None and [s for s, _ in never.curve] == [3, 6]


def test_spectral_radius_rescaling() -> None:
    trainer = Trainer(tiny_adding(1))
    scale_spectral_radius(trainer, 1.5)
    radius = torch.linalg.eigvals(trainer.model.stack.cells[0].W_hh.detach()).abs().max()
    assert abs(float(radius) - 1.5) < 1e-4


def test_exploding_gradients_quick_run_reports_figures_and_a_picture(tmp_path) -> None:
    outcome = EXPERIMENTS["exploding-gradients"].run(Context(mode="quick", out_dir=tmp_path, name="exploding-gradients"))
    figures = outcome.figures
    assert figures["unclipped_growth"] == figures["unclipped_max_grad_norm"] / figures["unclipped_first_grad_norm"]
    assert figures["clipped_loss_finite"] is True and figures["unclipped_exploding_flags"] >= 0
    assert isinstance(outcome.passed, bool) and "quick mode" in outcome.setup
    assert len(outcome.images) == 1 and outcome.images[0].stat().st_size > 1000
