"""Multi-head attention against torch's fused kernels, masks, positional encodings, encoder/decoder
layers against torch's layers with the same weights, the permutation equivariance of an encoder
without positions, and the Transformer models on the trainer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seqlab.config import ConfigError, RunConfig, Spec, TrainConfig, config_from_dict
from seqlab.data.base import GeneratedTask, TaskInfo
from seqlab.models import build_model
from seqlab.models.transformer import (
    TransformerEncoderModel, TransformerEncoderSpec, TransformerLM, TransformerLMSpec, TransformerSeq2Seq,
    TransformerSpec,
)
from seqlab.nn.transformer import (
    DecoderLayer, EncoderLayer, MultiHeadAttention, PositionalEncoding, attention_mask,
    scaled_dot_product_attention, sinusoids,
)
from seqlab.training import Trainer


D, H = 16, 4


def _copy_mha(mine: MultiHeadAttention, ref: nn.MultiheadAttention) -> None:
    """Give our attention the weights of torch's (its in_proj packs W^Q, W^K, W^V)."""
    with torch.no_grad():
        for linear, weight, bias in zip((mine.W_q, mine.W_k, mine.W_v), ref.in_proj_weight.chunk(3), ref.in_proj_bias.chunk(3)):
            linear.weight.copy_(weight)
            linear.bias.copy_(bias)
        mine.W_o.weight.copy_(ref.out_proj.weight)
        mine.W_o.bias.copy_(ref.out_proj.bias)


def _pair(fast: bool) -> tuple[MultiHeadAttention, nn.MultiheadAttention]:
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(D, H, batch_first=True).double().eval()
    mine = MultiHeadAttention(D, H, fast=fast).double().eval()
    _copy_mha(mine, ref)
    return mine, ref


@pytest.mark.parametrize("fast", [False, True])
def test_multi_head_attention_matches_torch_with_padding_mask(fast: bool) -> None:
    mine, ref = _pair(fast)
    query, memory = torch.randn(3, 5, D, dtype=torch.double), torch.randn(3, 7, D, dtype=torch.double)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[0, 4:] = True
    padding[2, 1:] = True
    ours, _ = mine(query, memory, memory, key_padding_mask=padding)
    theirs, weights = ref(query, memory, memory, key_padding_mask=padding, average_attn_weights=False)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    _, alpha = mine(query, memory, memory, key_padding_mask=padding, need_weights=True)
    torch.testing.assert_close(alpha, weights, rtol=0, atol=1e-12)
    assert float(alpha[0, :, :, 4:].detach().abs().max()) == 0.0  # padded keys get no weight


@pytest.mark.parametrize("fast", [False, True])
def test_multi_head_attention_matches_torch_with_causal_mask(fast: bool) -> None:
    mine, ref = _pair(fast)
    x = torch.randn(2, 6, D, dtype=torch.double)
    future = torch.ones(6, 6, dtype=torch.bool).triu(1)  # torch: True = not allowed
    ours, _ = mine(x, x, x, causal=True)
    theirs, _ = ref(x, x, x, attn_mask=future)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_reference_and_fast_paths_agree_in_float32() -> None:
    torch.manual_seed(1)
    slow, fast = MultiHeadAttention(D, H, fast=False).eval(), MultiHeadAttention(D, H, fast=True).eval()
    fast.load_state_dict(slow.state_dict())
    x = torch.randn(4, 9, D)
    padding = torch.arange(9)[None, :] >= torch.tensor([9, 3, 6, 1])[:, None]
    torch.testing.assert_close(slow(x, x, x, padding, causal=True)[0], fast(x, x, x, padding, causal=True)[0], rtol=1e-5, atol=1e-6)


