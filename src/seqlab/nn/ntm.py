"""Neural Turing Machine (Graves, Wayne & Danihelka 2014): an LSTM controller with read and write heads on an
N × W memory matrix M, every head addressing it in four differentiable stages (§3.3):

    w^c_t(i) = exp(β_t K[k_t, M_t(i)]) / Σ_j exp(β_t K[k_t, M_t(j)])   content addressing      (eq. 5)
    K[u, v] = u·v / (‖u‖ ‖v‖)                                          cosine similarity       (eq. 6)
    w^g_t = g_t w^c_t + (1 − g_t) w_{t−1}                              interpolation           (eq. 7)
    w̃_t(i) = Σ_j w^g_t(j) s_t(i − j)   (indices modulo N)              circular shift          (eq. 8)
    w_t(i) = w̃_t(i)^γ_t / Σ_j w̃_t(j)^γ_t                               sharpening              (eq. 9)

then reads r_t = Σ_i w_t(i) M_t(i) (eq. 2) and writes M̃_t(i) = M_{t−1}(i)[1 − w_t(i) e_t] (eq. 3),
M_t(i) = M̃_t(i) + w_t(i) a_t (eq. 4). Each step: the controller reads [x_t, r_{t−1}], emits every head's
(k, β, g, s, γ) and each write head's (e, a); every head addresses M_{t−1}, the read heads read it, the
write heads then write M_t, and the output is y_t = W_y [h_t, r_t]. Ranges: β = softplus ≥ 0, g = σ, s = softmax over the shifts
−S..S, γ = 1 + softplus ≥ 1, e = σ, a = tanh (our choice: the paper does not bound a).
Start: M_0 a small constant, every head's w_0 on slot 0, r_0 = M_0ᵀ w_0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.nn.gated import LSTMCell

EPS = 1e-12


def cosine_similarity(k: Tensor, M: Tensor) -> Tensor:
    """K[k, M(i)] = k·M(i) / (‖k‖ ‖M(i)‖) (eq. 6): k (..., W), M (..., N, W) → (..., N)."""
    dots = torch.matmul(M, k.unsqueeze(-1)).squeeze(-1)
    return dots / (k.norm(dim=-1, keepdim=True) * M.norm(dim=-1) + 1e-8)


def content_addressing(k: Tensor, beta: Tensor, M: Tensor) -> Tensor:
    """w^c(i) ∝ exp(β K[k, M(i)]) (eq. 5): k (..., W), β (..., 1), M (..., N, W) → (..., N)."""
    return torch.softmax(beta * cosine_similarity(k, M), dim=-1)


def interpolate(w_c: Tensor, w_prev: Tensor, g: Tensor) -> Tensor:
    """w^g = g w^c + (1 − g) w_{t−1} (eq. 7); g (..., 1)."""
    return g * w_c + (1 - g) * w_prev


def shift(w_g: Tensor, s: Tensor) -> Tensor:
    """w̃(i) = Σ_j w^g(j) s(i − j), indices modulo N (eq. 8); s (..., 2S + 1) weights the shifts −S..S."""
    N, S = w_g.shape[-1], (s.shape[-1] - 1) // 2
    i = torch.arange(N, device=w_g.device)[:, None]
    offsets = torch.arange(-S, S + 1, device=w_g.device)[None, :]
    shifted = w_g[..., (i - offsets) % N]  # (..., N, 2S + 1): w^g(i − o) for each shift o
    return (shifted * s.unsqueeze(-2)).sum(-1)


def sharpen(w_tilde: Tensor, gamma: Tensor) -> Tensor:
    """w(i) = w̃(i)^γ / Σ_j w̃(j)^γ (eq. 9); γ (..., 1) ≥ 1 (+ε keeps the gradient finite where w̃ = 0)."""
    powered = (w_tilde + EPS) ** gamma
    return powered / powered.sum(-1, keepdim=True)


def address(M: Tensor, w_prev: Tensor, k: Tensor, beta: Tensor, g: Tensor, s: Tensor, gamma: Tensor) -> Tensor:
    """The full addressing pipeline of §3.3: content, interpolation, shift, sharpening (eq. 5–9)."""
    w_c = content_addressing(k, beta, M)
    w_g = interpolate(w_c, w_prev, g)
    w_tilde = shift(w_g, s)
    return sharpen(w_tilde, gamma)


def read(M: Tensor, w: Tensor) -> Tensor:
    """r = Σ_i w(i) M(i) (eq. 2): M (batch, N, W), w (batch, heads, N) → (batch, heads, W)."""
    return torch.matmul(w, M)


def write(M: Tensor, w: Tensor, e: Tensor, a: Tensor) -> Tensor:
    """M̃(i) = M(i) Π_h [1 − w_h(i) e_h] (eq. 3), then M(i) = M̃(i) + Σ_h w_h(i) a_h (eq. 4):
    M (batch, N, W), w (batch, heads, N), e and a (batch, heads, W); one head is the paper's case."""
    keep = (1 - w.unsqueeze(-1) * e.unsqueeze(-2)).prod(dim=1)  # (batch, N, W)
    return M * keep + torch.matmul(w.transpose(1, 2), a)


