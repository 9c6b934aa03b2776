"""The registered `rnn` model: heads by task kind, padding, generation step by step, carried state for
truncated BPTT, checkpoints shared by the fast and reference paths, and training under the one trainer."""

from __future__ import annotations

import pytest
import torch

from seqlab.config import ConfigError, RunConfig, Spec, TrainConfig, config_from_dict
from seqlab.data.base import Batch, GeneratedTask, TaskInfo
from seqlab.models import build_model
from seqlab.models.recurrent import RecurrentModel, RNNSpec
from seqlab.nn.recurrent import State
from seqlab.training import Trainer

VOCAB, BATCH, STEPS = 13, 4, 9
LENGTHS = torch.tensor([9, 4, 1, 6])


def _model(info: TaskInfo, **fields) -> RecurrentModel:
    torch.manual_seed(0)
    model = build_model(RNNSpec(**fields), info)
    assert isinstance(model, RecurrentModel)
    return model


def _as_tuple(state: State) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def _tokens(batch: int = BATCH, steps: int = STEPS) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, steps))


def test_spec_is_registered_and_validated() -> None:
    model = {"name": "rnn", "cell": "gru", "hidden_size": 16, "bidirectional": True}
    config = config_from_dict({"task": {"name": "logic", "gate": "xor"}, "model": model})
    assert isinstance(config.model, RNNSpec) and config.model.cell == "gru"
    with pytest.raises(ConfigError, match="model.cell"):
        config_from_dict({"task": {"name": "logic", "gate": "xor"}, "model": {"name": "rnn", "cell": "transformer"}})
    with pytest.raises(ConfigError, match="hidden_sze"):
        config_from_dict({"task": {"name": "logic", "gate": "xor"}, "model": {"name": "rnn", "hidden_sze": 3}})


@pytest.mark.parametrize("cell", ["elman", "jordan", "lstm", "gru"])
def test_output_shapes_by_task_kind(cell: str) -> None:
    numeric = {"inputs": torch.randn(BATCH, STEPS, 3), "lengths": LENGTHS}
    assert _model(TaskInfo("classify", 5, input_dim=3), cell=cell)(numeric).shape == (BATCH, 5)
    assert _model(TaskInfo("regress", 2, input_dim=3), cell=cell, head="mean")(numeric).shape == (BATCH, 2)
    scalar = {"inputs": torch.randn(BATCH, STEPS)}  # a univariate series, (batch, time)
    assert _model(TaskInfo("regress", 1, input_dim=1), cell=cell)(scalar).shape == (BATCH, 1)
    tokens = {"inputs": _tokens(), "lengths": LENGTHS}
    tagger = _model(TaskInfo("tokens", 7, vocab_size=VOCAB), cell=cell, bidirectional=True, num_layers=2)
    assert tagger(tokens).shape == (BATCH, STEPS, 7)


def test_unsupported_tasks_are_refused_clearly() -> None:
    with pytest.raises(ConfigError, match="seq2seq"):
        _model(TaskInfo("seq2seq", 5, vocab_size=VOCAB))
    with pytest.raises(ConfigError, match="sequence"):
        _model(TaskInfo("classify", 2, input_dim=2, sequence=False))
    with pytest.raises(ValueError, match="generate"):  # a model's own error; ConfigError only at the config edge
        _model(TaskInfo("tokens", VOCAB, vocab_size=VOCAB), bidirectional=True).step({}, None, _tokens()[:, 0])


@pytest.mark.parametrize("cell", ["lstm", "gru", "jordan"])
def test_last_head_reads_each_sequence_at_its_own_length(cell: str) -> None:
    model = _model(TaskInfo("classify", 3, vocab_size=VOCAB), cell=cell, bidirectional=True, num_layers=2).eval()
    inputs = _tokens()
    logits = model({"inputs": inputs, "lengths": LENGTHS})
    for b, length in enumerate(LENGTHS.tolist()):
        alone = model({"inputs": inputs[b : b + 1, :length]})
        torch.testing.assert_close(logits[b : b + 1], alone, atol=1e-5, rtol=1e-5)