def test_auto_attention_takes_the_readable_path_on_the_cpu_under_bf16_and_for_one_query(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(3)
    auto, slow = MultiHeadAttention(D, H, fast="auto").eval(), MultiHeadAttention(D, H, fast=False).eval()
    slow.load_state_dict(auto.state_dict())
    x = torch.randn(2, 7, D)
    fused_calls: list[torch.dtype] = []
    fused = F.scaled_dot_product_attention

    def counting(q: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        fused_calls.append(q.dtype)
        return fused(q, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    torch.testing.assert_close(auto(x, x, x, causal=True)[0], slow(x, x, x, causal=True)[0], rtol=1e-5, atol=1e-6)
    assert fused_calls == [torch.float32]  # fp32: the fused kernel
    with torch.autocast("cpu", dtype=torch.bfloat16):
        in_bf16, reference = auto(x, x, x, causal=True)[0], slow(x, x, x, causal=True)[0]
    assert fused_calls == [torch.float32]  # bf16 on the CPU: the readable path, the same numbers
    assert in_bf16.dtype == torch.bfloat16
    torch.testing.assert_close(in_bf16, reference, rtol=0, atol=0)
    cache = auto.empty_cache(2, x)
    for t in range(3):  # decoding steps, one query per row: the readable path, the same numbers as the fused one
        step, cache = auto.step(x[:, t:t + 1], cache)
        torch.testing.assert_close(step, slow(x[:, : t + 1], x[:, : t + 1], x[:, : t + 1], causal=True)[0][:, -1:],
                                   rtol=1e-5, atol=1e-6)
    assert fused_calls == [torch.float32]


def test_the_transformer_config_defaults_to_auto_attention() -> None:
    model = TransformerSeq2Seq(TransformerSpec(d_model=16, num_heads=2, d_ff=32, num_encoder_layers=1, num_decoder_layers=1),
                               TaskInfo(kind="seq2seq", output_dim=5, vocab_size=5))
    kinds = {module.fast for module in model.modules() if isinstance(module, MultiHeadAttention)}
    assert kinds == {"auto"}


def test_scaled_dot_product_attention_is_the_formula() -> None:
    torch.manual_seed(2)
    q, k, v = torch.randn(2, 3, 8, dtype=torch.double), torch.randn(2, 5, 8, dtype=torch.double), torch.randn(2, 5, 4, dtype=torch.double)
    out, alpha = scaled_dot_product_attention(q, k, v)
    by_hand = torch.softmax(torch.einsum("bqd,bkd->bqk", q, k) / math.sqrt(8), dim=-1)
    torch.testing.assert_close(alpha, by_hand)
    torch.testing.assert_close(out, by_hand @ v)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(2, 3, dtype=torch.double))


def test_causal_mask_with_offset_lets_new_queries_see_the_whole_past() -> None:
    allowed = attention_mask(None, True, q_len=2, k_len=5)
    assert allowed is not None
    assert allowed.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]


@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_no_position_sees_the_future(attention: str) -> None:
    """Changing token t never changes any output before t (decoder-only LM, softmax or linear attention)."""
    torch.manual_seed(3)
    info = TaskInfo(kind="tokens", output_dim=12, vocab_size=12)
    model = TransformerLM(TransformerLMSpec(d_model=16, num_heads=2, d_ff=32, num_layers=2, attention=attention), info).eval()
    tokens = torch.randint(4, 12, (2, 10))
    base = model({"inputs": tokens})
    for t in (3, 7, 9):
        changed = tokens.clone()
        changed[:, t] = (changed[:, t] - 4 + 1) % 8 + 4
        out = model({"inputs": changed})
        assert torch.equal(out[:, :t], base[:, :t])
        assert not torch.allclose(out[:, t], base[:, t])


def test_sinusoidal_encoding_values() -> None:
    pe = sinusoids(50, 8)
    pos, i = 7, 2
    assert pe[pos, 2 * i].item() == pytest.approx(math.sin(pos / 10000 ** (2 * i / 8)), abs=1e-6)
    assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(pos / 10000 ** (2 * i / 8)), abs=1e-6)
    torch.testing.assert_close(sinusoids(3, 8, start=5), pe[5:8])
    x = torch.zeros(1, 4, 8)
    torch.testing.assert_close(PositionalEncoding("sinusoidal", 8)(x, start=2)[0], pe[2:6])
    short = PositionalEncoding("sinusoidal", 8, max_len=5)  # its stored table ends before position 5
    assert torch.equal(short(x, start=1)[0], sinusoids(4, 8, start=1))
    torch.testing.assert_close(short(x, start=3)[0], pe[3:7])
    assert "sines" not in short.state_dict()
    assert torch.equal(PositionalEncoding("none", 8)(x), x)
    learned = PositionalEncoding("learned", 8, max_len=4)
    with pytest.raises(ValueError, match="beyond the learned table"):
        learned(x, start=1)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_matches_torch(norm_first: bool) -> None:
    torch.manual_seed(4)
    ref = nn.TransformerEncoderLayer(D, H, 32, dropout=0.0, batch_first=True, norm_first=norm_first).double().eval()
    mine = EncoderLayer(D, MultiHeadAttention(D, H), 32, dropout=0.0, norm_first=norm_first).double().eval()
    _copy_mha(mine.self_attn, ref.self_attn)
    with torch.no_grad():
        mine.ffn.W_1.load_state_dict(ref.linear1.state_dict())
        mine.ffn.W_2.load_state_dict(ref.linear2.state_dict())
        mine.attn_residual.norm.load_state_dict(ref.norm1.state_dict())
        mine.ffn_residual.norm.load_state_dict(ref.norm2.state_dict())
    x = torch.randn(3, 6, D, dtype=torch.double)
    padding = torch.arange(6)[None, :] >= torch.tensor([6, 2, 4])[:, None]
    ours = mine(x, padding)
    theirs = ref(x, src_key_padding_mask=padding)
    valid = ~padding
    torch.testing.assert_close(ours[valid], theirs[valid], rtol=0, atol=1e-10)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_matches_torch(norm_first: bool) -> None:
    torch.manual_seed(5)
    ref = nn.TransformerDecoderLayer(D, H, 32, dropout=0.0, batch_first=True, norm_first=norm_first).double().eval()
    mine = DecoderLayer(D, H, 32, dropout=0.0, norm_first=norm_first).double().eval()
    _copy_mha(mine.self_attn, ref.self_attn)
    _copy_mha(mine.cross_attn, ref.multihead_attn)
    with torch.no_grad():
        mine.ffn.W_1.load_state_dict(ref.linear1.state_dict())
        mine.ffn.W_2.load_state_dict(ref.linear2.state_dict())
        for residual, norm in ((mine.self_residual, ref.norm1), (mine.cross_residual, ref.norm2), (mine.ffn_residual, ref.norm3)):
            residual.norm.load_state_dict(norm.state_dict())
    y, memory = torch.randn(2, 5, D, dtype=torch.double), torch.randn(2, 7, D, dtype=torch.double)
    memory_padding = torch.arange(7)[None, :] >= torch.tensor([7, 3])[:, None]
    ours, _ = mine(y, memory, memory_padding)
    theirs = ref(y, memory, tgt_mask=torch.ones(5, 5, dtype=torch.bool).triu(1), memory_key_padding_mask=memory_padding)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)


