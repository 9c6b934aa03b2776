"""`seqlab tour`: run registered experiments, record verdicts, write results.json and index.html."""

from __future__ import annotations

import json
import os
import platform
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from seqlab.errors import UserError
from seqlab.experiments import EXPERIMENTS, Context, Experiment
from seqlab.experiments.base import Mode


class TourError(UserError):
    """A tour request that names experiments that do not exist."""


def select(only: list[str] | None) -> list[Experiment]:
    """The experiments to run, in registration order; unknown names get an error listing the known ones."""
    if not only:
        return list(EXPERIMENTS.values())
    unknown = [name for name in only if name not in EXPERIMENTS]
    if unknown:
        raise TourError(f"unknown experiment(s) {', '.join(unknown)}; run `seqlab tour --list` to see: "
                        f"{', '.join(EXPERIMENTS)}.")
    return [EXPERIMENTS[name] for name in only]


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
    }


def run_experiment(exp: Experiment, mode: Mode, out_dir: Path, seed: int) -> dict[str, Any]:
    """Run one experiment; an exception becomes verdict 'error' with its message, never a crash of the tour."""
    ctx = Context(mode=mode, out_dir=out_dir, seed=seed, name=exp.name)
    record: dict[str, Any] = {
        "name": exp.name, "era": exp.era, "claim": exp.claim, "source": exp.source, "threshold": exp.threshold,
    }
    began, cpu_began = time.perf_counter(), time.process_time()
    threads = torch.get_num_threads()  # a run with train.threads set changes it for the whole process
    try:
        torch.manual_seed(seed)
        outcome = exp.run(ctx)
        record.update(
            verdict="confirmed" if outcome.passed else "not confirmed",
            figures=outcome.figures,
            images=[str(Path(p).relative_to(out_dir)) for p in outcome.images],
            setup=outcome.setup,
            checks=outcome.checks,
        )
    except Exception as err:  # noqa: BLE001  (the tour records any failure and goes on)
        record.update(verdict="error", figures={}, images=[], setup="", checks={},
                      error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc(limit=6))
    finally:
        torch.set_num_threads(threads)
    record["seconds"] = round(time.perf_counter() - began, 2)
    record["cpu_seconds"] = round(time.process_time() - cpu_began, 2)  # what machine load does not inflate
    return record


def run_tour(
    mode: Mode, out_dir: Path, only: list[str] | None = None, seed: int = 0,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the selected experiments, then write results.json and index.html into `out_dir`."""
    from seqlab.report.html import write_report

    chosen = select(only)
    out_dir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    results: list[dict[str, Any]] = []
    for exp in chosen:
        record = run_experiment(exp, mode, out_dir, seed)
        results.append(record)
        if on_result is not None:
            on_result(record)
    report = {
        "mode": mode, "seed": seed, "machine": machine(), "seconds": round(time.perf_counter() - began, 2),
        "experiments": results,
    }
    (out_dir / "results.json").write_text(json.dumps(report, indent=1, default=float))
    write_report(report, out_dir)
    return report


def verdicts_by_run(reports: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each experiment's verdict in each of several tour reports ('missing' where a run lacks it)."""
    names = list(dict.fromkeys(r["name"] for report in reports for r in report["experiments"]))
    return {name: [next((r["verdict"] for r in report["experiments"] if r["name"] == name), "missing")
                   for report in reports] for name in names}
