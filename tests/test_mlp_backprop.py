"""The MLP (seed 000): a torch module of any depth, and a NumPy 2-layer net whose backward pass is written by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_config
from seqlab.config import config_from_dict
from seqlab.nn.mlp import MLP, NumpyMLP
from seqlab.training import train

ACTIVATIONS = ["sigmoid", "tanh", "relu"]


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300))


def network_and_data(activation: str, seed: int = 0) -> tuple[NumpyMLP, np.ndarray, np.ndarray]:
    """A 3-5-2 net and a batch of 7 columns, with no pre-activation within 1e-3 of ReLU's kink."""
    rng = np.random.default_rng(seed)
    net = NumpyMLP(3, 5, 2, activation=activation, seed=seed)
    while True:
        x, target = rng.normal(size=(3, 7)), rng.uniform(size=(2, 7))
        cache = net.forward(x)
        if min(np.abs(cache["z1"]).min(), np.abs(cache["z2"]).min()) > 1e-3:
            return net, x, target


def autograd_gradients(net: NumpyMLP, x: np.ndarray, target: np.ndarray, activation: str) -> dict[str, np.ndarray]:
    f = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}[activation]
    W1 = torch.tensor(net.W1, dtype=torch.float64, requires_grad=True)
    W2 = torch.tensor(net.W2, dtype=torch.float64, requires_grad=True)
    y = f(W2 @ f(W1 @ torch.tensor(x)))
    loss = 0.5 * ((y - torch.tensor(target)) ** 2).sum()
    loss.backward()
    return {"W1": W1.grad.numpy(), "W2": W2.grad.numpy()}


def finite_difference_gradients(net: NumpyMLP, x: np.ndarray, target: np.ndarray, eps: float = 1e-6):
    gradients = {}
    for name in ("W1", "W2"):
        weights = getattr(net, name)
        grad = np.zeros_like(weights)
        for index in np.ndindex(weights.shape):
            saved = weights[index]
            weights[index] = saved + eps
            plus = net.loss(net.forward(x)["y"], target)
            weights[index] = saved - eps
            minus = net.loss(net.forward(x)["y"], target)
            weights[index] = saved
            grad[index] = (plus - minus) / (2 * eps)
        gradients[name] = grad
    return gradients


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_hand_backprop_matches_autograd(activation: str):
    for seed in range(3):
        net, x, target = network_and_data(activation, seed)
        assert net.W1.dtype == np.float64
        by_hand = net.backward(net.forward(x), target)
        reference = autograd_gradients(net, x, target, activation)
        for name in ("W1", "W2"):
            assert by_hand[name].shape == getattr(net, name).shape
            assert relative_error(by_hand[name], reference[name]) < 1e-6, (activation, name)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_hand_backprop_matches_finite_differences(activation: str):
    net, x, target = network_and_data(activation, seed=5)
    by_hand = net.backward(net.forward(x), target)
    numeric = finite_difference_gradients(net, x, target)
    for name in ("W1", "W2"):
        assert relative_error(by_hand[name], numeric[name]) < 1e-6, (activation, name)


def test_backprop_follows_seed_000_term_by_term():
    """δ2 = ∂L/∂y ⊙ f'(z2), ∂L/∂W2 = δ2 hᵀ, δ1 = (W2ᵀ δ2) ⊙ f'(z1), ∂L/∂W1 = δ1 xᵀ, one example, sigmoid."""
    net, x, target = network_and_data("sigmoid", seed=2)
    x, target = x[:, :1], target[:, :1]
    cache = net.forward(x)
    sigmoid_prime = lambda z: np.exp(-z) / (1 + np.exp(-z)) ** 2  # noqa: E731
    delta2 = (cache["y"] - target) * sigmoid_prime(cache["z2"])
    delta1 = (net.W2.T @ delta2) * sigmoid_prime(cache["z1"])
    grads = net.backward(cache, target)
    np.testing.assert_allclose(grads["W2"], np.outer(delta2, cache["h"]), rtol=1e-12)
    np.testing.assert_allclose(grads["W1"], np.outer(delta1, x), rtol=1e-12)


def test_hand_backprop_trains_xor():
    x = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=float).T  # third input: constant 1 (a bias)
    target = np.array([[0.0, 1.0, 1.0, 0.0]])
    net = NumpyMLP(3, 4, 1, activation="sigmoid", seed=0)
    start = net.loss(net.forward(x)["y"], target)
    for _ in range(3000):
        grads = net.backward(net.forward(x), target)
        net.W1 -= 2.0 * grads["W1"]
        net.W2 -= 2.0 * grads["W2"]
    y = net.forward(x)["y"]
    assert net.loss(y, target) < 0.01 * start
    assert (y > 0.5).astype(int).tolist() == [[0, 1, 1, 0]]


@pytest.mark.parametrize("hidden", [[], [3], [5, 4], [6, 5, 4, 3]])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_torch_mlp_any_depth(hidden: list[int], activation: str):
    torch.manual_seed(0)
    mlp = MLP(2, hidden, 3, activation=activation)
    linears = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == list(zip([2, *hidden], [*hidden, 3]))
    f = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}[activation]
    x = torch.randn(5, 2)
    h = x
    for layer in linears[:-1]:
        h = f(h @ layer.weight.T + layer.bias)  # h_{l+1} = f(W_l h_l + b_l)
    expected = h @ linears[-1].weight.T + linears[-1].bias
    torch.testing.assert_close(mlp(x), expected)


@pytest.mark.parametrize(
    "model, steps",
    [({"hidden_sizes": [4], "activation": "tanh"}, 300),
     ({"hidden_sizes": [8], "activation": "sigmoid"}, 400),
     ({"hidden_sizes": [8, 8], "activation": "relu"}, 300)],
    ids=["tanh", "sigmoid", "relu-deep"],
)
def test_the_trainer_teaches_an_mlp_xor(model: dict, steps: int):
    result = train(config_from_dict(tiny_config(model=model, train={"steps": steps, "lr": 0.05})))
    assert result.final["val"]["accuracy"] == 1.0
    assert result.final["val"]["loss"] < 0.1
