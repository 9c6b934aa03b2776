"""Shared test helpers: tiny run configs, YAML files, and running the `seqlab` command in a subprocess."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

import seqlab  # noqa: F401  (before torch: it sets OMP_WAIT_POLICY, read when torch loads)
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"

TINY_XOR: dict[str, Any] = {
    "seed": 0,
    "task": {"name": "logic", "gate": "xor"},
    "model": {"name": "mlp", "hidden_sizes": [4], "activation": "tanh"},
    "train": {
        "steps": 40,
        "batch_size": 16,
        "lr": 0.05,
        "log_every": 1,
        "progress": False,
        "tensorboard": False,
        "threads": 1,
    },
}


def tiny_config(**sections: Any) -> dict[str, Any]:
    """A copy of TINY_XOR with top-level keys replaced and the `train` (and task/model) mappings updated."""
    config = copy.deepcopy(TINY_XOR)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    return config


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def subprocess_env() -> dict[str, str]:
    """The environment for a child `seqlab`: this checkout's sources first, one thread per process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def seqlab_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "seqlab.cli", *args]


def run_seqlab(*args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `seqlab ARGS...` in a child process and return it (stdout and stderr captured as text)."""
    return subprocess.run(
        seqlab_command(*args), capture_output=True, text=True, timeout=timeout, env=subprocess_env(), cwd=cwd
    )


@pytest.fixture
def config_file(tmp_path: Path) -> Callable[..., Path]:
    """`config_file(data, name="run.yaml")` writes a YAML config under tmp_path and returns its path."""

    def make(data: dict[str, Any], name: str = "run.yaml") -> Path:
        return write_yaml(tmp_path / name, data)

    return make


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """One torch thread for the whole run: the models under test are tiny, and on a 2-core machine a second
    thread costs more in synchronisation than it gains."""
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """A trainer with `train.threads` set changes torch's global thread count; put it back after each test."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def headless_chromium():
    """A selenium driver for headless Chromium (skips the test when selenium, chromium or chromedriver is missing)."""
    selenium = pytest.importorskip("selenium", reason="selenium is not installed: pip install -e '.[test]'")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip("chromium and chromedriver are not installed: run scripts/setup-test-browser.sh (Debian, root)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    assert selenium is not None
    return webdriver.Chrome(service=Service(chromedriver), options=options)
