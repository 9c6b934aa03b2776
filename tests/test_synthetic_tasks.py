"""The recurrent era's synthetic tasks: structure, determinism, baselines, and the featurisations of seed 002."""

from __future__ import annotations

import pytest
import torch

from seqlab.config import ConfigError, config_from_dict
from seqlab.data.base import IGNORE
from seqlab.registry import TASKS


def build(**task):
    config = config_from_dict({"task": task, "model": {"name": "mlp"}})
    return TASKS.build(config.task, 0)


def test_adding_problem_structure_and_the_constant_baseline() -> None:
    task = build(name="adding", length=30)
    batch = task.generate(20000, torch.Generator().manual_seed(1))
    values, markers = batch["inputs"][..., 0], batch["inputs"][..., 1]
    assert batch["inputs"].shape == (20000, 30, 2) and batch["targets"].shape == (20000, 1)
    assert torch.all(markers.sum(1) == 2)
    assert torch.all(markers[:, :15].sum(1) == 1) and torch.all(markers[:, 15:].sum(1) == 1)
    torch.testing.assert_close(batch["targets"][:, 0], (values * markers).sum(1))
    constant_mse = float(((batch["targets"] - 1.0) ** 2).mean())
    assert abs(constant_mse - 1 / 6) < 0.005  # predicting 1 gives MSE ≈ 0.167
    assert task.info.extra["constant_baseline_mse"] == pytest.approx(0.1667, abs=1e-3)


def test_tasks_are_deterministic_by_seed_and_step() -> None:
    config = config_from_dict({"task": {"name": "copy_memory", "delay": 12}, "model": {"name": "mlp"}})
    one, two, other = TASKS.build(config.task, 3), TASKS.build(config.task, 3), TASKS.build(config.task, 4)
    assert torch.equal(one.train_batch(5, 8)["inputs"], two.train_batch(5, 8)["inputs"])
    assert not torch.equal(one.train_batch(5, 8)["inputs"], one.train_batch(6, 8)["inputs"])
    assert not torch.equal(one.eval_set("val")["inputs"], other.eval_set("val")["inputs"])
    assert not torch.equal(one.eval_set("val")["inputs"], one.eval_set("test")["inputs"])


def test_copy_memory_layout() -> None:
    task = build(name="copy_memory", delay=15, copy_length=4, n_symbols=5)
    batch = task.train_batch(0, 16)
    inputs, targets = batch["inputs"], batch["targets"]
    assert inputs.shape == (16, 15 + 8) and targets.shape == inputs.shape
    symbols = inputs[:, :4]
    assert symbols.min() >= 1 and symbols.max() <= 5
    assert torch.all(inputs[:, 4 + 15 - 1] == task.delimiter)
    assert torch.equal(targets[:, -4:], symbols)
    assert torch.all(targets[:, :-4] == task.blank)
    assert task.info.extra["memoryless_baseline_loss"] == pytest.approx(4 * torch.log(torch.tensor(5.0)).item() / 23)


def test_remember_first_labels_the_first_symbol() -> None:
    task = build(name="remember_first", length=40, n_symbols=3, n_distractors=5)
    batch = task.train_batch(0, 64)
    assert batch["inputs"].shape == (64, 41)
    assert torch.equal(batch["targets"], batch["inputs"][:, 0] - 1)
    assert batch["inputs"][:, 1:].min() >= 4 and batch["inputs"][:, 1:].max() <= 8


