"""Recurrent cells, one step at a time: each against torch's own cell (same weights) or its equations
in NumPy; the GRU convention and its mapping to nn.GRU; the initialisation schemes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from seqlab.nn.gated import GRUCell, LSTMCell
from seqlab.nn.recurrent import ElmanCell, JordanCell, RecurrentStack

torch.manual_seed(0)
INPUT, HIDDEN, BATCH = 3, 5, 4


def _randomise(module: nn.Module, scale: float = 0.5) -> None:
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.uniform_(-scale, scale)


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


def _np(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().double().numpy()


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_elman_cell_equals_torch_rnn_cell(nonlinearity: str) -> None:
    reference = nn.RNNCell(INPUT, HIDDEN, nonlinearity=nonlinearity)
    cell = ElmanCell(INPUT, HIDDEN, nonlinearity)
    with torch.no_grad():
        cell.W_xh.copy_(reference.weight_ih)
        cell.W_hh.copy_(reference.weight_hh)
        cell.b.copy_(reference.bias_ih + reference.bias_hh)
    x, h = torch.randn(BATCH, INPUT), torch.randn(BATCH, HIDDEN)
    torch.testing.assert_close(cell(x, (h,))[0], reference(x, h), atol=1e-6, rtol=1e-5)


def test_lstm_cell_equals_torch_lstm_cell() -> None:
    reference = nn.LSTMCell(INPUT, HIDDEN)
    cell = LSTMCell(INPUT, HIDDEN)
    with torch.no_grad():
        # torch stacks the gates i, f, g(=C̃), o
        for k, gate in enumerate("ifCo"):
            rows = slice(k * HIDDEN, (k + 1) * HIDDEN)
            getattr(cell, f"W_x{gate}").copy_(reference.weight_ih[rows])
            getattr(cell, f"W_h{gate}").copy_(reference.weight_hh[rows])
            getattr(cell, f"b_{gate}").copy_(reference.bias_ih[rows] + reference.bias_hh[rows])
    x, h, c = torch.randn(BATCH, INPUT), torch.randn(BATCH, HIDDEN), torch.randn(BATCH, HIDDEN)
    h_t, C_t = cell(x, (h, c))
    h_ref, c_ref = reference(x, (h, c))
    torch.testing.assert_close(h_t, h_ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(C_t, c_ref, atol=1e-6, rtol=1e-5)


def test_lstm_cell_follows_the_seed_equations() -> None:
    cell = LSTMCell(INPUT, HIDDEN).double()
    _randomise(cell)
    x, h, C = np.random.default_rng(1).normal(size=(3, BATCH, max(INPUT, HIDDEN)))
    x, h, C = x[:, :INPUT], h[:, :HIDDEN], C[:, :HIDDEN]
    p = {name: _np(value) for name, value in cell.named_parameters()}
    hx = np.concatenate([h, x], axis=1)  # [h_{t−1}, x_t]

    def gate(name: str) -> np.ndarray:
        W = np.concatenate([p[f"W_h{name}"], p[f"W_x{name}"]], axis=1)  # W · [h_{t−1}, x_t]
        return hx @ W.T + p[f"b_{name}"]

    f, i, C_tilde, o = _sigmoid(gate("f")), _sigmoid(gate("i")), np.tanh(gate("C")), _sigmoid(gate("o"))
    C_t = f * C + i * C_tilde
    h_t = o * np.tanh(C_t)
    got_h, got_C = cell(torch.from_numpy(x), (torch.from_numpy(h), torch.from_numpy(C)))
    np.testing.assert_allclose(_np(got_C), C_t, atol=1e-12)
    np.testing.assert_allclose(_np(got_h), h_t, atol=1e-12)


def _gru_from_torch(reference: nn.GRUCell) -> GRUCell:
    """Our GRU with a torch GRU's weights, by the documented mapping (torch stacks r, z, n)."""
    cell = GRUCell(INPUT, HIDDEN, reset="after")
    r, z, n = (slice(k * HIDDEN, (k + 1) * HIDDEN) for k in range(3))
    with torch.no_grad():
        cell.W_xr.copy_(reference.weight_ih[r])
        cell.W_hr.copy_(reference.weight_hh[r])
        cell.b_r.copy_(reference.bias_ih[r] + reference.bias_hh[r])
        cell.W_xz.copy_(-reference.weight_ih[z])
        cell.W_hz.copy_(-reference.weight_hh[z])
        cell.b_z.copy_(-(reference.bias_ih[z] + reference.bias_hh[z]))
        cell.W_xh_tilde.copy_(reference.weight_ih[n])
        cell.W_hh_tilde.copy_(reference.weight_hh[n])
        cell.b_xh_tilde.copy_(reference.bias_ih[n])
        cell.b_hh_tilde.copy_(reference.bias_hh[n])
    return cell


def test_gru_mapping_from_torch_gru_cell() -> None:
    reference = nn.GRUCell(INPUT, HIDDEN)
    cell = _gru_from_torch(reference)
    x, h = torch.randn(BATCH, INPUT), torch.randn(BATCH, HIDDEN)
    torch.testing.assert_close(cell(x, (h,))[0], reference(x, h), atol=1e-6, rtol=1e-5)


