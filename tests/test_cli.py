"""The `seqlab` command line: `train` with `--set` overrides and `--out`, and one-line errors for bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO, seqlab_command, subprocess_env, tiny_config, write_yaml
from seqlab import cli


def test_train_applies_set_overrides(tmp_path: Path, capsys):
    config = write_yaml(tmp_path / "run.yaml", tiny_config())
    run = tmp_path / "run"
    code = cli.main(["train", str(config), "--out", str(run), "--set", "train.steps=7", "--set",
                     "model.hidden_sizes=[3, 2]", "--set", "seed=5", "--set", "train.early_stopping.patience=4"])
    assert code == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["steps"] == 7 and saved["model"]["hidden_sizes"] == [3, 2] and saved["seed"] == 5
    assert saved["train"]["early_stopping"]["patience"] == 4
    assert saved["out_dir"] == str(run)
    assert json.loads((run / "final_metrics.json").read_text())["step"] == 7
    out = capsys.readouterr().out
    assert "val: loss" in out and "test: loss" in out and "7 steps in" in out


def test_out_dir_comes_from_the_config_relative_to_the_working_directory(tmp_path: Path, monkeypatch):
    config = write_yaml(tmp_path / "run.yaml", tiny_config(out_dir="runs/tiny", train={"steps": 3}))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", str(config)]) == 0
    assert (tmp_path / "runs" / "tiny" / "final_metrics.json").is_file()


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("train.lr=-3", ["'train.lr' = -3 is not allowed", "greater than 0"]),
        ("train.optimiser=sgd", ["unknown key 'train.optimiser'", "Did you mean 'train.optimizer'?"]),
        ("train.early_stopping.patiense=2", ["Did you mean 'train.early_stopping.patience'?"]),
        ("model.activation=gelu", ["'model.activation' = 'gelu'", "'sigmoid', 'tanh' or 'relu'"]),
        ("train.lr", ["expected key.path=value"]),
    ],
)
def test_bad_overrides_give_one_line_errors(tmp_path: Path, capsys, override: str, fragments: list[str]):
    config = write_yaml(tmp_path / "run.yaml", tiny_config())
    assert cli.main(["train", str(config), "--out", str(tmp_path / "run"), "--set", override]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("seqlab train: error:")
    for fragment in fragments:
        assert fragment in lines[0]
    assert not (tmp_path / "run").exists()  # nothing was started


def test_several_problems_are_listed_one_per_line(tmp_path: Path, capsys):
    config = write_yaml(tmp_path / "run.yaml", tiny_config(train={"lr": 0, "stpes": 3}))
    assert cli.main(["train", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"seqlab train: error: invalid config {str(config)!r}:"
    assert sorted(line.split("'")[1] for line in err[1:]) == ["train.lr", "train.stpes"]


def test_missing_config_file(tmp_path: Path, capsys):
    assert cli.main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_installed_command_reports_errors_without_a_traceback(tmp_path: Path):
    config = write_yaml(tmp_path / "run.yaml", tiny_config(model={"name": "mpl"}))
    installed = shutil.which("seqlab")
    command = [installed] if installed else seqlab_command()
    child = subprocess.run([*command, "train", str(config)], capture_output=True, text=True, timeout=120,
                           env=subprocess_env(), cwd=tmp_path)
    assert child.returncode == 2
    assert "Traceback" not in child.stderr
    assert child.stderr.strip() == (f"seqlab train: error: invalid config {str(config)!r}: "
                                    "'model.name' = 'mpl' is not a known model. Did you mean 'mlp'?")


@pytest.mark.parametrize("name, steps", [("xor_mlp", 300), ("blobs_mlp", 150)])
def test_shipped_feedforward_configs_train(tmp_path: Path, name: str, steps: int):
    code = cli.main(["train", str(REPO / "configs" / "tasks" / f"{name}.yaml"), "--out", str(tmp_path / name),
                     "--set", "train.progress=false", "--set", "train.threads=1"])
    assert code == 0
    final = json.loads((tmp_path / name / "final_metrics.json").read_text())
    assert final["step"] == steps  # blobs: early stopping once validation accuracy stops improving
    assert final["val"]["accuracy"] == 1.0 and final["test"]["accuracy"] == 1.0
