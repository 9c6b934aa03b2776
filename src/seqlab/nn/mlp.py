"""The multi-layer perceptron (seed 000): a torch module, and a NumPy version with backpropagation by hand."""

from __future__ import annotations

from typing import Callable, Literal

import numpy as np
import torch
from torch import nn

Activation = Literal["sigmoid", "tanh", "relu"]
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}


class MLP(nn.Module):
    """h_{l+1} = f(W_l h_l + b_l) for each hidden layer, then a linear output layer."""

    def __init__(
        self,
        input_dim: int,
        hidden_sizes: list[int],
        output_dim: int,
        activation: Activation = "tanh",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, output_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


NUMPY_ACTIVATIONS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    # name: (f, f') with f' written in terms of z
    "sigmoid": (_sigmoid, lambda z: _sigmoid(z) * (1.0 - _sigmoid(z))),
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(z.dtype)),
}


class NumpyMLP:
    """Two-layer MLP, z1 = W1 x, h = f(z1), z2 = W2 h, y = f(z2), L = ½‖y − t‖², with seed 000's hand backprop.

    Columns are examples: x is (n_in, batch). Biases are omitted, as in seed 000's derivation.
    """

    def __init__(self, n_in: int, n_hidden: int, n_out: int, activation: Activation = "sigmoid", seed: int = 0):
        rng = np.random.default_rng(seed)
        self.W1 = rng.normal(0.0, 1.0, (n_hidden, n_in))
        self.W2 = rng.normal(0.0, 1.0, (n_out, n_hidden))
        self.f, self.f_prime = NUMPY_ACTIVATIONS[activation]

    def forward(self, x: np.ndarray) -> dict[str, np.ndarray]:
        z1 = self.W1 @ x
        h = self.f(z1)
        z2 = self.W2 @ h
        y = self.f(z2)
        return {"x": x, "z1": z1, "h": h, "z2": z2, "y": y}

    @staticmethod
    def loss(y: np.ndarray, target: np.ndarray) -> float:
        return float(0.5 * np.sum((y - target) ** 2))

    def backward(self, cache: dict[str, np.ndarray], target: np.ndarray) -> dict[str, np.ndarray]:
        """Seed 000: δ2 = ∂L/∂y ⊙ f'(z2), ∂L/∂W2 = δ2 hᵀ, δ1 = (W2ᵀ δ2) ⊙ f'(z1), ∂L/∂W1 = δ1 xᵀ."""
        dL_dy = cache["y"] - target
        delta2 = dL_dy * self.f_prime(cache["z2"])
        dL_dW2 = delta2 @ cache["h"].T
        delta1 = (self.W2.T @ delta2) * self.f_prime(cache["z1"])
        dL_dW1 = delta1 @ cache["x"].T
        return {"W1": dL_dW1, "W2": dL_dW2}
