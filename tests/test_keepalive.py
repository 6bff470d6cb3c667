"""Keepalive PINGs: the server takes them on idle connections, and a client finds a hung server by them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from conftest import ServerProcess
from py_worker.client import BridgeClient
from py_worker.errors import BridgeError

# A channel that PINGs once a second whenever nothing arrives, calls or not.
PINGING = [
    ("grpc.keepalive_time_ms", 1000),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.use_local_subchannel_pool", 1),
]


class _States:
    """The connectivity states a channel went through, in order."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.seen: list[grpc.ChannelConnectivity] = []
        self.lock = threading.Lock()
        channel.subscribe(self._add, try_to_connect=False)

    def _add(self, state: grpc.ChannelConnectivity) -> None:
        with self.lock:
            self.seen.append(state)

    def dropped_after_ready(self) -> bool:
        with self.lock:
            seen = list(self.seen)
        if grpc.ChannelConnectivity.READY not in seen:
            return False
        after = seen[seen.index(grpc.ChannelConnectivity.READY) + 1:]
        return any(s != grpc.ChannelConnectivity.READY for s in after)


def _check(channel: grpc.Channel) -> None:
    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)


def test_server_keeps_an_idle_connection_pinged_every_second(server):
    # Control: a grpc server with default settings takes a PING a second on an
    # idle connection as abuse and closes it (GOAWAY too_many_pings).
    plain = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), plain)
    plain_port = plain.add_insecure_port("127.0.0.1:0")
    plain.start()
    ours = grpc.insecure_channel(server.target, options=PINGING)
    theirs = grpc.insecure_channel(f"127.0.0.1:{plain_port}", options=PINGING)
    try:
        ours_states, theirs_states = _States(ours), _States(theirs)
        _check(ours)
        _check(theirs)
        deadline = time.monotonic() + 15
        while not theirs_states.dropped_after_ready() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert theirs_states.dropped_after_ready(), "the control server never closed the pinging connection"
        assert not ours_states.dropped_after_ready(), f"the hf_bridge server dropped it: {ours_states.seen}"
        _check(ours)
    finally:
        ours.close()
        theirs.close()
        plain.stop(None)


def test_a_call_to_a_hung_server_fails_by_keepalive_not_by_its_deadline(tmp_path, data_root):
    srv = ServerProcess("--workers", "1", "--data-root", str(data_root), "--export-root", str(tmp_path / "x"),
                        "--state-dir", str(tmp_path / "state")).start()
    client = BridgeClient(srv.target, timeout=60, keepalive_ms=300, keepalive_timeout_ms=500)
    try:
        assert client.health() == "SERVING"
        os.kill(srv.proc.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        with pytest.raises(BridgeError) as err:
            client.health()
        assert err.value.code == grpc.StatusCode.UNAVAILABLE, err.value
        assert time.monotonic() - t0 < 20
    finally:
        os.kill(srv.proc.pid, signal.SIGCONT)
        client.close()
        srv.stop()


_WATCHER = """
import sys, time, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
channel = grpc.insecure_channel(sys.argv[1])
calls = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
print(next(calls).status, flush=True)  # the call stays open
time.sleep(600)
"""


def _established_to(port: int) -> int:
    """Open TCP connections on the server side of `port` (ESTABLISHED in /proc/net/tcp or tcp6: grpc
    may listen on a dual-stack socket)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":
                count += 1
    return count


def test_the_server_drops_a_client_that_stopped_answering(tmp_path, data_root):
    srv = ServerProcess("--workers", "1", "--data-root", str(data_root), "--export-root", str(tmp_path / "x"),
                        "--state-dir", str(tmp_path / "state"), "--client-keepalive", "0.5").start()
    port = int(srv.target.rsplit(":", 1)[1])
    watcher = subprocess.Popen([sys.executable, "-c", _WATCHER, srv.target], stdout=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout is not None and watcher.stdout.readline().strip() != ""
        time.sleep(1.5)  # PINGs answered meanwhile: the connection stays
        assert _established_to(port) == 1
        os.kill(watcher.pid, signal.SIGSTOP)  # its kernel still ACKs TCP; nothing answers PINGs
        deadline = time.monotonic() + 15
        while _established_to(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _established_to(port) == 0, "the server kept the silent client's connection"
    finally:
        watcher.kill()
        watcher.wait(5)
        srv.stop()
