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
import re
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, model_validator

from seqlab.errors import ConfigError
from seqlab.registry import MODELS, TASKS, Spec


class EarlyStopping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: Literal["loss", "accuracy"] = Field("loss", description="accuracy is measured on classify and token tasks")
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
    batch_tokens: int | None = Field(None, ge=1, description="corpus tasks (translation): batch by token count, at "
                                     "most this many padded tokens per side, instead of batch_size sentences")
    grad_accum: int = Field(1, ge=1, description="micro-batches per update (same global batch)")
    optimizer: Literal["adamw", "sgd", "adam"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["constant", "cosine", "inverse_sqrt"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    schedule_clock: Literal["steps", "time"] = Field(
        "steps", description="what the cosine schedule's progress counts: steps of train.steps, or training seconds "
        "of train.time_budget_s (a budgeted run then anneals to its end on any CPU, fast or slow)")
    grad_clip: float | None = Field(None, gt=0, description="clip the global gradient norm to this")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    eval_every: int = Field(0, ge=0, description="steps between evaluations; 0 = only at the end")
    eval_batches: int | None = Field(None, ge=1, description="cap on validation batches per evaluation")
    early_stopping: EarlyStopping | None = None
    checkpoint: CheckpointConfig = CheckpointConfig()
    tbptt: TBPTTConfig | None = None
    log_every: int = Field(1, ge=1, description="steps between train records (loss, lr, pre-clip grad_norm)")
    time_budget_s: float | None = Field(None, gt=0, description="stop after this much training time")
    progress: bool = True
    tensorboard: bool = True
    device: str = "cpu"
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "fp32", description="fp32 (the default: exact, the same on every machine): no autocast; auto: bf16 autocast "
        "wherever the device has bf16 hardware (CUDA GPUs that support it, CPUs with AVX-512 BF16 or AMX), fp32 "
        "elsewhere; bf16: autocast, an error without bf16 hardware",
    )
    threads: int | None = Field(None, ge=1, description="torch intra-op threads; default: torch's choice")
    init_from: str | None = Field(None, description="start from another run's weights (pre-train, then fine-tune): "
                                  "a run or checkpoint directory; tensors matching by name and shape are copied")

    @model_validator(mode="after")
    def _time_clock_needs_a_budget(self) -> "TrainConfig":
        if self.schedule_clock == "time" and (self.time_budget_s is None or self.schedule != "cosine"):
            raise ValueError("train.schedule_clock: time anneals a cosine schedule over train.time_budget_s: set "
                             "train.schedule to cosine and train.time_budget_s, or use schedule_clock: steps")
        return self

    @model_validator(mode="after")
    def _tbptt_without_accumulation(self) -> "TrainConfig":
        if self.tbptt is not None and self.grad_accum != 1:
            raise ValueError("train.tbptt runs without gradient accumulation: set train.grad_accum to 1")
        return self


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


def _did_you_mean(word: str, options: list[str], parent: str) -> str:
    """' Did you mean 'a.b'?' for the closest allowed key, else the list of allowed keys."""
    prefix = f"{parent}." if parent else ""
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f" Did you mean '{prefix}{close[0]}'?"
    return f" Allowed keys{' in ' + repr(parent) if parent else ''}: {', '.join(sorted(options))}." if options else ""


def _members(annotation: Any) -> list[Any]:
    """The types an annotation admits: `A | B | None` → [A, B] (None dropped)."""
    if get_origin(annotation) in (Union, UnionType):
        return [arg for arg in get_args(annotation) if arg is not type(None)]
    return [annotation]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _element_type(annotation: Any, part: int | str) -> Any:
    """The type of one item of a list, tuple or dict annotation (None when unknown)."""
    for member in _members(annotation):
        origin, args = get_origin(member), get_args(member)
        if origin in (list, set, frozenset) and args:
            return args[0]
        if origin is tuple and args:
            if len(args) == 2 and args[1] is Ellipsis:
                return args[0]
            return args[part] if isinstance(part, int) and part < len(args) else None
        if origin is dict and len(args) == 2:
            return args[1]
    return None


def _locate(loc: tuple[int | str, ...], root: type[BaseModel], prefix: str) -> tuple[str, str, type[BaseModel] | None]:
    """Turn a pydantic error location into (key path, parent path, model holding the last key).

    List items print as ``hidden_sizes[1]``; the branch tags pydantic adds inside unions are dropped.
    """
    path, parent_path = prefix, prefix
    current: Any = root
    holder: type[BaseModel] | None = root
    for part in loc:
        model = _model_of(current)
        parent_path, holder = path, model
        if isinstance(part, int) or (model is None and _element_type(current, part) is not None):
            path += f"[{part}]"
            current = _element_type(current, part)
        elif model is not None:
            path = f"{path}.{part}" if path else str(part)
            field = model.model_fields.get(str(part))
            current = field.annotation if field is not None else None
        elif len(_members(current)) > 1:  # a union branch tag such as 'int' or 'list[float]'
            continue
        else:
            path = f"{path}.{part}" if path else str(part)
            current = None
    return path, parent_path, holder


def _format_errors(error: ValidationError, model_cls: type[BaseModel], prefix: str) -> str:
    """One line per bad key: its full path, the value given, and what is allowed (or the closest known key)."""
    problems: dict[str, list[str]] = {}
    values: dict[str, str] = {}
    hints: dict[str, str] = {}
    for err in error.errors():
        path, parent, holder = _locate(tuple(err["loc"]), model_cls, prefix)
        if err["type"] == "extra_forbidden":
            key = path.rsplit(".", 1)[-1]
            options = list(holder.model_fields) if holder is not None else []
            problems.setdefault(path, []).append(f"unknown key '{path}'.{_did_you_mean(key, options, parent)}")
        elif err["type"] == "missing":
            problems.setdefault(path, []).append(f"'{path}' is required but missing.")
        elif err["type"] == "value_error" and isinstance(err.get("input"), dict):  # a check across keys of a section
            problems.setdefault(path, []).append(str(err["msg"]).removeprefix("Value error, ") + ".")
        else:
            values[path] = repr(err.get("input"))
            problems.setdefault(path, []).append(err["msg"])
            if err["type"] == "literal_error":  # one of fixed words: name the closest
                allowed = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
                close = difflib.get_close_matches(str(err.get("input")), allowed, n=1)
                hints[path] = f" Did you mean {close[0]!r}?" if close else ""
    lines = []
    for path, messages in problems.items():
        if path in values:
            lines.append(f"'{path}' = {values[path]} is not allowed: {'; or '.join(dict.fromkeys(messages))}."
                         + hints.get(path, ""))
        else:
            lines.extend(messages)
    return "\n".join(lines)


def validate_spec(raw: Any, kind: str, registry: dict[str, type[Spec]]) -> Spec:
    """Validate one `task` or `model` mapping against the spec class its `name` registered."""
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError(f"'{kind}' must be a mapping with a 'name' key; one of: {', '.join(sorted(registry))}.")
    name = raw["name"]
    if name not in registry:
        close = difflib.get_close_matches(str(name), list(registry), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else f" Known {kind}s: {', '.join(sorted(registry))}."
        raise ConfigError(f"'{kind}.name' = {name!r} is not a known {kind}.{hint}")
    spec_cls = registry[name]
    try:
        return spec_cls.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, spec_cls, kind)) from None


