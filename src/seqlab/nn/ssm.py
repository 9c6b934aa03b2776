"""Diagonal state-space layers: S4D (Gu, Gupta, Goel & Ré 2022) and Mamba's selective SSM (Gu & Dao 2023).

Names follow Mamba §2 (input x, state h, output y; S4D writes u, x, y for the same), with ``delta`` for Δ
and ``A_bar``, ``B_bar`` for Ā, B̄. A channel of width 1 runs an N-dimensional linear system:

    continuous     h'(t) = A h(t) + B x(t),   y(t) = C h(t) + D x(t)          Mamba eq. 1a–1b (S4D eq. 1)
    zero-order hold  Ā = exp(ΔA),  B̄ = (ΔA)⁻¹(exp(ΔA) − I)·ΔB                 Mamba eq. 4
    recurrent      h_t = Ā h_{t−1} + B̄ x_t,   y_t = C h_t + D x_t              Mamba eq. 2a–2b
    convolutional  K̄ = (CB̄, CĀB̄, …, CĀ^{L−1}B̄),   y = x ∗ K̄ + D x           Mamba eq. 3a–3b

With A diagonal, Ā^ℓ = exp(ℓΔA) elementwise, so K̄_ℓ = Σ_n C_n B̄_n exp(ℓΔA_n): a Vandermonde product
(S4D §3), computed for all ℓ at once and applied by FFT in O(L log L); the recurrence generates one token
at a time with a state of constant size.

- `S4D` (linear time-invariant: Δ, A, B, C fixed per channel): convolutional form for training, recurrent
  form for generation, tested equal.
- `SelectiveSSM`: Mamba's block (§3.4, Fig. 3) around the selective SSM (Algorithm 2), where Δ, B and C
  are functions of the input, so no fixed kernel exists; `selective_scan_sequential` is the reference
  recurrence and `selective_scan_chunked` the faster scan, tested equal.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ScanKind = Literal["chunked", "sequential"]
State = dict[str, Tensor]


def zoh(delta: Tensor, A: Tensor, B: Tensor) -> tuple[Tensor, Tensor]:
    """Zero-order hold for diagonal A (Mamba eq. 4): Ā = exp(ΔA), B̄ = (ΔA)⁻¹(exp(ΔA) − I)·ΔB = (exp(ΔA) − 1)/A · B."""
    delta_A = delta * A
    return torch.exp(delta_A), torch.expm1(delta_A) / A * B


def log_uniform(size: int, low: float, high: float, generator: torch.Generator | None = None) -> Tensor:
    """`size` values with log-uniform density on [low, high] (S4's initialisation of Δ)."""
    return torch.exp(torch.rand(size, generator=generator) * (math.log(high) - math.log(low)) + math.log(low))


def causal_fft_conv(x: Tensor, K: Tensor) -> Tensor:
    """y_t = Σ_{s≤t} K_{t−s} x_s for x (batch, L, H) and K (H, L), by FFT with zero padding to 2L (no wrap-around)."""
    L = x.shape[1]
    n = 2 * L
    return torch.fft.irfft(torch.fft.rfft(x, n=n, dim=1) * torch.fft.rfft(K.t(), n=n, dim=0), n=n, dim=1)[:, :L]


class S4D(nn.Module):
    """S4D: H independent diagonal SSMs of N complex modes each (S4D §3), ZOH-discretised.

    A is complex: A_n = −exp(log_A_real_n) + i·A_imag_n, initialised S4D-Lin, A_n = −½ + iπn (S4D §4). Complex
    eigenvalues make each mode a damped oscillation, so the kernel is a learned mixture of decaying sinusoids
    (a frequency basis); with real A (S4D-Real) every mode only decays, which S4D's ablations find weaker on
    long-range tasks. The output stays real: each complex mode stands for a conjugate pair, y = 2·Re(C h).
    Δ is one step size per channel, log Δ initialised uniform on [log dt_min, log dt_max]; B starts at 1,
    C ~ complex normal of variance 1, D ~ N(0, 1). B and C are stored as (real, imaginary) pairs.
    """

    def __init__(self, d_model: int, state_size: int = 32, dt_min: float = 1e-3, dt_max: float = 1e-1) -> None:
        super().__init__()
        H, N = d_model, state_size
        self.d_model, self.state_size = H, N
        self.log_delta = nn.Parameter(log_uniform(H, dt_min, dt_max).log())
        self.log_A_real = nn.Parameter(torch.full((H, N), math.log(0.5)))
        self.A_imag = nn.Parameter(math.pi * torch.arange(N, dtype=torch.float32).repeat(H, 1))
        self.B = nn.Parameter(torch.view_as_real(torch.ones(H, N, dtype=torch.complex64)).clone())
        self.C = nn.Parameter(torch.randn(H, N, 2) * 0.5**0.5)
        self.D = nn.Parameter(torch.randn(H))

    def continuous(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Δ (H, 1), A (H, N), B (H, N), C (H, N): the continuous parameters, complex where they are."""
        delta = self.log_delta.exp()[:, None]
        A = torch.complex(-self.log_A_real.exp(), self.A_imag)
        return delta, A, torch.view_as_complex(self.B), torch.view_as_complex(self.C)

    def discretize(self) -> tuple[Tensor, Tensor, Tensor]:
        """Ā, B̄ (Mamba eq. 4) and C, each (H, N) complex."""
        delta, A, B, C = self.continuous()
        A_bar, B_bar = zoh(delta, A, B)
        return A_bar, B_bar, C

    def kernel(self, L: int) -> Tensor:
        """K̄ = (CB̄, CĀB̄, …, CĀ^{L−1}B̄) (Mamba eq. 3a) → (H, L) real, with Ā^ℓ = exp(ℓΔA) (S4D §3, Vandermonde)."""
        delta, A, B, C = self.continuous()
        _, B_bar = zoh(delta, A, B)
        ell = torch.arange(L, device=A.device, dtype=delta.dtype)
        vandermonde = torch.exp((delta * A)[:, :, None] * ell)  # (H, N, L): Ā_n^ℓ
        return 2 * torch.einsum("hn,hnl->hl", C * B_bar, vandermonde).real

    def forward(self, x: Tensor) -> Tensor:
        """Convolutional form: x (batch, L, H) → y = x ∗ K̄ + D x (Mamba eq. 3b), by FFT."""
        K = self.kernel(x.shape[1])
        return causal_fft_conv(x, K) + self.D * x

    def init_state(self, batch_size: int, like: Tensor) -> State:
        """h_0 = 0: (batch, H, N) complex, stored as (batch, H, N, 2) real pairs."""
        return {"h": like.new_zeros(batch_size, self.d_model, self.state_size, 2)}

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        """Recurrent form, one step: h_t = Ā h_{t−1} + B̄ x_t, y_t = 2·Re(C h_t) + D x_t (Mamba eq. 2a–2b)."""
        A_bar, B_bar, C = self.discretize()
        h = A_bar * torch.view_as_complex(state["h"]) + B_bar * x_t[:, :, None]
        y_t = 2 * (C * h).sum(-1).real + self.D * x_t
        return y_t, {"h": torch.view_as_real(h)}

    def forward_recurrent(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """The recurrence over a whole sequence x (batch, L, H) → y (batch, L, H) and the final state."""
        state = state if state is not None else self.init_state(x.shape[0], x)
        A_bar, B_bar, C = self.discretize()
        h = torch.view_as_complex(state["h"])
        ys = []
        for t in range(x.shape[1]):
            h = A_bar * h + B_bar * x[:, t, :, None]
            ys.append(2 * (C * h).sum(-1).real)
        return torch.stack(ys, 1) + self.D * x, {"h": torch.view_as_real(h)}


# --- the selective scan -------------------------------------------------------------------------------


def selective_scan_sequential(x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                              h: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The reference selective SSM (Mamba Algorithm 2, computed as the recurrence eq. 2a–2b), one step at a time.

    x, delta (batch, L, d); A (d, N) real; B, C (batch, L, N); D (d); h (batch, d, N) or None for zeros.
    Ā_t = exp(Δ_t A), B̄_t = (Δ_t A)⁻¹(exp(Δ_t A) − I)·Δ_t B_t, h_t = Ā_t h_{t−1} + B̄_t x_t, y_t = C_t h_t + D x_t.
    Returns y (batch, L, d) and the final h (batch, d, N).
    """
    batch, L, d = x.shape
    h = h if h is not None else x.new_zeros(batch, d, A.shape[1])
    ys = []
    for t in range(L):
        A_bar, B_bar = zoh(delta[:, t, :, None], A, B[:, t, None, :])  # (batch, d, N)
        h = A_bar * h + B_bar * x[:, t, :, None]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, t]))
    return torch.stack(ys, 1) + D * x, h


