"""Portable precision: `auto` is bf16 where the CPU has bf16 hardware and fp32 elsewhere, on a real process.

An AVX2-only CPU is emulated on any x86-64 machine by capping torch's kernels and oneDNN at AVX2
(ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2): oneDNN then reports no bf16, as it does on such a CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DATA, REPO, run_seqlab, tiny_config, write_yaml

AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


@pytest.fixture
def avx2_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in AVX2_ONLY.items():
        monkeypatch.setenv(key, value)  # inherited by the child `seqlab` processes


def test_auto_trains_in_fp32_and_bf16_is_refused_on_a_cpu_without_bf16(avx2_only, tmp_path: Path):
    config = write_yaml(tmp_path / "run.yaml", tiny_config(train={"steps": 3, "precision": "auto"}))
    done = run_seqlab("train", str(config), "--out", str(tmp_path / "auto"))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "auto" / "final_metrics.json").read_text())["precision"] == "fp32"
    refused = run_seqlab("train", str(config), "--out", str(tmp_path / "bf16"), "--set", "train.precision=bf16")
    assert refused.returncode == 2 and "no bf16 hardware" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs" / "multi30k").glob("*.yaml")))
def test_every_multi30k_config_starts_on_a_cpu_without_bf16(avx2_only, tmp_path: Path, name: str):
    if not (DATA / "multi30k" / "raw").is_dir():
        pytest.skip(f"Multi30k is not available at {DATA / 'multi30k'}")
    if name == "transformer_reference.yaml" or os.environ.get("SEQLAB_ALL_CONFIGS"):
        overrides = ["train.steps=1", "train.eval_every=0", "task.max_train_pairs=64", "task.max_eval_pairs=4",
                     "train.progress=false", "train.tensorboard=false"]
        done = run_seqlab("train", str(REPO / "configs" / "multi30k" / name), "--out", str(tmp_path / "run"),
                          *[arg for o in overrides for arg in ("--set", o)], timeout=300)
        assert done.returncode == 0, done.stderr
        final = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
        assert final["precision"] == "fp32"
    else:
        from seqlab.config import load_config

        assert load_config(REPO / "configs" / "multi30k" / name).train.precision in ("auto", "fp32")


@pytest.mark.parametrize(("preset", "expected"), [(None, "8"), ("64", "64")])
def test_the_trainer_caps_the_onednn_primitive_cache_unless_the_environment_sets_it(preset: str | None, expected: str):
    """Cached oneDNN primitives (one per bf16 batch shape) were most of the recurrent rungs' 2.4–2.8 GiB peaks."""
    env = {key: value for key, value in os.environ.items() if key != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    if preset is not None:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = preset
    script = "import os, seqlab.training.trainer; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == expected
