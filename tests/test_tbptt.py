"""Truncated BPTT in the trainer (seed 004): state carried and detached, gradient reach exactly k2 steps,
k1 = k2 equal to plain chunked training, and exact resume of the carried state."""

from __future__ import annotations

import copy
from typing import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seqlab.config import ConfigError, config_from_dict
from seqlab.data.base import IGNORE, Batch, Task, TaskInfo
from seqlab.data.stream import StreamTask
from seqlab.training import Trainer
from seqlab.training.tbptt import window

VOCAB, STREAMS, LENGTH = 6, 3, 400


class ProbeStream(Task, StreamTask):
    """Fixed random streams; with `newest_only`, a target only at the newest step of each window."""

    def __init__(self, newest_only: bool = False) -> None:
        generator = torch.Generator().manual_seed(0)
        self.tokens = torch.randint(0, VOCAB, (STREAMS, LENGTH + 1), generator=generator)
        self.newest_only = newest_only
        self.info = TaskInfo(kind="tokens", output_dim=VOCAB, vocab_size=VOCAB)

    def stream_window(self, batch_size: int, start: int, stop: int) -> Batch:
        assert batch_size == STREAMS
        targets = self.tokens[:, start + 1 : stop + 1].clone()
        if self.newest_only:
            targets[:, :-1] = IGNORE
        return {"inputs": self.tokens[:, start:stop], "targets": targets}

    def train_batch(self, step: int, batch_size: int) -> Batch:
        return self.stream_window(batch_size, 0, 8)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        yield self.stream_window(batch_size, 0, 8)


class ProbeRNN(nn.Module):
    """A small Elman network that keeps each piece's embedded inputs, so tests can read ∂L/∂x_t."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(VOCAB, 5)
        self.cell = nn.RNNCell(5, 8)
        self.head = nn.Linear(8, VOCAB)
        self.pieces: list[torch.Tensor] = []
        self.incoming: list[torch.Tensor | None] = []

    def forward_with_state(self, batch: Batch, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embedding(batch["inputs"])
        if x.requires_grad:
            x.retain_grad()
            self.pieces.append(x)
        self.incoming.append(state)
        h = state if state is not None else x.new_zeros(x.shape[0], 8)
        outputs = []
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
            outputs.append(h)
        return self.head(torch.stack(outputs, 1)), h

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.forward_with_state(batch)[0]


def make_trainer(k1: int, k2: int, task: Task, model: nn.Module, lr: float = 1e-2, optimizer: str = "adam") -> Trainer:
    config = config_from_dict({
        "task": {"name": "delayed_recall"}, "model": {"name": "rnn"},
        "train": {"steps": 10, "batch_size": STREAMS, "lr": lr, "optimizer": optimizer, "progress": False,
                  "tensorboard": False, "tbptt": {"k1": k1, "k2": k2}},
    })
    return Trainer(config, task=task, model=model)


def input_gradient_reach(model: ProbeRNN) -> list[bool]:
    """For each step of the last update's window: did any gradient reach its input?"""
    grads = torch.cat([piece.grad for piece in model.pieces], dim=1)
    return (grads.norm(dim=(0, 2)) > 0).tolist()


@pytest.mark.parametrize("k1,k2", [(3, 7), (4, 4), (7, 3), (6, 2)])
def test_gradient_reaches_exactly_k2_steps_back_from_the_newest_loss(k1: int, k2: int) -> None:
    model = ProbeRNN()
    trainer = make_trainer(k1, k2, ProbeStream(newest_only=True), model)
    for step in range(5):
        model.pieces.clear()
        trainer.train_step(step)
    plan = window(4, k1, k2)
    reach = input_gradient_reach(model)
    assert len(reach) == plan.stop - plan.start
    assert reach[-k2:] == [True] * k2  # the newest loss reaches k2 steps back ...
    assert not any(reach[:-k2])  # ... and not one step further