def selective_scan_chunked(x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                           h: Tensor | None = None, chunk: int | None = None) -> tuple[Tensor, Tensor]:
    """The same selective SSM in chunks: 2T + L/T sequential steps instead of L (T = chunk, default ⌈√L⌉).

    h_t = Σ_{s≤t} (Π_{s<r≤t} Ā_r) B̄_s x_s + (Π_{r≤t} Ā_r) h_0 splits at chunk boundaries: (1) every chunk is
    scanned from a zero state, all chunks at once (T steps), keeping the cumulative decay P_t = Π_{r≤t} Ā_r
    within the chunk; (2) the state entering each chunk is carried from chunk to chunk (L/T steps); (3) it
    reaches each position through P_t: y_t = C_t·(h_t^local + P_t ⊙ h_entering) + D x_t (T steps). Each step
    works on all chunks at once, on slices small enough to stay in cache.
    Arguments and returns as `selective_scan_sequential`.
    """
    batch, L, d = x.shape
    N = A.shape[1]
    T = chunk or max(1, math.ceil(math.sqrt(L)))
    K = -(-L // T)
    pad = K * T - L
    x_in = x
    if pad:  # steps after the end with x = 0 (and Δ = 1): they come after every real position and change none
        x, delta = F.pad(x, (0, 0, 0, pad)), F.pad(delta, (0, 0, 0, pad), value=1.0)
        B, C = F.pad(B, (0, 0, 0, pad)), F.pad(C, (0, 0, 0, pad))

    def by_step(v: Tensor) -> Tensor:  # (batch, K·T, n) → (T, batch, K, n, 1): step t of every chunk, contiguous
        return v.view(batch, K, T, -1).permute(2, 0, 1, 3).contiguous()[..., None]

    x, delta, B, C = by_step(x), by_step(delta), by_step(B).transpose(-1, -2), by_step(C).transpose(-1, -2)
    local = x.new_zeros(batch, K, d, N)
    decay = torch.ones_like(local)
    y_local, decays = [], []
    for t in range(T):  # (1)
        A_bar, B_bar = zoh(delta[t], A, B[t])  # (batch, K, d, N)
        local = A_bar * local + B_bar * x[t]
        decay = decay * A_bar
        y_local.append((local * C[t]).sum(-1))
        decays.append(decay)
        if t == (L - 1) % T:
            last_local = local
    entering = [h if h is not None else x.new_zeros(batch, d, N)]
    for k in range(K - 1):  # (2)
        entering.append(decays[-1][:, k] * entering[-1] + local[:, k])
    h_in = torch.stack(entering, 1)  # (batch, K, d, N)
    ys = [y_local[t] + (decays[t] * h_in * C[t]).sum(-1) for t in range(T)]  # (3)
    y = torch.stack(ys, 2).reshape(batch, K * T, d)[:, :L]
    h_last = last_local[:, -1] + decays[(L - 1) % T][:, -1] * h_in[:, -1]
    return y + D * x_in, h_last


SCANS = {"chunked": selective_scan_chunked, "sequential": selective_scan_sequential}


class SelectiveSSM(nn.Module):
    """Mamba's block (Gu & Dao 2023, §3.4 Fig. 3): x, z = W_in u; x ← SiLU(causal depthwise conv(x));
    y = SSM(Δ(x), A, B(x), C(x))(x) (Algorithm 2); out = W_out (y ⊙ SiLU(z)).

    Selection (Algorithm 2): B = s_B(x), C = s_C(x) (linear maps to N), Δ = softplus(Parameter + s_Δ(x)) with
    s_Δ a rank-R linear map; the Parameter (the bias of ``dt_proj``) starts at softplus⁻¹ of log-uniform
    values on [dt_min, dt_max]. A is real, −exp(A_log), initialised S4D-Real A_n = −(n + 1) (Mamba §3.6):
    input-dependent Δ already gives the selection that complex modes would otherwise supply, real A keeps the
    scan real-valued, and Mamba reports real A works as well or better on discrete data such as text. D = 1.
    """

    def __init__(self, d_model: int, state_size: int = 16, expand: int = 2, conv_size: int = 4,
                 dt_rank: int | None = None, dt_min: float = 1e-3, dt_max: float = 1e-1,
                 scan: ScanKind = "chunked") -> None:
        super().__init__()
        d_inner, N = expand * d_model, state_size
        self.d_inner, self.state_size, self.conv_size, self.scan = d_inner, N, conv_size, scan
        self.dt_rank = dt_rank or max(1, math.ceil(d_model / 16))
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv = nn.Conv1d(d_inner, d_inner, conv_size, groups=d_inner, padding=conv_size - 1)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * N, bias=False)  # s_Δ's first factor, s_B, s_C
        self.dt_proj = nn.Linear(self.dt_rank, d_inner)
        delta = log_uniform(d_inner, dt_min, dt_max)
        with torch.no_grad():
            self.dt_proj.bias.copy_(delta + torch.log(-torch.expm1(-delta)))  # softplus⁻¹(Δ)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def selection(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Δ = softplus(Parameter + s_Δ(x)), B = s_B(x), C = s_C(x) for x (..., d_inner) (Algorithm 2, lines 2–4)."""
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.state_size, self.state_size], dim=-1)
        return F.softplus(self.dt_proj(dt)), B, C

    def forward(self, u: Tensor, scan: ScanKind | None = None) -> Tensor:
        """u (batch, L, d_model) → (batch, L, d_model), the scan `scan` (default: the module's)."""
        L = u.shape[1]
        x, z = self.in_proj(u).chunk(2, dim=-1)
        x = F.silu(self.conv(x.transpose(1, 2))[:, :, :L].transpose(1, 2))
        delta, B, C = self.selection(x)
        y, _ = SCANS[scan or self.scan](x, delta, -self.A_log.exp(), B, C, self.D)
        return self.out_proj(y * F.silu(z))

    def init_state(self, batch_size: int, like: Tensor) -> State:
        """The last conv_size − 1 inputs of the convolution and h, all zero: constant size whatever the length."""
        return {"conv": like.new_zeros(batch_size, self.d_inner, self.conv_size - 1),
                "h": like.new_zeros(batch_size, self.d_inner, self.state_size)}

    def step(self, u_t: Tensor, state: State) -> tuple[Tensor, State]:
        """One token u_t (batch, d_model) through the recurrent form: the conv buffer shifts by one, h by eq. 2a."""
        x_t, z_t = self.in_proj(u_t).chunk(2, dim=-1)
        window = torch.cat([state["conv"], x_t[:, :, None]], dim=2)  # (batch, d_inner, conv_size)
        x_t = F.silu((window * self.conv.weight[:, 0]).sum(-1) + self.conv.bias)
        delta, B, C = self.selection(x_t)
        A_bar, B_bar = zoh(delta[:, :, None], -self.A_log.exp(), B[:, None, :])
        h = A_bar * state["h"] + B_bar * x_t[:, :, None]
        y_t = torch.einsum("bdn,bn->bd", h, C) + self.D * x_t
        return self.out_proj(y_t * F.silu(z_t)), {"conv": window[:, :, 1:], "h": h}
