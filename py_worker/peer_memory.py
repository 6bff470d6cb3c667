"""Copying a batch out of a worker's memory straight into the `bytes` gRPC sends.

A worker lays a batch out as a list of spans of its own memory (the Arrow
buffers of the table slice, memory-mapped ones included, plus a few small
computed pieces; see `ipc_gather`) and sends the front only that list. The
front reads the spans with Linux's `process_vm_readv(2)` into one fresh
`bytes` object: each data byte is copied once between the dataset and gRPC,
by the kernel, and the worker copies nothing.

Facts used (process_vm_readv(2), Linux 3.2+): the caller needs ptrace
access to the target (the front is the workers' parent, which Yama's
`ptrace_scope` 1 allows); at most IOV_MAX (1024) iovecs per side per call;
a partial read stops at an iovec boundary and returns the bytes read;
errors are ESRCH (no such process), EFAULT (a span the target has not
mapped) and EPERM. A `struct iovec` is a pointer and a `size_t`, so on a
64-bit little-endian Linux a table of `<u8` (address, length) pairs is an
iovec array as it is.

`PyBytes_FromStringAndSize(NULL, n)` is the C API's way to make a `bytes`
object to be filled before anyone else sees it; `PyBytes_AsString` gives its
buffer. Nothing here runs anywhere else: `supported()` says whether it can.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from typing import Any

import numpy as np
import pyarrow as pa

from py_worker import libc

__all__ = ["PeerMemoryError", "SPAN", "probe", "read", "spans_table", "supported"]

#: One span of the table: address and length, little-endian uint64 each.
SPAN = struct.Struct("<QQ")
#: Most iovecs one call takes (IOV_MAX on Linux).
_IOV_MAX = 1024


class PeerMemoryError(ValueError):
    """A span could not be read from the worker: it died, or what it sent does not describe its memory.

    Either way the worker cannot be trusted with the batch any more; `errno`
    is the system's error number when there is one (else 0).
    """

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def _load() -> Any:
    """libc's `process_vm_readv`, typed; None off 64-bit little-endian Linux or where libc lacks it."""
    if struct.calcsize("P") != 8 or sys.byteorder != "little":
        return None
    return libc.function("process_vm_readv", ctypes.c_ssize_t, ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong,
                         ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong)


_readv = _load()
_new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
_new_bytes.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
_new_bytes.restype = ctypes.py_object
_bytes_buffer = ctypes.pythonapi.PyBytes_AsString
_bytes_buffer.argtypes = [ctypes.py_object]
_bytes_buffer.restype = ctypes.c_void_p


def supported() -> bool:
    """Whether this platform has `process_vm_readv` (whether a given worker may be read is `probe`'s answer)."""
    return _readv is not None


def spans_table(parts: list[Any]) -> tuple[bytes, int]:
    """The span table of `parts` (buffers, in message order) and their total length.

    Every part must stay alive, unmoved, until the reader is done with it:
    the caller keeps `parts`. Empty parts are left out.
    """
    out = bytearray()
    total = 0
    for part in parts:
        buf = part if isinstance(part, pa.Buffer) else pa.py_buffer(part)
        n = buf.size
        if n:
            out += SPAN.pack(buf.address, n)
            total += n
    return bytes(out), total


def read(pid: int, table: bytes, total: int) -> bytes:
    """The `total` bytes the spans in `table` cover in process `pid`, in order, as one `bytes` object.

    PeerMemoryError when the table is malformed (its lengths do not add up
    to `total`), when the process is gone, or when a span is not readable.
    """
    if _readv is None:
        raise PeerMemoryError("process_vm_readv is not available on this platform")
    if total <= 0 or not table or len(table) % SPAN.size:
        raise PeerMemoryError(f"malformed span table ({len(table)} bytes for {total} bytes of payload)")
    pairs = np.frombuffer(table, dtype="<u8")
    if int(pairs[1::2].sum()) != total:
        raise PeerMemoryError(f"the span table covers {int(pairs[1::2].sum())} bytes, not {total}")
    out = _new_bytes(None, total)
    dest = _bytes_buffer(out)
    count = len(pairs) // 2
    remote = (_IoVec * count).from_buffer_copy(table)
    local = _IoVec()
    done = 0
    for first in range(0, count, _IOV_MAX):
        n = min(_IOV_MAX, count - first)
        want = int(pairs[2 * first + 1:2 * (first + n):2].sum())
        local.base, local.len = dest + done, want
        got = _readv(pid, ctypes.byref(local), 1, ctypes.byref(remote, first * ctypes.sizeof(_IoVec)), n, 0)
        if got != want:
            err = ctypes.get_errno() if got < 0 else 0
            why = os.strerror(err) if err else f"a partial read ({got} of {want} bytes)"
            raise PeerMemoryError(f"reading a batch from process {pid} failed: {why}", err)
        done += want
    return out


def probe(pid: int, address: int, expected: bytes) -> bool:
    """Whether `expected` reads back from `address` in process `pid` (is this worker's memory readable here?)."""
    if _readv is None or not expected:
        return False
    try:
        return read(pid, SPAN.pack(address, len(expected)), len(expected)) == expected
    except PeerMemoryError:
        return False
