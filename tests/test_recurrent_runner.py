"""The runner: reference loop vs fused fast path vs raw torch.nn (same weights, packed variable-length
batches, stacked and bidirectional), masking, final states, dropout, shared state_dict."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqlab.nn.recurrent import RecurrentStack, reverse_valid

INPUT, HIDDEN, BATCH, STEPS = 4, 6, 5, 7
LENGTHS = torch.tensor([7, 3, 1, 5, 7])
CONFIGS = [(cell, layers, bi) for cell in ("elman", "lstm", "gru") for layers in (1, 2) for bi in (False, True)]


def _as_tuple(state: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def _run(stack: RecurrentStack, x: torch.Tensor, lengths: torch.Tensor | None, state, fast: bool):
    """Outputs, final state, and gradients of a loss touching all of them w.r.t. x, state and parameters."""
    stack.fast = fast
    outputs, final = stack(x, lengths, state)
    weights = torch.linspace(-1, 1, outputs.shape[-1])
    loss = (outputs * weights).pow(2).sum() + sum(part.sin().sum() for part in _as_tuple(final))
    inputs = [x, *_as_tuple(state), *stack.parameters()]
    return outputs, _as_tuple(final), torch.autograd.grad(loss, inputs)


def _initial(stack: RecurrentStack) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    shape = (stack.num_layers * stack.num_directions, BATCH, HIDDEN)
    parts = tuple(torch.randn(shape, requires_grad=True) for _ in range(stack.state_size))
    return parts if stack.state_size == 2 else parts[0]


@pytest.mark.parametrize("cell,layers,bidirectional", CONFIGS)
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "packed"])
def test_fast_path_equals_reference(cell: str, layers: int, bidirectional: bool, lengths) -> None:
    torch.manual_seed(0)
    stack = RecurrentStack(cell, INPUT, HIDDEN, num_layers=layers, bidirectional=bidirectional)
    assert stack.fused_mode is not None
    x = torch.randn(BATCH, STEPS, INPUT, requires_grad=True)
    state = _initial(stack)
    fast = _run(stack, x, lengths, state, fast=True)
    reference = _run(stack, x, lengths, state, fast=False)
    torch.testing.assert_close(fast[0], reference[0], atol=1e-5, rtol=1e-5)
    for got, expected in zip(fast[1], reference[1]):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert len(fast[2]) == len(reference[2])
    for got, expected in zip(fast[2], reference[2]):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def _torch_module(stack: RecurrentStack) -> nn.RNNBase:
    """A raw torch nn.RNN / nn.LSTM / nn.GRU holding `stack`'s weights (mapped by fused_weights)."""
    kinds = {"elman": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
    module = kinds[stack.cell_name](
        INPUT, HIDDEN, num_layers=stack.num_layers, bidirectional=stack.bidirectional, batch_first=True
    )
    with torch.no_grad():
        for index, cell in enumerate(stack.cells):
            layer, direction = divmod(index, stack.num_directions)
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            for name, weight in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), cell.fused_weights()):
                getattr(module, name + suffix).copy_(weight)
    return module


@pytest.mark.parametrize("cell,layers,bidirectional", CONFIGS)
def test_reference_cells_equal_raw_torch_modules_on_packed_batches(cell: str, layers: int, bidirectional: bool) -> None:
    torch.manual_seed(1)
    stack = RecurrentStack(cell, INPUT, HIDDEN, num_layers=layers, bidirectional=bidirectional, fast=False)
    module = _torch_module(stack)
    x = torch.randn(BATCH, STEPS, INPUT)
    outputs, final = stack(x, LENGTHS)
    packed = pack_padded_sequence(x, LENGTHS, batch_first=True, enforce_sorted=False)
    packed_out, torch_final = module(packed)
    torch_out, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=STEPS)
    torch.testing.assert_close(outputs, torch_out, atol=1e-5, rtol=1e-5)
    for got, expected in zip(_as_tuple(final), _as_tuple(torch_final)):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", ["elman", "jordan", "lstm", "gru"])
@pytest.mark.parametrize("fast", [True, False])
def test_padding_is_ignored_and_final_state_is_at_each_length(cell: str, fast: bool) -> None:
    torch.manual_seed(2)
    stack = RecurrentStack(cell, INPUT, HIDDEN, num_layers=2, bidirectional=True, fast=fast)
    x = torch.randn(BATCH, STEPS, INPUT)
    mask = torch.arange(STEPS)[None, :] < LENGTHS[:, None]
    garbage = torch.where(mask[..., None], x, torch.randn_like(x) * 100)
    outputs, final = stack(x, LENGTHS)
    outputs_garbage, final_garbage = stack(garbage, LENGTHS)
    torch.testing.assert_close(outputs, outputs_garbage)
    assert torch.all(outputs[~mask] == 0)
    for b, length in enumerate(LENGTHS.tolist()):
        alone_out, alone_final = stack(x[b : b + 1, :length])
        torch.testing.assert_close(outputs[b : b + 1, :length], alone_out, atol=1e-5, rtol=1e-5)
        for got, expected in zip(_as_tuple(final), _as_tuple(alone_final)):
            torch.testing.assert_close(got[:, b : b + 1], expected, atol=1e-5, rtol=1e-5)
    for got, expected in zip(_as_tuple(final), _as_tuple(final_garbage)):
        torch.testing.assert_close(got, expected)


