"""Shared fixtures: on-disk datasets, a real hf_bridge server on loopback, and `datasets` truth."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import datafactory  # noqa: E402

PYTHON = os.environ.get("HF_BRIDGE_PYTHON", sys.executable)


def free_port() -> int:
    """A currently free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> str:
    """The Prometheus text of a server's metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        return r.read().decode()


def value(text: str, name: str, labels: str = "") -> float:
    """One sample's value in Prometheus text (0 when absent)."""
    m = re.search(rf"^{re.escape(name + labels)} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


class ServerProcess:
    """`python -m py_worker serve` in a subprocess; `target` is host:port once ready."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        self.args = list(args)
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.target = ""
        self.stderr_lines: list[str] = []

    def start(self, timeout: float = 60.0) -> "ServerProcess":
        """Start and wait for the READY line."""
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "py_worker", "serve", "--port", "0", *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env, cwd=str(ROOT),
        )
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(l) for l in self.proc.stdout], daemon=True).start()
        threading.Thread(target=lambda: [self.stderr_lines.append(l) for l in self.proc.stderr], daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if line.startswith("HF_BRIDGE_READY "):
                self.target = line.split()[1]
                return self
        self.stop()
        raise RuntimeError("server did not become ready:\n" + "".join(self.stderr_lines))

    def worker_pids(self) -> list[int]:
        """PIDs of the worker processes (children of the server)."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        pids = []
        for p in out.split():
            try:
                cmd = Path(f"/proc/{p}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmd:
                pids.append(int(p))
        return pids

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """Signal the server and wait; returns its exit code (kills it after `timeout`)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return None


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A data root holding every generated dataset (see datafactory.build_all)."""
    root = tmp_path_factory.mktemp("data")
    datafactory.build_all(root)
    return root


@pytest.fixture(scope="session")
def outside_dir(tmp_path_factory, data_root) -> Path:
    """A directory outside the data root with a Parquet file, plus a symlink to it inside the root."""
    out = tmp_path_factory.mktemp("outside")
    datafactory.write_parquet_shards(out / "secret", datafactory.simple_table(10), 1)
    (data_root / "escape").symlink_to(out / "secret", target_is_directory=True)
    return out


@pytest.fixture(scope="session")
def server(tmp_path_factory, data_root, outside_dir) -> Iterator[ServerProcess]:
    """One shared server with 2 workers for the whole test session."""
    state = tmp_path_factory.mktemp("state")
    srv = ServerProcess("--workers", "2", "--data-root", str(data_root), "--export-root",
                        str(tmp_path_factory.mktemp("exports")), "--state-dir", str(state))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server):
    """A BridgeClient on the shared server."""
    from py_worker.client import BridgeClient

    c = BridgeClient(server.target, timeout=60)
    try:
        yield c
    finally:
        c.close()


def hf_truth(path: str, *, name: str | None = None, split: str = "train", data_files: Any = None,
             columns: list[str] | None = None, filters: Any = None, shuffle: tuple[int, int] | None = None,
             shard: tuple[int, int] | None = None, skip: int = 0, take: int | None = None,
             batch_size: int = 1000) -> pa.Table:
    """What `datasets` itself yields in-process for the same options (select -> shard -> shuffle -> skip -> take)."""
    from datasets import load_dataset

    from py_worker.worker import tune_datasets

    tune_datasets()  # only removes an end-of-iteration sleep; rows are unaffected
    kwargs: dict[str, Any] = {}
    if filters is not None:
        kwargs["filters"] = filters
    ds = load_dataset(path, name=name, split=split, data_files=data_files, streaming=True, **kwargs)
    if columns:
        ds = ds.select_columns(columns)
    if shard:
        n, i = shard
        if n > ds.num_shards:
            ds = ds.reshard()
        ds = ds.shard(num_shards=n, index=i)
    if shuffle:
        seed, buf = shuffle
        ds = ds.shuffle(seed=seed, buffer_size=buf)
    if skip:
        ds = ds.skip(skip)
    if take is not None:
        ds = ds.take(take)
    tables = list(ds.with_format("arrow").iter(batch_size=batch_size))
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables)


def read_all(client, session_id: str) -> tuple[pa.Table | None, list]:
    """Read a session to the end; returns the concatenated table and the list of batches."""
    batches = list(client.read(session_id))
    tables = [b.table for b in batches if b.table is not None]
    return (pa.concat_tables(tables) if tables else None), batches
