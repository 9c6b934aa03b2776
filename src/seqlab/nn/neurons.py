"""The first artificial neurons (seed 000): McCulloch & Pitts (1943) and Rosenblatt's perceptron (1957)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np


def heaviside(x: np.ndarray) -> np.ndarray:
    """H(x) = 1 if x >= 0 else 0 (seed 000)."""
    return (np.asarray(x) >= 0).astype(np.int64)


@dataclass(frozen=True)
class McCullochPittsNeuron:
    """N(t+1) = H(Σ_j w_j N_j(t) − θ), with binary inputs and integer weights (McCulloch & Pitts 1943)."""

    weights: tuple[int, ...]
    theta: int

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        """inputs: (n_inputs,) or (batch, n_inputs) of 0/1 → firing state(s) 0/1."""
        N_t = np.asarray(inputs, dtype=np.int64)
        return heaviside(N_t @ np.asarray(self.weights, dtype=np.int64) - self.theta)


AND = McCullochPittsNeuron(weights=(1, 1), theta=2)
OR = McCullochPittsNeuron(weights=(1, 1), theta=1)
NOT = McCullochPittsNeuron(weights=(-1,), theta=0)
NAND = McCullochPittsNeuron(weights=(-1, -1), theta=-1)


def search_single_unit(targets: np.ndarray, inputs: np.ndarray, weight_range: range) -> list[McCullochPittsNeuron]:
    """Every McCulloch–Pitts unit with weights and threshold in `weight_range` that computes `targets` exactly."""
    n_inputs = inputs.shape[1]
    found = []
    for *weights, theta in itertools.product(weight_range, repeat=n_inputs + 1):
        unit = McCullochPittsNeuron(tuple(weights), theta)
        if np.array_equal(unit(inputs), targets):
            found.append(unit)
    return found


class Perceptron:
    """Rosenblatt's perceptron: ŷ = H(w·x + b), trained by w ← w + η (y − ŷ) x, b ← b + η (y − ŷ)."""

    def __init__(self, n_inputs: int, lr: float = 1.0, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.w = rng.normal(0.0, 0.1, n_inputs)
        self.b = 0.0
        self.lr = lr

    def predict(self, x: np.ndarray) -> np.ndarray:
        return heaviside(np.asarray(x, dtype=float) @ self.w + self.b)

    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int = 100) -> list[float]:
        """Run the perceptron learning rule; stop early at an epoch with no mistakes. Returns accuracy per epoch."""
        accuracies = []
        for _ in range(epochs):
            mistakes = 0
            for x_i, y_i in zip(np.asarray(x, dtype=float), np.asarray(y)):
                error = y_i - self.predict(x_i)
                if error != 0:
                    self.w += self.lr * error * x_i
                    self.b += self.lr * error
                    mistakes += 1
            accuracies.append(float(np.mean(self.predict(x) == y)))
            if mistakes == 0:
                break
        return accuracies
