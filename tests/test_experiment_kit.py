"""The experiments' kit (seqlab.experiments.base) and the counts its verdicts rest on (diagnostics.profile)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from seqlab.config import ConfigError, Spec
from seqlab.diagnostics.profile import OperationCounter, median_times, operation_count
from seqlab.experiments import EXPERIMENTS, Context
from seqlab.experiments.base import StopAt, conclude, experiment, fit, quiet_config
from seqlab.report.plots import new_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_quiet_config_is_validated_and_quiet() -> None:
    config = quiet_config({"name": "adding", "length": 6}, {"name": "rnn", "hidden_size": 8}, {"steps": 3}, seed=5)
    assert config.seed == 5 and config.train.steps == 3
    assert config.train.progress is False and config.train.tensorboard is False and config.train.threads is None
    with pytest.raises(ConfigError, match="hidden_sise"):
        quiet_config({"name": "adding"}, {"name": "rnn", "hidden_sise": 8})
    built = quiet_config(Spec(name="made_for_one_experiment"), {"name": "rnn"}, {"batch_size": 4})
    assert built.task.name == "made_for_one_experiment" and built.train.batch_size == 4


def test_stop_at_reads_the_direction_from_the_metric() -> None:
    config = quiet_config({"name": "logic", "gate": "and"}, {"name": "mlp", "hidden_sizes": [4]},
                          {"steps": 200, "lr": 0.05, "batch_size": 16})
    stop = StopAt("accuracy", 0.999, every=5)
    result = fit(config, callbacks=(stop,))
    assert stop.higher and stop.reached_at == result.steps < 200 and stop.curve[-1] == (result.steps, 1.0)
    assert not StopAt("loss", 0.1, every=5).higher and StopAt("loss", 0.1, every=5, higher_is_better=True).higher


def test_median_times_interleaves_calls_and_takes_the_median() -> None:
    order: list[str] = []
    times = median_times({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3, warmup=1)
    assert order == ["a", "b", "a", "b"] + ["a", "b"] * 3  # warm-up, one calibration call each, then round-robin
    assert set(times) == {"a", "b"} and all(t >= 0 for t in times.values())
    looped: list[int] = []
    median_times({"slow enough": lambda: looped.append(1)}, repeats=2, warmup=0, min_seconds=1e-4)
    assert len(looped) > 3  # a call far faster than min_seconds is looped within each sample


def test_operation_count_matches_the_arithmetic() -> None:
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert operation_count(lambda: a @ b)[1] == 2 * 8 * 16 * 4
    assert operation_count(lambda: (a + 1).sum())[1] == 8 * 16 + 1
    assert operation_count(lambda: a.t().unsqueeze(0))[1] == 0  # views compute nothing
    q = torch.randn(1, 2, 8, 4)
    assert operation_count(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))[1] == 2 * (2 * 2 * 8 * 8 * 4)


def test_fused_lstm_counts_its_gate_products_and_one_call() -> None:
    lstm = torch.nn.LSTM(8, 16, batch_first=True)
    x = torch.randn(3, 10, 8)
    with OperationCounter() as counter, torch.no_grad():
        lstm(x)
    gate_products = 2 * 3 * 10 * (4 * 16 * 8 + 4 * 16 * 16)
    assert gate_products <= counter.operations <= gate_products * 1.1
    x = torch.randn(3, 40, 8)
    with OperationCounter() as longer, torch.no_grad():
        lstm(x)
    assert longer.calls == counter.calls  # the loop over time hides inside one kernel
    assert math.isclose(longer.operations / counter.operations, 4, rel_tol=0.05)


def test_conclude_judges_by_every_check_and_saves_pictures(tmp_path: Path) -> None:
    ctx = Context(mode="quick", out_dir=tmp_path, name="kit")
    fig, [ax] = new_figure()
    ax.plot([0, 1], [1, 0])
    outcome = conclude(ctx, {"first": True, "second": 1 > 2}, {"x": 1}, "setup", {"a line": fig}, quick="fewer steps")
    assert outcome.passed is False and outcome.checks == {"first": True, "second": False}
    assert outcome.setup == "setup — quick mode: fewer steps" and outcome.figures == {"x": 1}
    assert outcome.images == [tmp_path / "images" / "kit-a_line.png"]
    assert outcome.images[0].read_bytes().startswith(PNG_MAGIC)
    full = conclude(Context(mode="full", out_dir=tmp_path), {"only": True}, {}, "setup", quick="ignored")
    assert full.passed is True and full.setup == "setup" and full.images == []
    assert conclude(ctx, {}, {}, "nothing judged").passed is False


def test_registered_experiments_run_on_one_thread(monkeypatch) -> None:
    seen: list[int] = []

    def probe(ctx: Context):
        seen.append(torch.get_num_threads())
        return conclude(ctx, {"ran": True}, {}, "")

    monkeypatch.delitem(EXPERIMENTS, "thread-probe", raising=False)
    experiment("thread-probe", "feedforward", "claim", "test", "always")(probe)
    try:
        torch.set_num_threads(2)
        assert EXPERIMENTS["thread-probe"].run(Context(mode="quick", out_dir=Path("."))).passed
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        del EXPERIMENTS["thread-probe"]
