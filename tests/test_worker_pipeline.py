"""The worker's pipeline: producer threads prepare pieces, one sender thread encodes and sends them.

A real `Worker` answers over a real socket pair, as in a worker process; the
test plays the front (open, credit, close, and reading frames).
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import random
import socket
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from py_worker.arrow_ipc import encode_batch, slice_table, split_table
from py_worker.config import ServerConfig
from py_worker.frames import recv_frame, socket_of
from py_worker.limits import Limits
from py_worker.spec import DatasetSpec
from py_worker.wire import pb
from py_worker.worker import Worker, _Piece

PQ = DatasetSpec("parquet", data_files=(("", ("simple_pq/*.parquet",)),))  # 500 rows, row groups of 60


class Front:
    """The front's end of one worker: commands out, frames in."""

    def __init__(self, tmp_path: Path, roots: list[Path], budget: int = 1 << 30, prefetch: int = 8) -> None:
        self.conn, worker_end = mp.Pipe(duplex=True)
        limits = Limits(prefetch_batches=prefetch, worker_prefetch_bytes=budget)
        config = ServerConfig(data_roots=roots, export_roots=[tmp_path], state_dir=tmp_path, limits=limits)
        self.worker = Worker(worker_end, config, "w-test")
        threading.Thread(target=self.worker.run, daemon=True).start()
        self.sock = socket_of(self.conn)
        self.req = 0

    def cmd(self, *command) -> None:
        self.conn.send_bytes(pickle.dumps(command))

    def open(self, sid: str, spec: DatasetSpec, batch_size: int = 50, max_bytes: int = 1 << 20) -> None:
        self.req += 1
        self.cmd("open", self.req, sid, spec.to_dict(), batch_size, max_bytes, 0, None)

    def frame(self) -> tuple[tuple, bytes | None]:
        return recv_frame(self.sock)

    def nothing_pending(self) -> bool:
        """True when no frame waits on the socket."""
        try:
            self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        return False

    def settle(self) -> int:
        """Wait until the worker stops preparing and encoding; returns the bytes it holds."""
        last, stable = -1, 0
        while stable < 5:
            time.sleep(0.1)
            now = (self.worker.held_bytes, tuple(
                (len(s.ready), sum(isinstance(p, _Piece) and p.buf is not None for _, p in s.ready))
                for s in list(self.worker.sessions.values())))
            stable = stable + 1 if now == last else 0
            last = now
        return last[0]

    def shutdown(self) -> None:
        self.cmd("shutdown")


@pytest.fixture
def front(tmp_path, data_root):
    f = Front(tmp_path, [data_root, tmp_path])
    try:
        yield f
    finally:
        f.shutdown()


def _rows(payload: bytes) -> list[int]:
    batch = pb.Batch.FromString(payload)
    reader = pa.ipc.open_stream(batch.arrow_ipc)
    batches = list(reader)
    assert len(batches) == 1, "every Batch carries exactly one record batch"
    return batches[0].column(0).to_pylist()


def test_sessions_sharing_a_worker_each_arrive_complete_and_in_order(front):
    specs = {f"s{i}": DatasetSpec(PQ.path, data_files=PQ.data_files, num_shards=4, shard_index=i) for i in range(4)}
    specs["all"] = PQ
    for sid, spec in specs.items():
        front.open(sid, spec, batch_size=7 + len(sid))
    replies = [front.frame()[0] for _ in specs]
    assert all(r[0] == "reply" and r[2] for r in replies)
    rng = random.Random(5)
    got: dict[str, list[int]] = {sid: [] for sid in specs}
    seqs: dict[str, list[int]] = {sid: [] for sid in specs}
    ended: set[str] = set()
    outstanding = {sid: 0 for sid in specs}
    while len(ended) < len(specs):
        for sid in specs:  # credits trickle in, in random amounts, interleaved across sessions
            if sid not in ended and outstanding[sid] == 0:
                n = rng.randint(1, 4)
                outstanding[sid] += n
                front.cmd("credit", sid, n)
        header, payload = front.frame()
        assert header[0] == "batch", header
        _, sid, seq, num_rows, _ckpt, end, _has_payload = header
        outstanding[sid] -= 1
        assert outstanding[sid] >= 0, f"{sid} got more batches than credits"
        seqs[sid].append(seq)
        if end:
            ended.add(sid)
            continue
        rows = _rows(payload)
        assert len(rows) == num_rows
        got[sid] += rows
    for sid in specs:
        assert seqs[sid] == list(range(len(seqs[sid])))
    assert got["all"] == list(range(500))
    assert sorted(sum((got[f"s{i}"] for i in range(4)), [])) == list(range(500))
    assert all(got[f"s{i}"] == sorted(got[f"s{i}"]) and got[f"s{i}"] for i in range(4))
    assert front.settle() == 0 and not front.worker.sessions


