"""Delta-rule fast weights (Schlag et al. 2021) and Performer features (Choromanski et al. 2020): the chunked
delta rule equals the token-by-token recurrence (outputs and gradients), the recurrence equals the update
written out by hand, FAVOR+ estimates the softmax kernel without bias and its error falls with m, and both
attention modules' forward passes equal their step-by-step forms."""

from __future__ import annotations

import math

import pytest
import torch

from seqlab.config import ConfigError, config_from_dict
from seqlab.data.base import TaskInfo
from seqlab.inference.decoding import run_steps, state_tensors
from seqlab.models import build_model

from seqlab.nn.fast_weights import (
    DeltaRuleAttention, PerformerAttention, chunked_delta_rule, delta_features, delta_rule_step, dpfp,
    favor_attention, iid_gaussian, orthogonal_gaussian, positive_random_features, recurrent_delta_rule,
)


def _programs(seed: int, T: int = 37, d: int = 6, batch: int = 2, heads: int = 3) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, T, d, generator=g, dtype=torch.double) for _ in range(3))
    beta = torch.sigmoid(torch.randn(batch, heads, T, generator=g, dtype=torch.double))
    return delta_features(q), delta_features(k), v, beta


@pytest.mark.parametrize("chunk_size", [1, 8, 16, 64])
def test_chunked_delta_rule_equals_recurrence_outputs_and_gradients(chunk_size: int) -> None:
    inputs = [x.requires_grad_() for x in _programs(0)]
    y_rec, W_rec = recurrent_delta_rule(*inputs)
    grads_rec = torch.autograd.grad((y_rec * torch.cos(y_rec)).sum() + W_rec.sum(), inputs)
    y_chunk, W_chunk = chunked_delta_rule(*inputs, chunk_size=chunk_size)
    grads_chunk = torch.autograd.grad((y_chunk * torch.cos(y_chunk)).sum() + W_chunk.sum(), inputs)
    torch.testing.assert_close(y_chunk, y_rec, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(W_chunk, W_rec, rtol=1e-10, atol=1e-10)
    for a, b in zip(grads_chunk, grads_rec):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_chunked_form_continues_from_a_given_state() -> None:
    phi_q, phi_k, v, beta = _programs(1, T=20)
    y_all, W_all = chunked_delta_rule(phi_q, phi_k, v, beta, chunk_size=4)
    _, W_half = recurrent_delta_rule(phi_q[..., :9, :], phi_k[..., :9, :], v[..., :9, :], beta[..., :9])
    y_rest, W_rest = chunked_delta_rule(phi_q[..., 9:, :], phi_k[..., 9:, :], v[..., 9:, :], beta[..., 9:], 4, W_half)
    torch.testing.assert_close(y_rest, y_all[..., 9:, :])
    torch.testing.assert_close(W_rest, W_all)


def test_delta_step_is_the_written_out_update() -> None:
    """v̄ = Wφ(k); W' = W + β (v − v̄) ⊗ φ(k); y = W'φ(q); with β = 1 and a unit key the key now retrieves v."""
    g = torch.Generator().manual_seed(2)
    W, phi_q, phi_k, v = torch.randn(4, 5, generator=g), torch.rand(5, generator=g), torch.rand(5, generator=g), torch.randn(4, generator=g)
    y, W_new = delta_rule_step(W, phi_q, phi_k, v, torch.tensor(0.3))
    expected = W + 0.3 * torch.outer(v - W @ phi_k, phi_k)
    torch.testing.assert_close(W_new, expected)
    torch.testing.assert_close(y, expected @ phi_q)
    unit = phi_k / phi_k.norm()
    _, W_one = delta_rule_step(W, phi_q, unit, v, torch.tensor(1.0))
    torch.testing.assert_close(W_one @ unit, v)


def test_dpfp_features() -> None:
    x = torch.tensor([1.0, -2.0, 0.5])
    r = torch.tensor([1.0, 0.0, 0.5, 0.0, 2.0, 0.0])  # [relu(x), relu(−x)]
    torch.testing.assert_close(dpfp(x, 1), r * r.roll(1))
    assert dpfp(x, 2).shape == (12,)
    phi = delta_features(torch.randn(50, 8, generator=torch.Generator().manual_seed(11)))
    written = phi.sum(-1) > 0  # DPFP is 0 when no two neighbours of r are positive: such a key writes nothing
    assert (phi >= 0).all() and written.sum() > 40
    torch.testing.assert_close(phi.sum(-1)[written], torch.ones(int(written.sum())), atol=1e-3, rtol=0)


@torch.no_grad()
def test_delta_attention_forward_recurrent_and_step_agree() -> None:
    torch.manual_seed(3)
    attention = DeltaRuleAttention(16, 2, chunk_size=8).eval()
    x = torch.randn(2, 21, 16)
    chunked, _ = attention(x, x, x, causal=True)
    recurrent, _ = attention(x, x, x, causal=True, recurrent=True)
    torch.testing.assert_close(chunked, recurrent, rtol=1e-5, atol=1e-5)
    cache, outputs, sizes = attention.empty_cache(2, x), [], set()
    for t in range(21):
        y_t, cache = attention.step(x[:, t : t + 1], cache)
        outputs.append(y_t)
        sizes.add(cache.W.numel())
    assert sizes == {2 * 2 * 8 * 16}  # W (batch, heads, d_k, 2 d_k), whatever t
    torch.testing.assert_close(torch.cat(outputs, 1), chunked, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="causal"):
        attention(x, x, x, causal=False)


def test_positive_features_estimate_the_softmax_kernel_without_bias() -> None:
    """E[φ(x)ᵀφ(y)] = exp(xᵀy): the mean over 200 independent draws of 64 iid features lies within 4 standard
    errors of the exact kernel for each of 10 pairs."""
    g = torch.Generator().manual_seed(4)
    x, y = 0.5 * torch.randn(10, 4, generator=g, dtype=torch.double), 0.5 * torch.randn(10, 4, generator=g, dtype=torch.double)
    exact = torch.exp((x * y).sum(-1))
    estimates = torch.stack([
        (positive_random_features(x, omega) * positive_random_features(y, omega)).sum(-1)
        for omega in (iid_gaussian(64, 4, g).double() for _ in range(200))
    ])
    error = (estimates.mean(0) - exact).abs()
    assert (error < 4 * estimates.std(0) / math.sqrt(200)).all()
    assert (estimates > 0).all()


def test_orthogonal_features_are_orthogonal_blocks() -> None:
    omega = orthogonal_gaussian(10, 4, torch.Generator().manual_seed(5))
    assert omega.shape == (10, 4)
    for block in (omega[:4], omega[4:8]):
        gram = block @ block.T
        torch.testing.assert_close(gram - torch.diag(gram.diag()), torch.zeros(4, 4), atol=1e-5, rtol=0)


def test_favor_error_falls_as_features_grow() -> None:
    """Relative error of FAVOR+ against softmax attention (q, k ~ N(0, 0.5² I)), mean over 8 draws: m = 512
    at most half of m = 16 (1/√m would give 0.18)."""
    g = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(1, 2, 24, 8, generator=g, dtype=torch.double) for _ in range(3))
    q, k = 0.5 * q, 0.5 * k
    exact = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), -1) @ v

    def error(m: int) -> float:
        draws = [favor_attention(q, k, v, orthogonal_gaussian(m, 8, g).double()) for _ in range(8)]
        return sum(float((d - exact).norm() / exact.norm()) for d in draws) / len(draws)

    assert error(512) < 0.5 * error(16)


