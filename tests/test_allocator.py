"""Importing seqlab keeps freed tensor memory in the process (glibc's malloc thresholds, issue 14), unless the
environment already tunes glibc's malloc."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from conftest import subprocess_env
from seqlab import allocator

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# A 64 MiB tensor written and freed, 20 times over: the page faults of all 20, as a count. (A tensor's
# aligned block does not always fit the hole the previous one left, so some cycles still take fresh pages.)
CYCLE_FAULTS = """
import resource, seqlab, torch
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    tensor = torch.empty(16 * 2**20).fill_(1.0)
    del tensor
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES_OF_20_TENSORS = 20 * 16 * 2**20 * 4 // 4096


def cycle_faults(**env: str) -> int:
    done = subprocess.run([sys.executable, "-c", CYCLE_FAULTS], env={**subprocess_env(), **env},
                          capture_output=True, text=True, timeout=120, check=True)
    return int(done.stdout.split()[-1])


def test_freed_tensors_are_reused_without_faulting_their_pages_in_again():
    assert cycle_faults() < PAGES_OF_20_TENSORS // 2


def test_a_malloc_setting_in_the_environment_is_left_alone():
    # tcache_count=7 is glibc's default: the thresholds stay glibc's, which maps every 64 MiB afresh.
    assert cycle_faults(GLIBC_TUNABLES="glibc.malloc.tcache_count=7") > PAGES_OF_20_TENSORS * 9 // 10


@pytest.mark.parametrize("env", [{"MALLOC_MMAP_THRESHOLD_": "65536"}, {"MALLOC_TRIM_THRESHOLD_": "131072"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}])
def test_keep_freed_memory_defers_to_the_environment(monkeypatch, env: dict[str, str]):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert allocator.user_tuned_malloc()
    assert not allocator.keep_freed_memory()


def test_keep_freed_memory_sets_the_thresholds_on_glibc(monkeypatch):
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    assert allocator.keep_freed_memory()
