"""Checkpoints: safetensors weights, JSON metadata and a weights-only torch file of training state.

Layout of one checkpoint directory::

    step_00000100/
        model.safetensors   weights (safetensors: no code is ever unpickled)
        meta.json           format, step, config, task state (vocabularies), metrics
        training.pt         optimiser, scheduler, RNG and early-stopping state (loaded with weights_only=True)

A checkpoint is written into a temporary directory and renamed into place, so a kill during a save
leaves the previous checkpoints untouched and loadable. `average_checkpoints` writes one more kind, weights
only: the element-wise mean of several checkpoints of one run (Vaswani et al. 2017, §6.1: the base model
averages its last 5 checkpoints).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_file, save_model
from torch import nn

from seqlab.config import ConfigError, upgrade_config
from seqlab.errors import UserError, warn

FORMAT = "seqlab-checkpoint-1"
WEIGHTS, META, TRAINING = "model.safetensors", "meta.json", "training.pt"


class CheckpointError(UserError):
    """A checkpoint that is missing, incomplete, corrupt or not a seqlab checkpoint."""


class NonFiniteCheckpoint(CheckpointError):
    """A checkpoint whose weights hold NaN or infinity (saved after the run diverged)."""


@dataclass
class Checkpoint:
    path: Path
    meta: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.meta["step"])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())


def save_checkpoint(
    directory: Path, weights: nn.Module | dict[str, torch.Tensor], meta: dict[str, Any],
    training_state: dict[str, Any] | None,
) -> Path:
    """Write a complete checkpoint to `directory` atomically (temporary directory, fsync, rename); `weights`
    is a model, or the tensors of a weights file as `read_weights` gives them."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".tmp-{directory.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    if isinstance(weights, nn.Module):
        save_model(weights, str(tmp / WEIGHTS))
    else:
        save_file(weights, str(tmp / WEIGHTS))
    _write_json(tmp / META, {"format": FORMAT, **meta})
    if training_state is not None:
        with open(tmp / TRAINING, "wb") as handle:
            torch.save(training_state, handle)
            handle.flush()
            os.fsync(handle.fileno())
    _fsync_dir(tmp)
    if directory.exists():
        old = directory.parent / f".old-{directory.name}-{os.getpid()}"
        os.rename(directory, old)
        os.rename(tmp, directory)
        shutil.rmtree(old)
    else:
        os.rename(tmp, directory)
    _fsync_dir(directory.parent)
    return directory


def read_meta(path: Path) -> dict[str, Any]:
    """Read and check a checkpoint's metadata, with a clear error for anything that is not one of ours."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint directory (expected {WEIGHTS} and {META} inside it).")
    meta_file = path / META
    if not meta_file.is_file() or not (path / WEIGHTS).is_file():
        raise CheckpointError(f"{path} is incomplete: it needs both {WEIGHTS} and {META}.")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{meta_file} is corrupt ({err}); use an earlier checkpoint.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a seqlab checkpoint (no '{FORMAT}' marker in {META}).")
    missing = [key for key in ("step", "config") if key not in meta]
    if missing or not isinstance(meta.get("config"), dict):
        raise CheckpointError(
            f"{meta_file} is damaged: it lacks {' and '.join(repr(k) for k in missing) or 'a valid config'}; "
            "use another checkpoint of the run."
        )
    return meta


def load_weights(path: Path, model: nn.Module) -> None:
    """Load safetensors weights into `model`; a corrupt or mismatched file gets a clear error."""
    file = Path(path) / WEIGHTS
    try:
        with safe_open(str(file), framework="pt") as handle:
            stored = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (SafetensorError, OSError, RuntimeError) as err:
        raise CheckpointError(f"{file} cannot be read as weights: {err}") from None
    wanted = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    wrong = [f"{key} {stored[key]} in the file, {wanted[key]} in the model"
             for key in sorted(stored.keys() & wanted.keys()) if stored[key] != wanted[key]]
    if wrong:
        raise CheckpointError(f"{path} does not match the model built from its config: shapes differ ({'; '.join(wrong[:3])}).")
    try:
        missing, unexpected = load_model(model, str(file), strict=False)
    except (SafetensorError, OSError, RuntimeError) as err:
        raise CheckpointError(f"{file} cannot be read as weights for this model: {err}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match the model built from its config: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}."
        )
    bad = non_finite_tensors(model)
    if bad:
        raise NonFiniteCheckpoint(
            f"{path} holds non-finite weights (NaN or inf in {', '.join(bad[:3])}): the run had diverged when "
            "it was saved. Use an earlier checkpoint of the run, or retrain with a lower train.lr or train.grad_clip."
        )


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint's weights file, by their names in the file."""
    file = Path(path) / WEIGHTS
    try:
        with safe_open(str(file), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, RuntimeError) as err:
        raise CheckpointError(f"{file} cannot be read as weights: {err}") from None


def average_checkpoints(paths: list[Path], out: Path) -> Path:
    """Write to `out` a weights-only checkpoint holding the element-wise mean of the checkpoints at `paths`
    (floating-point tensors averaged in float64; any other tensor must be equal in all of them). They must
    come from one run: the same task and model config, so the same vocabulary and the same tensors."""
    if len(paths) < 2:
        raise CheckpointError(f"averaging needs at least two checkpoints; got {len(paths)}.")
    out = Path(out)
    if out.exists() and (not (out / META).is_file() or (out / TRAINING).is_file()):
        what = "a checkpoint that can resume training" if (out / TRAINING).is_file() else "not a checkpoint"
        raise CheckpointError(f"{out} exists and is {what}; choose a new directory for the average.")
    metas = [read_meta(path) for path in paths]
    first = metas[0]
    for path, meta in zip(paths[1:], metas[1:]):
        for section in ("task", "model"):
            if meta["config"].get(section) != first["config"].get(section):
                raise CheckpointError(f"cannot average {paths[0]} with {path}: their '{section}' configs differ; "
                                      "average checkpoints of one run only.")
        if meta.get("task_state") != first.get("task_state"):
            raise CheckpointError(f"cannot average {paths[0]} with {path}: their vocabularies differ; "
                                  "average checkpoints of one run only.")
    first_weights = read_weights(paths[0])
    total = {key: value.double() if value.is_floating_point() else value for key, value in first_weights.items()}
    for path in paths[1:]:  # one checkpoint's weights in memory at a time
        weights = read_weights(path)
        if weights.keys() != total.keys() or any(weights[k].shape != total[k].shape for k in total):
            raise CheckpointError(f"cannot average {paths[0]} with {path}: they hold different tensors.")
        for key, value in weights.items():
            if value.is_floating_point():
                total[key] += value.double()
            elif not torch.equal(value, total[key]):
                raise CheckpointError(f"cannot average {paths[0]} with {path}: their {key} differ and cannot be averaged.")
    mean = {key: (value / len(paths)).to(first_weights[key].dtype) if value.is_floating_point() else value
            for key, value in total.items()}
    newest = max(metas, key=lambda meta: int(meta["step"]))
    meta = {**{key: value for key, value in newest.items() if key != "format"}, "metrics": {}}
    meta["averaged_steps"] = sorted(int(m["step"]) for m in metas)
    return save_checkpoint(out, mean, meta, None)


def average_last(run_dir: Path, count: int, out: Path | None = None) -> tuple[list[Path], Path]:
    """Average a run's newest `count` complete step checkpoints into `out` (default:
    RUN/checkpoints/average_last_N); returns the checkpoints averaged, oldest first, and the average's path.
    A clear error if the run holds fewer than `count`."""
    if count < 2:
        raise CheckpointError(f"an average needs at least two checkpoints; got a count of {count}.")
    found = list_checkpoints(run_dir)
    if len(found) < count:
        raise CheckpointError(
            f"averaging the last {count} checkpoints of {run_dir} needs {count} step checkpoints, and it holds "
            f"{len(found)} ({', '.join(p.name for p in found) or 'none'}); train with train.checkpoint.every set "
            f"and train.checkpoint.keep_last ≥ {count}.")
    paths = found[-count:]
    return paths, average_checkpoints(paths, out or Path(run_dir) / "checkpoints" / f"average_last_{count}")


def non_finite_tensors(model: nn.Module) -> list[str]:
    """Names of the model's floating-point parameters and buffers that hold a NaN or an infinity."""
    return [name for name, tensor in model.state_dict().items()
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]


def load_training_state(path: Path) -> dict[str, Any]:
    """Load optimiser/scheduler/RNG state with weights_only=True (never unpickles arbitrary objects)."""
    file = Path(path) / TRAINING
    if not file.is_file():
        raise CheckpointError(f"{path} has no {TRAINING}: it holds weights only and cannot resume training.")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        called = re.search(r"GLOBAL (\S+) was not an allowed global", str(err))
        what = (f"holds Python objects beyond tensors and plain containers (it asks to call {called.group(1)})"
                if called else "is corrupt or not a seqlab training state (not a weights-only torch file)")
        raise CheckpointError(
            f"{file} {what}. seqlab never unpickles arbitrary objects, since loading them could run any code, so it "
            "will not read this file. Resume from another checkpoint of the run, or start a new run."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{file} is corrupt or not a seqlab training state ({first_line}).") from None
    if not isinstance(state, dict) or not {"optimizer", "scheduler", "rng"} <= set(state):
        raise CheckpointError(f"{file} is not a seqlab training state (no optimizer/scheduler/RNG entries).")
    return state


def recover_interrupted_saves(run_dir: Path) -> None:
    """Tidy up after a save that was killed: drop half-written `.tmp-*` directories, and put back a
    checkpoint that was moved aside (`.old-*`) if the kill came before its replacement was renamed in."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return
    for tmp in folder.glob(".tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    for old in folder.glob(".old-*"):
        name = old.name[len(".old-"):].rsplit("-", 1)[0]
        if (folder / name).exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(old, folder / name)


def _incomplete(path: Path) -> str | None:
    """Why a checkpoint directory cannot be used ('no meta.json', ...), or None if it is complete."""
    absent = [name for name in (META, WEIGHTS) if not (path / name).is_file()]
    return f"it has no {' and no '.join(absent)}" if absent else None


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete step checkpoints of a run, oldest first (temporary and partial directories are skipped)."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step_*") if _incomplete(p) is None)


def latest_checkpoint(run_dir: Path, warn_skipped: bool = False) -> Path | None:
    """The newest complete step checkpoint; with `warn_skipped`, a warning names each newer one that is
    incomplete (and so skipped) and why."""
    found = list_checkpoints(run_dir)
    latest = found[-1] if found else None
    if warn_skipped:
        folder = Path(run_dir) / "checkpoints"
        for path in sorted(folder.glob("step_*")) if folder.is_dir() else []:
            reason = _incomplete(path)
            if reason is not None and (latest is None or path.name > latest.name):
                used = f"using {latest.name} instead" if latest is not None else "no complete checkpoint is left"
                warn(f"skipping {path}: {reason} (a damaged or partial checkpoint); {used}.")
    return latest


def prune_checkpoints(run_dir: Path, keep_last: int) -> None:
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old)


def resolve_checkpoint(path: str | Path) -> Checkpoint:
    """Accept a checkpoint directory or a run directory (its best checkpoint, else its latest)."""
    path = Path(path)
    if (path / META).is_file() or (path / WEIGHTS).is_file():
        return Checkpoint(path, read_meta(path))
    best = path / "checkpoints" / "best"
    if best.is_dir():
        reason = _incomplete(best)
        if reason is None:
            return Checkpoint(best, read_meta(best))
        warn(f"skipping {best}: {reason} (a damaged or partial checkpoint); falling back to the latest step.")
    latest = latest_checkpoint(path, warn_skipped=True)
    if latest is None:
        raise CheckpointError(f"no checkpoint found at {path}: pass a run directory or a checkpoint directory.")
    return Checkpoint(latest, read_meta(latest))


def resume_point(run_dir: Path, resume_from: str | None = None) -> Path:
    """The checkpoint a resumed run starts from: the latest complete one, or the one `resume_from` names
    (a step number, a ``step_…`` name, or a checkpoint directory)."""
    run_dir = Path(run_dir)
    if resume_from is None:
        path = latest_checkpoint(run_dir, warn_skipped=True)
    else:
        name = f"step_{int(resume_from):08d}" if resume_from.isdigit() else resume_from
        candidates = [Path(resume_from), run_dir / "checkpoints" / name]
        path = next((c for c in candidates if c.is_dir() and c.name.startswith("step_") and _incomplete(c) is None), None)
        if path is None:
            known = ", ".join(p.name for p in list_checkpoints(run_dir)) or "none"
            raise CheckpointError(f"--resume-from {resume_from}: no such complete step checkpoint in {run_dir} "
                                  f"(it holds: {known}).")
    if path is None:
        raise CheckpointError(f"{run_dir} holds no complete checkpoint to resume from; drop --resume to start anew.")
    return path


def earlier_checkpoints_hint(run_dir: Path, path: Path) -> str:
    """What to resume from instead of `path`: the newest earlier step checkpoint, if any is left."""
    earlier = [p.name for p in list_checkpoints(run_dir) if p.name < Path(path).name]
    if not earlier:
        return "No earlier checkpoint is left: start a new run (a lower train.lr, or train.grad_clip, may help)."
    step = int(earlier[-1].removeprefix("step_"))
    return f"Resume from an earlier one with --resume-from {step} (this run holds {', '.join(earlier)})."


def check_same_run(path: Path, saved: dict[str, Any], config: Any) -> None:
    """Refuse to resume a checkpoint whose task or model section differs from `config`'s."""
    saved = upgrade_config(saved)
    for section in ("task", "model"):
        if saved.get(section) != getattr(config, section).model_dump(mode="json"):
            raise ConfigError(
                f"cannot resume {path}: its '{section}' section differs from this config "
                f"(saved {saved.get(section)}); use the original config or a new out_dir."
            )


def init_from(source: str | Path, model: nn.Module, config: Any, task_state: dict[str, Any]) -> list[str]:
    """Start `model` from another run's weights (pre-train, then fine-tune): every tensor whose name and
    shape match is copied; the rest (a new task head) keeps its fresh initialisation. Returns the copied names.

    Refused with a message naming both sides when the runs' vocabularies differ (the same row would mean
    another token) or when no tensor matches (another model family)."""
    found = resolve_checkpoint(source)
    saved_model = found.meta["config"].get("model", {}).get("name")
    saved_vocab = (found.meta.get("task_state") or {}).get("vocab")
    vocab = task_state.get("vocab")
    if saved_vocab is not None and vocab is not None and saved_vocab != vocab:
        raise CheckpointError(
            f"train.init_from = {source}: its vocabulary ({len(saved_vocab.get('itos', []))} symbols, task "
            f"{found.meta['config']['task'].get('name')!r}) differs from this task's ({len(vocab.get('itos', []))} symbols, task "
            f"{config.task.name!r}); pre-train and fine-tune on data that builds the same vocabulary."
        )
    wanted = model.state_dict()
    matching = {key: value for key, value in read_weights(found.path).items()
                if key in wanted and value.shape == wanted[key].shape}
    if not matching:
        raise CheckpointError(
            f"train.init_from = {source}: none of its weights (model {saved_model!r}) matches this model "
            f"({config.model.name!r}) by name and shape; initialise from a run of the same model family."
        )
    model.load_state_dict(matching, strict=False)
    bad = non_finite_tensors(model)
    if bad:
        raise NonFiniteCheckpoint(f"train.init_from = {source}: its weights hold NaN or inf ({', '.join(bad[:3])}).")
    return sorted(matching)
