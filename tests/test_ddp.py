"""`torchrun --nproc_per_node=2 -m seqlab.cli train CONFIG` (gloo on CPU) matches one process with the same global batch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import subprocess_env, tiny_config, write_yaml
from seqlab.config import config_from_dict
from seqlab.training import Trainer
from seqlab.training import checkpoint as ckpt

SECTIONS = {
    "model": {"hidden_sizes": [8], "activation": "tanh"},
    "train": {"steps": 30, "batch_size": 16, "lr": 0.05, "grad_clip": 0.5, "eval_every": 10, "log_every": 5,
              "tensorboard": True, "checkpoint": {"every": 10, "keep_last": 2}},
}


def torchrun(*args: str, nproc: int = 2, timeout: float = 180) -> subprocess.CompletedProcess:
    env = subprocess_env()
    env["SEQLAB_BACKEND"] = "gloo"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "seqlab.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def parameters(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([value.flatten() for value in state.values()])


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_match_one_with_the_same_global_batch(tmp_path: Path):
    config = write_yaml(tmp_path / "ddp.yaml", tiny_config(**SECTIONS))
    run = tmp_path / "ddp"
    # two processes, each with half the global batch split again into two accumulation steps
    child = torchrun("train", str(config), "--out", str(run), "--set", "train.grad_accum=2")
    assert child.returncode == 0, child.stdout[-2000:] + child.stderr[-4000:]

    single = Trainer(config_from_dict(tiny_config(**SECTIONS)), out_dir=tmp_path / "single").fit()
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["step"] == 30
    for split in ("val", "test"):
        for metric, value in single.final[split].items():
            assert final[split][metric] == pytest.approx(value, rel=1e-5, abs=1e-7), (split, metric)

    latest = ckpt.latest_checkpoint(run)
    assert latest is not None and latest.name == "step_00000030"
    model = Trainer(config_from_dict(tiny_config(**SECTIONS))).model
    ckpt.load_weights(latest, model)
    torch.testing.assert_close(parameters(model.state_dict()), parameters(single.model.state_dict()),
                               rtol=1e-5, atol=1e-6)

    # only rank 0 writes: one record per logged step, one TensorBoard file, checkpoints every 10 steps
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train_records] == [5, 10, 15, 20, 25, 30]
    assert [r["targets"] for r in train_records] == [16.0] * 6  # the global batch, summed over processes
    expected = {h["step"]: h for h in single.history}
    for record in train_records:
        assert record["loss"] == pytest.approx(expected[record["step"]]["loss"], rel=1e-5)
        assert record["grad_norm"] == pytest.approx(expected[record["step"]]["grad_norm"], rel=1e-4)
    assert [r["step"] for r in records if r["split"] == "val"] == [10, 20, 30]
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step_00000020", "step_00000030"]
    assert not list((run / "checkpoints").glob(".tmp-*"))
    assert child.stdout.count("val: loss") == 1  # the summary is printed once, by rank 0
