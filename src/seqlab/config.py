"""Typed run configurations: YAML in, validated pydantic objects out, with errors a person can act on.

A run config has four parts::

    seed: 0
    task:  {name: xor, ...}          # which data; fields checked by the task's own spec class
    model: {name: mlp, ...}          # which model; fields checked by the model's own spec class
    train: {steps: 500, lr: 0.1...}  # the one trainer's settings (TrainConfig below)

`task` and `model` are validated in a second pass against the spec class that the named task or
model registered (see `seqlab.registry`), so each family owns its fields while errors still carry
the full key path (``model.hidden_size``).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError

from seqlab.errors import UserError


class ConfigError(UserError):
    """A configuration problem, phrased for the person who wrote the config."""


class Spec(BaseModel):
    """Base of every task and model spec: a `name` plus that family's own fields, no unknown keys."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str


class EarlyStopping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: str = "loss"
    mode: Literal["min", "max"] = "min"
    patience: int = Field(5, ge=1, description="evaluations without improvement before stopping")
    min_delta: float = Field(0.0, ge=0.0)


class CheckpointConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    every: int = Field(0, ge=0, description="steps between checkpoints; 0 = only at the end")
    keep_last: int = Field(2, ge=1)
    keep_best: bool = True


class TBPTTConfig(BaseModel):
    """Truncated backpropagation through time (Williams & Peng 1990; seed 004)."""

    model_config = ConfigDict(extra="forbid")

    k1: int = Field(..., ge=1, description="forward steps between parameter updates")
    k2: int = Field(..., ge=1, description="steps the gradient flows back")


class TrainConfig(BaseModel):
    """Settings of the one trainer shared by every model and task."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(1000, ge=1, description="optimiser updates")
    batch_size: int = Field(32, ge=1, description="global batch (all processes, all accumulation steps)")
    batch_tokens: int | None = Field(None, ge=1, description="corpus tasks: target tokens per batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per update (same global batch)")
    optimizer: Literal["adamw", "sgd", "adam"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["constant", "cosine", "inverse_sqrt"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    grad_clip: float | None = Field(None, gt=0, description="clip the global gradient norm to this")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    eval_every: int = Field(0, ge=0, description="steps between evaluations; 0 = only at the end")
    eval_batches: int | None = Field(None, ge=1, description="cap on validation batches per evaluation")
    early_stopping: EarlyStopping | None = None
    checkpoint: CheckpointConfig = CheckpointConfig()
    tbptt: TBPTTConfig | None = None
    log_every: int = Field(10, ge=1)
    time_budget_s: float | None = Field(None, gt=0, description="stop after this much training time")
    progress: bool = True
    tensorboard: bool = True
    device: str = "cpu"
    threads: int | None = Field(None, ge=1, description="torch intra-op threads; default: torch's choice")


class RunConfig(BaseModel):
    """A whole training run."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    seed: int = 0
    out_dir: str = "runs/default"
    task: SerializeAsAny[Spec]
    model: SerializeAsAny[Spec]
    train: TrainConfig = TrainConfig()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    if close:
        return f" Did you mean '{close[0]}'?"
    return f" Allowed keys: {', '.join(sorted(options))}." if options else ""


def _format_errors(error: ValidationError, model_cls: type[BaseModel], prefix: str) -> str:
    lines = []
    for err in error.errors():
        loc = [str(part) for part in err["loc"]]
        path = ".".join([prefix, *loc] if prefix else loc)
        if err["type"] == "extra_forbidden":
            parent = model_cls
            for part in loc[:-1]:
                field = parent.model_fields.get(part) if isinstance(parent, type) else None
                annotation = getattr(field, "annotation", None)
                parent = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
                if parent is None:
                    break
            options = list(parent.model_fields) if parent is not None else []
            lines.append(f"unknown key '{path}'.{_did_you_mean(loc[-1], options)}")
        else:
            lines.append(f"'{path}' = {err.get('input')!r}: {err['msg']}.")
    return "\n".join(lines)


def validate_spec(raw: Any, kind: str, registry: dict[str, type[Spec]]) -> Spec:
    """Validate one `task` or `model` mapping against the spec class its `name` registered."""
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError(f"'{kind}' must be a mapping with a 'name' key; one of: {', '.join(sorted(registry))}.")
    name = raw["name"]
    if name not in registry:
        raise ConfigError(f"'{kind}.name' = {name!r} is not a known {kind}.{_did_you_mean(str(name), list(registry))}")
    spec_cls = registry[name]
    try:
        return spec_cls.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, spec_cls, kind)) from None


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Validate a plain mapping into a RunConfig (task and model checked against their registries)."""
    from seqlab.registry import MODELS, TASKS

    if not isinstance(data, dict):
        raise ConfigError("a run config must be a mapping with 'task', 'model' and optionally 'train', 'seed'.")
    missing = [key for key in ("task", "model") if key not in data]
    if missing:
        raise ConfigError(f"the config has no {' or '.join(repr(m) for m in missing)} section.")
    data = dict(data)
    task = validate_spec(data.pop("task"), "task", TASKS.specs())
    model = validate_spec(data.pop("model"), "model", MODELS.specs())
    try:
        return RunConfig.model_validate({**data, "task": task, "model": model})
    except ValidationError as err:
        raise ConfigError(_format_errors(err, RunConfig, "")) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``key.path=value``; the value is read as YAML (numbers, booleans, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.path=value, for example train.lr=0.001.")
    key, value = text.split("=", 1)
    if not key:
        raise ConfigError(f"--set {text!r}: the key path is empty.")
    return key.split("."), yaml.safe_load(value)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `data` with each ``key.path=value`` override set (sections created as needed)."""
    import copy

    data = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: '{part}' holds {child!r}, not a section.")
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a clear error for a missing file or a YAML syntax error."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a YAML mapping at the top level.")
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML run config, apply ``--set`` overrides, and validate it."""
    return config_from_dict(apply_overrides(read_yaml(path), overrides or []))
