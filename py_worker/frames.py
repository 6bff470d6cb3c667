"""Worker -> front message framing on the worker's Unix socket, built for bulk batch bytes.

The front talks to a worker over one duplex `multiprocessing.Pipe` (a Unix
stream socket pair on POSIX). Commands (front -> worker) stay small pickled
`Connection.send_bytes` messages. Messages from the worker use this framing on
the same socket, because they carry the batches:

    frame   = length prefix | header | payload
    prefix  = struct "!IQQQQ": header length, inline payload length,
              ring position, ring payload length, lent payload length
              (network byte order)
    header  = a pickled tuple
    payload = raw bytes (a serialised `Batch`), possibly empty: inline after
              the header, in the worker's shared ring, or lent (below)

A batch travels one of three ways, cheapest first:

* **Lent**: the worker sends only a table of spans of its own memory (the
  Arrow buffers of the batch, see `peer_memory.spans_table`) as the inline
  payload, and the front reads them with `peer_memory.read` straight into the
  `bytes` object gRPC sends. The worker copies nothing; it keeps the spans
  alive until the front has counted the frame read in the ring's second
  counter (`Ring.loans_read`). Lending needs the ring (for that counter) and
  a front that can read the worker's memory (`peer_memory.probe`, tried
  once when the worker starts).
* **Ring**: a shared-memory buffer the worker creates (a memfd) and the front
  maps once it has the worker's "ready" message, which carries the memfd's
  descriptor (`send_frame_with_fds`). The worker copies the payload into the
  ring and sends only the prefix and header; the front copies it out into
  the `bytes` object gRPC sends and publishes how far it has read. Frames
  arrive in order, so the ring is consumed in order: one producer, one
  consumer, no locks. A payload that does not fit (ring full, or larger than
  the ring) goes inline instead, so a slow front never blocks the worker on
  the ring.
* **Inline**: the sender hands the payload to the kernel straight from its
  Arrow buffer (`sendmsg` gathers prefix, header and payload; no join in
  Python), and the receiver reads it with one `recv(n, MSG_WAITALL)` into a
  `bytes` object of exactly that size.
"""

from __future__ import annotations

import mmap
import os
import pickle
import socket
import struct
from typing import Any

from py_worker import peer_memory

PREFIX = struct.Struct("!IQQQQ")
# Payloads from this size up go through the ring when one is attached.
RING_MIN_BYTES = 64 * 1024
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


class RingError(ValueError):
    """A ring reference that does not describe bytes the producer wrote: the peer cannot be trusted."""


class Ring:
    """A single-producer, single-consumer byte ring in shared memory for batch payloads.

    Positions are absolute byte counts (they only grow); `pos % size` is the
    offset in the data area. The first 8 bytes of the mapping hold the
    consumer's position, which the producer reads to know what is free. A
    payload never wraps: when the tail of the area is too short, the producer
    skips to the start, and the consumer's next release covers the skip.
    The next 8 bytes count the lent frames the consumer has read (see the
    module's doc), so the producer knows which lent spans it may let go.
    """

    HEAD = 64  # the consumer's position and lent-frame count (8 bytes each), padded to a cache line
    _LOANS = 8  # offset of the lent-frame count

    def __init__(self, mm: mmap.mmap, size: int, fd: int | None = None) -> None:
        self.mm = mm
        self.size = size
        self.fd = fd
        self.view = memoryview(mm)
        self.head = 0  # producer: next free absolute position
        self.tail = 0  # consumer: everything before it was read
        self.loans_read = 0  # consumer: lent frames read so far

    @classmethod
    def create(cls, size: int) -> "Ring":
        """A new ring on an anonymous memfd (producer side). Raises OSError where memfds are unavailable."""
        fd = os.memfd_create("hf_bridge-ring", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, cls.HEAD + size)
            mm = mmap.mmap(fd, cls.HEAD + size)
        except BaseException:
            os.close(fd)
            raise
        return cls(mm, size, fd)

    @classmethod
    def attach(cls, fd: int, size: int) -> "Ring":
        """Map a ring from a descriptor of the producer's memfd (consumer side); `fd` is closed either way.

        The descriptor comes from the producer itself (`send_frame_with_fds`),
        so no access to the producer's /proc entry is needed. OSError when it
        is not a ring of `size` bytes.
        """
        try:
            if os.fstat(fd).st_size != cls.HEAD + size:
                raise OSError(f"the shared ring's descriptor is not a ring of {size} bytes")
            mm = mmap.mmap(fd, cls.HEAD + size)
        finally:
            os.close(fd)
        return cls(mm, size)

    def close(self) -> None:
        """Unmap (and close the memfd on the producer side)."""
        self.view.release()
        self.mm.close()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    # -- producer --
    def reserve(self, n: int) -> tuple[int, memoryview] | None:
        """Room for `n` bytes: `(absolute position, writable view)`, or None when it does not fit now.

        Nothing is published until `commit`; one reservation at a time.
        """
        if n > self.size:
            return None
        consumed = struct.unpack_from("<Q", self.mm, 0)[0]
        start = self.head
        off = start % self.size
        if off + n > self.size:
            start += self.size - off
            off = 0
        if start + n - consumed > self.size:
            return None
        return start, self.view[self.HEAD + off:self.HEAD + off + n]

    def commit(self, pos: int, n: int) -> None:
        """Mark the reservation at `pos` written (the frame naming it may now be sent)."""
        self.head = pos + n

    def put(self, body: memoryview) -> int | None:
        """Copy `body` into the ring; its absolute position, or None when it does not fit now."""
        slot = self.reserve(body.nbytes)
        if slot is None:
            return None
        pos, view = slot
        view[:] = body
        self.commit(pos, body.nbytes)
        return pos

    def loans_returned(self) -> int:
        """Producer: how many lent frames the consumer has read (their spans may be let go)."""
        return struct.unpack_from("<Q", self.mm, self._LOANS)[0]

    # -- consumer --
    def loan_read(self) -> None:
        """Consumer: count one more lent frame read, for the producer to see."""
        self.loans_read += 1
        struct.pack_into("<Q", self.mm, self._LOANS, self.loans_read)

    def take(self, pos: int, n: int) -> bytes:
        """The `n` bytes at absolute position `pos`, copied out; releases them and everything before."""
        off = pos % self.size
        if pos < self.tail or n > self.size or off + n > self.size or pos - self.tail > self.size:
            raise RingError(f"ring reference {pos}+{n} is outside the ring (read up to {self.tail})")
        data = bytes(self.view[self.HEAD + off:self.HEAD + off + n])
        self.tail = pos + n
        struct.pack_into("<Q", self.mm, 0, self.tail)
        return data


