"""McCulloch–Pitts units and Rosenblatt's perceptron (seed 000)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from seqlab.data.logic import BlobsSpec, BlobsTask, gate_dataset
from seqlab.nn.neurons import AND, NAND, NOT, OR, McCullochPittsNeuron, Perceptron, heaviside, search_single_unit

TWO_INPUTS = np.array(list(itertools.product([0, 1], repeat=2)))  # (0,0) (0,1) (1,0) (1,1)


def test_heaviside_fires_at_zero():
    assert heaviside(np.array([-2, -1, 0, 1, 3])).tolist() == [0, 0, 1, 1, 1]


@pytest.mark.parametrize(
    "unit, table",
    [(AND, [0, 0, 0, 1]), (OR, [0, 1, 1, 1]), (NAND, [1, 1, 1, 0])],
    ids=["AND", "OR", "NAND"],
)
def test_two_input_gates_follow_their_truth_tables(unit: McCullochPittsNeuron, table: list[int]):
    assert unit(TWO_INPUTS).tolist() == table
    for row, expected in zip(TWO_INPUTS, table):  # one input pattern at a time, N(t) → N(t+1)
        assert int(unit(row)) == expected
    assert all(isinstance(w, int) for w in unit.weights) and isinstance(unit.theta, int)


def test_not_gate():
    assert NOT(np.array([[0], [1]])).tolist() == [1, 0]


def test_the_unit_is_a_thresholded_weighted_sum():
    unit = McCullochPittsNeuron(weights=(2, -1, 1), theta=2)
    for inputs in itertools.product([0, 1], repeat=3):
        total = 2 * inputs[0] - inputs[1] + inputs[2]
        assert int(unit(np.array(inputs))) == int(total - 2 >= 0)


def test_the_search_finds_the_linearly_separable_gates():
    span = range(-3, 4)
    for gate, unit in (("and", AND), ("or", OR), ("nand", NAND)):
        found = search_single_unit(gate_dataset(gate)[1].numpy(), TWO_INPUTS, span)
        assert unit in found


@pytest.mark.parametrize("gate_targets", [[0, 1, 1, 0], [1, 0, 0, 1]], ids=["XOR", "XNOR"])
def test_no_single_unit_computes_xor(gate_targets: list[int]):
    span = range(-5, 6)  # 11³ = 1331 units: every integer weight pair and threshold in [-5, 5]
    assert search_single_unit(np.array(gate_targets), TWO_INPUTS, span) == []
    best = max(
        np.mean(McCullochPittsNeuron((w1, w2), theta)(TWO_INPUTS) == gate_targets)
        for w1, w2, theta in itertools.product(span, repeat=3)
    )
    assert best == 0.75


def test_perceptron_rule_single_update():
    p = Perceptron(2, lr=0.5, seed=0)
    p.w[:] = [0.0, -1.0]
    p.b = 0.0
    x, y = np.array([1.0, 1.0]), 1  # predicted H(-1) = 0: an error of +1
    p.fit(x[None], np.array([y]), epochs=1)
    assert p.w.tolist() == [0.5, -0.5] and p.b == 0.5


@pytest.mark.parametrize("gate", ["and", "or", "nand"])
def test_perceptron_converges_on_separable_gates(gate: str):
    x, y = gate_dataset(gate)
    for seed in range(5):
        perceptron = Perceptron(2, lr=1.0, seed=seed)
        curve = perceptron.fit(x.numpy(), y.numpy(), epochs=100)
        assert curve[-1] == 1.0 and len(curve) < 100  # stopped at an epoch without mistakes
        assert perceptron.predict(x.numpy()).tolist() == y.tolist()


def test_perceptron_converges_on_separable_points():
    task = BlobsTask(BlobsSpec(margin=0.3, eval_size=400), seed=1)
    batch = task.eval_set("val")
    x, y = batch["inputs"].numpy(), batch["targets"].numpy()
    assert 0.2 < y.mean() < 0.8  # both classes present
    perceptron = Perceptron(2, lr=1.0, seed=0)
    curve = perceptron.fit(x, y, epochs=200)
    assert curve[-1] == 1.0 and len(curve) < 200
    unseen = task.train_batch(0, 500)
    assert np.mean(perceptron.predict(unseen["inputs"].numpy()) == unseen["targets"].numpy()) > 0.97


def test_perceptron_never_exceeds_75_percent_on_xor():
    x, y = gate_dataset("xor")
    for seed in range(30):
        for lr in (0.1, 1.0):
            curve = Perceptron(2, lr=lr, seed=seed).fit(x.numpy(), y.numpy(), epochs=60)
            assert len(curve) == 60  # never an epoch without mistakes
            assert max(curve) <= 0.75


def test_blobs_are_separable_with_the_stated_margin():
    task = BlobsTask(BlobsSpec(margin=0.5), seed=4)
    batch = task.train_batch(0, 1000)
    distance = batch["inputs"] @ task.normal
    assert torch.all(distance.abs() >= 0.5 - 1e-6)
    assert torch.equal((distance > 0).long(), batch["targets"])
