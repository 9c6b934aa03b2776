"""Checkpoints: safetensors weights, JSON metadata and a weights-only torch file of training state.

Layout of one checkpoint directory::

    step_00000100/
        model.safetensors   weights (safetensors: no code is ever unpickled)
        meta.json           format, step, config, task state (vocabularies), metrics
        training.pt         optimiser, scheduler, RNG and early-stopping state (loaded with weights_only=True)

A checkpoint is written into a temporary directory and renamed into place, so a kill during a save
leaves the previous checkpoints untouched and loadable.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from seqlab.errors import UserError

FORMAT = "seqlab-checkpoint-1"
WEIGHTS, META, TRAINING = "model.safetensors", "meta.json", "training.pt"


class CheckpointError(UserError):
    """A checkpoint that is missing, incomplete, corrupt or not a seqlab checkpoint."""


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
    directory: Path, model: nn.Module, meta: dict[str, Any], training_state: dict[str, Any] | None
) -> Path:
    """Write a complete checkpoint to `directory` atomically (temporary directory, fsync, rename)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".tmp-{directory.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_model(model, str(tmp / WEIGHTS))
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


def load_training_state(path: Path) -> dict[str, Any]:
    """Load optimiser/scheduler/RNG state with weights_only=True (never unpickles arbitrary objects)."""
    file = Path(path) / TRAINING
    if not file.is_file():
        raise CheckpointError(f"{path} has no {TRAINING}: it holds weights only and cannot resume training.")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError) as err:
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


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete step checkpoints of a run, oldest first (temporary and partial directories are skipped)."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step_*") if (p / META).is_file() and (p / WEIGHTS).is_file())


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def prune_checkpoints(run_dir: Path, keep_last: int) -> None:
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old)


def resolve_checkpoint(path: str | Path) -> Checkpoint:
    """Accept a checkpoint directory or a run directory (its best checkpoint, else its latest)."""
    path = Path(path)
    if (path / META).is_file():
        return Checkpoint(path, read_meta(path))
    best = path / "checkpoints" / "best"
    if (best / META).is_file():
        return Checkpoint(best, read_meta(best))
    latest = latest_checkpoint(path)
    if latest is None:
        raise CheckpointError(f"no checkpoint found at {path}: pass a run directory or a checkpoint directory.")
    return Checkpoint(latest, read_meta(latest))
