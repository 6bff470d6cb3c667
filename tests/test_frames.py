"""Worker -> front framing (py_worker.frames) and the one-buffer Batch encoder (arrow_ipc.encode_batch)."""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import threading

import pyarrow as pa
import pytest

from py_worker.arrow_ipc import batch_message, encode_batch, ipc_to_table, table_to_ipc
from py_worker.frames import recv_frame, send_frame, socket_of
from py_worker.wire import pb


def _pair():
    a, b = mp.Pipe(duplex=True)
    return a, b, socket_of(a), socket_of(b)


def test_frames_carry_headers_and_large_payloads_in_order():
    a, b, sa, sb = _pair()
    big = pa.py_buffer(bytes(range(256)) * 40_000)  # 10 MB: larger than any socket buffer
    sent = [(("reply", 1, True, {"k": "v"}), None), (("batch", "s", 0, 3, "{}", False), big),
            (("batch", "s", 1, 0, "{}", True), b"\x08\x01\x20\x01"), (("ready", 42), memoryview(b"xyz"))]

    def writer() -> None:
        for header, payload in sent:
            send_frame(sa, header, payload)

    t = threading.Thread(target=writer)
    t.start()
    got = [recv_frame(sb) for _ in sent]
    t.join()
    assert [h for h, _ in got] == [h for h, _ in sent]
    assert got[0][1] is None
    assert got[1][1] == big.to_pybytes() and isinstance(got[1][1], bytes)
    assert got[2][1] == b"\x08\x01\x20\x01"
    assert got[3][1] == b"xyz"
    for s in (sa, sb):
        s.close()
    a.close()
    b.close()


def test_commands_and_frames_share_the_duplex_pipe():
    a, b, sa, sb = _pair()
    a.send_bytes(b"command")  # front -> worker stays a multiprocessing message
    send_frame(sb, ("reply", 7, True, None))  # worker -> front is a frame
    assert b.recv_bytes() == b"command"
    assert recv_frame(sa) == (("reply", 7, True, None), None)
    for s in (sa, sb):
        s.close()
    a.close()
    b.close()


def test_a_peer_that_goes_away_mid_frame_is_an_eof():
    a, b, sa, sb = _pair()
    sa.sendall(b"\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x00ab")  # header of 5 bytes, only 2 sent
    sa.close()
    a.close()
    with pytest.raises(EOFError):
        recv_frame(sb)
    sb.close()
    b.close()


@pytest.mark.parametrize("seq", [0, 1, 300, 2**40])
def test_encode_batch_equals_the_two_step_encoding_and_parses(seq):
    table = pa.table({
        "id": pa.array(range(500)),
        "text": pa.array([f"row {i} " * (i % 7) for i in range(500)]),
        "tag": pa.array(["a", "b", None, "c"] * 125).dictionary_encode(),
        "ids": pa.array([[i, i + 1] if i % 3 else None for i in range(500)]),
    })
    for piece in (table, table.slice(0, 0), table.slice(17, 211)):
        data = encode_batch(seq, piece.num_rows, piece).to_pybytes()
        assert data == batch_message(seq, piece.num_rows, table_to_ipc(piece))
        msg = pb.Batch.FromString(data)
        assert msg.seq == seq and msg.num_rows == piece.num_rows and not msg.end_of_data
        assert ipc_to_table(msg.arrow_ipc).equals(piece)


# ---- the shared ring --------------------------------------------------------------------------

from py_worker.frames import RING_MIN_BYTES, Ring, RingError  # noqa: E402


def _close(*things) -> None:
    """Close rings, sockets and pipe ends."""
    for t in things:
        t.close()


def _ring_pair(size: int) -> tuple[Ring, Ring]:
    producer = Ring.create(size)
    return producer, Ring.attach(os.dup(producer.fd), size)


