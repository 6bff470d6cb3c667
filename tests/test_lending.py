"""Lent batches: the front reads a worker's Arrow buffers straight out of its memory (py_worker.peer_memory).

On real processes: a spawned child's memory read by its parent, a real
Worker lending every batch of a Parquet dataset, and a real server whose
metrics say which path the bytes took, with lending on and off.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import socket
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ServerProcess, free_port, scrape, value
from py_worker import peer_memory
from py_worker.arrow_ipc import BatchEncoder, encode_batch, ipc_to_table
from py_worker.client import BridgeClient
from py_worker.config import ServerConfig
from py_worker.frames import Ring, RingError, recv_frame, recv_frame_with_fds, send_lent_frame, socket_of
from py_worker.limits import Limits
from py_worker.spec import DatasetSpec
from py_worker.wire import pb
from py_worker.worker import Worker, _Piece

pytestmark = pytest.mark.skipif(not peer_memory.supported(), reason="process_vm_readv is Linux-only")

ROWS = 2000
SPEC = DatasetSpec("parquet", data_files=(("", ("lend/*.parquet",)),))


@pytest.fixture(scope="module")
def lend_root(tmp_path_factory):
    """Text rows in several row groups, with nulls and a list column (chunked tables, bitmaps, offsets)."""
    root = tmp_path_factory.mktemp("lend")
    (root / "lend").mkdir()
    table = pa.table({
        "id": list(range(ROWS)),
        "text": [None if i % 97 == 0 else f"{i:05d}" + "y" * (300 + i % 50) for i in range(ROWS)],
        "tags": [[i, i + 1] if i % 5 else None for i in range(ROWS)],
    })
    pq.write_table(table, root / "lend" / "part-0.parquet", row_group_size=333)
    return root


def _hold(conn, size: int) -> None:
    """Child: keep `size` known bytes in memory and say where they are, until told to leave."""
    data = np.arange(size, dtype=np.uint8)
    conn.send((data.ctypes.data, size))
    conn.recv()


def test_a_parent_reads_spans_of_its_child_into_one_bytes_object():
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_hold, args=(child, 5000), daemon=True)
    proc.start()
    try:
        address, size = parent.recv()
        expected = np.arange(size, dtype=np.uint8).tobytes()
        # Spans out of order and overlapping are read as listed; more than IOV_MAX of them too.
        spans = [(address + 4000, 1000), (address, 10), (address + 5, 20)]
        spans += [(address + i % size, 1) for i in range(2500)]
        table = b"".join(peer_memory.SPAN.pack(a, n) for a, n in spans)
        got = peer_memory.read(proc.pid, table, sum(n for _, n in spans))
        assert isinstance(got, bytes)
        assert got == (expected[4000:5000] + expected[:10] + expected[5:25]
                       + bytes(expected[i % size] for i in range(2500)))
        assert peer_memory.probe(proc.pid, address, expected[:32])
        assert not peer_memory.probe(proc.pid, address, b"\xff" * 32)
        with pytest.raises(peer_memory.PeerMemoryError, match="covers 10 bytes, not 11"):
            peer_memory.read(proc.pid, peer_memory.SPAN.pack(address, 10), 11)
        with pytest.raises(peer_memory.PeerMemoryError, match="malformed"):
            peer_memory.read(proc.pid, b"\x00" * 15, 1)
        with pytest.raises(peer_memory.PeerMemoryError, match="Bad address"):
            peer_memory.read(proc.pid, peer_memory.SPAN.pack(8, 16), 16)  # not mapped there
    finally:
        parent.send("bye")
        proc.join(10)
    with pytest.raises(peer_memory.PeerMemoryError, match="No such process"):
        peer_memory.read(proc.pid, peer_memory.SPAN.pack(address, 10), 10)
    assert not peer_memory.probe(proc.pid, address, expected[:32])


def _ring_pair(size: int) -> tuple[Ring, Ring]:
    producer = Ring.create(size)
    return producer, Ring.attach(os.dup(producer.fd), size)


def test_a_lent_frame_arrives_as_the_bytes_it_lends_and_is_counted_returned():
    producer, consumer = _ring_pair(1 << 16)
    a, b = pa.py_buffer(b"hello "), np.frombuffer(b"world", dtype=np.uint8)
    spans, total = peer_memory.spans_table([a, b"", b])
    sa, sb = socket.socketpair()
    try:
        tally = {"lent": 0, "ring": 0, "inline": 0}
        send_lent_frame(sa, ("batch", 1), spans, total)
        assert producer.loans_returned() == 0
        assert recv_frame(sb, consumer, os.getpid(), tally) == (("batch", 1), b"hello world")
        assert producer.loans_returned() == 1 and tally == {"lent": 11, "ring": 0, "inline": 0}
        # A frame that lends without lending agreed (no lender, or no ring) cannot be trusted.
        send_lent_frame(sa, ("batch", 2), spans, total)
        with pytest.raises(RingError, match="lending was not agreed"):
            recv_frame(sb, consumer, 0)
    finally:
        for x in (sa, sb, producer, consumer):
            x.close()


def test_a_lent_piece_is_the_message_the_ring_would_carry(lend_root):
    table = pq.read_table(lend_root / "lend" / "part-0.parquet")
    for piece_table in (table.slice(10, 700), table.slice(0, 300).combine_chunks(), table):
        lent = _Piece(3, piece_table.num_rows, piece_table).lend()
        assert lent is not None
        spans, total, keep = lent
        got = peer_memory.read(os.getpid(), spans, total)
        encoder = BatchEncoder(3, piece_table.num_rows, piece_table, gather=True)
        written = bytearray(encoder.size)
        encoder.write_into(memoryview(written))
        assert got == bytes(written)
        assert ipc_to_table(pb.Batch.FromString(got).arrow_ipc).equals(piece_table)
        if any(col.num_chunks > 1 for col in piece_table.columns):  # what the ring carries, byte for byte
            assert got == encode_batch(3, piece_table.num_rows, piece_table).to_pybytes()
    # A type ipc_gather does not lay out (dictionary) is not lent: it goes the ring's way.
    dict_table = pa.table({"d": pa.array(["a", "b", "a"]).dictionary_encode()})
    assert _Piece(4, 3, dict_table).lend() is None


def test_a_worker_lends_every_batch_and_lets_go_of_what_the_front_read(tmp_path, lend_root):
    front, worker_end = mp.Pipe(duplex=True)
    config = ServerConfig(data_roots=[lend_root], export_roots=[tmp_path], state_dir=tmp_path,
                          limits=Limits(worker_ring_bytes=1 << 20))
    worker = Worker(worker_end, config, "w-lend")
    threading.Thread(target=worker.run, daemon=True).start()
    sock = socket_of(front)
    worker.send_ready()
    header, _, fds = recv_frame_with_fds(sock)
    assert header[0] == "ready" and len(fds) == 1
    ring = Ring.attach(fds[0], header[2])
    assert peer_memory.probe(os.getpid(), header[3], header[4])
    try:
        front.send_bytes(pickle.dumps(("ring_ok", True)))
        front.send_bytes(pickle.dumps(("open", 1, "s", SPEC.to_dict(), 150, 1 << 20, 0, None)))
        header, _ = recv_frame(sock, ring, os.getpid())
        assert header[0] == "reply" and header[2], header
        tables = []
        tally = {"lent": 0, "ring": 0, "inline": 0}
        while True:
            front.send_bytes(pickle.dumps(("credit", "s", 4)))
            for _ in range(4):
                header, payload = recv_frame(sock, ring, os.getpid(), tally)
                assert header[0] == "batch", header
                if header[5]:
                    break
                tables.append(ipc_to_table(pb.Batch.FromString(payload).arrow_ipc))
            if header[5]:
                break
        assert [i for t in tables for i in t.column("id").to_pylist()] == list(range(ROWS))
        assert pa.concat_tables(tables).equals(pq.read_table(lend_root / "lend" / "part-0.parquet"))
        # Nothing went another way but the end-of-data message (a few bytes, inline).
        assert ring.tail == 0 and tally["ring"] == 0 and tally["inline"] < 16
        assert ring.loans_read == len(tables) and tally["lent"] > 600_000
        with worker._send_lock:
            worker._return_loans()
            assert not worker._loans  # every lent batch was read, so none is held
    finally:
        front.send_bytes(pickle.dumps(("shutdown",)))
        ring.close()
        sock.close()


@pytest.mark.parametrize("lend", ["1", "0"])
def test_a_server_lends_batches_unless_told_not_to_and_delivers_every_row(tmp_path, lend_root, lend):
    mport = free_port()
    srv = ServerProcess("--workers", "1", "--data-root", str(lend_root), "--export-root", str(tmp_path),
                        "--state-dir", str(tmp_path / "state"), "--metrics-port", str(mport),
                        env={"HF_BRIDGE_LEND": lend}).start()
    try:
        with BridgeClient(srv.target, timeout=60) as client:
            h = client.open(SPEC, batch_size=256)
            got = pa.concat_tables([b.table for b in client.read(h.session_id) if b.table is not None])
            assert got.equals(pq.read_table(lend_root / "lend" / "part-0.parquet"))
            client.close_session(h.session_id)
        text = scrape(mport)
        lent = value(text, "hf_bridge_worker_payload_bytes_total", '{path="lent"}')
        ring = value(text, "hf_bridge_worker_payload_bytes_total", '{path="ring"}')
        if lend == "1":
            assert lent > 600_000 and ring == 0
        else:
            assert lent == 0 and ring > 600_000
    finally:
        assert srv.stop() == 0
