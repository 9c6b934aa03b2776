"""`--resume` continues exactly where a run stopped: weights, optimiser, schedule, RNG, early stopping, logs."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import run_seqlab, seqlab_command, subprocess_env, tiny_config, write_yaml
from seqlab.config import config_from_dict
from seqlab.training import Callback, Trainer
from seqlab.training import checkpoint as ckpt

# dropout (draws from the torch RNG), warm-up + cosine (scheduler state), AdamW (optimiser moments)
SECTIONS = {
    "model": {"hidden_sizes": [16, 16], "dropout": 0.2},
    "train": {"steps": 30, "lr": 0.02, "schedule": "cosine", "warmup_steps": 5, "eval_every": 4,
              "log_every": 1, "checkpoint": {"every": 10, "keep_last": 2}},
}


class Interrupted(Exception):
    pass


class StopAt(Callback):
    """Simulates a crash right after optimiser step `step` (before any checkpoint of that step)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, step, logs):
        if step == self.step:
            raise Interrupted


def records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "targets_per_s"} for line in lines]


def parameters(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def interrupted_then_resumed(run: Path, crash_at: int, **sections):
    config = config_from_dict(tiny_config(**(sections or SECTIONS)))
    with pytest.raises(Interrupted):
        Trainer(config, out_dir=run, callbacks=(StopAt(crash_at),)).fit()
    return Trainer(config, out_dir=run).fit(resume=True)


def uninterrupted(run: Path, **sections):
    return Trainer(config_from_dict(tiny_config(**(sections or SECTIONS))), out_dir=run).fit()


def test_resume_is_exact(tmp_path: Path):
    reference = uninterrupted(tmp_path / "reference")
    resumed = interrupted_then_resumed(tmp_path / "resumed", crash_at=17)
    assert resumed.final == reference.final
    assert torch.equal(parameters(resumed.model), parameters(reference.model))
    assert records(tmp_path / "resumed") == records(tmp_path / "reference")
    assert [h["step"] for h in resumed.history] == list(range(11, 31))  # continued from the step-10 checkpoint
    assert [h["lr"] for h in resumed.history] == [h["lr"] for h in reference.history[10:]]


def test_resume_truncates_the_log_to_the_checkpoint(tmp_path: Path):
    run = tmp_path / "run"
    config = config_from_dict(tiny_config(**SECTIONS))
    with pytest.raises(Interrupted):
        Trainer(config, out_dir=run, callbacks=(StopAt(13),)).fit()
    assert max(r["step"] for r in records(run)) == 12  # the crash came before step 13 was logged
    Trainer(config, out_dir=run).fit(resume=True)
    steps = [r["step"] for r in records(run) if r["split"] == "train"]
    assert steps == list(range(1, 31))  # steps 11-13 written once, not twice


def test_resume_restores_early_stopping_state(tmp_path: Path):
    # only the first evaluation can improve (min_delta 2 on accuracy): with evaluations every 2 steps and
    # patience 3 the run stops at step 8; a resume that forgot `best`/`bad_evals` would run on to step 12
    sections = {"train": {"steps": 50, "eval_every": 2, "checkpoint": {"every": 4},
                          "early_stopping": {"metric": "accuracy", "mode": "max", "patience": 3, "min_delta": 2.0}}}
    reference = uninterrupted(tmp_path / "reference", **sections)
    assert reference.stopped_early and reference.steps == 8
    resumed = interrupted_then_resumed(tmp_path / "resumed", crash_at=6, **sections)
    assert resumed.stopped_early and resumed.steps == 8
    assert resumed.final == reference.final


def test_resuming_a_finished_run_trains_no_further(tmp_path: Path):
    run = tmp_path / "run"
    first = uninterrupted(run)
    before = records(run)
    again = Trainer(config_from_dict(tiny_config(**SECTIONS)), out_dir=run).fit(resume=True)
    assert again.history == [] and again.steps == 30 and again.final == first.final
    assert records(run) == before


def test_resuming_an_early_stopped_run_stays_stopped(tmp_path: Path):
    sections = {"train": {"steps": 50, "eval_every": 2, "checkpoint": {"every": 4},
                          "early_stopping": {"metric": "accuracy", "mode": "max", "patience": 1, "min_delta": 2.0}}}
    run = tmp_path / "run"
    first = uninterrupted(run, **sections)
    again = Trainer(config_from_dict(tiny_config(**sections)), out_dir=run).fit(resume=True)
    assert first.steps == again.steps == 4 and again.stopped_early and again.history == []


def test_resume_without_a_checkpoint_starts_afresh(tmp_path: Path):
    run = tmp_path / "run"
    config = config_from_dict(tiny_config(**SECTIONS))
    with pytest.raises(Interrupted):
        Trainer(config, out_dir=run, callbacks=(StopAt(5),)).fit()  # before the first checkpoint (step 10)
    resumed = Trainer(config, out_dir=run).fit(resume=True)
    reference = uninterrupted(tmp_path / "reference")
    assert resumed.final == reference.final and records(run) == records(tmp_path / "reference")


def test_resume_may_extend_the_run(tmp_path: Path):
    run = tmp_path / "run"
    uninterrupted(run)
    longer = tiny_config(**SECTIONS)
    longer["train"]["steps"] = 40
    result = Trainer(config_from_dict(longer), out_dir=run).fit(resume=True)
    assert [h["step"] for h in result.history] == list(range(31, 41))


# --- a real process, a real SIGKILL ------------------------------------------------------------------------

KILL_CONFIG = {
    "seed": 3,
    "task": {"name": "logic", "gate": "xor"},
    "model": {"name": "mlp", "hidden_sizes": [128, 128], "activation": "tanh", "dropout": 0.1},
    "train": {"steps": 400, "batch_size": 128, "lr": 0.003, "schedule": "cosine", "warmup_steps": 20,
              "grad_clip": 1.0, "eval_every": 100, "log_every": 10, "checkpoint": {"every": 50, "keep_last": 2},
              "progress": False, "tensorboard": False, "threads": 1},
}


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path: Path):
    config = write_yaml(tmp_path / "kill.yaml", KILL_CONFIG)
    run = tmp_path / "killed"
    child = subprocess.Popen(
        seqlab_command("train", str(config), "--out", str(run)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=subprocess_env(),
    )
    try:
        deadline = time.monotonic() + 120
        while ckpt.latest_checkpoint(run) is None or ckpt.latest_checkpoint(run).name < "step_00000050":
            assert child.poll() is None, f"the run ended before it could be killed: {child.stderr.read()!r}"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        child.stderr.close()
    killed_at = ckpt.read_meta(ckpt.latest_checkpoint(run))["step"]
    assert 50 <= killed_at < 400 and not (run / "final_metrics.json").exists()

    resumed = run_seqlab("train", str(config), "--out", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    reference = Trainer(config_from_dict(KILL_CONFIG), out_dir=tmp_path / "reference").fit()
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["step"] == 400
    assert final["val"] == reference.final["val"] and final["test"] == reference.final["test"]
    assert records(run) == records(tmp_path / "reference")
