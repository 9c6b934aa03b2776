"""Gradient-flow diagnostics and the gradient-health callback (seed 004)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

from seqlab.config import config_from_dict
from seqlab.diagnostics.gradients import GradientHealth, fit_decay, gradient_flow, plot_gradient_flow
from seqlab.models import build_model
from seqlab.registry import TASKS
from seqlab.training import Trainer


def adding_setup(cell: str, length: int = 30, seed: int = 0, **model):
    config = config_from_dict({
        "seed": seed, "task": {"name": "adding", "length": length},
        "model": {"name": "rnn", "cell": cell, "hidden_size": 16, **model},
    })
    task = TASKS.build(config.task, seed)
    torch.manual_seed(seed)
    return build_model(config.model, task.info), task.train_batch(0, 8)


def test_hidden_gradients_follow_seed_000_recursion() -> None:
    """‖∂L/∂h_t‖ equals the hand recursion ∂L/∂h_{t−1} = W_hhᵀ (f'(z_t) ⊙ ∂L/∂h_t), started from the head."""
    model, batch = adding_setup("elman", length=12, fast=False)
    flow = gradient_flow(model, batch, "regress")
    cell = model.stack.cells[0]
    x = batch["inputs"]
    with torch.no_grad():
        h, hs = torch.zeros(8, 16), []
        for t in range(12):
            h = torch.tanh(h @ cell.W_hh.T + x[:, t] @ cell.W_xh.T + cell.b)
            hs.append(h)
        prediction = model.head(hs[-1])
        dL_dy = 2 * (prediction - batch["targets"])  # loss: sum over the batch of squared error
        dL_dh = dL_dy @ model.head.weight
        by_hand = [dL_dh]
        for t in range(11, 0, -1):
            dL_dz = dL_dh * (1 - hs[t] ** 2)
            dL_dh = dL_dz @ cell.W_hh
            by_hand.insert(0, dL_dh)
    expected = torch.stack(by_hand, 1).double().norm(dim=2).mean(0).numpy()
    np.testing.assert_allclose(flow.hidden_norms, expected, rtol=1e-4)
    first_dz = by_hand[0] * (1 - hs[0] ** 2)
    np.testing.assert_allclose(flow.input_norms[0], (first_dz @ cell.W_xh).double().norm(dim=1).mean().item(), rtol=1e-4)


def test_fast_and_reference_paths_give_the_same_input_gradients_and_params_are_untouched() -> None:
    model, batch = adding_setup("lstm")
    reference = gradient_flow(model, batch, "regress")
    model.stack.fast = True
    fused = gradient_flow(model, batch, "regress")
    np.testing.assert_allclose(fused.input_norms, reference.input_norms, rtol=1e-4)
    assert all(p.grad is None for p in model.parameters())
    assert model.training


def test_lstm_keeps_far_more_gradient_than_elman_at_initialisation() -> None:
    ratios = {cell: gradient_flow(*adding_setup(cell, length=60), "regress").ratio() for cell in ("elman", "lstm")}
    assert ratios["elman"] < 1e-3 and ratios["lstm"] > 100 * ratios["elman"]


def test_token_models_use_the_embedding_and_tokens_loss_sits_at_the_last_step() -> None:
    config = config_from_dict({"task": {"name": "delayed_recall", "distance": 9, "episodes": 2},
                               "model": {"name": "rnn", "cell": "gru", "hidden_size": 8}})
    task = TASKS.build(config.task, 0)
    model = build_model(config.model, task.info)
    flow = gradient_flow(model, task.train_batch(0, 4), "tokens")
    assert flow.input_norms.shape == (20,) and flow.hidden_norms.shape == (20,)
    assert np.all(flow.input_norms > 0)


class MeanPool(nn.Module):
    """No recurrence: mean of embeddings → logits. Every step gets the same share of the gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(5, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, batch):
        return self.head(self.embedding(batch["inputs"]).mean(1))


def test_any_model_gets_input_gradients_and_a_flat_decay() -> None:
    torch.manual_seed(0)
    inputs = torch.full((6, 10), 2)
    flow = gradient_flow(MeanPool(), {"inputs": inputs, "targets": torch.zeros(6, dtype=torch.long)}, "classify")
    assert flow.hidden_norms is None
    np.testing.assert_allclose(flow.input_norms, flow.input_norms[0], rtol=1e-5)
    assert flow.input_decay.per_step == pytest.approx(1.0, abs=1e-6)


def test_fit_decay_recovers_a_geometric_rate_and_plot_is_written(tmp_path) -> None:
    norms = 3.0 * 0.8 ** np.arange(20, 0, -1)  # shrinks by 0.8 per step back from t = 20
    assert fit_decay(norms).per_step == pytest.approx(0.8)
    assert fit_decay(np.array([0.0, 0.0, 1.0])) is None
    model, batch = adding_setup("gru")
    path = plot_gradient_flow({"gru": gradient_flow(model, batch, "regress")}, tmp_path / "flow.png")
    assert path.stat().st_size > 1000


def test_gradient_health_flags_vanishing_and_exploding_parameters(caplog) -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    model[0].weight.grad = torch.full((2, 2), 1e-9)
    model[0].bias.grad = torch.full((2,), 5e3)
    model[1].weight.grad = torch.ones(1, 2)
    model[1].bias.grad = torch.tensor([math.nan])
    health = GradientHealth()
    with caplog.at_level(logging.WARNING, logger="seqlab.gradients"):
        logs = health.check(model, step=7)
    assert logs["vanishing_params"] == 1 and logs["exploding_params"] == 2
    assert {(e["parameter"], e["kind"]) for e in health.events} == {
        ("0.weight", "vanishing"), ("0.bias", "exploding"), ("1.bias", "exploding")}
    assert "vanishing gradient of 0.weight" in caplog.text


def test_gradient_health_is_logged_during_training() -> None:
    config = config_from_dict({
        "task": {"name": "adding", "length": 10}, "model": {"name": "rnn", "cell": "elman", "hidden_size": 8},
        "train": {"steps": 3, "batch_size": 4, "progress": False, "tensorboard": False},
    })
    result = Trainer(config, callbacks=(GradientHealth(),)).fit()
    assert all({"grad_norm_min", "grad_norm_max", "vanishing_params", "exploding_params"} <= set(h) for h in result.history)
