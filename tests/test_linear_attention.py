"""Linear attention (seed 003): the parallel cumulative-sum form equals the fast-weight recurrence and an
independent quadratic computation; the module runs either form and keeps a constant-size cache."""

from __future__ import annotations

import pytest
import torch

from seqlab.nn.linear_attention import (
    LinearAttention, causal_linear_attention, chunked_linear_attention, elu_feature_map, fast_weight_step,
    recurrent_linear_attention,
)


def _inputs(seed: int, batch: int = 3, heads: int = 2, T: int = 50, d_k: int = 8, d_v: int = 6) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(batch, heads, T, d_k, generator=g), torch.randn(batch, heads, T, d_k, generator=g)
    v = torch.randn(batch, heads, T, d_v, generator=g)
    return elu_feature_map(q), elu_feature_map(k), v


def test_parallel_and_recurrent_forms_agree_below_1e_5() -> None:
    phi_q, phi_k, v = _inputs(0)
    parallel = causal_linear_attention(phi_q, phi_k, v)
    recurrent = recurrent_linear_attention(phi_q, phi_k, v)
    assert float((parallel - recurrent).abs().max()) < 1e-5


def test_parallel_form_equals_masked_quadratic_attention() -> None:
    """y_t = Σ_{s≤t} (φ(q_t)·φ(k_s)) v_s / Σ_{s≤t} φ(q_t)·φ(k_s), computed as a masked T×T matrix in float64."""
    phi_q, phi_k, v = (x.double() for x in _inputs(1, T=20))
    scores = (phi_q @ phi_k.transpose(-2, -1)).tril()
    expected = (scores @ v) / (scores.sum(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(causal_linear_attention(phi_q, phi_k, v), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("T, chunk", [(50, 16), (48, 16), (7, 64), (1, 4)])
def test_chunked_form_equals_the_cumulative_sum_form(T: int, chunk: int) -> None:
    """Chunks that divide T, that do not (padding), one chunk longer than T, one token."""
    phi_q, phi_k, v = (x.double() for x in _inputs(3, T=T))
    torch.testing.assert_close(chunked_linear_attention(phi_q, phi_k, v, chunk=chunk),
                               causal_linear_attention(phi_q, phi_k, v), rtol=1e-10, atol=1e-10)


def test_fast_weight_update_is_an_outer_product() -> None:
    phi_q, phi_k, v = (x[0, 0, 0] for x in _inputs(2))
    W0, z0 = torch.randn(6, 8), torch.rand(8)
    y, W, z = fast_weight_step(W0, z0, phi_q, phi_k, v)
    torch.testing.assert_close(W, W0 + torch.outer(v, phi_k))
    torch.testing.assert_close(z, z0 + phi_k)
    torch.testing.assert_close(y, W @ phi_q / (z @ phi_q + 1e-6))


@torch.no_grad()
def test_module_forms_agree_and_step_cache_stays_constant() -> None:
    torch.manual_seed(3)
    attention = LinearAttention(16, 4).eval()
    x = torch.randn(2, 30, 16)
    parallel, _ = attention(x, x, x, causal=True)
    recurrent, _ = attention(x, x, x, causal=True, recurrent=True)
    assert float((parallel - recurrent).abs().max()) < 1e-5
    cache = attention.empty_cache(2, x)
    sizes, outputs = set(), []
    for t in range(30):
        y_t, cache = attention.step(x[:, t : t + 1], cache)
        outputs.append(y_t)
        sizes.add(cache.W.numel() + cache.z.numel())
    assert sizes == {2 * 4 * 4 * 4 + 2 * 4 * 4}  # W (batch, heads, d_v, d_k) and z (batch, heads, d_k), whatever t
    assert float((torch.cat(outputs, 1) - parallel).abs().max()) < 1e-5


def test_non_causal_form_and_padding() -> None:
    """Bidirectional linear attention equals the quadratic form; padded keys are never read."""
    torch.manual_seed(4)
    attention = LinearAttention(8, 2).double().eval()
    x = torch.randn(2, 6, 8, dtype=torch.double)
    padding = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    out, _ = attention(x, x, x, key_padding_mask=padding)
    changed = x.clone()
    changed[1, 4:] = torch.randn(2, 8, dtype=torch.double)
    out_changed, _ = attention(changed, changed, changed, key_padding_mask=padding)
    torch.testing.assert_close(out[1, :4], out_changed[1, :4])
    phi_q = elu_feature_map(attention.split_heads(attention.W_q(x[:1])))
    phi_k = elu_feature_map(attention.split_heads(attention.W_k(x[:1])))
    v = attention.split_heads(attention.W_v(x[:1]))
    scores = phi_q @ phi_k.transpose(-2, -1)
    heads = (scores @ v) / (scores.sum(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(out[:1], attention.merge_heads(heads))


@torch.no_grad()
def test_memory_linear_in_length_for_the_parallel_form_constant_for_a_step() -> None:
    from seqlab.diagnostics.profile import peak_tensor_bytes

    peaks = []
    for T in (64, 128):
        phi_q, phi_k, v = _inputs(5, batch=1, heads=1, T=T)
        peaks.append(peak_tensor_bytes(lambda: causal_linear_attention(phi_q, phi_k, v))[1])
    assert 1.8 <= peaks[1] / peaks[0] <= 2.2
    attention = LinearAttention(16, 4).eval()
    cache, x = attention.empty_cache(1, torch.zeros(1)), torch.randn(1, 40, 16)
    step_peaks = set()
    for t in range(40):
        (_, cache), peak = peak_tensor_bytes(lambda: attention.step(x[:, t : t + 1], cache))
        step_peaks.add(peak)
    assert len(step_peaks) == 1
