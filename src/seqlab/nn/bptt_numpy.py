"""An Elman RNN in NumPy with backpropagation through time written by hand, following seed 000.

Forward, for t = 1..T (columns are examples, as in `seqlab.nn.mlp.NumpyMLP`):

    z_t = W_hh h_{t−1} + W_hx x_t + b,   h_t = tanh(z_t),   y_t = W_hy h_t + b_y,
    L = Σ_t w_t · ½‖y_t − target_t‖²      (w_t = 1 for every step in seed 000; w = (0, …, 0, 1) puts
                                            the loss at the last step only)

Backward, from t = T down to 1 — seed 000's "cumulative gradient": the gradient at h_t is the present
loss's own gradient plus the gradient from the future, carried back through z_{t+1} = W_hh h_t + …:

    ∂L/∂h_t = w_t W_hyᵀ (y_t − target_t)  +  W_hhᵀ δ_{t+1}          (the second term is 0 at t = T)
    δ_t     = ∂L/∂h_t ⊙ f'(z_t)
    Gradient_t(W_hh) = δ_t h_{t−1}ᵀ,   ∂L/∂W_hh = Σ_t Gradient_t    (likewise W_hx with x_tᵀ, b with δ_t)
"""

from __future__ import annotations

import numpy as np


class NumpyElmanRNN:
    """h_t = tanh(W_hh h_{t−1} + W_hx x_t + b), y_t = W_hy h_t + b_y, with seed 000's BPTT by hand."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int, seed: int = 0, scale: float = 0.5) -> None:
        rng = np.random.default_rng(seed)
        self.params: dict[str, np.ndarray] = {
            "W_hx": rng.normal(0.0, scale / np.sqrt(n_in), (n_hidden, n_in)),
            "W_hh": rng.normal(0.0, scale / np.sqrt(n_hidden), (n_hidden, n_hidden)),
            "b": np.zeros((n_hidden, 1)),
            "W_hy": rng.normal(0.0, scale / np.sqrt(n_hidden), (n_out, n_hidden)),
            "b_y": np.zeros((n_out, 1)),
        }
        self.n_hidden = n_hidden

    def forward(self, xs: np.ndarray, h0: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """xs: (T, n_in, batch). Returns the cache: h (T+1, n_hidden, batch) with h[0] = h_0, z, y."""
        p = self.params
        steps, _, batch = xs.shape
        h = np.zeros((steps + 1, self.n_hidden, batch))
        if h0 is not None:
            h[0] = h0
        z = np.zeros((steps, self.n_hidden, batch))
        y = np.zeros((steps, p["W_hy"].shape[0], batch))
        for t in range(steps):
            z[t] = p["W_hh"] @ h[t] + p["W_hx"] @ xs[t] + p["b"]
            h[t + 1] = np.tanh(z[t])
            y[t] = p["W_hy"] @ h[t + 1] + p["b_y"]
        return {"x": xs, "h": h, "z": z, "y": y}

    @staticmethod
    def step_weights(steps: int, weights: np.ndarray | None) -> np.ndarray:
        return np.ones(steps) if weights is None else np.asarray(weights, dtype=float)

    def loss(self, cache: dict[str, np.ndarray], targets: np.ndarray, weights: np.ndarray | None = None) -> float:
        """L = Σ_t w_t ½‖y_t − target_t‖², summed over the batch."""
        w = self.step_weights(len(targets), weights)
        return float(sum(w[t] * 0.5 * np.sum((cache["y"][t] - targets[t]) ** 2) for t in range(len(targets))))

    def backward(
        self, cache: dict[str, np.ndarray], targets: np.ndarray, weights: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Gradients of `loss` for every parameter, plus ∂L/∂h_t for t = 0..T under key "h"."""
        p = self.params
        steps = len(targets)
        w = self.step_weights(steps, weights)
        grads = {name: np.zeros_like(value) for name, value in p.items()}
        dL_dh = np.zeros_like(cache["h"])
        gradient_from_future = np.zeros_like(cache["h"][0])
        for t in reversed(range(steps)):
            dL_dy = w[t] * (cache["y"][t] - targets[t])
            grads["W_hy"] += dL_dy @ cache["h"][t + 1].T
            grads["b_y"] += dL_dy.sum(axis=1, keepdims=True)
            dL_dh[t + 1] = p["W_hy"].T @ dL_dy + gradient_from_future  # present + future
            delta = dL_dh[t + 1] * (1.0 - np.tanh(cache["z"][t]) ** 2)  # · f'(z_t)
            grads["W_hh"] += delta @ cache["h"][t].T  # Gradient_t = δ_t h_{t−1}ᵀ
            grads["W_hx"] += delta @ cache["x"][t].T
            grads["b"] += delta.sum(axis=1, keepdims=True)
            gradient_from_future = p["W_hh"].T @ delta
        dL_dh[0] = gradient_from_future
        grads["h"] = dL_dh
        return grads

    def sgd_step(self, grads: dict[str, np.ndarray], lr: float) -> None:
        for name in self.params:
            self.params[name] -= lr * grads[name]
