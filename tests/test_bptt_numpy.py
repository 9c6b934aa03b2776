"""Seed 000's backpropagation through time by hand, checked against autograd in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqlab.nn.bptt_numpy import NumpyElmanRNN

STEPS, N_IN, N_HIDDEN, N_OUT, BATCH = 6, 3, 5, 2, 4


def _autograd(model: NumpyElmanRNN, xs: np.ndarray, targets: np.ndarray, h0: np.ndarray, weights: np.ndarray):
    """The same network and loss in torch (float64); returns the loss, parameter grads and ∂L/∂h_t."""
    p = {name: torch.tensor(value, requires_grad=True) for name, value in model.params.items()}
    h = [torch.tensor(h0, requires_grad=True)]
    loss = torch.zeros((), dtype=torch.float64)
    for t in range(len(xs)):
        h.append(torch.tanh(p["W_hh"] @ h[-1] + p["W_hx"] @ torch.from_numpy(xs[t]) + p["b"]))
        y = p["W_hy"] @ h[-1] + p["b_y"]
        loss = loss + weights[t] * 0.5 * ((y - torch.from_numpy(targets[t])) ** 2).sum()
    grads = torch.autograd.grad(loss, [*p.values(), *h])
    names = list(p)
    parameter_grads = {name: grad.numpy() for name, grad in zip(names, grads)}
    return float(loss.detach()), parameter_grads, np.stack([grad.numpy() for grad in grads[len(names) :]])


def _relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300))


@pytest.mark.parametrize("where", ["every-step", "last-step"])
def test_hand_bptt_equals_autograd(where: str) -> None:
    rng = np.random.default_rng(0)
    model = NumpyElmanRNN(N_IN, N_HIDDEN, N_OUT, seed=1, scale=1.5)
    xs = rng.normal(size=(STEPS, N_IN, BATCH))
    targets = rng.normal(size=(STEPS, N_OUT, BATCH))
    h0 = rng.normal(size=(N_HIDDEN, BATCH)) * 0.5
    weights = np.ones(STEPS) if where == "every-step" else np.eye(STEPS)[-1]
    cache = model.forward(xs, h0)
    grads = model.backward(cache, targets, weights)
    loss, expected, expected_dh = _autograd(model, xs, targets, h0, weights)
    assert model.loss(cache, targets, weights) == pytest.approx(loss, rel=1e-12)
    for name in model.params:
        assert _relative_error(grads[name], expected[name]) < 1e-6, name
    assert _relative_error(grads["h"], expected_dh) < 1e-6
    if where == "last-step":
        # only the gradient from the future reaches the earlier states
        assert np.all(np.linalg.norm(grads["h"][:-1], axis=1) > 0)


def test_gradient_from_the_future_shrinks_geometrically() -> None:
    """Seed 000: with W_hh = 0.9·I (and f' = 1 around 0) the signal from step T reaches step t as 0.9^(T−t)."""
    model = NumpyElmanRNN(1, 3, 1, seed=0)
    model.params["W_hh"] = 0.9 * np.eye(3)
    model.params["W_hx"][:] = 0.0
    steps = 100
    xs = np.zeros((steps, 1, 1))
    targets = np.zeros((steps, 1, 1))
    targets[-1] = 1.0
    cache = model.forward(xs)
    norms = np.linalg.norm(model.backward(cache, targets, np.eye(steps)[-1])["h"][1:, :, 0], axis=1)
    np.testing.assert_allclose(norms[0] / norms[-1], 0.9**99, rtol=1e-9)
    assert norms[0] / norms[-1] < 1e-4


def test_hand_gradients_train_the_network() -> None:
    """SGD on the hand-derived gradients learns to echo the previous input (needs the recurrence)."""
    rng = np.random.default_rng(3)
    model = NumpyElmanRNN(1, 8, 1, seed=2, scale=1.0)
    xs = rng.choice([-1.0, 1.0], size=(10, 1, 64))
    targets = np.concatenate([np.zeros((1, 1, 64)), xs[:-1]]) * 0.5
    before = model.loss(model.forward(xs), targets)
    for _ in range(300):
        model.sgd_step(model.backward(model.forward(xs), targets), lr=1e-3)
    after = model.loss(model.forward(xs), targets)
    assert after < 0.1 * before
