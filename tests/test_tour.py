"""`seqlab tour`: runs experiments, records verdicts (errors included), writes results.json and index.html."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from seqlab import cli
from seqlab.experiments import EXPERIMENTS, Context, Experiment, Outcome
from seqlab.experiments.base import conclude
from seqlab.report.plots import new_figure, save
from seqlab.tour import run_tour, verdicts_by_run

RECORD_KEYS = {"name", "era", "claim", "source", "verdict", "threshold", "figures", "images", "seconds"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def xor_tour(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("tour")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli.main(["tour", "--quick", "--only", "xor", "--out", str(out)]) == 0
    return out, printed.getvalue()


def test_xor_is_confirmed_in_results_json(xor_tour):
    out, printed = xor_tour
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "quick"
    [record] = results["experiments"]
    assert RECORD_KEYS <= set(record)
    assert record["name"] == "xor" and record["era"] == "feedforward" and record["verdict"] == "confirmed"
    assert "seed 000" in record["source"] and "75%" in record["threshold"]
    figures = record["figures"]
    assert figures["mcculloch_pitts_units_computing_xor"] == 0
    assert figures["mcculloch_pitts_best_accuracy"] <= 0.75 and figures["perceptron_best_accuracy"] <= 0.75
    assert figures["mlp_seeds"] == 20 and figures["mlp_fraction_solved"] >= 0.95
    assert record["seconds"] > 0
    assert "xor" in printed and "confirmed" in printed


def test_xor_picture_is_written_and_shown_in_the_report(xor_tour):
    out, _ = xor_tour
    [record] = json.loads((out / "results.json").read_text())["experiments"]
    assert record["images"] == ["images/xor-decision-regions.png"]
    assert (out / record["images"][0]).read_bytes().startswith(PNG_MAGIC)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "id=\"exp-xor\"" in page and "class='verdict confirmed'" in page
    assert "<img src='data:image/png;base64," in page  # inlined: the page stands alone
    assert "http://" not in page and "https://" not in page  # nothing fetched from the network
    assert "A simple line can&#x27;t explain a XOR gate" in page


def _passing(ctx: Context) -> Outcome:
    fig, [ax] = new_figure()
    ax.plot([0, 1], [0, 1])
    return Outcome(passed=True, figures={"value": 1.0}, images=[save(fig, ctx.image_path("line"))], setup="tiny")


def _failing(ctx: Context) -> Outcome:
    raise RuntimeError("the measurement broke")


def _unmet(ctx: Context) -> Outcome:
    return Outcome(passed=False, figures={"value": 0.0})


@pytest.fixture
def toy_experiments(monkeypatch):
    for name, fn in (("boom", _failing), ("fine", _passing), ("unmet", _unmet)):
        monkeypatch.setitem(EXPERIMENTS, name, Experiment(name, "feedforward", f"claim {name}", "test", "always", fn))


def test_an_experiment_that_raises_is_an_error_and_the_tour_goes_on(tmp_path: Path, toy_experiments):
    report = run_tour("quick", tmp_path, only=["boom", "fine", "unmet"])
    verdicts = {r["name"]: r["verdict"] for r in report["experiments"]}
    assert verdicts == {"boom": "error", "fine": "confirmed", "unmet": "not confirmed"}
    boom = report["experiments"][0]
    assert boom["error"] == "RuntimeError: the measurement broke" and "Traceback" in boom["traceback"]
    assert RECORD_KEYS <= set(boom) and boom["figures"] == {} and boom["images"] == []
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["verdict"] for r in saved["experiments"]] == ["error", "confirmed", "not confirmed"]
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "the measurement broke" in page and "class='verdict error'" in page
    assert "class='verdict not-confirmed'" in page
    assert page.count("<img src='data:image/png;base64,") == 1


def test_tour_command_prints_errors_and_exits_zero(tmp_path: Path, toy_experiments, capsys):
    assert cli.main(["tour", "--only", "boom", "fine", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "error" in out and "RuntimeError: the measurement broke" in out and "confirmed" in out


def test_list_shows_every_experiment(capsys):
    assert cli.main(["tour", "--list"]) == 0
    out = capsys.readouterr().out
    for name in EXPERIMENTS:
        assert name in out
    assert "feedforward" in out


def test_unknown_experiment_is_a_clear_error(tmp_path: Path, capsys):
    assert cli.main(["tour", "--only", "xor", "nosuch", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment(s) nosuch" in err and "seqlab tour --list" in err and "xor" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t").exists()


def test_verdicts_by_run_lines_up_each_experiment_across_runs() -> None:
    runs = [{"experiments": [{"name": "a", "verdict": "confirmed"}, {"name": "b", "verdict": "confirmed"}]},
            {"experiments": [{"name": "a", "verdict": "not confirmed"}]}]
    assert verdicts_by_run(runs) == {"a": ["confirmed", "not confirmed"], "b": ["confirmed", "missing"]}


def test_records_carry_the_checks_and_the_cpu_time(tmp_path: Path, monkeypatch) -> None:
    def judged(ctx: Context) -> Outcome:
        return conclude(ctx, {"holds": True, "fails": False}, {"value": 2}, "tiny")

    monkeypatch.setitem(EXPERIMENTS, "judged", Experiment("judged", "feedforward", "claim", "test", "always", judged))
    [record] = run_tour("quick", tmp_path, only=["judged"])["experiments"]
    assert record["verdict"] == "not confirmed" and record["checks"] == {"holds": True, "fails": False}
    assert record["cpu_seconds"] >= 0
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "<li>met: holds</li>" in page and "<li><b>not met</b>: fails</li>" in page
