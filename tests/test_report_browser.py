"""The tour report in a real headless Chromium: loads cleanly, every picture renders, every link lands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import headless_chromium
from seqlab.experiments import EXPERIMENTS
from seqlab.tour import run_tour

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole quick tour, as a new user's first command runs it."""
    out = tmp_path_factory.mktemp("tour")
    run_tour("quick", out, seed=0)
    return out


@pytest.fixture(scope="module")
def browser():
    driver = headless_chromium()
    yield driver
    driver.quit()


def test_report_loads_without_console_errors_and_all_images_render(report: Path, browser) -> None:
    browser.get((report / "index.html").as_uri())
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    images = browser.find_elements("css selector", "img")
    assert images, "the report has no pictures"
    widths = [browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) for img in images]
    assert all(width and width > 0 for width in widths), widths


def test_every_registered_experiment_ran_without_error(report: Path) -> None:
    results = json.loads((report / "results.json").read_text())
    assert [e["name"] for e in results["experiments"]] == list(EXPERIMENTS)
    assert [e["name"] for e in results["experiments"] if e["verdict"] == "error"] == []
    assert all(e["images"] for e in results["experiments"]), "every experiment shows at least one picture"


def test_summary_has_one_row_per_experiment_and_links_land_on_sections(report: Path, browser) -> None:
    results = json.loads((report / "results.json").read_text())
    browser.get((report / "index.html").as_uri())
    links = browser.find_elements("css selector", "#summary a")
    assert len(browser.find_elements("css selector", "#summary tr")) - 1 == len(results["experiments"])
    assert [link.text for link in links] == [e["name"] for e in results["experiments"]]
    for index in range(len(links)):
        link = browser.find_elements("css selector", "#summary a")[index]
        target = link.get_attribute("href").split("#", 1)[1]
        link.click()
        assert browser.execute_script("return window.location.hash") == f"#{target}"
        section = browser.find_element("id", target)
        top, height = browser.execute_script(
            "return [arguments[0].getBoundingClientRect().top, window.innerHeight]", section
        )
        assert -2 <= top < height, f"section {target} is not in view after its link (top={top})"