def test_encoder_without_positions_is_permutation_equivariant() -> None:
    """Permuting the input permutes the outputs, exactly up to float64 rounding; positions break it."""
    torch.manual_seed(6)
    info = TaskInfo(kind="tokens", output_dim=10, vocab_size=10)
    tokens = torch.randint(1, 10, (2, 8))
    perm = torch.randperm(8)
    for positional, equivariant in (("none", True), ("sinusoidal", False)):
        model = TransformerEncoderModel(TransformerEncoderSpec(d_model=16, num_heads=2, d_ff=32, positional=positional), info).double().eval()
        out = model({"inputs": tokens})
        permuted = model({"inputs": tokens[:, perm]})
        assert (torch.allclose(permuted, out[:, perm], rtol=0, atol=1e-12)) == equivariant


def test_seq2seq_output_does_not_depend_on_padding() -> None:
    torch.manual_seed(7)
    info = TaskInfo(kind="seq2seq", output_dim=15, vocab_size=12)
    model = TransformerSeq2Seq(TransformerSpec(d_model=16, num_heads=2, d_ff=32, num_encoder_layers=2, num_decoder_layers=2), info).eval()
    src = torch.randint(4, 12, (2, 6))
    src[1, 3:] = 0
    tgt = torch.randint(4, 15, (2, 5))
    batch = {"src": src, "src_lengths": torch.tensor([6, 3]), "tgt_in": tgt, "targets": tgt}
    alone = {"src": src[1:, :3], "src_lengths": torch.tensor([3]), "tgt_in": tgt[1:], "targets": tgt[1:]}
    torch.testing.assert_close(model(batch)[1:], model(alone), rtol=1e-5, atol=1e-5)
    assert model.out.weight is model.tgt_embed.table.weight  # tied


def test_configs_validate_and_errors_are_clear() -> None:
    config = config_from_dict({"task": {"name": "copy_memory", "delay": 5}, "model": {"name": "transformer_encoder", "d_model": 32}})
    assert isinstance(config.model, TransformerEncoderSpec)
    with pytest.raises(ConfigError, match="divisible"):
        build_model(TransformerLMSpec(d_model=30, num_heads=4), TaskInfo(kind="tokens", output_dim=5, vocab_size=5))
    with pytest.raises(ConfigError, match="seq2seq"):
        build_model(TransformerSpec(), TaskInfo(kind="tokens", output_dim=5, vocab_size=5))