def send_ring_frame(sock: socket.socket, header: tuple, pos: int, n: int) -> None:
    """Send a frame whose payload was written into the ring at `pos` (`n` bytes, committed)."""
    head = pickle.dumps(header, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(PREFIX.pack(len(head), 0, pos, n, 0) + head)


def send_lent_frame(sock: socket.socket, header: tuple, spans: bytes, n: int) -> None:
    """Send a frame whose `n`-byte payload the front reads from our memory: `spans` is its span table
    (`peer_memory.spans_table`). The spans must stay valid until the ring counts the frame read."""
    head = pickle.dumps(header, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(PREFIX.pack(len(head), len(spans), 0, 0, n) + head + spans)


def send_frame(sock: socket.socket, header: tuple, payload: Any = None, ring: Ring | None = None) -> None:
    """Send one frame; `payload` is None or any buffer (bytes, memoryview, pyarrow Buffer). Not thread-safe.

    With a `ring`, a payload of `RING_MIN_BYTES` or more goes through it when it fits.
    """
    head = pickle.dumps(header, protocol=pickle.HIGHEST_PROTOCOL)
    if payload is None:
        sock.sendall(PREFIX.pack(len(head), 0, 0, 0, 0) + head)
        return
    body = memoryview(payload).cast("B")
    if ring is not None and body.nbytes >= RING_MIN_BYTES:
        pos = ring.put(body)
        if pos is not None:
            sock.sendall(PREFIX.pack(len(head), 0, pos, body.nbytes, 0) + head)
            return
    parts = [PREFIX.pack(len(head), body.nbytes, 0, 0, 0) + head, body]
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


def send_frame_with_fds(sock: socket.socket, header: tuple, fds: list[int]) -> None:
    """Send a frame without payload, with open descriptors attached to it (SCM_RIGHTS: the receiver
    gets its own descriptors for the same open files; ours stay open). Not thread-safe."""
    head = pickle.dumps(header, protocol=pickle.HIGHEST_PROTOCOL)
    data = PREFIX.pack(len(head), 0, 0, 0, 0) + head
    sent = socket.send_fds(sock, [data], fds)
    if sent < len(data):
        sock.sendall(data[sent:])


def recv_frame_with_fds(sock: socket.socket, ring: Ring | None = None,
                        max_fds: int = 4) -> tuple[tuple, bytes | None, list[int]]:
    """Like `recv_frame`, also returning the descriptors sent with the frame (the caller must close them)."""
    data, fds, _flags, _addr = socket.recv_fds(sock, PREFIX.size, max_fds)
    try:
        if not data:
            raise EOFError("the peer closed the socket")
        if len(data) < PREFIX.size:
            data += _recv_exact(sock, PREFIX.size - len(data))
        header, payload = _frame_after_prefix(sock, data, ring)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return header, payload, fds


#: How a payload reached the front (the keys of a `recv_frame` tally).
PATHS = ("lent", "ring", "inline")


def recv_frame(sock: socket.socket, ring: Ring | None = None, lender: int = 0,
               tally: dict[str, int] | None = None) -> tuple[tuple, bytes | None]:
    """The next `(header, payload)`; payload is None when empty. EOFError/OSError when the socket is gone,
    RingError when the frame refers to a ring that is not attached or to bytes outside it.

    `lender` is the pid of the process that may lend payloads (0: none may);
    a lent payload that cannot be read raises `peer_memory.PeerMemoryError`.
    With a `tally`, the payload's length is added to it under its path (`PATHS`).
    """
    return _frame_after_prefix(sock, _recv_exact(sock, PREFIX.size), ring, lender, tally)


def _frame_after_prefix(sock: socket.socket, prefix: bytes, ring: Ring | None, lender: int = 0,
                        tally: dict[str, int] | None = None) -> tuple[tuple, bytes | None]:
    """The rest of a frame whose `prefix` was read."""
    head_len, body_len, ring_pos, ring_len, lent_len = PREFIX.unpack(prefix)
    header = pickle.loads(_recv_exact(sock, head_len))
    if lent_len:
        if ring is None or not lender:
            raise RingError("a frame lends a payload, but lending was not agreed")
        spans = _recv_exact(sock, body_len) if body_len else b""
        payload = peer_memory.read(lender, spans, lent_len)
        ring.loan_read()
        path = "lent"
    elif ring_len:
        if ring is None:
            raise RingError("a frame refers to a shared ring that is not attached")
        payload = ring.take(ring_pos, ring_len)
        path = "ring"
    else:
        payload = _recv_exact(sock, body_len) if body_len else None
        path = "inline"
    if tally is not None and payload is not None:
        tally[path] += len(payload)
    return header, payload