def test_backward_direction_reads_the_valid_part_reversed() -> None:
    torch.manual_seed(3)
    stack = RecurrentStack("gru", INPUT, HIDDEN, bidirectional=True, fast=False)
    x = torch.randn(BATCH, STEPS, INPUT)
    outputs, final = stack(x, LENGTHS)
    backward = RecurrentStack("gru", INPUT, HIDDEN, fast=False)
    backward.cells[0].load_state_dict(stack.cells[1].state_dict())
    for b, length in enumerate(LENGTHS.tolist()):
        reversed_out, backward_final = backward(x[b : b + 1, :length].flip(1))
        torch.testing.assert_close(outputs[b, :length, HIDDEN:], reversed_out[0].flip(0), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(final[1, b], backward_final[0, 0], atol=1e-6, rtol=1e-5)
        # the backward direction's final state is its output at step 0
        torch.testing.assert_close(final[1, b], outputs[b, 0, HIDDEN:])


def test_reverse_valid_keeps_padding_in_place() -> None:
    x = torch.arange(1, 5).float().repeat(2, 1)[..., None]  # two sequences 1 2 3 4
    out = reverse_valid(x, torch.tensor([4, 2]))[..., 0]
    assert out.tolist() == [[4, 3, 2, 1], [2, 1, 3, 4]]


@pytest.mark.parametrize("cell", ["elman", "jordan", "lstm", "gru"])
def test_fast_and_reference_share_one_state_dict(cell: str) -> None:
    torch.manual_seed(4)
    fast = RecurrentStack(cell, INPUT, HIDDEN, num_layers=2, bidirectional=True, fast=True)
    reference = RecurrentStack(cell, INPUT, HIDDEN, num_layers=2, bidirectional=True, fast=False, init="orthogonal")
    assert list(fast.state_dict()) == list(reference.state_dict())
    reference.load_state_dict(fast.state_dict())
    x = torch.randn(BATCH, STEPS, INPUT)
    torch.testing.assert_close(fast(x, LENGTHS)[0], reference(x, LENGTHS)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", ["jordan", "gru-before"])
def test_cells_without_a_fused_kernel_run_the_reference_loop(cell: str) -> None:
    name, reset = ("gru", "before") if cell == "gru-before" else (cell, "after")
    stack = RecurrentStack(name, INPUT, HIDDEN, bidirectional=True, fast=True, gru_reset=reset)
    assert stack.fused_mode is None
    outputs, final = stack(torch.randn(BATCH, STEPS, INPUT), LENGTHS)
    assert outputs.shape == (BATCH, STEPS, 2 * HIDDEN) and final.shape == (2, BATCH, HIDDEN)


@pytest.mark.parametrize("fast", [True, False])
def test_dropout_acts_between_layers_only_in_training(fast: bool) -> None:
    torch.manual_seed(5)
    x = torch.randn(BATCH, STEPS, INPUT)
    two = RecurrentStack("lstm", INPUT, HIDDEN, num_layers=2, dropout=0.5, fast=fast)
    assert not torch.allclose(two(x)[0], two(x)[0])
    two.eval()
    torch.testing.assert_close(two(x)[0], two(x)[0])
    one = RecurrentStack("lstm", INPUT, HIDDEN, num_layers=1, dropout=0.5, fast=fast)  # no layer above: no dropout
    torch.testing.assert_close(one(x)[0], one(x)[0])


def test_shapes_and_state_validation() -> None:
    stack = RecurrentStack("lstm", INPUT, HIDDEN, num_layers=3, bidirectional=True)
    assert stack.output_size == 2 * HIDDEN
    outputs, (h, c) = stack(torch.randn(BATCH, STEPS, INPUT))
    assert outputs.shape == (BATCH, STEPS, 2 * HIDDEN)
    assert h.shape == c.shape == (6, BATCH, HIDDEN)
    for fast in (True, False):
        stack.fast = fast
        with pytest.raises(ValueError, match="shape"):
            stack(torch.randn(BATCH, STEPS, INPUT), None, (h[:2], c[:2]))


def test_per_step_states_give_the_total_gradient() -> None:
    """∂L/∂h_t from the recorded steps equals the chain rule through every later step (loss at the end)."""
    torch.manual_seed(6)
    stack = RecurrentStack("elman", INPUT, HIDDEN, fast=False)
    x = torch.randn(1, STEPS, INPUT)
    outputs, final, steps = stack.forward_reference(x)
    grads = torch.autograd.grad(final.sum(), steps)
    W_hh = stack.cells[0].W_hh
    expected = torch.ones(1, HIDDEN)
    torch.testing.assert_close(grads[-1], expected)
    for t in range(STEPS - 1, 0, -1):
        expected = (expected * (1 - steps[t] ** 2)) @ W_hh  # W_hhᵀ (f'(z_{t+1}) ⊙ ∂L/∂h_{t+1})
        torch.testing.assert_close(grads[t - 1], expected.detach(), atol=1e-6, rtol=1e-5)
