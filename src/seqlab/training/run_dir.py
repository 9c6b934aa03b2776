"""A run directory on disk: its lock, its metrics log, its config and final metrics, all written safely.

- **Locked**: one training process at a time holds ``.lock`` (a `filelock` lock, released by the OS if the
  process dies); a second run on the same directory is refused with the holder's pid.
- **Atomic**: checkpoints (see `checkpoint`), ``config.yaml``, ``final_metrics.json`` and the rewrite of
  ``metrics.jsonl`` on resume go to a temporary file that is renamed into place, so a kill at any moment
  leaves the old file or the new one, never a torn or empty one. Appends to ``metrics.jsonl`` are whole lines;
  a line cut short by a kill is dropped on the next resume.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import IO, Any, Iterator

import yaml
from filelock import FileLock, Timeout

from seqlab.errors import UserError

LOCK, OWNER, METRICS, FINAL, CONFIG = ".lock", ".lock-owner.json", "metrics.jsonl", "final_metrics.json", "config.yaml"


class RunDirInUse(UserError):
    """Another process is training into the same run directory."""


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[IO[str]]:
    """A text handle whose content replaces `path` all at once when the block ends (temporary file beside
    it, fsync, rename); if the block fails or the process dies, `path` keeps its old content."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` by `text` all at once."""
    with atomic_writer(path) as handle:
        handle.write(text)


class RunDirectory:
    """The files of one run; `acquire` before writing anything, `release` at the end."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock: FileLock | None = None

    def acquire(self) -> None:
        """Take the run's lock, or fail at once naming the process that holds it."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"out_dir {self.path} is a file, not a directory; choose another --out.")
        self.path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.path / LOCK))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise RunDirInUse(
                f"{self.path} is in use by another training run ({self._owner()}); wait for it to finish, "
                "or train into another directory (--out)."
            ) from None
        self._lock = lock
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        atomic_write_text(self.path / OWNER, json.dumps(owner))

    def _owner(self) -> str:
        try:
            owner = json.loads((self.path / OWNER).read_text(encoding="utf-8"))
            return f"pid {owner['pid']} on {owner['host']}, since {owner['since']}"
        except (OSError, ValueError, KeyError):
            return "its pid is not recorded yet"

    def release(self) -> None:
        if self._lock is not None:
            (self.path / OWNER).unlink(missing_ok=True)
            self._lock.release()
            self._lock = None

    def write_config(self, config: dict[str, Any], note: str) -> None:
        """config.yaml, headed by a comment line (`note`: e.g. the precision the run actually uses)."""
        atomic_write_text(self.path / CONFIG, f"# {note}\n" + yaml.safe_dump(config, sort_keys=False))

    def write_final(self, record: dict[str, Any]) -> None:
        atomic_write_text(self.path / FINAL, json.dumps(record, indent=1))

    def truncate_metrics(self, start: int) -> None:
        """Keep only the records written before the step we resume from (none on a fresh start)."""
        metrics = self.path / METRICS
        if not metrics.exists():
            return
        with open(metrics, encoding="utf-8") as old, atomic_writer(metrics) as new:
            for line in old:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill
                    continue
                if record["step"] < start or (record["step"] == start and not record.get("final")):
                    new.write(line if line.endswith("\n") else line + "\n")

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.path / METRICS, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