def test_ring_carries_payloads_in_order_through_wraparound_and_falls_back_inline_when_full():
    a, b, sa, sb = _pair()
    producer, consumer = _ring_pair(1_000_000)
    sizes = [300_000, 250_000, 400_000, 70_000, 999_999, 2_000_000, 65_536, 500_000] * 4
    payloads = [bytes([i % 251]) * n for i, n in enumerate(sizes)]

    def writer() -> None:
        for i, p in enumerate(payloads):
            send_frame(sa, ("batch", i), p, ring=producer)

    t = threading.Thread(target=writer)
    t.start()
    got = []
    for _ in payloads:
        got.append(recv_frame(sb, ring=consumer))
    t.join()
    assert [h for h, _ in got] == [("batch", i) for i in range(len(payloads))]
    assert [p for _, p in got] == payloads
    assert consumer.tail <= producer.head
    _close(producer, consumer, sa, sb, a, b)


def test_ring_put_refuses_what_does_not_fit_until_the_consumer_reads():
    producer, consumer = _ring_pair(1 << 20)
    first = producer.put(memoryview(b"a" * 600_000))
    assert first == 0
    assert producer.put(memoryview(b"b" * 600_000)) is None  # only 448 KiB free
    assert producer.put(memoryview(b"c" * (2 << 20))) is None  # larger than the ring
    assert consumer.take(first, 600_000) == b"a" * 600_000
    second = producer.put(memoryview(b"b" * 600_000))
    assert second == 1 << 20  # skipped the short tail, wrapped to the start
    assert consumer.take(second, 600_000) == b"b" * 600_000
    producer.close()
    consumer.close()


def test_ring_references_outside_what_was_written_are_protocol_errors():
    a, b, sa, sb = _pair()
    producer, consumer = _ring_pair(1 << 20)
    with pytest.raises(RingError):
        consumer.take(0, (1 << 20) + 1)  # larger than the ring
    with pytest.raises(RingError):
        consumer.take((1 << 20) - 10, 100)  # would wrap
    consumer.take(0, 10)
    with pytest.raises(RingError):
        consumer.take(0, 10)  # before what was already read
    # A frame that points into a ring the receiver never attached.
    send_frame(sa, ("batch", 0), b"x" * RING_MIN_BYTES, ring=producer)
    with pytest.raises(RingError):
        recv_frame(sb)
    _close(producer, consumer, sa, sb, a, b)


def test_a_ring_descriptor_travels_with_a_frame_and_maps_the_same_memory():
    """The worker hands its memfd to the front with the "ready" frame (SCM_RIGHTS)."""
    from py_worker.frames import recv_frame_with_fds, send_frame_with_fds

    a, b = socket.socketpair()
    producer = Ring.create(1 << 16)
    try:
        send_frame_with_fds(a, ("ready", 7, 1 << 16), [producer.fd])
        send_frame(a, ("after",), b"x" * 10)
        header, payload, fds = recv_frame_with_fds(b)
        assert header == ("ready", 7, 1 << 16) and payload is None and len(fds) == 1
        assert fds[0] != producer.fd
        consumer = Ring.attach(fds[0], 1 << 16)
        try:
            pos = producer.put(memoryview(b"shared bytes" * 100))
            assert consumer.take(pos, 1200) == b"shared bytes" * 100
        finally:
            consumer.close()
        # The next frame has no descriptors, and plain frames read as before.
        header, payload, fds = recv_frame_with_fds(b)
        assert header == ("after",) and payload == b"x" * 10 and fds == []
    finally:
        _close(producer, a, b)


def test_a_descriptor_that_is_not_a_ring_of_that_size_is_refused_and_closed():
    producer = Ring.create(1 << 16)
    fd = os.dup(producer.fd)
    try:
        with pytest.raises(OSError, match="not a ring of"):
            Ring.attach(fd, 1 << 20)
        with pytest.raises(OSError):
            os.fstat(fd)  # closed by attach, even on refusal
    finally:
        producer.close()
