"""Worker -> front message framing on the worker's Unix socket, built for bulk batch bytes.

The front talks to a worker over one duplex `multiprocessing.Pipe` (a Unix
stream socket pair on POSIX). Commands (front -> worker) stay small pickled
`Connection.send_bytes` messages. Messages from the worker use this framing on
the same socket, because they carry the batches:

    frame   = length prefix | header | payload
    prefix  = struct "!IQ": header length, payload length (network byte order)
    header  = a pickled tuple
    payload = raw bytes (a serialised `Batch`), possibly empty

The sender hands the payload to the kernel straight from its Arrow buffer
(`sendmsg` gathers prefix, header and payload; no join in Python), and the
receiver reads each part with one `recv(n, MSG_WAITALL)` into a `bytes` object
of exactly that size, which gRPC then sends as it is. So a batch is copied by
Python code zero times between the worker's encoder and gRPC.
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
from typing import Any

PREFIX = struct.Struct("!IQ")
# Unix socket buffer requested on both ends (the kernel caps it at net.core.wmem_max/rmem_max).
SOCKET_BUFFER = 4 * 1024 * 1024


def socket_of(conn: Any) -> socket.socket:
    """A socket object on a duplicate of `conn`'s descriptor (a multiprocessing Connection), blocking."""
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    sock.setblocking(True)
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        except OSError:
            pass
    return sock


def send_frame(sock: socket.socket, header: tuple, payload: Any = None) -> None:
    """Send one frame; `payload` is None or any buffer (bytes, memoryview, pyarrow Buffer). Not thread-safe."""
    head = pickle.dumps(header, protocol=pickle.HIGHEST_PROTOCOL)
    if payload is None:
        sock.sendall(PREFIX.pack(len(head), 0) + head)
        return
    body = memoryview(payload).cast("B")
    parts = [PREFIX.pack(len(head), body.nbytes) + head, body]
    while parts:
        sent = sock.sendmsg(parts)
        while parts and sent >= len(parts[0]):
            sent -= len(parts[0])
            parts.pop(0)
        if parts and sent:
            parts[0] = memoryview(parts[0])[sent:]


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly `n` bytes (EOFError when the peer closed first)."""
    data = sock.recv(n, socket.MSG_WAITALL)
    if len(data) == n:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        chunk = sock.recv(n - got, socket.MSG_WAITALL)
        if not chunk:
            raise EOFError("the peer closed the socket inside a frame")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def recv_frame(sock: socket.socket) -> tuple[tuple, bytes | None]:
    """The next `(header, payload)`; payload is None when empty. EOFError/OSError when the socket is gone."""
    head_len, body_len = PREFIX.unpack(_recv_exact(sock, PREFIX.size))
    header = pickle.loads(_recv_exact(sock, head_len))
    return header, (_recv_exact(sock, body_len) if body_len else None)
