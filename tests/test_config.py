"""YAML configs → typed objects, and the errors a person gets for a bad one."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO, tiny_config
from seqlab.config import (
    CheckpointConfig,
    ConfigError,
    EarlyStopping,
    RunConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    parse_override,
)
from seqlab.data.logic import LogicSpec
from seqlab.models.feedforward import MLPSpec


def error_of(data: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data)
    return str(caught.value)


def test_yaml_becomes_typed_objects():
    config = load_config(REPO / "configs" / "tasks" / "xor_mlp.yaml")
    assert isinstance(config, RunConfig)
    assert isinstance(config.task, LogicSpec) and config.task.gate == "xor"
    assert isinstance(config.model, MLPSpec) and config.model.hidden_sizes == [4]
    assert isinstance(config.train, TrainConfig) and isinstance(config.train.checkpoint, CheckpointConfig)
    assert config.train.optimizer == "adamw" and config.train.checkpoint.every == 100
    assert config.to_dict()["model"] == {"name": "mlp", "hidden_sizes": [4], "activation": "tanh", "dropout": 0.0}


def test_round_trip_through_dict():
    config = config_from_dict(tiny_config(train={"early_stopping": {"metric": "accuracy", "mode": "max"}}))
    assert isinstance(config.train.early_stopping, EarlyStopping)
    assert config_from_dict(config.to_dict()) == config


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_is_valid(path: Path):
    load_config(path)


@pytest.mark.parametrize(
    "sections, expected",
    [
        ({"train": {"lr": -1}}, ["'train.lr'", "-1", "greater than 0"]),
        ({"train": {"optimizer": "adamx"}}, ["'train.optimizer'", "'adamx'", "'adamw', 'sgd' or 'adam'"]),
        ({"train": {"schedule": "linear"}}, ["'train.schedule'", "'constant', 'cosine' or 'inverse_sqrt'"]),
        ({"train": {"steps": "many"}}, ["'train.steps'", "'many'", "valid integer"]),
        ({"train": {"betas": [0.9, "x"]}}, ["'train.betas[1]'", "'x'", "valid number"]),
        ({"train": {"early_stopping": {"mode": "up"}}}, ["'train.early_stopping.mode'", "'up'", "'min' or 'max'"]),
        ({"train": {"checkpoint": {"keep_last": 0}}}, ["'train.checkpoint.keep_last'", "0", "greater than or equal to 1"]),
        ({"model": {"hidden_sizes": [4, "wide"]}}, ["'model.hidden_sizes[1]'", "'wide'", "valid integer"]),
        ({"model": {"activation": "swish"}}, ["'model.activation'", "'swish'", "'sigmoid', 'tanh' or 'relu'"]),
        ({"task": {"gate": "xnor"}}, ["'task.gate'", "'xnor'", "'and', 'or', 'nand' or 'xor'"]),
        ({"train": {"tbptt": {"k1": 4}}}, ["'train.tbptt.k2' is required"]),
        ({"train": [1, 2]}, ["'train'", "[1, 2]", "valid dictionary"]),
    ],
)
def test_bad_value_names_key_value_and_what_is_allowed(sections, expected):
    message = error_of(tiny_config(**sections))
    for fragment in expected:
        assert fragment in message, message
    assert len(message.splitlines()) == 1, message


@pytest.mark.parametrize(
    "sections, unknown, suggestion",
    [
        ({"sed": 3}, "sed", "seed"),
        ({"train": {"early_stoping": {"patience": 2}}}, "train.early_stoping", "train.early_stopping"),
        ({"train": {"early_stopping": {"patiense": 2}}}, "train.early_stopping.patiense", "train.early_stopping.patience"),
        ({"train": {"checkpoint": {"keep_lats": 2}}}, "train.checkpoint.keep_lats", "train.checkpoint.keep_last"),
        ({"model": {"hiden_sizes": [3]}}, "model.hiden_sizes", "model.hidden_sizes"),
        ({"task": {"gaet": "and"}}, "task.gaet", "task.gate"),
    ],
)
def test_unknown_keys_get_did_you_mean(sections, unknown, suggestion):
    message = error_of(tiny_config(**sections))
    assert f"unknown key '{unknown}'" in message
    assert f"Did you mean '{suggestion}'?" in message


def test_unknown_key_without_close_match_lists_allowed_keys():
    message = error_of(tiny_config(train={"early_stopping": {"zzz": 1}}))
    assert "unknown key 'train.early_stopping.zzz'" in message
    assert "Allowed keys in 'train.early_stopping': metric, min_delta, mode, patience." in message


def test_unknown_model_and_task_names():
    assert "'model.name' = 'mpl' is not a known model. Did you mean 'mlp'?" in error_of(tiny_config(model={"name": "mpl"}))
    message = error_of(tiny_config(task={"name": "qqqqqq"}))
    assert "'task.name' = 'qqqqqq' is not a known task. Known tasks:" in message and "logic" in message


def test_every_problem_is_reported_once_with_its_own_path():
    message = error_of(tiny_config(task={"gaet": "and"}, train={"lr": "fast", "early_stopping": {"patiense": 1}}))
    lines = message.splitlines()
    assert len(lines) == 3, message
    assert any("task.gaet" in line for line in lines)
    assert any("'train.lr' = 'fast'" in line for line in lines)
    assert any("train.early_stopping.patiense" in line for line in lines)
    assert "'task' is required" not in message  # a bad task section is not also reported as missing


def test_missing_sections_and_non_mappings():
    config = tiny_config()
    del config["model"]
    assert "no 'model' section" in error_of(config)
    assert "'task' must be a mapping with a 'name' key" in error_of(tiny_config(task=[1]))
    with pytest.raises(ConfigError, match="must be a mapping"):
        config_from_dict([1, 2])  # type: ignore[arg-type]


def test_load_config_names_the_file(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("task: {name: logic}\nmodel: {name: mlp}\ntrain: {lr: 0}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value) and "'train.lr' = 0" in str(caught.value)


def test_file_problems_are_config_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("task: {name: logic\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(listing)


def test_overrides_set_nested_keys_with_yaml_values():
    data = apply_overrides(
        tiny_config(),
        ["train.lr=0.5", "model.hidden_sizes=[8, 8]", "train.early_stopping.patience=3", "train.grad_clip=null",
         "out_dir=runs/x", "train.progress=true"],
    )
    assert data["train"]["lr"] == 0.5
    assert data["model"]["hidden_sizes"] == [8, 8]
    assert data["train"]["early_stopping"] == {"patience": 3}
    assert data["train"]["grad_clip"] is None and data["train"]["progress"] is True
    assert data["out_dir"] == "runs/x"
    config = config_from_dict(data)
    assert config.train.early_stopping.patience == 3 and config.model.hidden_sizes == [8, 8]
    assert tiny_config()["train"]["lr"] == 0.05  # the input is not modified


def test_override_errors():
    with pytest.raises(ConfigError, match="expected key.path=value"):
        parse_override("train.lr")
    with pytest.raises(ConfigError, match="key path is empty"):
        parse_override("=3")
    with pytest.raises(ConfigError, match="'lr' holds 0.05, not a section"):
        apply_overrides(tiny_config(), ["train.lr.value=3"])
    with pytest.raises(ConfigError, match="Did you mean 'train.steps'"):
        config_from_dict(apply_overrides(tiny_config(), ["train.stpes=3"]))
