"""A worker's prefetch byte budget, on a real Worker answering over a real socket pair."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import threading
import time

from py_worker.arrow_ipc import ipc_to_table
from py_worker.config import ServerConfig
from py_worker.frames import recv_frame, socket_of
from py_worker.limits import Limits
from py_worker.spec import DatasetSpec
from py_worker.wire import pb
from py_worker.worker import Worker

PQ = DatasetSpec("parquet", data_files=(("", ("simple_pq/*.parquet",)),))


def _worker(tmp_path, data_root, budget: int) -> tuple[Worker, object, object]:
    front, worker_end = mp.Pipe(duplex=True)
    limits = Limits(prefetch_batches=8, worker_prefetch_bytes=budget)
    config = ServerConfig(data_roots=[data_root], export_roots=[tmp_path], state_dir=tmp_path, limits=limits)
    worker = Worker(worker_end, config, "w-test")
    threading.Thread(target=worker.run, daemon=True).start()
    return worker, front, socket_of(front)


def _open(front, sid: str) -> None:
    front.send_bytes(pickle.dumps(("open", 1, sid, PQ.to_dict(), 10, 1 << 20, 0, None)))


def _settle(worker: Worker) -> int:
    """Wait until the worker stops preparing batches; returns the bytes it holds."""
    last, stable = -1, 0
    while stable < 5:
        time.sleep(0.1)
        now = worker.held_bytes
        stable = stable + 1 if now == last else 0
        last = now
    return last


def test_sessions_prepare_ahead_within_the_budget_and_deliver_every_row(tmp_path, data_root):
    worker, front, sock = _worker(tmp_path, data_root, budget=1)
    try:
        for sid in ("a", "b", "c"):
            _open(front, sid)
        replies = [recv_frame(sock)[0] for _ in range(3)]
        assert [r[0] for r in replies] == ["reply"] * 3 and all(r[2] for r in replies)
        held = _settle(worker)
        # Over budget every session keeps exactly one batch ready, not `prefetch_batches`.
        assert all(len(s.ready) == 1 for s in worker.sessions.values())
        assert held == sum(s.ready[0][1].size for s in worker.sessions.values())

        # Credits still drain every session completely, in order.
        rows: dict[str, list[int]] = {"a": [], "b": [], "c": []}
        for sid in rows:
            front.send_bytes(pickle.dumps(("credit", sid, 1000)))
        ended = set()
        while len(ended) < 3:
            header, payload = recv_frame(sock)
            assert header[0] == "batch", header
            _, sid, _seq, num_rows, _ckpt, end, _has_payload = header
            if end:
                ended.add(sid)
                continue
            batch = pb.Batch.FromString(payload)
            rows[sid] += ipc_to_table(batch.arrow_ipc).column("id").to_pylist()
        assert all(ids == list(range(500)) for ids in rows.values())
        assert _settle(worker) == 0
    finally:
        front.send_bytes(pickle.dumps(("shutdown",)))


def test_a_roomy_budget_lets_sessions_prepare_prefetch_batches(tmp_path, data_root):
    worker, front, sock = _worker(tmp_path, data_root, budget=1 << 30)
    try:
        _open(front, "a")
        assert recv_frame(sock)[0][2]
        _settle(worker)
        assert len(worker.sessions["a"].ready) == 8
    finally:
        front.send_bytes(pickle.dumps(("shutdown",)))
