"""ByteNet: step-by-step decoding equals the parallel forward, dynamic unfolding, batch independence, training."""

from __future__ import annotations

import pytest
import torch

from seqlab.config import config_from_dict
from seqlab.data.base import TaskInfo
from seqlab.data.batching import collate
from seqlab.inference.decoding import run_steps
from seqlab.inference.search import beam_search, greedy_search
from seqlab.models.bytenet import ByteNet, ByteNetSpec
from seqlab.training import Trainer

INFO = TaskInfo(kind="seq2seq", output_dim=23, vocab_size=19, pad_id=0)


def model(**fields) -> ByteNet:
    torch.manual_seed(0)
    net = ByteNet(ByteNetSpec(channels=16, max_dilation=4, encoder_repeats=1, decoder_repeats=2, unfold_offset=2,
                              **fields), INFO)
    return net.eval()


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    sources = [torch.randint(4, 19, (n,), generator=g).tolist() for n in (5, 9, 3)]
    targets = [torch.randint(4, 23, (n,), generator=g).tolist() for n in (7, 14, 4)]
    return collate(sources, targets)


def test_receptive_field_and_dilations() -> None:
    net = model()
    assert [block.conv.dilation[0] for block in net.decoder] == [1, 2, 4, 1, 2, 4]
    assert net.receptive_field == {"source": 1 + 2 * 7, "target": 1 + 2 * 14}
    with pytest.raises(ValueError, match="power of two"):
        ByteNetSpec(max_dilation=12)
    with pytest.raises(ValueError, match="seq2seq"):  # the model's own error (build_model turns it into ConfigError)
        ByteNet(ByteNetSpec(), TaskInfo(kind="tokens", output_dim=5, vocab_size=5))


def test_step_by_step_decoding_equals_the_parallel_forward() -> None:
    net, b = model(), batch()
    with torch.no_grad():
        parallel = net(b)
        memory = net.encode(b)
        stepped, _, attention = run_steps(net, memory, net.init_state(memory, 3), b["tgt_in"])
    assert attention is None
    assert torch.allclose(parallel, stepped, atol=1e-5)
    assert b["tgt_in"].shape[1] > int(memory["unfold"].min())  # some steps run past |t̂|: zero source columns


def test_dynamic_unfolding_and_batch_independence() -> None:
    net, b = model(), batch()
    with torch.no_grad():
        memory = net.encode(b)
        assert memory["unfold"].tolist() == [int(1.2 * n) + 2 for n in (6, 10, 4)]  # |s| counts <eos>
        for row in range(3):
            n = int(b["src_lengths"][row])
            alone = net.encode({"src": b["src"][row : row + 1, :n], "src_lengths": b["src_lengths"][row : row + 1]})
            width = int(memory["unfold"][row])
            assert torch.allclose(alone["source"][0], memory["source"][row, :width], atol=1e-5)
            assert memory["source"][row, width:].abs().max() == 0 if width < memory["source"].shape[1] else True


def test_the_source_reaches_the_target_and_the_future_does_not() -> None:
    net, b = model(), batch()
    src = net.src_embed.weight
    logits = net(b)
    (grad,) = torch.autograd.grad(logits[1, 0].sum(), src)
    assert grad.abs().sum() > 0  # the first target position already reads the source
    tgt_in = b["tgt_in"].clone()
    tgt_in[:, 5:] = 4
    with torch.no_grad():
        changed = net({**b, "tgt_in": tgt_in})
    assert torch.allclose(changed[:, :5], net(b)[:, :5].detach(), atol=1e-6)  # masked: no position sees the future


def test_greedy_and_beam_search_drive_bytenet() -> None:
    net, b = model(), batch()
    greedy = greedy_search(net, b)
    beams = beam_search(net, b, beam_size=1)
    assert [h.tokens for h in greedy] == [h.tokens for h in beams]
    with torch.no_grad():  # the greedy choice at step 1 is the argmax of the parallel forward's first row
        first = net({**b, "tgt_in": b["tgt_in"][:, :1]})[:, 0].argmax(-1)
    assert [h.tokens[0] if h.tokens else 3 for h in greedy] == first.tolist()


def test_a_tiny_synthetic_translation_run_lowers_the_loss() -> None:
    config = config_from_dict({
        "seed": 0, "task": {"name": "synthetic_translation", "min_len": 3, "max_len": 8, "eval_size": 64},
        "model": {"name": "bytenet", "channels": 32, "max_dilation": 4, "encoder_repeats": 1, "decoder_repeats": 1},
        "train": {"steps": 50, "batch_size": 32, "lr": 0.003, "progress": False, "tensorboard": False, "threads": 1},
    })
    result = Trainer(config).fit()
    first = sum(h["loss"] for h in result.history[:5]) / 5
    assert result.final["val"]["loss"] < 0.8 * first
