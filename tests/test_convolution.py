"""Convolutional sequence models (seed 004): causal dilated convolutions, WaveNet's gated blocks,
ConvS2S's GLU blocks and attention, incremental steps equal to full recomputation."""

from __future__ import annotations

import torch

from seqlab.data.base import TaskInfo
from seqlab.inference.search import beam_search, greedy_search
from seqlab.models.convs2s import ConvS2S, ConvS2SSpec
from seqlab.models.language import WaveNetLM, WaveNetLMSpec
from seqlab.nn.convolution import CausalConv1d, WaveNetStack, glu


def test_causal_conv_is_the_dilated_sum_over_the_past() -> None:
    torch.manual_seed(0)
    conv = CausalConv1d(3, 2, kernel_size=3, dilation=2).double()
    x = torch.randn(1, 3, 12, dtype=torch.double)
    y = conv(x)
    assert y.shape == (1, 2, 12)
    for t in range(12):
        expected = conv.bias.clone()
        for i in range(3):  # tap W[:, :, k−1−i] reads x_{t − i·d}
            if t - 2 * i >= 0:
                expected += conv.weight[:, :, 2 - i] @ x[0, :, t - 2 * i]
        torch.testing.assert_close(y[0, :, t], expected)


@torch.no_grad()
def test_wavenet_receptive_field_and_causality() -> None:
    torch.manual_seed(1)
    stack = WaveNetStack(4, 6, kernel_size=2, layers=4).double()
    assert stack.receptive_field == 1 + (1 + 2 + 4 + 8)
    x = torch.randn(1, 4, 40, dtype=torch.double)
    base = stack(x)
    changed = x.clone()
    changed[:, :, 20] += 1.0
    diff = (stack(changed) - base).abs().amax(dim=(0, 1))
    assert float(diff[:20].max()) == 0.0  # nothing before t = 20 moves
    assert float(diff[20 : 20 + stack.receptive_field].min()) > 0  # everything within the receptive field does
    assert float(diff[20 + stack.receptive_field :].max()) == 0.0  # nothing beyond it


def test_wavenet_lm_steps_equal_the_full_pass() -> None:
    torch.manual_seed(2)
    model = WaveNetLM(WaveNetLMSpec(channels=8, skip_channels=12, layers=3, cycles=2), TaskInfo("tokens", 11, vocab_size=11)).eval()
    tokens = torch.randint(0, 11, (3, 25))
    full = model({"inputs": tokens})
    state, steps = model.init_state({}, 3), []
    for t in range(25):
        logits, state, _ = model.step({}, state, tokens[:, t])
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-5, atol=1e-5)


def test_glu() -> None:
    x = torch.randn(2, 6, 5)
    torch.testing.assert_close(glu(x), x[:, :3] * torch.sigmoid(x[:, 3:]))


def _convs2s() -> tuple[ConvS2S, dict[str, torch.Tensor]]:
    torch.manual_seed(3)
    model = ConvS2S(ConvS2SSpec(embed_dim=8, channels=12, encoder_layers=2, decoder_layers=3, max_len=32),
                    TaskInfo(kind="seq2seq", output_dim=13, vocab_size=11)).eval()
    src = torch.randint(4, 11, (3, 7))
    src[0, 5:] = 0
    tgt = torch.randint(4, 13, (3, 6))
    tgt[:, 0] = 2
    return model, {"src": src, "src_lengths": torch.tensor([5, 7, 7]), "tgt_in": tgt, "targets": tgt}


@torch.no_grad()
def test_convs2s_steps_equal_the_full_pass_and_ignore_padding() -> None:
    model, batch = _convs2s()
    full = model(batch)
    memory = model.encode(batch)
    state, steps = model.init_state(memory, 3), []
    for t in range(6):
        logits, state, attention = model.step(memory, state, batch["tgt_in"][:, t])
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-5, atol=1e-5)
    assert attention.shape == (3, 7) and float(attention[0, 5:].max()) == 0.0
    torch.testing.assert_close(attention.sum(-1), torch.ones(3))
    alone = {"src": batch["src"][:1, :5], "src_lengths": batch["src_lengths"][:1], "tgt_in": batch["tgt_in"][:1]}
    torch.testing.assert_close(model(alone), model(batch)[:1], rtol=1e-5, atol=1e-5)


def test_convs2s_decodes_with_greedy_and_beam_search() -> None:
    model, batch = _convs2s()
    greedy = greedy_search(model, batch)
    beams = beam_search(model, batch, beam_size=3)
    assert len(greedy) == len(beams) == 3
    for hyp in greedy:
        assert hyp.attention is not None and hyp.attention.shape[1] in (5, 7)
    one_beam = beam_search(model, batch, beam_size=1, length_penalty_alpha=0.0)
    assert [h.tokens for h in one_beam] == [h.tokens for h in greedy]
