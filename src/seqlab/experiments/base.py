"""An experiment is a claim from the seeds plus the code that measures it and judges it.

Each experiment registers itself with `@experiment(...)`, giving the claim (a short quote), its seed and
the threshold in words, and reads as claim → setup → measure → judge → picture. The kit below is all an
experiment needs; registered experiments run on one torch thread (`torch_threads(1)`), so none pins its own:

    @experiment(name="my-claim", era="gated", claim="…", source="seed 004 (…)",
                threshold=f"LSTM test accuracy ≥ {TARGET:.0%} (chance 12.5%)")
    def my_claim(ctx: Context) -> Outcome:
        config = quiet_config({"name": "adding", "length": 50}, {"name": "rnn", "cell": "lstm"},
                              {"steps": ctx.pick(200, 800), "lr": 1e-2}, seed=ctx.seed)     # setup
        stop = StopAt("loss", 0.01, every=50)                                           # measure
        result = fit(config, callbacks=(stop,))
        times = median_times({"dot": lambda: f(), "general": lambda: g()}, repeats=7)  # timing: interleaved
        checks = {"lstm learns": result.final["test"]["accuracy"] >= TARGET}           # judge
        fig, [ax] = new_figure()                                                        # picture
        ax.plot(*zip(*stop.curve))
        return conclude(ctx, checks, figures={"steps": result.steps}, pictures={"curve": fig},
                        setup="adding T = 50, LSTM hidden 32 …", quick="fewer steps")

`conclude` saves the pictures, writes the checks beside the figures, adds the quick-mode note to the setup
and returns the `Outcome` whose `passed` is every check met. Prefer counts (FLOPs, bytes, steps, accuracy)
to wall-clock time in a check; where time is used, compare `median_times` of interleaved repeats with a
margin stated in the threshold.
"""

from __future__ import annotations

import contextlib
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping

import torch
from matplotlib.figure import Figure

from seqlab.config import RunConfig, Spec, config_from_dict
from seqlab.diagnostics.profile import median_times
from seqlab.report.plots import save
from seqlab.training import Callback, Trainer, TrainResult

__all__ = [
    "Context", "Outcome", "Experiment", "EXPERIMENTS", "experiment", "torch_threads",
    "quiet_config", "fit", "StopAt", "median_times", "conclude",
]

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
    """What an experiment measured: figures, whether they meet the threshold, pictures, the setup used,
    and (when judged by `conclude`) each named check of the threshold and whether it was met."""

    passed: bool
    figures: dict[str, Any]
    images: list[Path] = field(default_factory=list)
    setup: str = ""
    checks: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    name: str
    era: str
    claim: str
    source: str
    threshold: str
    run: Callable[[Context], Outcome]


EXPERIMENTS: dict[str, Experiment] = {}


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


def experiment(name: str, era: str, claim: str, source: str, threshold: str) -> Callable[[Callable], Callable]:
    """Register `fn(ctx) -> Outcome` as the experiment `name` testing `claim` (quoted from `source`);
    the registered run is pinned to one torch thread."""

    def decorator(fn: Callable[[Context], Outcome]) -> Callable[[Context], Outcome]:
        if name in EXPERIMENTS:
            raise ValueError(f"experiment {name!r} is registered twice")

        @functools.wraps(fn)
        def run(ctx: Context) -> Outcome:
            with torch_threads(1):
                return fn(ctx)

        EXPERIMENTS[name] = Experiment(name, era, claim, source, threshold, run)
        return fn

    return decorator


# -- setup: one quiet run config, one training call ------------------------------------------------------

def quiet_config(task: Mapping[str, Any] | Spec, model: Mapping[str, Any] | Spec,
                 train: Mapping[str, Any] | None = None, seed: int = 0) -> RunConfig:
    """A validated run config for a quick in-process training run: no progress bar, no TensorBoard, no
    output directory (the thread count is left to `torch_threads`). `task` and `model` are mappings checked
    against the registries or specs already built; a task spec built in code (a task made for one experiment,
    not in the registry) is taken as it is, and the task itself goes to `fit(config, task=...)`."""
    quiet = {"progress": False, "tensorboard": False, **(train or {})}
    if isinstance(task, Spec):
        return RunConfig.model_validate({"seed": seed, "task": task, "model": model, "train": quiet})
    model = model.model_dump() if isinstance(model, Spec) else dict(model)
    return config_from_dict({"seed": seed, "task": dict(task), "model": model, "train": quiet})


def fit(config: RunConfig, callbacks: tuple[Callback, ...] = (), **trainer: Any) -> TrainResult:
    """Train `config` with the one trainer (`trainer` passes e.g. a prebuilt `task=`) and return the result."""
    return Trainer(config, callbacks=callbacks, **trainer).fit()


# -- measure: one stopping rule ------------------------------------------------------------------------

class StopAt(Callback):
    """Evaluate the validation `metric` every `every` steps, keep the curve, and stop training once it
    passes `target` (above it for accuracy-like metrics, below it for losses); `reached_at` is that step."""

    def __init__(self, metric: str, target: float, every: int, higher_is_better: bool | None = None) -> None:
        self.metric, self.target, self.every = metric, target, every
        self.higher = "acc" in metric if higher_is_better is None else higher_is_better
        self.curve: list[tuple[int, float]] = []
        self.reached_at: int | None = None

    def on_step_end(self, trainer: Trainer, step: int, logs: dict[str, float]) -> None:
        if step % self.every:
            return
        value = trainer.evaluate("val")[self.metric]
        self.curve.append((step, value))
        if self.reached_at is None and (value > self.target if self.higher else value < self.target):
            self.reached_at = step
            trainer.stopped_early = True


# -- judge and picture: one way to end an experiment ---------------------------------------------------

def conclude(ctx: Context, checks: Mapping[str, bool], figures: Mapping[str, Any], setup: str,
             pictures: Mapping[str, Figure | Path] | None = None, quick: str = "") -> Outcome:
    """Save each picture (a figure, or the path of one already saved) as `ctx.image_path(label)`, note
    the quick mode's reductions (`quick`) in the setup, and judge: passed when every check is met."""
    images = [picture if isinstance(picture, Path) else save(picture, ctx.image_path(label))
              for label, picture in (pictures or {}).items()]
    verdicts = {label: bool(met) for label, met in checks.items()}
    if ctx.quick and quick:
        setup += f" — quick mode: {quick}"
    return Outcome(passed=bool(verdicts) and all(verdicts.values()), figures=dict(figures), images=images,
                   setup=setup, checks=verdicts)
