"""The Neural Turing Machine: each addressing stage against a hand-computed case and against finite
differences (gradcheck on tiny double-precision inputs), the whole machine's gradient likewise, the copy and
associative-recall tasks' layouts and determinism, the bits objective, and a short training run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from seqlab.config import ConfigError, config_from_dict
from seqlab.data.base import IGNORE
from seqlab.models import build_model
from seqlab.nn.ntm import NTM, address, content_addressing, interpolate, read, sharpen, shift, write
from seqlab.registry import TASKS
from seqlab.training import Trainer
from seqlab.training.objectives import loss_sum, metric_sums


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """torch.allclose with float32 tolerances (torch.testing.assert_close's first call imports DTensor, ~2 s)."""
    assert actual.shape == expected.shape and torch.allclose(actual, expected.to(actual.dtype), rtol=1e-5, atol=1e-6), (actual, expected)


def double(*shape: int, positive: bool = False) -> torch.Tensor:
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(sum(shape)))
    return (x.abs() + 0.1 if positive else x).requires_grad_()


def test_content_addressing_is_a_softmax_of_scaled_cosines() -> None:
    M = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]]])
    k = torch.tensor([[2.0, 0.0]])
    beta = torch.tensor([[math.log(4.0)]])
    # cosines 1, 0, −1 → exp(β K) = 4, 1, 1/4
    expected = torch.tensor([[4.0, 1.0, 0.25]]) / 5.25
    assert_close(content_addressing(k, beta, M), expected)
    assert_close(content_addressing(k, beta, M),
                               torch.softmax(beta * F.cosine_similarity(k[:, None], M, dim=-1), -1))


def test_shift_moves_a_one_hot_weighting_circularly() -> None:
    w = F.one_hot(torch.tensor([0, 4]), 5).float()  # slot 0 and slot 4 (the last)
    right = torch.tensor([[0.0, 0.0, 1.0]] * 2)  # all weight on shift +1
    assert_close(shift(w, right), F.one_hot(torch.tensor([1, 0]), 5).float())  # 4 + 1 wraps to 0
    left = torch.tensor([[1.0, 0.0, 0.0]] * 2)
    assert_close(shift(w, left), F.one_hot(torch.tensor([4, 3]), 5).float())  # 0 − 1 wraps to 4
    spread = torch.tensor([[0.2, 0.5, 0.3]])
    assert_close(shift(w[:1], spread), torch.tensor([[0.5, 0.3, 0.0, 0.0, 0.2]]))
    wide = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0]])  # S = 2, shift +2
    assert_close(shift(w[:1], wide), F.one_hot(torch.tensor([2]), 5).float())


def test_interpolation_sharpening_read_and_write_by_hand() -> None:
    w_c, w_prev = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert_close(interpolate(w_c, w_prev, torch.tensor([[0.25]])), torch.tensor([[0.25, 0.75]]))
    assert_close(sharpen(torch.tensor([[0.25, 0.75]]), torch.tensor([[2.0]])),
                               torch.tensor([[0.0625, 0.5625]]) / 0.625)
    M = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    w = torch.tensor([[[0.25, 0.75]]])  # (batch, heads, N)
    assert_close(read(M, w), torch.tensor([[[2.5, 3.5]]]))
    e, a = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[10.0, 20.0]]])
    # M(i) ← M(i)(1 − w(i) e) + w(i) a
    expected = torch.tensor([[[1.0 * 0.75 + 2.5, 2.0 + 5.0], [3.0 * 0.25 + 7.5, 4.0 + 15.0]]])
    assert_close(write(M, w, e, a), expected)


def test_full_erase_and_add_writes_the_vector_into_one_slot() -> None:
    M = torch.randn(1, 4, 3)
    w = F.one_hot(torch.tensor([[2]]), 4).float()
    a = torch.tensor([[[0.5, -1.0, 2.0]]])
    written = write(M, w, torch.ones(1, 1, 3), a)
    assert_close(written[0, 2], a[0, 0])
    assert_close(written[0, [0, 1, 3]], M[0, [0, 1, 3]])
    assert_close(read(written, w)[0, 0], a[0, 0])


