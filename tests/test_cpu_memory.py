"""wmrl.cpu_memory: with freed memory retained, large blocks stop being faulted in afresh."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from wmrl.cpu_memory import malloc_is_tunable, retain_freed_memory

# A loop that allocates and frees blocks of 40 MiB, above glibc's largest mmap threshold
# (32 MiB); prints the minor page faults of each iteration.
_LOOP = """
import json, resource, sys, torch
from wmrl.cpu_memory import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
w = torch.ones(1, requires_grad=True)
x = torch.randn(10 * 2**20)  # 40 MiB
faults = []
for _ in range(12):
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    (x * w).exp().sum().backward()  # two 40 MiB temporaries and their gradient
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
print(json.dumps(faults))
"""


def _faults(mode: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", _LOOP, mode], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not malloc_is_tunable(), reason="needs glibc's malloc")
def test_retained_memory_is_not_faulted_in_again():
    default, retained = _faults("default"), _faults("retain")
    pages = 10 * 2**20 * 4 // 4096  # pages of one 40 MiB block
    # glibc's default maps and unmaps every block: each iteration faults at least one block in
    assert min(default[2:]) >= pages
    # retained: once the heap has grown to the loop's peak, its blocks are reused
    assert min(retained[2:]) < pages // 20


@pytest.mark.skipif(not malloc_is_tunable(), reason="needs glibc's malloc")
def test_defaults_can_be_restored():
    code = ("from wmrl.cpu_memory import retain_freed_memory as r; "
            "print(r(True), r(False))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert out.split() == ["True", "True"]


def test_does_nothing_without_glibc(monkeypatch):
    import wmrl.cpu_memory as cm

    monkeypatch.setattr(cm, "_libc", lambda: None)
    assert cm.retain_freed_memory() is False
    assert cm.malloc_is_tunable() is False
    assert retain_freed_memory.__module__ == "wmrl.cpu_memory"
