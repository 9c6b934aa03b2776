"""An experiment is a claim from the seeds plus the code that measures it and judges it.

Each experiment registers itself with `@experiment(...)`, giving the claim (a short quote), its seed,
and the threshold in words; its function measures, saves pictures, and returns an `Outcome` whose
`passed` is decided by comparing the measured figures with that threshold, never by fiat.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import torch

Mode = Literal["quick", "full"]
Verdict = Literal["confirmed", "not confirmed", "error"]


@dataclass
class Context:
    """What an experiment run knows: the mode, where to put pictures, and the base seed."""

    mode: Mode
    out_dir: Path
    seed: int = 0
    name: str = ""

    @property
    def quick(self) -> bool:
        return self.mode == "quick"

    def pick(self, quick: Any, full: Any) -> Any:
        """The quick-mode or full-mode value of a setting."""
        return quick if self.quick else full

    def image_path(self, label: str) -> Path:
        folder = self.out_dir / "images"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{self.name}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}.png"


@dataclass
class Outcome:
    """What an experiment measured: figures, whether they meet the threshold, pictures, and the setup used."""

    passed: bool
    figures: dict[str, Any]
    images: list[Path] = field(default_factory=list)
    setup: str = ""


@dataclass(frozen=True)
class Experiment:
    name: str
    era: str
    claim: str
    source: str
    threshold: str
    run: Callable[[Context], Outcome]


EXPERIMENTS: dict[str, Experiment] = {}


def experiment(name: str, era: str, claim: str, source: str, threshold: str) -> Callable[[Callable], Callable]:
    """Register `fn(ctx) -> Outcome` as the experiment `name` testing `claim` (quoted from `source`)."""

    def decorator(fn: Callable[[Context], Outcome]) -> Callable[[Context], Outcome]:
        if name in EXPERIMENTS:
            raise ValueError(f"experiment {name!r} is registered twice")
        EXPERIMENTS[name] = Experiment(name, era, claim, source, threshold, fn)
        return fn

    return decorator


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with `count` torch intra-op threads, then restore the previous number.

    The tour's models are small and latency-bound: on a 2-core CPU one thread trains them several times
    faster than two, which spend their time waiting on each other.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
