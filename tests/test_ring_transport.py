"""Batches through the worker's shared ring (py_worker.frames.Ring), on a real Worker and a real server."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ServerProcess
from py_worker.arrow_ipc import ipc_to_table
from py_worker.client import BridgeClient
from py_worker.config import ServerConfig
from py_worker.frames import Ring, recv_frame, recv_frame_with_fds, socket_of
from py_worker.limits import Limits
from py_worker.spec import DatasetSpec
from py_worker.wire import pb
from py_worker.worker import Worker

ROWS = 3000


@pytest.fixture(scope="module")
def wide_root(tmp_path_factory):
    """Rows of ~1 KB text, so batches of 100-400 rows are 100-400 KB (ring-sized payloads)."""
    root = tmp_path_factory.mktemp("wide")
    (root / "wide").mkdir()
    table = pa.table({"id": list(range(ROWS)), "text": [f"{i:06d}" + "x" * (900 + i % 200) for i in range(ROWS)]})
    pq.write_table(table, root / "wide" / "part-0.parquet", row_group_size=700)
    return root


SPEC = DatasetSpec("parquet", data_files=(("", ("wide/*.parquet",)),))


def _ids(tables) -> list[int]:
    return [i for t in tables for i in t.column("id").to_pylist()]


def test_a_worker_sends_large_batches_through_its_ring(tmp_path, wide_root):
    """A 512 KiB ring: 100-row batches (~100 KB) fit, so they go through it, and it wraps."""
    front, worker_end = mp.Pipe(duplex=True)
    limits = Limits(worker_ring_bytes=512 * 1024)
    config = ServerConfig(data_roots=[wide_root], export_roots=[tmp_path], state_dir=tmp_path, limits=limits)
    worker = Worker(worker_end, config, "w-ring")
    threading.Thread(target=worker.run, daemon=True).start()
    sock = socket_of(front)
    worker.send_ready()
    header, payload, fds = recv_frame_with_fds(sock)
    # The ring's memfd travels with the "ready" frame; nothing of the worker's /proc entry is needed.
    assert header[0] == "ready" and header[2] == 512 * 1024 and payload is None and len(fds) == 1
    ring = Ring.attach(fds[0], header[2])
    try:
        front.send_bytes(pickle.dumps(("ring_ok",)))
        front.send_bytes(pickle.dumps(("open", 1, "s", SPEC.to_dict(), 100, 1 << 20, 0, None)))
        header, _ = recv_frame(sock, ring)
        assert header[0] == "reply" and header[2], header
        tables, before, total = [], ring.tail, 0
        while True:
            # One credit at a time: the ring is never full, so every large batch must use it.
            front.send_bytes(pickle.dumps(("credit", "s", 1)))
            header, payload = recv_frame(sock, ring)
            total += len(payload or b"")
            assert header[0] == "batch", header
            if header[5]:
                break
            tables.append(ipc_to_table(pb.Batch.FromString(payload).arrow_ipc))
        assert _ids(tables) == list(range(ROWS))
        carried = ring.tail - before  # bytes read from the ring, plus the tails skipped at each wrap
        assert carried > 4 * 512 * 1024  # it wrapped several times
        assert carried > 0.8 * total  # and carried most of the bytes
    finally:
        front.send_bytes(pickle.dumps(("shutdown",)))
        ring.close()
        sock.close()


@pytest.mark.parametrize("ring_bytes", ["0", "262144"])
def test_a_server_without_a_ring_or_with_a_small_one_delivers_every_row(tmp_path, wide_root, ring_bytes):
    """Off (0): everything over the socket. 256 KiB: 400-row batches (~400 KB) never fit and go inline."""
    srv = ServerProcess("--workers", "1", "--data-root", str(wide_root), "--export-root", str(tmp_path),
                        "--state-dir", str(tmp_path / "state"), "--worker-ring-bytes", ring_bytes).start()
    try:
        with BridgeClient(srv.target, timeout=60) as client:
            for batch_size in (100, 400):
                h = client.open(SPEC, batch_size=batch_size)
                got = [b.table for b in client.read(h.session_id) if b.table is not None]
                assert _ids(got) == list(range(ROWS))
                assert got[0].column("text").to_pylist()[:3] == [f"{i:06d}" + "x" * (900 + i) for i in range(3)]
                client.close_session(h.session_id)
    finally:
        assert srv.stop() == 0


def test_a_piece_encoded_into_the_ring_is_byte_for_byte_the_usual_message(wide_root):
    from py_worker.arrow_ipc import encode_batch
    from py_worker.worker import _Piece

    table = pq.read_table(wide_root / "wide" / "part-0.parquet")
    # Two chunks per column, as `datasets` hands over slices that span record batches.
    piece_table = pa.concat_tables([table.slice(0, 150), table.slice(150, 150)])
    expected = encode_batch(7, 300, piece_table).to_pybytes()
    producer = Ring.create(1 << 20)
    consumer = Ring.attach(os.dup(producer.fd), 1 << 20)
    try:
        pos, n = _Piece(7, 300, piece_table).encode_into(producer)
        assert consumer.take(pos, n) == expected
        # No room: the piece is encoded into its own buffer instead, for the socket.
        big = _Piece(8, ROWS, table)
        assert big.encode_into(producer) is None
        buf, fresh = big.encode()
        assert not fresh and buf.to_pybytes() == encode_batch(8, ROWS, table).to_pybytes()
    finally:
        producer.close()
        consumer.close()