def test_no_batch_goes_out_without_a_credit(front):
    front.open("a", PQ)
    assert front.frame()[0][2]
    front.settle()
    assert front.nothing_pending()  # batches are ready, but no credit came yet
    assert len(front.worker.sessions["a"].ready) == 8
    front.cmd("credit", "a", 3)
    assert [front.frame()[0][2] for _ in range(3)] == [0, 1, 2]
    front.settle()
    assert front.nothing_pending() and front.worker.sessions["a"].credits == 0
    front.cmd("credit", "a", 1)
    assert front.frame()[0][2] == 3


def test_ready_pieces_are_encoded_ahead_and_counted_at_their_encoded_size(front):
    front.open("a", PQ)
    assert front.frame()[0][2]
    held = front.settle()
    ready = list(front.worker.sessions["a"].ready)
    assert len(ready) == 8 and all(p.buf is not None for _, p in ready)
    assert held == sum(p.buf.size for _, p in ready) == sum(p.size for _, p in ready)


def test_closing_mid_stream_releases_what_the_session_held(front):
    front.open("a", PQ)
    front.open("b", DatasetSpec(PQ.path, data_files=PQ.data_files, columns=("id",)))
    assert [front.frame()[0][2] for _ in range(2)] == [True, True]
    front.cmd("credit", "a", 2)
    front.cmd("credit", "b", 2)
    for _ in range(4):
        assert front.frame()[0][0] == "batch"
    both = front.settle()
    held_b = sum(p.size for _, p in front.worker.sessions["b"].ready)
    assert both > held_b > 0
    front.cmd("close", "a")
    assert front.settle() == held_b
    assert set(front.worker.sessions) == {"b"}
    front.cmd("close", "b")
    assert front.settle() == 0 and not front.worker.sessions
    front.cmd("credit", "a", 5)  # credits for a closed session are ignored
    front.settle()
    assert front.nothing_pending()


def test_an_error_mid_stream_arrives_after_the_good_batches(tmp_path):
    folder = tmp_path / "half_bad"
    folder.mkdir()
    pq.write_table(pa.table({"id": list(range(100))}), folder / "a-0.parquet")
    (folder / "a-1.parquet").write_bytes(b"PAR1 this is not parquet at all PAR1")
    f = Front(tmp_path, [tmp_path])
    try:
        f.open("bad", DatasetSpec("parquet", data_files=(("", (str(folder / "*.parquet"),)),)), batch_size=25)
        assert f.frame()[0][2]
        f.cmd("credit", "bad", 100)
        rows: list[int] = []
        while True:
            header, payload = f.frame()
            if header[0] == "error":
                break
            assert header[0] == "batch" and not header[5], "the session must not end normally"
            rows += _rows(payload)
        assert header[1] == "bad" and header[2] in ("INVALID_ARGUMENT", "DATA_LOSS", "INTERNAL", "FAILED_PRECONDITION")
        assert rows == list(range(100))
        assert f.settle() == 0 and not f.worker.sessions
    finally:
        f.shutdown()


def test_slices_span_chunks_without_copies_and_encode_as_one_record_batch():
    table = pa.concat_tables([pa.table({"a": list(range(i * 40, i * 40 + 40)), "s": [f"v{j}" for j in range(40)]})
                              for i in range(5)])
    pieces = list(slice_table(table, 13, 600))
    assert pieces[-1][0] == 200 and any(p.column("a").num_chunks > 1 for _, p in pieces)
    assert [r for _, p in pieces for r in p.column("a").to_pylist()] == list(range(13, 200))
    split = list(split_table(table, 13, 600))
    assert [e for e, _ in split] == [e for e, _ in pieces]
    for (_, sliced), (_, whole) in zip(pieces, split):
        assert whole.column("a").num_chunks == 1
        assert encode_batch(3, sliced.num_rows, sliced).to_pybytes() == \
            encode_batch(3, whole.num_rows, whole).to_pybytes()
