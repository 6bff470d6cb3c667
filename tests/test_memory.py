"""py_worker.memory: allocator settings keep freed batches for reuse, and an idle worker gives them back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Runs in a fresh process: allocates ~200 MiB in blocks below the raised mmap
# threshold (so they come from the C heap), frees them, and reports resident
# memory after the free and after release_free_memory().
PROBE = r"""
import sys
from py_worker.memory import release_free_memory, tune_malloc

def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

assert tune_malloc()
blocks = [bytearray(b"x" * (4 * 1024 * 1024)) for _ in range(50)]
del blocks
kept = rss_kib()
assert release_free_memory()
print(kept, rss_kib())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt/malloc_trim are Linux-only")
def test_freed_heap_memory_is_kept_until_released() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    kept, released = map(int, out.stdout.split())
    # With the raised trim threshold the freed 200 MiB (under the threshold) stay resident ...
    assert kept > 180 * 1024, (kept, released)
    # ... until release_free_memory() hands them back.
    assert released < kept - 150 * 1024, (kept, released)