class NTM(nn.Module):
    """forward(x (batch, time, inputs)) → outputs (batch, time, outputs) and the heads' weightings over time.

    Heads are addressed together (a heads axis, read heads first); the controller's step runs torch's fused
    LSTM cell on the parameters of seqlab's `LSTMCell` (the same equations, mapped by `fused_weights`).
    """

    def __init__(self, input_size: int, output_size: int, controller_size: int = 100, N: int = 128, W: int = 20,
                 read_heads: int = 1, write_heads: int = 1, shift_range: int = 1, memory_init: float = 1e-6) -> None:
        super().__init__()
        self.N, self.W, self.read_heads, self.write_heads, self.S = N, W, read_heads, write_heads, shift_range
        self.memory_init = memory_init
        self.controller = LSTMCell(input_size + read_heads * W, controller_size)
        self.sizes = [W, 1, 1, 2 * shift_range + 1, 1]  # k, β, g, s, γ
        self.heads = nn.Linear(controller_size, (read_heads + write_heads) * sum(self.sizes) + write_heads * 2 * W)
        self.output = nn.Linear(controller_size + read_heads * W, output_size)

    def head_parameters(self, h: Tensor) -> tuple[tuple[Tensor, ...], Tensor, Tensor]:
        """Controller output h_t → (k, β, g, s, γ) with a heads axis (read heads first), and the write heads' e, a."""
        batch, heads = h.shape[0], self.read_heads + self.write_heads
        flat = self.heads(h)
        addressing = flat[:, : heads * sum(self.sizes)].view(batch, heads, sum(self.sizes))
        k, beta, g, s, gamma = addressing.split(self.sizes, dim=-1)
        e, a = flat[:, heads * sum(self.sizes) :].view(batch, self.write_heads, 2 * self.W).split(self.W, dim=-1)
        params = (k, F.softplus(beta), torch.sigmoid(g), torch.softmax(s, -1), 1 + F.softplus(gamma))
        return params, torch.sigmoid(e), torch.tanh(a)

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """x (batch, time, inputs) → y (batch, time, outputs), {"read", "write"}: (batch, time, heads, N)."""
        batch, steps, _ = x.shape
        R = self.read_heads
        M = x.new_full((batch, self.N, self.W), self.memory_init)
        w = x.new_zeros(batch, R + self.write_heads, self.N)
        w[:, :, 0] = 1.0  # w_0: every head on slot 0
        r = read(M, w[:, :R]).flatten(1)
        h_t, c_t = self.controller.initial_state(batch, x)
        w_ih, w_hh, b_ih, b_hh = self.controller.fused_weights()
        ys, weightings = [], []
        for t in range(steps):
            h_t, c_t = torch.lstm_cell(torch.cat([x[:, t], r], dim=-1), (h_t, c_t), w_ih, w_hh, b_ih, b_hh)
            params, e, a = self.head_parameters(h_t)
            w = address(M.unsqueeze(1), w, *params)  # w_t of every head, addressed on M_{t−1}
            r = read(M, w[:, :R]).flatten(1)  # r_t from M_{t−1}
            M = write(M, w[:, R:], e, a)  # M_t
            ys.append(self.output(torch.cat([h_t, r], dim=-1)))
            weightings.append(w)
        trace = torch.stack(weightings, dim=1)  # (batch, time, heads, N)
        return torch.stack(ys, dim=1), {"read": trace[:, :, :R], "write": trace[:, :, R:]}