def test_bidirectional_last_head_concatenates_forward_and_backward_finals() -> None:
    model = _model(TaskInfo("classify", 3, input_dim=2), cell="gru", bidirectional=True).eval()
    x = torch.randn(BATCH, STEPS, 2)
    outputs, _ = model.stack(x, LENGTHS)
    last = outputs[torch.arange(BATCH), LENGTHS - 1]
    expected = torch.cat([last[:, : model.stack.hidden_size], outputs[:, 0, model.stack.hidden_size :]], dim=-1)
    torch.testing.assert_close(model({"inputs": x, "lengths": LENGTHS}), model.head(expected))


def test_mean_head_averages_valid_steps_only() -> None:
    model = _model(TaskInfo("regress", 1, input_dim=2), cell="lstm", head="mean").eval()
    x = torch.randn(BATCH, STEPS, 2)
    got = model({"inputs": x, "lengths": LENGTHS})
    for b, length in enumerate(LENGTHS.tolist()):
        outputs, _ = model.stack(x[b : b + 1, :length])
        torch.testing.assert_close(got[b : b + 1], model.head(outputs.mean(1)), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cell", ["elman", "jordan", "lstm", "gru"])
def test_step_by_step_generation_equals_the_full_forward(cell: str) -> None:
    model = _model(TaskInfo("tokens", VOCAB, vocab_size=VOCAB), cell=cell, num_layers=2, dropout=0.3).eval()
    tokens = _tokens()
    full = model({"inputs": tokens})
    state = model.init_state({}, BATCH)
    for t in range(STEPS):
        logits, state, _ = model.step({}, state, tokens[:, t])
        torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "jordan"])
def test_carried_state_continues_a_stream(cell: str) -> None:
    """Truncated BPTT's contract: chunks run with the carried state give the full stream's outputs."""
    model = _model(TaskInfo("tokens", VOCAB, vocab_size=VOCAB), cell=cell, num_layers=2).eval()
    tokens = _tokens(steps=12)
    full, full_state = model.forward_with_state({"inputs": tokens})
    state = None
    pieces = []
    for start in range(0, 12, 5):
        logits, state = model.forward_with_state({"inputs": tokens[:, start : start + 5]}, state)
        state = tuple(part.detach() for part in _as_tuple(state))
        state = state if len(state) == 2 else state[0]
        pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    for got, expected in zip(_as_tuple(state), _as_tuple(full_state)):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
def test_checkpoint_of_the_fast_path_loads_in_the_reference(cell: str) -> None:
    info = TaskInfo("tokens", VOCAB, vocab_size=VOCAB)
    fast = _model(info, cell=cell, fast=True, bidirectional=True)
    reference = build_model(RNNSpec(cell=cell, fast=False, bidirectional=True, init="xavier"), info)
    reference.load_state_dict(fast.state_dict())
    batch = {"inputs": _tokens(), "lengths": LENGTHS}
    torch.testing.assert_close(fast(batch), reference(batch), atol=1e-5, rtol=1e-5)


class FirstSymbolTask(GeneratedTask):
    """Classify a sequence of random tokens by its first token (a memory task over padded batches)."""

    info = TaskInfo("classify", 3, vocab_size=6)

    def generate(self, n: int, rng: torch.Generator) -> Batch:
        inputs = torch.randint(1, 6, (n, 8), generator=rng)
        lengths = torch.randint(3, 9, (n,), generator=rng)
        inputs[torch.arange(8)[None, :] >= lengths[:, None]] = 0
        inputs[:, 0] = torch.randint(3, 6, (n,), generator=rng)
        return {"inputs": inputs, "lengths": lengths, "targets": inputs[:, 0] - 3}


def test_trains_under_the_one_trainer() -> None:
    config = RunConfig(
        seed=0,
        task=Spec(name="first-symbol"),
        model=RNNSpec(cell="gru", hidden_size=16, embedding_dim=8),
        train=TrainConfig(steps=80, batch_size=32, lr=0.02, progress=False, tensorboard=False, threads=1),
    )
    result = Trainer(config, task=FirstSymbolTask(seed=0, eval_size=256)).fit()
    assert result.final["val"]["accuracy"] > 0.9
