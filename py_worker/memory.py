"""Process-wide allocator settings for moving large batches.

Batches are megabytes each and every one is a fresh allocation: the worker's
encoded batch, the bytes the front receives it into, gRPC's copy. glibc's
malloc serves blocks over its mmap threshold with a new `mmap` and gives freed
heap tops back with `madvise`/`munmap`, so each batch pays one page fault per
4 KiB page, about a quarter of the front's CPU time when streaming. Raising
the mmap threshold to its maximum (32 MiB on 64-bit glibc, `mallopt(3)`) and
the trim threshold keeps that memory in the process for reuse; what a process
holds is still bounded by the batches in flight.

Workers are spawned processes: they inherit the same settings through the
`MALLOC_*` environment variables glibc reads at start-up.
"""

from __future__ import annotations

import ctypes
import os

from py_worker import libc

# mallopt(3) parameter numbers (glibc malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 256 * 1024 * 1024

ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
    "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD),
}


# Arrow's default allocator (mimalloc) gives freed pages back to the system after
# `MIMALLOC_PURGE_DELAY` ms (10 by default). An export compresses a row group of
# up to 128 MiB about once a second and combines each into fresh memory, so with
# the default every row group faults (and the kernel zeroes) its pages again:
# about a tenth of an export's CPU time. A second keeps them for the next one.
EXPORT_ENV = {"MIMALLOC_PURGE_DELAY": "1000"}


def tune_export_allocator() -> None:
    """Set `EXPORT_ENV` in this process's environment (variables the user set are left alone).

    mimalloc reads it when Arrow first allocates, so this must run before
    `pyarrow` is imported; child processes inherit it.
    """
    for key, value in EXPORT_ENV.items():
        os.environ.setdefault(key, value)


def release_free_memory() -> bool:
    """Give memory the process holds but no longer uses back to the system.

    Called when a worker has no session left: the raised trim threshold keeps
    freed batches in the C heap for reuse while streaming, and an idle worker
    should not keep them. Trims the C heap (glibc `malloc_trim(3)`); Arrow's
    own pool keeps its pages, which the next session's decoding reuses
    (returning them costs that session a page fault per page). Returns
    whether `malloc_trim` ran.
    """
    trim = libc.function("malloc_trim", ctypes.c_int, ctypes.c_size_t)
    if trim is None:
        return False
    trim(0)
    return True


def tune_malloc() -> bool:
    """Apply the settings to this process and, through the environment, to processes it starts.

    Returns whether glibc took them (False on other C libraries, where this does nothing).
    Variables the user set already are left alone.
    """
    for key, value in ENV.items():
        os.environ.setdefault(key, value)
    mallopt = libc.function("mallopt", ctypes.c_int, ctypes.c_int, ctypes.c_int)
    if mallopt is None:
        return False
    ok = True
    for param, key in ((M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_"), (M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_")):
        try:
            value = int(os.environ[key])
        except ValueError:
            value = int(ENV[key])
        ok = mallopt(param, value) == 1 and ok
    return ok