class _Reverse(GeneratedTask):
    """Translate a sequence of symbols into its reverse (a seq2seq task the encoder–decoder must attend for)."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed, eval_size=64)
        self.info = TaskInfo(kind="seq2seq", output_dim=10, vocab_size=10)

    def generate(self, n: int, rng: torch.Generator) -> dict[str, torch.Tensor]:
        src = torch.randint(4, 10, (n, 5), generator=rng)
        out = src.flip(1)
        tgt_in = torch.cat([torch.full((n, 1), 2), out], 1)
        targets = torch.cat([out, torch.full((n, 1), 3)], 1)
        return {"src": src, "src_lengths": torch.full((n,), 5), "tgt_in": tgt_in, "targets": targets}


def test_encoder_decoder_learns_to_reverse_under_the_trainer() -> None:
    spec = TransformerSpec(d_model=32, num_heads=4, d_ff=64, num_encoder_layers=1, num_decoder_layers=1, dropout=0.0)
    config = RunConfig(seed=0, task=Spec(name="reverse"), model=spec,
                       train=TrainConfig(steps=150, batch_size=32, lr=3e-3, progress=False, tensorboard=False, threads=1))
    result = Trainer(config, task=_Reverse(0)).fit()
    assert result.final["val"]["accuracy"] > 0.9


@torch.no_grad()
def test_reference_attention_holds_the_n_by_n_weights() -> None:
    """The tensor-memory tracker sees softmax(QKᵀ/√d) materialised: peak memory quadruples as n doubles."""
    from seqlab.diagnostics.profile import peak_tensor_bytes

    peaks = []
    for n in (128, 256):
        x = torch.randn(1, n, 16)
        _, peak = peak_tensor_bytes(lambda: scaled_dot_product_attention(x, x, x)[0])
        assert peak >= n * n * 4  # at least one float32 n×n matrix
        peaks.append(peak)
    assert 3.5 <= peaks[1] / peaks[0] <= 4.5


def test_parameter_names_are_those_of_earlier_checkpoints() -> None:
    """Typed caches and the one-call Residual left the state_dict layout as checkpoints have it."""
    def params(*modules: str) -> set[str]:
        return {f"{module}.{kind}" for module in modules for kind in ("weight", "bias")}

    def projections(attention: str) -> set[str]:
        return params(*(f"{attention}.{W}" for W in ("W_q", "W_k", "W_v", "W_o")))

    ffn = params("ffn.W_1", "ffn.W_2")
    encoder_layer = projections("self_attn") | ffn | params("attn_residual.norm", "ffn_residual.norm")
    decoder_layer = (projections("self_attn") | projections("cross_attn") | ffn
                     | params("self_residual.norm", "cross_residual.norm", "ffn_residual.norm"))
    seq2seq = TransformerSeq2Seq(TransformerSpec(d_model=8, num_heads=2, d_ff=8, num_encoder_layers=1,
                                                 num_decoder_layers=1, norm_first=True),
                                 TaskInfo(kind="seq2seq", output_dim=7, vocab_size=7))
    assert set(seq2seq.state_dict()) == (
        {"out.weight", "src_embed.table.weight", "tgt_embed.table.weight"} | params("encoder.final_norm", "decoder.final_norm")
        | {f"encoder.layers.0.{key}" for key in encoder_layer} | {f"decoder.layers.0.{key}" for key in decoder_layer})
    lm = TransformerLM(TransformerLMSpec(d_model=8, num_heads=2, d_ff=8, num_layers=1, attention="linear"),
                       TaskInfo(kind="tokens", output_dim=7, vocab_size=7))
    assert set(lm.state_dict()) == {"embed.table.weight", "out.weight"} | {f"layers.layers.0.{key}" for key in encoder_layer}


@pytest.mark.parametrize("attention_dropout, weights, kernel", [
    (None, 0.3, "_scaled_dot_product_attention_math"),  # default: the weights get model.dropout; no fused kernel
    (0.0, 0.0, "_scaled_dot_product_flash_attention_for_cpu"),  # residual dropout only: the fused kernel trains
])
def test_attention_dropout_is_its_own_knob(attention_dropout: float | None, weights: float, kernel: str):
    spec = TransformerSpec(d_model=D, num_heads=H, d_ff=32, num_encoder_layers=1, num_decoder_layers=1, dropout=0.3,
                           attention_dropout=attention_dropout)
    model = TransformerSeq2Seq(spec, TaskInfo(kind="seq2seq", output_dim=15, vocab_size=12)).train()
    heads = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    assert len(heads) == 3 and all(m.dropout == weights for m in heads)
    assert model.tgt_embed.dropout.p == 0.3  # embedding and residual dropout stay model.dropout
    batch = {"src": torch.randint(3, 12, (2, 5)), "src_lengths": torch.tensor([5, 4]),
             "tgt_in": torch.randint(3, 15, (2, 4))}
    with torch.profiler.profile() as prof:
        model(batch)
    assert kernel in {event.key.removeprefix("aten::") for event in prof.key_averages()}
