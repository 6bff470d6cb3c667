"""Sessions: affinity under concurrency, ack/resume (also across restarts), worker death, reaping, limits."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import ServerProcess
from py_worker.client import BridgeClient
from py_worker.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from py_worker.spec import DatasetSpec

PQ = DatasetSpec("parquet", data_files=(("", ("simple_pq/*.parquet",)),))


def _ids(batches) -> list[int]:
    return [i for b in batches if b.table is not None for i in b.table.column("id").to_pylist()]


def test_concurrent_sessions_are_isolated_and_spread_over_workers(server):
    n_sessions = 12

    def run(k: int):
        with BridgeClient(server.target, timeout=60) as c:
            spec = DatasetSpec("parquet", data_files=PQ.data_files, skip=k * 10, take=100 + k)
            h = c.open(spec, batch_size=9)
            batches = list(c.read(h.session_id))
            c.close_session(h.session_id)
            return k, h.worker, batches

    with ThreadPoolExecutor(max_workers=n_sessions) as ex:
        results = list(ex.map(run, range(n_sessions)))
    workers = set()
    for k, worker, batches in results:
        workers.add(worker)
        assert [b.seq for b in batches] == list(range(len(batches)))
        assert _ids(batches) == list(range(k * 10, k * 10 + 100 + k))
    assert len(workers) >= 2


def test_interleaved_reads_keep_each_session_in_order(client):
    hs = [client.open(DatasetSpec("parquet", data_files=PQ.data_files, skip=100 * i, take=90), batch_size=10)
          for i in range(4)]
    got: dict[str, list[int]] = {h.session_id: [] for h in hs}
    seqs: dict[str, list[int]] = {h.session_id: [] for h in hs}
    for _round in range(10):
        for h in hs:
            for b in client.read(h.session_id, max_batches=1):
                seqs[h.session_id].append(b.seq)
                if b.table is not None:
                    got[h.session_id] += b.table.column("id").to_pylist()
    for i, h in enumerate(hs):
        assert got[h.session_id] == list(range(100 * i, 100 * i + 90))
        assert seqs[h.session_id] == list(range(10))
        client.close_session(h.session_id)


def test_ack_drop_channel_resume(server):
    c = BridgeClient(server.target)
    h = c.open(PQ, batch_size=25)
    first = list(c.read(h.session_id, max_batches=4))
    assert c.ack(h.session_id, 2) == 2
    assert c.ack(h.session_id, 1) == 2  # acks never move backwards
    c.close()  # drop the channel; batch 3 was delivered but not acked

    c2 = BridgeClient(server.target)
    r = c2.resume(h.resume_token)
    assert r.session_id == h.session_id and r.next_seq == 3
    rest = list(c2.read(r.session_id))
    assert rest[0].seq == 3
    assert rest[0].table.column("id").to_pylist() == first[3].table.column("id").to_pylist()
    assert _ids(first[:3]) + _ids(rest) == list(range(500))
    c2.close_session(r.session_id)
    c2.close()


def test_close_keeping_the_checkpoint_leaves_the_session_resumable(server):
    """A client whose consumer died closes with keep_checkpoint: the worker state goes, the position stays."""
    with BridgeClient(server.target) as c:
        h = c.open(PQ, batch_size=25)
        first = list(c.read(h.session_id, max_batches=3))
        c.ack(h.session_id, 1)
        c.close_session(h.session_id, keep_checkpoint=True)
        with pytest.raises(NotFound):
            c.ack(h.session_id, 2)  # the session itself is gone
        r = c.resume(h.resume_token)
        assert r.next_seq == 2
        rest = list(c.read(r.session_id))
        assert _ids(first[:2]) + _ids(rest) == list(range(500))
        c.close_session(r.session_id)  # an ordinary close forgets the checkpoint
        with pytest.raises(NotFound):
            c.resume(h.resume_token)


def test_resume_with_byte_cap_mid_hf_batch(client):
    """Wire batches cut from one HF batch still resume exactly."""
    spec = DatasetSpec("parquet", data_files=(("", ("rich/*.parquet",)),))
    h = client.open(spec, batch_size=40, max_batch_bytes=3000)
    first = list(client.read(h.session_id, max_batches=5))
    whole_ids = list(range(120))
    k = 3
    client.ack(h.session_id, k)
    r = client.resume(h.resume_token)
    rest = list(client.read(r.session_id))
    assert rest[0].seq == k + 1
    assert _ids(rest[:1]) == _ids(first[k + 1:k + 2])  # an unacked batch re-reads identically
    assert _ids(first[: k + 1]) + _ids(rest) == whole_ids
    client.close_session(h.session_id)


@pytest.mark.parametrize("max_bytes", [0, 600])
def test_shuffled_session_resumes_exactly(client, max_bytes):
    spec = DatasetSpec("parquet", data_files=PQ.data_files, shuffle=True, seed=11, shuffle_buffer=40)
    h = client.open(spec, batch_size=30, max_batch_bytes=max_bytes)
    full = _ids(client.read(h.session_id))
    r = client.resume(h.resume_token)  # nothing acked: starts over, same order
    first = list(client.read(r.session_id, max_batches=6))
    assert _ids(first) == full[: len(_ids(first))]
    client.ack(r.session_id, 4)
    r2 = client.resume(h.resume_token)
    assert r2.next_seq == 5
    rest = list(client.read(r2.session_id))
    assert _ids(rest[:1]) == _ids(first[5:6])
    assert _ids(first[:5]) + _ids(rest) == full
    assert sorted(full) == list(range(500)) and full != list(range(500))
    client.close_session(h.session_id)


def test_ack_rules(client):
    h = client.open(PQ, batch_size=100)
    with pytest.raises(InvalidArgument, match="last delivered batch"):
        client.ack(h.session_id, 0)
    list(client.read(h.session_id, max_batches=2))
    with pytest.raises(InvalidArgument):
        client.ack(h.session_id, 5)
    assert client.ack(h.session_id, 1) == 1
    client.close_session(h.session_id)
    with pytest.raises(NotFound):
        client.resume(h.resume_token)


def test_end_of_data_is_repeated_and_ackable(client):
    h = client.open(DatasetSpec("parquet", data_files=PQ.data_files, take=10), batch_size=10)
    batches = list(client.read(h.session_id))
    assert [b.end_of_data for b in batches] == [False, True]
    again = list(client.read(h.session_id))
    assert len(again) == 1 and again[0].end_of_data and again[0].seq == 1
    assert client.ack(h.session_id, 1) == 1
    r = client.resume(h.resume_token)
    assert r.next_seq == 2
    after = list(client.read(r.session_id))
    assert len(after) == 1 and after[0].end_of_data
    client.close_session(h.session_id)


def test_concurrent_read_of_one_session_is_refused(client):
    h = client.open(PQ, batch_size=1)
    it = client.read(h.session_id)
    next(it)
    with pytest.raises(FailedPrecondition, match="already being read"):
        list(client.read(h.session_id, max_batches=1))
    it.close()
    time.sleep(0.3)
    client.close_session(h.session_id)


def test_resume_after_server_restart(tmp_path, data_root):
    state = tmp_path / "state"
    args = ("--workers", "1", "--data-root", str(data_root), "--state-dir", str(state))
    srv = ServerProcess(*args).start()
    try:
        with BridgeClient(srv.target) as c:
            h = c.open(PQ, batch_size=30)
            first = list(c.read(h.session_id, max_batches=5))
            c.ack(h.session_id, 3)
    finally:
        assert srv.stop() == 0
    srv2 = ServerProcess(*args).start()
    try:
        with BridgeClient(srv2.target) as c:
            r = c.resume(h.resume_token)
            assert r.next_seq == 4 and r.session_id == h.session_id
            rest = list(c.read(r.session_id))
            assert rest[0].seq == 4
            assert _ids(first[:4]) + _ids(rest) == list(range(500))
    finally:
        assert srv2.stop() == 0


@pytest.fixture
def small_server(tmp_path, data_root):
    srv = ServerProcess("--workers", "2", "--data-root", str(data_root), "--state-dir", str(tmp_path / "state"),
                        "--idle-ttl-seconds", "1.5", "--max-sessions", "6", "--max-sessions-per-client", "4",
                        "--max-batch-rows", "1000", "--default-batch-rows", "100").start()
    try:
        yield srv
    finally:
        srv.stop()


def test_killed_workers_are_restarted_and_sessions_continue(small_server):
    with BridgeClient(small_server.target, timeout=60) as c:
        h = c.open(PQ, batch_size=20)
        first = list(c.read(h.session_id, max_batches=3))
        c.ack(h.session_id, 1)
        pids = small_server.worker_pids()
        assert len(pids) == 2
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        # A read may fail with UNAVAILABLE while the pool restarts its workers,
        # or be served at once if the front already noticed the deaths; either
        # way the session continues from the acknowledged checkpoint.
        rest = None
        for _ in range(100):
            try:
                rest = list(c.read(h.session_id))
                break
            except Unavailable:
                time.sleep(0.1)
        assert rest is not None, "the session never came back after its workers were killed"
        assert rest[0].seq == 2
        assert _ids(first[:2]) + _ids(rest) == list(range(500))
        assert sorted(small_server.worker_pids()) != sorted(pids)
        assert c.health() == "SERVING"
    log = "".join(small_server.stderr_lines)
    assert "worker restart" in log


def test_an_ack_for_a_batch_delivered_before_a_worker_died_is_taken_after_the_reopen(small_server):
    # The client holds batches 0..5 and acks 5 only after the session was
    # re-opened on a new worker that has sent batch 2 again so far: the
    # checkpoint after 5 is still the right one to commit.
    with BridgeClient(small_server.target, timeout=60) as c:
        h = c.open(PQ, batch_size=20)
        first = list(c.read(h.session_id, max_batches=6))
        c.ack(h.session_id, 1)
        for pid in small_server.worker_pids():
            os.kill(pid, signal.SIGKILL)
        again = None
        for _ in range(100):
            try:
                again = list(c.read(h.session_id, max_batches=1))
                break
            except Unavailable:
                time.sleep(0.1)
        assert again is not None and again[0].seq == 2
        assert c.ack(h.session_id, 5) == 5
        c.close_session(h.session_id, keep_checkpoint=True)
        resumed = c.resume(h.resume_token)
        assert resumed.next_seq == 6
        rest = list(c.read(resumed.session_id))
        assert _ids(first) + _ids(rest) == list(range(500))


def test_limits_and_reaping(small_server):
    with BridgeClient(small_server.target) as c:
        hs = [c.open(PQ) for _ in range(4)]
        with pytest.raises(ResourceExhausted, match="--max-sessions-per-client"):
            c.open(PQ)
        with BridgeClient(small_server.target) as other:
            more = [other.open(PQ) for _ in range(2)]
            with pytest.raises(ResourceExhausted, match="--max-sessions 6"):
                other.open(PQ)
        with pytest.raises(InvalidArgument, match="--max-batch-rows"):
            c.open(PQ, batch_size=1001)
        time.sleep(4)  # idle TTL is 1.5 s
        with pytest.raises(NotFound, match="resume"):
            list(c.read(hs[0].session_id, max_batches=1))
        r = c.resume(hs[0].resume_token)  # reaped sessions stay resumable
        assert r.next_seq == 0
        assert len(list(c.read(r.session_id, max_batches=2))) == 2
        c.open(PQ)  # capacity came back after reaping
    log = "".join(small_server.stderr_lines)
    assert "session reap" in log and "session open" in log and "session resume" in log
    del more