def test_gru_fused_weights_load_into_torch_gru_cell() -> None:
    cell = GRUCell(INPUT, HIDDEN)
    _randomise(cell)
    weight_ih, weight_hh, bias_ih, bias_hh = cell.fused_weights()
    reference = nn.GRUCell(INPUT, HIDDEN)
    with torch.no_grad():
        reference.weight_ih.copy_(weight_ih)
        reference.weight_hh.copy_(weight_hh)
        reference.bias_ih.copy_(bias_ih)
        reference.bias_hh.copy_(bias_hh)
    x, h = torch.randn(BATCH, INPUT), torch.randn(BATCH, HIDDEN)
    torch.testing.assert_close(cell(x, (h,))[0], reference(x, h), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("reset", ["after", "before"])
def test_gru_update_gate_has_the_seeds_role(reset: str) -> None:
    """h_t = (1 − z_t) h_{t−1} + z_t h̃_t: z → 1 takes the candidate, z → 0 keeps the old state."""
    cell = GRUCell(INPUT, HIDDEN, reset=reset)
    x, h = torch.randn(BATCH, INPUT), torch.randn(BATCH, HIDDEN)
    with torch.no_grad():
        cell.W_xz.zero_()
        cell.W_hz.zero_()
        cell.b_z.fill_(-40.0)
    torch.testing.assert_close(cell(x, (h,))[0], h)
    with torch.no_grad():
        cell.b_z.fill_(40.0)
    h_t = cell(x, (h,))[0]
    assert not torch.allclose(h_t, h, atol=1e-3)
    assert h_t.abs().max() < 1.0  # h̃_t = tanh(·)


def test_gru_reset_before_follows_the_seed_equations() -> None:
    cell = GRUCell(INPUT, HIDDEN, reset="before").double()
    _randomise(cell)
    rng = np.random.default_rng(2)
    x, h = rng.normal(size=(BATCH, INPUT)), rng.normal(size=(BATCH, HIDDEN))
    p = {name: _np(value) for name, value in cell.named_parameters()}

    def concat(W_h: np.ndarray, W_x: np.ndarray, state: np.ndarray) -> np.ndarray:
        return np.concatenate([state, x], axis=1) @ np.concatenate([W_h, W_x], axis=1).T

    z = _sigmoid(concat(p["W_hz"], p["W_xz"], h) + p["b_z"])
    r = _sigmoid(concat(p["W_hr"], p["W_xr"], h) + p["b_r"])
    h_tilde = np.tanh(concat(p["W_hh_tilde"], p["W_xh_tilde"], r * h) + p["b_h_tilde"])  # W · [r ⊙ h, x]
    expected = (1 - z) * h + z * h_tilde
    got = cell(torch.from_numpy(x), (torch.from_numpy(h),))[0]
    np.testing.assert_allclose(_np(got), expected, atol=1e-12)
    assert cell.fused_mode is None


def test_jordan_cell_feeds_back_its_output() -> None:
    cell = JordanCell(INPUT, HIDDEN).double()
    _randomise(cell)
    rng = np.random.default_rng(3)
    xs = rng.normal(size=(4, BATCH, INPUT))
    p = {name: _np(value) for name, value in cell.named_parameters()}
    y = np.zeros((BATCH, HIDDEN))
    state = cell.initial_state(BATCH, torch.zeros((), dtype=torch.float64))
    for x in xs:
        h = np.tanh(x @ p["W_xh"].T + y @ p["W_yh"].T + p["b_h"])
        y = np.tanh(h @ p["W_hy"].T + p["b_y"])
        state = cell(torch.from_numpy(x), state)
        np.testing.assert_allclose(_np(cell.output(state)), y, atol=1e-12)


@pytest.mark.parametrize("cell_cls", [ElmanCell, JordanCell, LSTMCell, GRUCell])
def test_cell_gradients_match_finite_differences(cell_cls: type) -> None:
    cell = cell_cls(2, 3).double()
    x = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    state = tuple(torch.randn(2, 3, dtype=torch.float64, requires_grad=True) for _ in range(cell.state_size))

    def step(x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return cell(x, state)

    assert torch.autograd.gradcheck(step, (x, *state))


def _stack(cell: str, init: str, forget_bias: float = 1.0) -> RecurrentStack:
    return RecurrentStack(cell, 6, 8, num_layers=2, init=init, forget_bias=forget_bias)


@pytest.mark.parametrize("cell", ["elman", "jordan", "lstm", "gru"])
def test_orthogonal_and_identity_recurrent_weights(cell: str) -> None:
    for init, expected in (("orthogonal", None), ("identity", torch.eye(8))):
        stack = _stack(cell, init)
        for module in stack.cells:
            for name in module.recurrent:
                W = getattr(module, name)
                torch.testing.assert_close(W.T @ W, torch.eye(8), atol=1e-5, rtol=0)
                if expected is not None:
                    torch.testing.assert_close(W, expected)
            for name, parameter in module.named_parameters():
                if parameter.dim() == 1 and name != "b_f":
                    assert torch.count_nonzero(parameter) == 0, name


def test_xavier_and_default_bounds() -> None:
    stack = _stack("elman", "xavier")
    for module in stack.cells:
        bound = np.sqrt(6.0 / (module.input_size + 8))
        assert module.W_xh.abs().max() <= bound
        assert module.W_xh.abs().max() > 0.5 * bound
        assert torch.count_nonzero(module.b) == 0
    stack = _stack("gru", "default")
    for parameter in stack.parameters():
        assert parameter.abs().max() <= 1 / np.sqrt(8)
        assert parameter.std() > 0.05


@pytest.mark.parametrize("init", ["default", "xavier", "orthogonal", "identity"])
def test_lstm_forget_bias(init: str) -> None:
    for value in (1.0, 2.0):
        stack = _stack("lstm", init, forget_bias=value)
        for module in stack.cells:
            torch.testing.assert_close(module.b_f, torch.full((8,), value))
            # and the fused layout puts it in torch's forget-gate rows (i, f, g, o)
            torch.testing.assert_close(module.fused_weights()[2][8:16], torch.full((8,), value))


def test_unknown_init_is_rejected() -> None:
    with pytest.raises(ValueError, match="init"):
        RecurrentStack("elman", 2, 2, init="he")  # type: ignore[arg-type]