def test_favor_causal_and_non_causal_forms_equal_explicit_kernel_attention() -> None:
    """Both forms against the T×T matrix A = φ(Q)φ(K)ᵀ written out: D⁻¹AV, causal with A lower-triangular."""
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 2, 15, 8, generator=g, dtype=torch.double) for _ in range(3))
    omega = orthogonal_gaussian(32, 8, g).double()
    scale = 8 ** -0.25
    A = positive_random_features(q * scale, omega, stabilise=True) @ positive_random_features(k * scale, omega).transpose(-2, -1)
    for causal, matrix in ((False, A), (True, A.tril())):
        expected = (matrix @ v) / (matrix.sum(-1, keepdim=True) + 1e-6)
        torch.testing.assert_close(favor_attention(q, k, v, omega, causal=causal), expected, rtol=1e-10, atol=1e-10)


@torch.no_grad()
def test_performer_attention_step_equals_causal_forward_and_redraw_changes_features() -> None:
    torch.manual_seed(8)
    attention = PerformerAttention(16, 2, features=32).eval()
    x = torch.randn(2, 12, 16)
    parallel, _ = attention(x, x, x, causal=True)
    cache, outputs = attention.empty_cache(2, x), []
    for t in range(12):
        y_t, cache = attention.step(x[:, t : t + 1], cache)
        outputs.append(y_t)
    assert cache.W.shape == (2, 2, 8, 32) and cache.z.shape == (2, 2, 32)
    torch.testing.assert_close(torch.cat(outputs, 1), parallel, rtol=1e-5, atol=1e-5)
    before = attention.omega.clone()
    attention.redraw(torch.Generator().manual_seed(9))
    assert not torch.equal(before, attention.omega) and "omega" in attention.state_dict()


def _lm(attention: str) -> torch.nn.Module:
    torch.manual_seed(10)
    model = {"name": "transformer_lm", "d_model": 16, "num_heads": 2, "d_ff": 32, "num_layers": 2, "dropout": 0.0,
             "attention": attention, "positional": "learned", "max_len": 16}
    config = config_from_dict({"task": {"name": "lm", "path": "unused.txt"}, "model": model})
    return build_model(config.model, TaskInfo(kind="tokens", output_dim=11, vocab_size=11)).eval()


@pytest.mark.parametrize("attention", ["delta", "performer"])
@torch.no_grad()
def test_lm_steps_equal_forward_with_a_constant_state(attention: str) -> None:
    model = _lm(attention)
    tokens = torch.randint(1, 11, (3, 12))
    state = model.init_state({}, 3)
    sizes = [tensor.shape for tensor in state_tensors(state)]
    logits, state, _ = run_steps(model, {}, state, tokens)
    torch.testing.assert_close(logits, model({"inputs": tokens}), rtol=1e-5, atol=1e-5)
    assert [tensor.shape for tensor in state_tensors(state)] == sizes  # nothing grew over 12 tokens


def test_unknown_attention_gets_a_did_you_mean() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'performer'"):
        config_from_dict({"task": {"name": "lm", "path": "x.txt"}, "model": {"name": "transformer_lm", "attention": "perfomer"}})
