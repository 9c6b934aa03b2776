"""Attention scorers against independent references (torch's fused attention, explicit loops), masking, local windows."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from seqlab.nn.attention import (
    AdditiveScore, ConcatScore, DotScore, GeneralScore, LocalAttention, ScaledDotScore, build_attention,
)

B, T, S, D = 3, 4, 7, 6
LENGTHS = torch.tensor([7, 4, 1])

@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    mask = torch.arange(S)[None, :] < LENGTHS[:, None]
    return torch.randn(B, T, D, dtype=torch.float64), torch.randn(B, S, D, dtype=torch.float64), mask


def reference_attention(energies: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over the real positions only, by explicit exponentials; context as a weighted sum."""
    weights = torch.zeros_like(energies)
    for b in range(energies.shape[0]):
        n = int(mask[b].sum())
        e = torch.exp(energies[b, :, :n] - energies[b, :, :n].max(-1, keepdim=True).values)
        weights[b, :, :n] = e / e.sum(-1, keepdim=True)
    return weights @ values, weights


def test_dot_and_scaled_dot_match_torch_sdpa(inputs) -> None:
    query, memory, mask = inputs
    for module, scale in ((DotScore(), 1.0), (ScaledDotScore(), 1 / math.sqrt(D))):
        context, weights = module(query, memory, memory, mask)
        expected = F.scaled_dot_product_attention(query, memory, memory, attn_mask=mask[:, None, :], scale=scale)
        torch.testing.assert_close(context, expected)
        assert torch.all(weights[~mask[:, None, :].expand_as(weights)] == 0)


def test_general_score_is_query_times_matrix_times_key(inputs) -> None:
    query, memory, mask = inputs
    module = GeneralScore(D, D).double()
    context, weights = module(query, memory, memory, mask)
    W_a = module.W_a.weight.T  # score = h_tᵀ W_a h̄_s
    energies = torch.einsum("btd,de,bse->bts", query, W_a, memory)
    expected_context, expected_weights = reference_attention(energies, memory, mask)
    torch.testing.assert_close(weights, expected_weights)
    torch.testing.assert_close(context, expected_context)


def test_additive_score_matches_explicit_loop(inputs) -> None:
    query, memory, mask = inputs
    module = AdditiveScore(D, D, 5).double()
    keys = module.project_keys(memory)
    context, weights = module(query, keys, memory, mask)
    W, U, b, v = module.W_a.weight, module.U_a.weight, module.U_a.bias, module.v_a.weight[0]
    energies = torch.empty(B, T, S, dtype=torch.float64)
    for bi in range(B):
        for i in range(T):
            for j in range(S):
                energies[bi, i, j] = v @ torch.tanh(W @ query[bi, i] + U @ memory[bi, j] + b)
    expected_context, expected_weights = reference_attention(energies, memory, mask)
    torch.testing.assert_close(weights, expected_weights)
    torch.testing.assert_close(context, expected_context)


def test_concat_score_matches_explicit_loop(inputs) -> None:
    query, memory, mask = inputs
    module = ConcatScore(D, D, 5).double()
    context, weights = module(query, memory, memory, mask)
    W, v = module.W_a.weight, module.v_a.weight[0]
    energies = torch.empty(B, T, S, dtype=torch.float64)
    for bi in range(B):
        for i in range(T):
            for j in range(S):
                energies[bi, i, j] = v @ torch.tanh(W @ torch.cat([query[bi, i], memory[bi, j]]))
    expected_context, expected_weights = reference_attention(energies, memory, mask)
    torch.testing.assert_close(weights, expected_weights)
    torch.testing.assert_close(context, expected_context)


@pytest.mark.parametrize("score", ["additive", "dot", "general", "concat", "scaled_dot"])
def test_padding_gets_zero_weight_and_does_not_change_the_context(score: str, inputs) -> None:
    query, memory, mask = inputs
    module = build_attention(score, D, D, 5).double()
    context, weights = module(query, module.project_keys(memory), memory, mask)
    assert torch.all(weights.masked_select(~mask[:, None, :]) == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, T, dtype=torch.float64))
    changed = memory.masked_fill(~mask[:, :, None], 1e3)  # garbage in the padding
    context_changed, _ = module(query, module.project_keys(changed), changed, mask)
    torch.testing.assert_close(context_changed, context)


def test_one_step_query_gives_one_step_outputs(inputs) -> None:
    query, memory, mask = inputs
    module = build_attention("additive", D, D, 5).double()
    keys = module.project_keys(memory)
    context, weights = module(query[:, 2], keys, memory, mask)
    full_context, full_weights = module(query, keys, memory, mask)
    assert context.shape == (B, D) and weights.shape == (B, S)
    torch.testing.assert_close(context, full_context[:, 2])
    torch.testing.assert_close(weights, full_weights[:, 2])


def test_local_monotonic_attends_only_inside_the_window(inputs) -> None:
    query, memory, mask = inputs
    window = 1
    local = LocalAttention(DotScore(), window, predictive=False, query_size=D, hidden_size=D)
    step = 2  # the query rows are target positions 2..5
    context, weights = local(query, memory, memory, mask, step=step)
    positions = torch.arange(S)
    for b in range(B):
        last = int(LENGTHS[b]) - 1
        for i in range(T):
            p_t = min(step + i, last)
            inside = ((positions - p_t).abs() <= window) & mask[b]
            assert torch.all(weights[b, i, ~inside] == 0)
            energies = query[b, i] @ memory[b, inside].T
            torch.testing.assert_close(weights[b, i, inside], torch.softmax(energies, -1))
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, T, dtype=torch.float64))


def test_local_predictive_is_windowed_softmax_times_gaussian(inputs) -> None:
    query, memory, mask = inputs
    window = 2
    local = LocalAttention(DotScore(), window, predictive=True, query_size=D, hidden_size=5).double()
    _, weights = local(query, memory, memory, mask)
    p = local.aligned_position(query, mask, 0)  # (batch, tgt)
    last = (LENGTHS - 1).double()[:, None]
    assert torch.all(p >= 0) and torch.all(p <= last)
    expected_p = last * torch.sigmoid(local.v_p(torch.tanh(local.W_p(query))).squeeze(-1))
    torch.testing.assert_close(p, expected_p)
    sigma = window / 2
    positions = torch.arange(S, dtype=torch.float64)
    for b in range(B):
        for i in range(T):
            inside = ((positions - p[b, i]).abs() <= window) & mask[b]
            assert torch.all(weights[b, i, ~inside] == 0)
            align = torch.softmax(query[b, i] @ memory[b, inside].T, -1)
            gaussian = torch.exp(-((positions[inside] - p[b, i]) ** 2) / (2 * sigma**2))
            torch.testing.assert_close(weights[b, i, inside], align * gaussian)


def test_dot_scores_need_equal_sizes_and_unknown_scores_are_rejected() -> None:
    with pytest.raises(ValueError, match="one size"):
        build_attention("dot", 4, 8)
    with pytest.raises(ValueError, match="unknown attention score"):
        build_attention("cosine", 4, 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window"):
        build_attention("dot", 4, 4, local="monotonic", window=0)