def upgrade_config(data: dict[str, Any]) -> dict[str, Any]:
    """Read configs saved by earlier versions: `task.batch_tokens` (translation) became `train.batch_tokens`."""
    task = data.get("task")
    if isinstance(task, dict) and task.get("name") == "translation" and "batch_tokens" in task:
        task = dict(task)
        batch_tokens = task.pop("batch_tokens")
        train = dict(data.get("train") or {})
        if batch_tokens is not None and train.get("batch_tokens") is None:
            train["batch_tokens"] = batch_tokens
        data = {**data, "task": task, "train": train}
    return data


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Validate a plain mapping into a RunConfig (task and model checked against their registries)."""
    import seqlab.data  # noqa: F401  (importing the families fills TASKS and MODELS; the families sit
    import seqlab.models  # noqa: F401  above this module, so they are imported when a config is first read)

    if not isinstance(data, dict):
        raise ConfigError("a run config must be a mapping with 'task', 'model' and optionally 'train', 'seed'.")
    missing = [key for key in ("task", "model") if key not in data]
    if missing:
        raise ConfigError(f"the config has no {' or '.join(repr(m) for m in missing)} section.")
    data = upgrade_config(dict(data))
    problems: list[str] = []
    specs: dict[str, Spec] = {}
    for kind, registry in (("task", TASKS.specs()), ("model", MODELS.specs())):
        try:
            specs[kind] = validate_spec(data.pop(kind), kind, registry)
        except ConfigError as err:
            problems.append(str(err))
            specs[kind] = Spec(name=kind)  # a stand-in, so the rest of the config is still checked
    try:
        config = RunConfig.model_validate({**data, **specs})
    except ValidationError as err:
        problems.append(_format_errors(err, RunConfig, ""))
    if problems:
        raise ConfigError("\n".join(problems))
    return config


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``key.path=value``; the value is read as YAML (numbers, booleans, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.path=value, for example train.lr=0.001.")
    key, value = text.split("=", 1)
    if not key:
        raise ConfigError(f"--set {text!r}: the key path is empty.")
    try:
        return key.split("."), yaml.safe_load(value)
    except yaml.YAMLError as err:
        problem = str(getattr(err, "problem", None) or err).strip()
        raise ConfigError(
            f"--set {text!r}: the value {value!r} is not valid YAML ({problem}). Values are read as YAML: close "
            f"brackets in lists ([1, 2]), and quote text holding {{}}, [], ':' or '#', e.g. --set '{key}=\"{value}\"'."
        ) from None


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
    """Load a YAML run config, apply ``--set`` overrides, and validate it (errors name the file)."""
    data = apply_overrides(read_yaml(path), overrides or [])
    try:
        return config_from_dict(data)
    except ConfigError as err:
        problems = str(err).splitlines()
        if len(problems) == 1:
            raise ConfigError(f"invalid config {str(path)!r}: {problems[0]}") from None
        raise ConfigError(f"invalid config {str(path)!r}:\n" + "\n".join(f"  - {line}" for line in problems)) from None
