"""Every verdict of the quick tour is the same in three runs on a machine busy with other work (slow:
about three quick tours; `pytest -m slow tests/test_experiment_stability.py`, or the script
`python scripts/tour_stability.py` with --only for a subset)."""

from __future__ import annotations

import pytest

from seqlab.experiments import EXPERIMENTS
from seqlab.tour import run_tour, verdicts_by_run


@pytest.mark.slow
def test_quick_tour_verdicts_are_the_same_in_three_runs(tmp_path) -> None:
    reports = [run_tour("quick", tmp_path / f"run-{run}") for run in range(3)]
    verdicts = verdicts_by_run(reports)
    assert set(verdicts) == set(EXPERIMENTS)
    assert {name: seen for name, seen in verdicts.items() if seen != ["confirmed"] * 3} == {}