def test_carried_state_is_detached_and_continues_the_stream() -> None:
    """With a negligible learning rate, the newest outputs of each update equal one untruncated pass."""
    k1, k2, updates = 3, 7, 6
    model = ProbeRNN()
    task = ProbeStream()
    trainer = make_trainer(k1, k2, task, model, lr=1e-12, optimizer="sgd")
    newest = []
    for step in range(updates):
        model.pieces.clear()
        model.incoming.clear()
        original_forward = model.forward_with_state
        captured: list[torch.Tensor] = []

        def recording(batch: Batch, state: torch.Tensor | None = None, _f=original_forward, _c=captured):
            output, final = _f(batch, state)
            _c.append(output)
            return output, final

        model.forward_with_state = recording  # type: ignore[method-assign]
        trainer.train_step(step)
        del model.forward_with_state
        assert all(state is None or not state.requires_grad for state in model.incoming[:1])
        newest.append(torch.cat(captured, dim=1)[:, -k1:].detach())
    with torch.no_grad():
        full = ProbeRNN.forward(model, task.stream_window(STREAMS, 0, updates * k1))
    torch.testing.assert_close(torch.cat(newest, dim=1), full, atol=1e-5, rtol=1e-5)


def test_k1_equal_k2_is_plain_chunked_training() -> None:
    k, updates = 5, 6
    task = ProbeStream()
    model = ProbeRNN()
    manual = copy.deepcopy(model)
    trainer = make_trainer(k, k, task, model)
    for step in range(updates):
        trainer.train_step(step)
    optimizer = torch.optim.Adam(manual.parameters(), lr=1e-2)
    state = None
    for step in range(updates):
        chunk = task.stream_window(STREAMS, step * k, (step + 1) * k)
        logits, state = manual.forward_with_state(chunk, state)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), chunk["targets"].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        state = state.detach()
    for ours, theirs in zip(model.parameters(), manual.parameters()):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)


def test_window_plans() -> None:
    plan = window(5, 3, 7)  # newest steps 15..17, rerun from 11
    assert (plan.start, plan.stop, plan.first_loss, plan.carry_at) == (11, 18, 15, 14)
    assert plan.segments() == [(11, 14), (14, 18)]
    plan = window(2, 7, 3)
    assert (plan.start, plan.stop, plan.carry_at, plan.detach_at) == (14, 21, 21, (18, 15))
    assert plan.segments() == [(14, 15), (15, 18), (18, 21)]
    assert window(0, 3, 7).start == 0 and window(0, 3, 7).carry_at == 0


def test_tbptt_trains_the_rnn_model_on_a_stream_and_resumes_exactly(tmp_path) -> None:
    raw = {
        "seed": 1, "task": {"name": "delayed_recall", "distance": 5, "eval_size": 16},
        "model": {"name": "rnn", "cell": "lstm", "hidden_size": 16, "embedding_dim": 8},
        "train": {"steps": 6, "batch_size": 8, "lr": 1e-2, "progress": False, "tensorboard": False,
                  "tbptt": {"k1": 4, "k2": 9}, "checkpoint": {"every": 3}},
    }
    whole = Trainer(config_from_dict(raw), out_dir=tmp_path / "whole").fit()
    first = config_from_dict({**raw, "train": {**raw["train"], "steps": 3}})
    Trainer(first, out_dir=tmp_path / "parts").fit()
    resumed = Trainer(config_from_dict(raw), out_dir=tmp_path / "parts").fit(resume=True)
    assert resumed.steps == 6
    for ours, theirs in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(ours, theirs)


def test_tbptt_rejects_tasks_without_streams() -> None:
    config = config_from_dict({
        "task": {"name": "adding", "length": 5}, "model": {"name": "rnn"},
        "train": {"tbptt": {"k1": 2, "k2": 2}, "progress": False},
    })
    with pytest.raises(ConfigError, match="serves no streams"):
        Trainer(config)