def test_delayed_recall_stream_is_contiguous_and_asks_each_key_distance_steps_later() -> None:
    task = build(name="delayed_recall", distance=6, n_keys=3)
    whole = task.stream_window(4, 3, 40)
    parts = [task.stream_window(4, a, b) for a, b in ((3, 10), (10, 11), (11, 40))]
    for key in ("inputs", "targets"):
        assert torch.equal(whole[key], torch.cat([p[key] for p in parts], 1))
    full = task.stream_window(4, 0, 70)
    asked = (full["targets"] != IGNORE).nonzero()
    assert torch.all(asked[:, 1] % 7 == 6)
    assert torch.equal(full["targets"][asked[:, 0], asked[:, 1]], full["inputs"][asked[:, 0], asked[:, 1] - 6])
    assert full["inputs"][:, ::7].max() <= 3  # keys open every episode
    several = build(name="delayed_recall", distance=4, queries=3, n_keys=2).stream_window(2, 0, 14)
    asked = (several["targets"] != IGNORE).nonzero()
    assert sorted(set(asked[:, 1].tolist())) == [4, 5, 6, 11, 12, 13]  # period 7: asked 4, 5 and 6 steps after the key
    keys = several["inputs"][asked[:, 0], (asked[:, 1] // 7) * 7]
    assert torch.equal(several["targets"][asked[:, 0], asked[:, 1]], keys)


def test_future_context_tags_each_step_with_a_later_token() -> None:
    task = build(name="future_context", length=12, lookahead=2, min_length=6)
    batch = task.train_batch(0, 200)
    inputs, targets, lengths = batch["inputs"], batch["targets"], batch["lengths"]
    assert lengths.min() >= 6 and lengths.max() <= 12 and lengths.min() < lengths.max()
    for row in range(200):
        n = int(lengths[row])
        assert torch.equal(targets[row, : n - 2], inputs[row, 2:n])
        assert torch.all(targets[row, n - 2 :] == IGNORE) and torch.all(inputs[row, n:] == 0)
    with pytest.raises(ConfigError, match="lookahead"):
        build(name="future_context", length=5, lookahead=5)


def test_fixed_window_features_cannot_see_beyond_the_window() -> None:
    task = build(name="fixed_window", length=10, distance=6, n_symbols=4, features="window", window=4)
    assert task.info.input_dim == 16 and not task.info.sequence
    batch = task.train_batch(0, 300)
    assert batch["inputs"].shape == (300, 16)
    tokens = build(name="fixed_window", length=10, distance=6, n_symbols=4).train_batch(0, 300)
    assert torch.equal(tokens["targets"], tokens["inputs"][:, -6] - 1)
    assert torch.equal(batch["targets"], tokens["targets"])  # same sequences, shown differently
    one_hot = batch["inputs"].view(300, 4, 4)
    assert torch.equal(one_hot.argmax(-1) + 1, tokens["inputs"][:, -4:])  # the window is the last 4 tokens only
    with pytest.raises(ConfigError, match="window"):
        build(name="fixed_window", length=10, features="window")


def test_order_task_and_bag_of_words_blindness() -> None:
    task = build(name="order", length=8, n_fillers=3)
    tokens, labels = task.sequences(500, torch.Generator().manual_seed(0))
    a_first = (tokens == 1).int().argmax(1) < (tokens == 2).int().argmax(1)
    assert torch.equal(labels, a_first.long())
    swapped = tokens.clone()
    swapped[tokens == 1], swapped[tokens == 2] = 2, 1
    from seqlab.data.synthetic import featurize

    bow, bow_swapped = featurize(tokens, "bow", 5, None), featurize(swapped, "bow", 5, None)
    assert torch.equal(bow, bow_swapped)  # identical representations, opposite labels
    permuted = tokens[:, torch.randperm(8)]
    assert torch.equal(featurize(permuted, "bow", 5, None), bow)
    bow_task = build(name="order", length=8, features="bow")
    assert bow_task.info.input_dim == 6 and bow_task.train_batch(0, 4)["inputs"].shape == (4, 6)


def test_sum_of_sines_is_seeded() -> None:
    from seqlab.data.synthetic import sum_of_sines

    a = sum_of_sines(100, 3, 0.0, torch.Generator().manual_seed(0))
    b = sum_of_sines(100, 3, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.abs().max() <= 4.5 and a.std() > 0.3
