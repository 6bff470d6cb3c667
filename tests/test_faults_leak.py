"""Faults with real processes: abandoned sessions are reaped without leaking, metrics, and SIGTERM drains.

A thousand sessions are opened and abandoned (never read, read half-way,
held by client processes that are killed); after the idle TTL none remain and
the workers' resident memory returns near where it started.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import PYTHON, ROOT, ServerProcess, free_port, scrape, value
from py_worker.client import BridgeClient
from py_worker.spec import DatasetSpec

PQ = DatasetSpec("parquet", data_files=(("", ("simple_pq/*.parquet",)),))


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def wait_until(pred, timeout: float, step: float = 0.25) -> bool:
    """Poll `pred` until it is true or `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


DEAD_CLIENT = r"""
import sys
from py_worker.client import BridgeClient
from py_worker.spec import DatasetSpec
spec = DatasetSpec("parquet", data_files=(("", ("simple_pq/*.parquet",)),))
c = BridgeClient(sys.argv[1], timeout=120)
its = []
for i in range(int(sys.argv[2])):
    h = c.open(spec, batch_size=10)
    it = c.read(h.session_id)
    next(it)           # a stream left open mid-read
    its.append(it)
print("opened", flush=True)
sys.stdin.read()       # wait to be killed
"""


def test_thousand_abandoned_sessions_are_reaped_and_memory_returns(tmp_path, data_root):
    mport = free_port()
    srv = ServerProcess("--workers", "2", "--data-root", str(data_root), "--state-dir", str(tmp_path / "state"),
                        "--idle-ttl-seconds", "2", "--max-sessions", "1500", "--max-sessions-per-client", "1500",
                        "--metrics-port", str(mport)).start()
    dead = []
    try:
        workers = srv.worker_pids()
        assert len(workers) == 2
        # warm up: imports and caches that stay for the life of a worker are not leaks
        with BridgeClient(srv.target, timeout=120) as c:
            for _ in range(20):
                h = c.open(PQ, batch_size=50)
                c.read_all(h.session_id)
                c.close_session(h.session_id)
        before = {pid: rss_kib(pid) for pid in workers}

        # 100 sessions held by client processes that die mid-read
        for _ in range(4):
            p = subprocess.Popen([PYTHON, "-c", DEAD_CLIENT, srv.target, "25"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, cwd=str(ROOT),
                                 env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
            dead.append(p)

        def abandon(k: int) -> int:
            with BridgeClient(srv.target, timeout=120) as c:
                for i in range(90):
                    h = c.open(PQ, batch_size=10)
                    if i % 3 == 0:  # mid-read: a few batches, then gone
                        list(c.read(h.session_id, max_batches=2))
            return 90

        with ThreadPoolExecutor(max_workers=10) as ex:
            opened = sum(ex.map(abandon, range(10)))
        for p in dead:
            assert p.stdout.readline().strip() == "opened"
        assert opened + 100 == 1000
        peak = value(scrape(mport), "hf_bridge_sessions_open")
        assert peak > 0
        for p in dead:
            p.kill()
            p.wait(10)

        assert wait_until(lambda: value(scrape(mport), "hf_bridge_sessions_open") == 0, 60), scrape(mport)
        text = scrape(mport)
        assert all(value(text, "hf_bridge_worker_sessions", f'{{worker="{w}",pid="{p}"}}') == 0
                   for w, p in re.findall(r'hf_bridge_worker_sessions\{worker="(\w+)",pid="(\d+)"\}', text))
        assert value(text, "hf_bridge_worker_restarts_total") == 0
        # worker-side state goes away too: resident memory returns near its start
        def settled() -> bool:
            return all(rss_kib(pid) <= before[pid] * 1.25 + 40 * 1024 for pid in workers)

        assert wait_until(settled, 30), {pid: (before[pid], rss_kib(pid)) for pid in workers}
        assert sorted(srv.worker_pids()) == sorted(workers)
        log = "".join(srv.stderr_lines)
        assert log.count("session reap") >= 900
    finally:
        for p in dead:
            if p.poll() is None:
                p.kill()
        assert srv.stop() == 0


def test_metrics_endpoint_counts_rpcs_batches_errors_and_restarts(tmp_path, data_root):
    mport = free_port()
    srv = ServerProcess("--workers", "1", "--data-root", str(data_root), "--state-dir", str(tmp_path / "state"),
                        "--metrics-port", str(mport)).start()
    try:
        with BridgeClient(srv.target) as c:
            h = c.open(PQ, batch_size=100)
            table = c.read_all(h.session_id)
            with pytest.raises(Exception):
                c.ack(h.session_id, 99)  # INVALID_ARGUMENT
            with pytest.raises(Exception):
                c.resume("x" * 20)  # NOT_FOUND
            # A call is counted once its answer is on its way: the client can
            # see the answer first, so wait for the last call to be counted.
            assert wait_until(
                lambda: value(scrape(mport), "hf_bridge_errors_total", '{code="NOT_FOUND"}') == 1, 10)
            text = scrape(mport)
            assert value(text, "hf_bridge_sessions_open") == 1
            assert value(text, "hf_bridge_batches_total") == 5
            assert value(text, "hf_bridge_rows_total") == table.num_rows == 500
            assert value(text, "hf_bridge_bytes_total") > 0
            assert value(text, "hf_bridge_rpcs_total", '{method="OpenSession",code="OK"}') == 1
            assert value(text, "hf_bridge_errors_total", '{code="INVALID_ARGUMENT"}') == 1
            assert value(text, "hf_bridge_errors_total", '{code="NOT_FOUND"}') == 1
            assert value(text, "hf_bridge_batch_latency_seconds_count") == 5
            assert value(text, "hf_bridge_batch_latency_seconds_bucket", '{le="+Inf"}') == 5
            os.kill(srv.worker_pids()[0], signal.SIGKILL)
            assert wait_until(lambda: value(scrape(mport), "hf_bridge_worker_restarts_total") == 1, 30)
            assert wait_until(lambda: value(scrape(mport), "hf_bridge_workers_alive") == 1, 60)
        # metrics listen on loopback only, and only serve /metrics
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{mport}/other", timeout=5)
    finally:
        assert srv.stop() == 0


def test_sigterm_drains_in_flight_reads_keeps_checkpoints_and_exits_zero(tmp_path, data_root):
    args = ("--workers", "1", "--data-root", str(data_root), "--state-dir", str(tmp_path / "state"),
            "--drain-seconds", "3")
    srv = ServerProcess(*args).start()
    c = BridgeClient(srv.target, timeout=60)
    h = c.open(PQ, batch_size=10)
    first = list(c.read(h.session_id, max_batches=7))
    c.ack(h.session_id, 6)
    # a read in flight when SIGTERM arrives still completes
    it = c.read(h.session_id, max_batches=3)
    got = [next(it)]
    srv.proc.send_signal(signal.SIGTERM)
    got += list(it)
    assert [b.seq for b in got] == [7, 8, 9]
    assert srv.proc.wait(30) == 0
    time.sleep(0.5)  # let the log reader thread catch up
    log = "".join(srv.stderr_lines)
    assert "draining" in log and "stopped" in log and "Traceback" not in log
    c.close()
    srv2 = ServerProcess(*args).start()
    try:
        with BridgeClient(srv2.target) as c2:
            r = c2.resume(h.resume_token)
            assert r.next_seq == 7
            ids = [i for b in list(c2.read(r.session_id)) if b.table is not None
                   for i in b.table.column("id").to_pylist()]
            before = [i for b in first for i in b.table.column("id").to_pylist()]
            assert before + ids == list(range(500))
    finally:
        assert srv2.stop() == 0


def test_binding_beyond_loopback_without_a_token_warns():
    # (tests only ever bind loopback, so the rule is checked on the function the server calls)
    from py_worker.server import bind_warning

    warning = bind_warning("0.0.0.0", None, False)
    assert warning and "without --auth-token-file" in warning and "not encrypted" in warning
    assert "not encrypted" not in bind_warning("10.1.2.3", None, True)
    assert bind_warning("0.0.0.0", "token", False) is None
    for host in ("127.0.0.1", "::1", "localhost"):
        assert bind_warning(host, None, False) is None
