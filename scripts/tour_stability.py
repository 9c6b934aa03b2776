"""Run the tour several times and check that every verdict comes out the same each time.

A verdict that flips between runs on one machine measures the machine's load, not the claim. This runs
the selected experiments (default: all, quick mode, seed 0) `--runs` times in this process, one after
another, while whatever else the machine runs goes on, and prints per experiment the verdicts, wall and
CPU seconds of each run, and the machine load. Exit status 1 when any verdict differs between runs (or
is not the same as `--expect`, e.g. `--expect confirmed`).

    python scripts/tour_stability.py                                   # the whole quick tour, three times
    python scripts/tour_stability.py --only complexity attention-scorers parallelism --runs 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from seqlab.tour import run_tour, select, verdicts_by_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these experiments")
    parser.add_argument("--runs", type=int, default=3, help="how many times to run the selection (default 3)")
    parser.add_argument("--full", action="store_true", help="the longer versions (default: quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--expect", choices=("confirmed", "not confirmed"), help="also require this verdict everywhere")
    parser.add_argument("--out", type=Path, help="keep each run's report in OUT/run-K (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.runs < 2:
        parser.error("--runs must be at least 2 to compare runs")
    names = [exp.name for exp in select(args.only)]
    mode = "full" if args.full else "quick"

    reports = []
    with tempfile.TemporaryDirectory() as scratch:
        root = args.out or Path(scratch)
        for run in range(1, args.runs + 1):
            load = os.getloadavg()[0]

            def show(record: dict, run: int = run) -> None:
                print(f"run {run}  {record['name']:<34} {record['verdict']:<14} {record['seconds']:7.1f} s wall "
                      f"{record.get('cpu_seconds', float('nan')):7.1f} s cpu  load {os.getloadavg()[0]:.1f}", flush=True)

            report = run_tour(mode, root / f"run-{run}", only=names, seed=args.seed, on_result=show)
            reports.append(report)
            cpu = sum(r.get("cpu_seconds", 0.0) for r in report["experiments"])
            print(f"run {run}: {report['seconds']:.1f} s wall, {cpu:.1f} s cpu, load {load:.1f} → "
                  f"{os.getloadavg()[0]:.1f}", flush=True)

    unstable = {name: seen for name, seen in verdicts_by_run(reports).items()
                if len(set(seen)) > 1 or (args.expect and set(seen) != {args.expect})}
    print(f"{len(names)} experiment(s) × {args.runs} runs: "
          + ("every verdict the same in every run" if not unstable else f"{len(unstable)} unstable"))
    for name, verdicts in unstable.items():
        print(f"  {name}: {' / '.join(verdicts)}")
    return 1 if unstable else 0


if __name__ == "__main__":
    sys.exit(main())
