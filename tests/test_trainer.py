"""The one trainer: optimisers, schedules, clipping, accumulation, evaluation, early stopping, logs, determinism."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from seqlab.config import ConfigError, TrainConfig, config_from_dict
from seqlab.training import Callback, Trainer, train
from seqlab.training.precision import autocast_dtype, has_bf16, resolve_precision
from seqlab.training import checkpoint as ckpt
from seqlab.training.optim import build_optimizer, lr_multiplier

TIMING_KEYS = {"targets_per_s"}


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k not in TIMING_KEYS} for record in records]


def fit(out_dir: Path | None = None, callbacks: tuple[Callback, ...] = (), **sections):
    trainer = Trainer(config_from_dict(tiny_config(**sections)), out_dir=out_dir, callbacks=callbacks)
    return trainer, trainer.fit()


def parameters(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


# --- optimisers and schedules ---------------------------------------------------------------------------


def test_optimizers_are_built_with_their_settings():
    model = torch.nn.Linear(3, 2)
    adamw = build_optimizer(model, TrainConfig(optimizer="adamw", lr=0.01, weight_decay=0.1, betas=(0.8, 0.99)))
    assert type(adamw) is torch.optim.AdamW
    assert adamw.param_groups[0]["betas"] == (0.8, 0.99) and adamw.param_groups[0]["weight_decay"] == 0.1
    sgd = build_optimizer(model, TrainConfig(optimizer="sgd", lr=0.2, momentum=0.7))
    assert type(sgd) is torch.optim.SGD
    assert sgd.param_groups[0]["momentum"] == 0.7 and sgd.param_groups[0]["lr"] == 0.2


def test_sgd_momentum_update_matches_the_rule():
    """v ← μ v + g; θ ← θ − η v, checked on the trainer's own steps with a hand-kept velocity."""
    velocity: dict[int, torch.Tensor] = {}
    expected: list[torch.Tensor] = []
    actual: list[torch.Tensor] = []

    class Watch(Callback):
        def on_after_backward(self, trainer, step):
            params = list(trainer.model.parameters())
            for index, p in enumerate(params):
                grad = p.grad.detach().clone()
                velocity[index] = 0.9 * velocity[index] + grad if index in velocity else grad
            expected.append(torch.cat([(p.detach() - 0.1 * velocity[i]).flatten() for i, p in enumerate(params)]))
            return {}

        def on_step_end(self, trainer, step, logs):
            actual.append(parameters(trainer.model))

    fit(callbacks=(Watch(),), train={"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "steps": 5})
    assert len(actual) == len(expected) == 5
    for want, got in zip(expected, actual):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_constant_schedule():
    factor = lr_multiplier(TrainConfig(steps=10, schedule="constant"))
    assert [factor(s) for s in range(10)] == [1.0] * 10
    factor = lr_multiplier(TrainConfig(steps=10, schedule="constant", warmup_steps=4))
    assert [factor(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_warmup_then_cosine_schedule():
    factor = lr_multiplier(TrainConfig(steps=12, schedule="cosine", warmup_steps=4, min_lr_ratio=0.1))
    assert [factor(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    for s in range(4, 12):
        expected = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 4) / 8))
        assert factor(s) == pytest.approx(expected)
    assert factor(8) == pytest.approx(0.55)  # half-way down: floor + half the range
    assert factor(12) == pytest.approx(0.1)  # ends at min_lr_ratio
    values = [factor(s) for s in range(3, 13)]
    assert values == sorted(values, reverse=True)


def test_warmup_then_inverse_sqrt_schedule():
    factor = lr_multiplier(TrainConfig(steps=100, schedule="inverse_sqrt", warmup_steps=4))
    assert [factor(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    # n = step + 1: the factor is min(n / w, sqrt(w / n)) (Vaswani et al. 2017, eq. 3, scaled to peak 1)
    for s in (4, 8, 15, 63, 99):
        assert factor(s) == pytest.approx(math.sqrt(4 / (s + 1)))
    assert factor(15) == pytest.approx(0.5)
    no_warmup = lr_multiplier(TrainConfig(steps=10, schedule="inverse_sqrt"))
    assert [no_warmup(s) for s in (0, 3, 8)] == pytest.approx([1.0, 0.5, 1 / 3])


def test_trainer_applies_the_schedule_each_step():
    _, result = fit(train={"steps": 12, "lr": 0.2, "schedule": "cosine", "warmup_steps": 4, "min_lr_ratio": 0.1})
    factor = lr_multiplier(TrainConfig(steps=12, schedule="cosine", warmup_steps=4, min_lr_ratio=0.1))
    assert [h["lr"] for h in result.history] == pytest.approx([0.2 * factor(s) for s in range(12)])


def test_a_time_clocked_cosine_anneals_over_the_budget_not_the_steps():
    config = TrainConfig(steps=10_000, schedule="cosine", warmup_steps=2, min_lr_ratio=0.0, schedule_clock="time",
                         time_budget_s=100.0)
    elapsed = [0.0]
    factor = lr_multiplier(config, lambda: elapsed[0])
    assert factor(0) == pytest.approx(0.5)  # warm-up still counts steps
    assert factor(5) == pytest.approx(1.0)
    elapsed[0] = 50.0
    assert factor(5) == pytest.approx(0.5)  # half the budget spent: half-way down the cosine, whatever the step
    elapsed[0] = 100.0
    assert factor(6) == pytest.approx(0.0)


def test_a_time_clocked_warm_up_meets_the_cosine_instead_of_overshooting_it():
    config = TrainConfig(steps=10_000, schedule="cosine", warmup_steps=100, schedule_clock="time", time_budget_s=100.0)
    elapsed = [0.0]
    factor = lr_multiplier(config, lambda: elapsed[0])
    trace = []
    for step in range(200):  # half a second per step: these 200 steps span the first half of the budget
        elapsed[0] = float(step) / 2
        trace.append(factor(step))
    cosine = [0.5 * (1 + math.cos(math.pi * (step / 2) / 100)) for step in range(200)]
    assert all(f <= c + 1e-12 for f, c in zip(trace, cosine))  # never above the cosine, warm-up or not
    assert trace[10] == pytest.approx(11 / 100)  # early on, the warm-up is the lower
    assert trace[150] == pytest.approx(cosine[150])  # after the two meet, the cosine alone
    assert max(abs(b - a) for a, b in zip(trace, trace[1:])) < 0.02  # no jump where the warm-up ends


def test_the_trainer_feeds_its_training_seconds_to_a_time_clocked_schedule():
    _, result = fit(train={"steps": 1_000_000, "lr": 0.2, "schedule": "cosine", "schedule_clock": "time",
                           "time_budget_s": 0.5})
    lrs = [h["lr"] for h in result.history]
    assert result.stop_reason == "time_budget" and len(lrs) > 10
    assert lrs[0] == pytest.approx(0.2) and all(b <= a for a, b in zip(lrs, lrs[1:]))  # time passes: lr falls
    assert lrs[-1] < 0.2 * 0.1  # the budget is nearly spent at the last step: the cosine is nearly at its floor


def test_a_time_clock_without_a_budget_is_refused():
    with pytest.raises(ValueError, match="schedule_clock: time anneals a cosine schedule over train.time_budget_s"):
        TrainConfig(schedule="cosine", schedule_clock="time")


# --- clipping and accumulation --------------------------------------------------------------------------


class GradNorm(Callback):
    """Measures the global gradient norm before clipping, and the parameter change each step."""

    def __init__(self) -> None:
        self.norms: list[float] = []
        self.moves: list[float] = []
        self.before: torch.Tensor | None = None

    def on_after_backward(self, trainer, step):
        grads = [p.grad.detach().flatten() for p in trainer.model.parameters()]
        self.norms.append(float(torch.cat(grads).norm()))
        self.before = parameters(trainer.model)
        return {}

    def on_step_end(self, trainer, step, logs):
        self.moves.append(float((parameters(trainer.model) - self.before).norm()))


def test_clipping_logs_the_pre_clip_norm_and_clips_the_update(tmp_path: Path):
    probe = GradNorm()
    clip, lr = 1e-3, 0.5
    _, result = fit(
        tmp_path / "run", callbacks=(probe,),
        train={"optimizer": "sgd", "momentum": 0.0, "lr": lr, "grad_clip": clip, "steps": 6, "log_every": 1},
    )
    logged = [h["grad_norm"] for h in result.history]
    assert logged == pytest.approx(probe.norms, rel=1e-6)
    assert all(norm > 10 * clip for norm in logged)  # so clipping really acted
    assert [move / lr for move in probe.moves] == pytest.approx([clip] * 6, rel=1e-4)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train_records] == list(range(1, 7))
    assert [r["grad_norm"] for r in train_records] == pytest.approx(logged)


def test_without_clipping_the_update_is_the_full_gradient():
    probe = GradNorm()
    fit(callbacks=(probe,), train={"optimizer": "sgd", "momentum": 0.0, "lr": 0.5, "steps": 3})
    assert [move / 0.5 for move in probe.moves] == pytest.approx(probe.norms, rel=1e-5)


@pytest.mark.parametrize("accum", [2, 4])
def test_gradient_accumulation_gives_the_same_update(accum: int):
    sections = {"train": {"steps": 8, "batch_size": 16, "grad_clip": 0.5}}
    _, once = fit(**sections)
    sections["train"]["grad_accum"] = accum
    _, accumulated = fit(**sections)
    torch.testing.assert_close(parameters(accumulated.model), parameters(once.model), rtol=1e-5, atol=1e-6)
    for a, b in zip(accumulated.history, once.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)


def test_batch_too_small_to_split_is_refused():
    with pytest.raises(ConfigError, match="train.batch_size = 2 cannot be split"):
        Trainer(config_from_dict(tiny_config(train={"batch_size": 2, "grad_accum": 4})))


# --- evaluation, early stopping, logs -------------------------------------------------------------------


def test_evaluation_every_n_steps():
    _, result = fit(train={"steps": 20, "eval_every": 6})
    assert [e["step"] for e in result.evals] == [6, 12, 18]
    assert set(result.final) == {"val", "test"}
    assert {"loss", "accuracy"} <= set(result.evals[0])


def test_early_stopping_stops_after_patience_evaluations_without_improvement():
    # min_delta larger than any possible change of accuracy: only the first evaluation counts as improving
    _, result = fit(train={"steps": 100, "eval_every": 2, "early_stopping": {
        "metric": "accuracy", "mode": "max", "patience": 3, "min_delta": 2.0}})
    assert result.stopped_early
    assert result.steps == 8  # evaluations at 2 (best), 4, 6, 8 (third without improvement)
    assert [e["step"] for e in result.evals] == [2, 4, 6, 8]


def test_early_stopping_waits_while_the_metric_improves():
    _, result = fit(train={"steps": 60, "eval_every": 5, "lr": 0.05,
                           "early_stopping": {"metric": "loss", "mode": "min", "patience": 2}})
    losses = [e["loss"] for e in result.evals]
    assert not result.stopped_early and result.steps == 60
    assert losses[-1] < losses[0]


def test_early_stopping_on_an_unmeasured_metric_is_a_config_error():
    with pytest.raises(ConfigError, match="'train.early_stopping.metric' = 'bleu' is not allowed.*'loss' or 'accuracy'"):
        config_from_dict(tiny_config(train={"steps": 4, "eval_every": 2, "early_stopping": {"metric": "bleu"}}))


def test_early_stopping_on_accuracy_of_a_regression_task_fails_before_training():
    config = config_from_dict({"task": {"name": "adding", "length": 10}, "model": {"name": "rnn", "hidden_size": 4},
                               "train": {"steps": 4, "eval_every": 2, "early_stopping": {"metric": "accuracy"},
                                         "progress": False, "tensorboard": False}})
    with pytest.raises(ConfigError, match="metric = 'accuracy' is not measured on 'regress' tasks"):
        Trainer(config)


def test_metrics_jsonl_and_tensorboard_are_written(tmp_path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    fit(run, train={"steps": 12, "log_every": 4, "eval_every": 6, "tensorboard": True})
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in records] == [
        (4, "train"), (6, "val"), (8, "train"), (12, "train"), (12, "val"), (12, "test")]
    assert {"loss", "lr", "grad_norm", "targets_per_s"} <= set(records[0])
    assert records[-1]["final"] is True and {"loss", "accuracy"} <= set(records[-1])
    assert json.loads((run / "final_metrics.json").read_text())["step"] == 12
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = EventAccumulator(str(run / "tensorboard"))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "train/grad_norm", "train/lr", "val/accuracy", "test/loss"} <= tags
    assert [e.step for e in accumulator.Scalars("train/grad_norm")] == [4, 8, 12]
    assert accumulator.Scalars("train/loss")[0].value == pytest.approx(records[0]["loss"])


def test_progress_bar_shows_loss_and_throughput(capsys):
    fit(train={"steps": 5, "progress": True})
    err = capsys.readouterr().err
    assert "5/5" in err and "loss=" in err and "targets_per_s=" in err


def test_progress_bar_can_be_turned_off(capsys):
    fit(train={"steps": 5, "progress": False})
    assert "loss=" not in capsys.readouterr().err


def test_non_finite_loss_stops_training():
    class Poison(Callback):
        def on_after_backward(self, trainer, step):
            if step == 2:
                with torch.no_grad():
                    next(trainer.model.parameters()).fill_(float("nan"))
            return {}

    _, result = fit(callbacks=(Poison(),), train={"steps": 20})
    assert result.steps == 4 and math.isnan(result.history[-1]["loss"])


def test_callback_figures_are_logged():
    class Figure(Callback):
        def on_after_backward(self, trainer, step):
            return {"probe": float(step)}

    _, result = fit(callbacks=(Figure(),), train={"steps": 3})
    assert [h["probe"] for h in result.history] == [0.0, 1.0, 2.0]


# --- precision -----------------------------------------------------------------------------------------


CPU_BF16 = has_bf16(torch.device("cpu"))


def test_precision_auto_follows_the_hardware_and_bf16_is_refused_without_it(monkeypatch):
    cpu = torch.device("cpu")
    assert autocast_dtype("fp32", cpu) is None and autocast_dtype("fp32", torch.device("cuda")) is None
    monkeypatch.setattr("seqlab.training.precision.cpu_has_bf16", lambda: True)  # AVX-512 BF16 / AMX
    assert autocast_dtype("auto", cpu) == torch.bfloat16 and autocast_dtype("bf16", cpu) == torch.bfloat16
    monkeypatch.setattr("seqlab.training.precision.cpu_has_bf16", lambda: False)  # e.g. an AVX2-only CPU
    assert autocast_dtype("auto", cpu) is None and resolve_precision("auto", cpu) == "fp32"
    with pytest.raises(ConfigError, match="no bf16 hardware.*set train.precision to auto"):
        autocast_dtype("bf16", cpu)


def test_auto_on_a_cpu_without_bf16_trains_in_fp32_and_records_it(monkeypatch, tmp_path):
    monkeypatch.setattr("seqlab.training.precision.cpu_has_bf16", lambda: False)
    trainer = Trainer(config_from_dict(tiny_config(train={"steps": 3, "precision": "auto"})), out_dir=tmp_path / "run")
    result = trainer.fit()
    assert trainer.autocast_dtype is None and result.precision == "fp32"
    assert json.loads((tmp_path / "run" / "final_metrics.json").read_text())["precision"] == "fp32"
    assert (tmp_path / "run" / "config.yaml").read_text().startswith("# precision used: fp32 (train.precision: auto")
    assert ckpt.read_meta(ckpt.latest_checkpoint(tmp_path / "run"))["precision"] == "fp32"


@pytest.mark.parametrize(("precision", "expected"), [
    ("fp32", torch.float32),
    pytest.param("auto", torch.bfloat16 if CPU_BF16 else torch.float32),
    pytest.param("bf16", torch.bfloat16, marks=pytest.mark.skipif(not CPU_BF16, reason="this CPU has no bf16")),
])
def test_forward_runs_in_the_precision_asked_and_the_loss_in_fp32(precision, expected):
    seen: set[torch.dtype] = set()
    trainer = Trainer(config_from_dict(tiny_config(train={"steps": 30, "lr": 0.05, "precision": precision})))
    first_linear = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Linear))
    first_linear.register_forward_hook(lambda module, inputs, output: seen.add(output.dtype))
    result = trainer.fit()
    assert seen == {expected}
    assert all(math.isfinite(h["loss"]) for h in result.history)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


# --- determinism ----------------------------------------------------------------------------------------


def test_same_config_and_seed_give_identical_metrics():
    sections = {"model": {"hidden_sizes": [8, 8], "dropout": 0.2}, "train": {"steps": 25, "eval_every": 10}}
    _, first = fit(**sections)
    _, second = fit(**sections)
    assert without_timing(first.history) == without_timing(second.history)
    assert first.evals == second.evals and first.final == second.final
    assert torch.equal(parameters(first.model), parameters(second.model))
    _, other_seed = fit(seed=1, **sections)
    assert without_timing(other_seed.history) != without_timing(first.history)


def test_train_entry_point_builds_task_and_model():
    result = train(config_from_dict(tiny_config(train={"steps": 300})))
    assert result.steps == 300 and result.parameters == 2 * 4 + 4 + 4 * 2 + 2
    assert result.final["val"]["accuracy"] == 1.0  # a 2-4-2 tanh MLP solves XOR with this seed