def test_each_addressing_stage_matches_finite_differences() -> None:
    B, N, W = 2, 5, 3
    M, k, beta = double(B, N, W), double(B, W), double(B, 1, positive=True)
    assert torch.autograd.gradcheck(content_addressing, (k, beta, M))
    w_c = torch.softmax(double(B, N), -1).detach().requires_grad_()
    w_prev = torch.softmax(double(B, N + 1)[:, :N], -1).detach().requires_grad_()
    g = torch.rand(B, 1, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(interpolate, (w_c, w_prev, g))
    s = torch.softmax(double(B, 3), -1).detach().requires_grad_()
    assert torch.autograd.gradcheck(shift, (w_c, s))
    gamma = (1 + double(B, 1, positive=True)).detach().requires_grad_()
    assert torch.autograd.gradcheck(sharpen, (w_c, gamma))
    w = torch.softmax(double(B, 2, N), -1).detach().requires_grad_()
    e, a = torch.rand(B, 2, W, dtype=torch.float64).requires_grad_(), double(B, 2, W)
    assert torch.autograd.gradcheck(read, (M, w))
    assert torch.autograd.gradcheck(write, (M, w, e, a))
    assert torch.autograd.gradcheck(address, (M, w_prev, k, beta, g, s, gamma))


def test_the_whole_machine_matches_finite_differences() -> None:
    torch.manual_seed(0)
    ntm = NTM(input_size=3, output_size=2, controller_size=4, N=4, W=3, read_heads=2, write_heads=1,
              memory_init=0.1).double()
    x = double(2, 3, 3)
    assert torch.autograd.gradcheck(lambda inputs: ntm(inputs)[0], (x,))
    parameter = ntm.heads.weight
    y, _ = ntm(x.detach())
    (grad,) = torch.autograd.grad(y.sum(), parameter)
    index, step = (0, 1), 1e-6
    with torch.no_grad():
        parameter[index] += step
        up = ntm(x.detach())[0].sum()
        parameter[index] -= 2 * step
        down = ntm(x.detach())[0].sum()
        parameter[index] += step
    assert float(grad[index]) == pytest.approx(float(up - down) / (2 * step), rel=1e-5, abs=1e-8)


def test_weightings_are_distributions_and_shapes() -> None:
    ntm = NTM(input_size=5, output_size=4, controller_size=8, N=6, W=3, read_heads=2, write_heads=1)
    y, trace = ntm(torch.randn(3, 7, 5))
    assert y.shape == (3, 7, 4)
    assert trace["read"].shape == (3, 7, 2, 6) and trace["write"].shape == (3, 7, 1, 6)
    for w in trace.values():
        assert torch.all(w >= 0)
        assert_close(w.sum(-1), torch.ones(w.shape[:-1]))


def build_task(**task):
    config = config_from_dict({"task": task, "model": {"name": "ntm"}})
    return TASKS.build(config.task, 0), config


def test_copy_task_layout_and_determinism() -> None:
    task, config = build_task(name="ntm_copy", width=4, min_length=2, max_length=5)
    batch = task.train_batch(3, 16)
    inputs, targets = batch["inputs"], batch["targets"]
    L = (batch["lengths"] - 1) // 2
    assert inputs.shape[-1] == 5 and targets.shape[-1] == 4 and inputs.shape[1] == 2 * int(L.max()) + 1
    for row in range(16):
        n = int(L[row])
        assert torch.all(inputs[row, n, :4] == 0) and inputs[row, n, 4] == 1  # the delimiter
        assert torch.all(inputs[row, n + 1 :] == 0)  # nothing after it
        assert torch.equal(targets[row, n + 1 : 2 * n + 1], inputs[row, :n, :4])
        assert torch.all(targets[row, : n + 1] == IGNORE) and torch.all(targets[row, 2 * n + 1 :] == IGNORE)
    again = TASKS.build(config.task, 0).train_batch(3, 16)
    assert torch.equal(again["inputs"], inputs)
    assert not torch.equal(TASKS.build(config.task, 1).train_batch(3, 16)["inputs"], inputs)
    longer, _ = build_task(name="ntm_copy", width=4, max_length=5, eval_min_length=10, eval_max_length=10)
    assert torch.all(longer.eval_set("val")["lengths"] == 21)


def test_associative_recall_answers_the_item_after_the_query() -> None:
    task, _ = build_task(name="associative_recall", width=3, item_length=2, min_items=2, max_items=4)
    batch = task.train_batch(0, 32)
    inputs, targets = batch["inputs"], batch["targets"]
    for row in range(32):
        starts = torch.nonzero(inputs[row, :, 3]).flatten().tolist()  # item delimiters
        items = [inputs[row, t + 1 : t + 3, :3] for t in starts]
        query_open, query_close = torch.nonzero(inputs[row, :, 4]).flatten().tolist()
        query = inputs[row, query_open + 1 : query_close, :3]
        position = next(i for i, item in enumerate(items) if torch.equal(item, query))
        asked = targets[row, query_close + 1 : query_close + 3]
        assert torch.equal(asked, items[position + 1])
        assert int((targets[row] != IGNORE).all(-1).sum()) == 2


def test_bits_objective_is_binary_cross_entropy_over_asked_bits() -> None:
    targets = torch.tensor([[[1.0, 0.0], [IGNORE, IGNORE]]])
    logits = torch.tensor([[[2.0, 1.0], [5.0, -5.0]]])
    batch = {"targets": targets}
    expected = F.binary_cross_entropy_with_logits(torch.tensor([2.0, 1.0]), torch.tensor([1.0, 0.0]), reduction="sum")
    assert_close(loss_sum("bits", logits, batch), expected)
    sums = metric_sums("bits", logits, batch)
    assert sums["count"] == 2 and sums["accuracy"] == 1  # bit 1 right (2 > 0), bit 2 wrong (1 > 0 says 1)


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ConfigError, match="min_length"):
        config_from_dict({"task": {"name": "ntm_copy", "min_length": 5, "max_length": 3}, "model": {"name": "ntm"}})
    with pytest.raises(ConfigError, match="min_items"):
        config_from_dict({"task": {"name": "associative_recall", "min_items": 5, "max_items": 3}, "model": {"name": "ntm"}})
    config = config_from_dict({"task": {"name": "ntm_copy"}, "model": {"name": "ntm", "memory_slots": 4, "shift_range": 2}})
    task = TASKS.build(config.task, 0)
    with pytest.raises(ConfigError, match="shift_range"):
        build_model(config.model, task.info)
    config = config_from_dict({"task": {"name": "babi"}, "model": {"name": "ntm"}})
    with pytest.raises(ConfigError, match="one output per step"):
        build_model(config.model, TASKS.build(config.task, 0).info)


def test_a_short_training_run_improves_bit_accuracy() -> None:
    config = config_from_dict({
        "seed": 0, "task": {"name": "ntm_copy", "width": 4, "min_length": 1, "max_length": 3, "eval_size": 128},
        "model": {"name": "ntm", "controller_size": 32, "memory_slots": 8, "memory_width": 6},
        "train": {"steps": 60, "batch_size": 32, "lr": 1e-2, "grad_clip": 10.0, "progress": False, "tensorboard": False},
    })
    trainer = Trainer(config)
    before = trainer.evaluate("val")["accuracy"]
    after = trainer.fit().final["val"]["accuracy"]
    assert after > before + 0.1, (before, after)
