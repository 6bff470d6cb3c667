"""The `hf-bridge` command line: info output and errors, serve's READY line and clean signal exits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import grpc
import pytest

from conftest import PYTHON, ROOT, ServerProcess
from py_worker.wire import pb, pb_grpc


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([PYTHON, "-m", "py_worker", *args], capture_output=True, text=True, env=env,
                          cwd=cwd or str(ROOT), timeout=120)


def test_info_prints_features_schema_and_splits(data_root):
    r = _cli("info", "hubds", "--config", "small", "--data-root", str(data_root))
    assert r.returncode == 0, r.stderr
    assert "builder:    parquet" in r.stdout
    assert "configs:    small, large" in r.stdout
    assert "  train: rows unknown" in r.stdout and "  test: rows unknown" in r.stdout
    assert "arrow schema:" in r.stdout and "id: int64" in r.stdout


def test_info_json_with_packaged_builder(data_root):
    r = _cli("info", "parquet", "--data-files", "rich/*.parquet", "--json", cwd=str(data_root))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["numShards"] == 3 and out["features"]["label"]["_type"] == "ClassLabel"


@pytest.mark.parametrize("args,code", [
    (("info", "../elsewhere"), "PERMISSION_DENIED"),
    (("info", "nosuchuser/nosuchds"), "NOT_FOUND"),
    (("info", "scripted"), "FAILED_PRECONDITION"),
    (("info", "parquet", "--data-files", "simple_pq/*.parquet", "--filter", "id ~ 3"), "INVALID_ARGUMENT"),
])
def test_info_errors(data_root, args, code):
    r = _cli(*args, "--data-root", str(data_root))
    assert r.returncode == 1
    assert f"error [{code}]" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_ready_line_and_clean_exit(tmp_path, data_root, sig):
    srv = ServerProcess("--workers", "1", "--data-root", str(data_root), "--state-dir", str(tmp_path))
    srv.start()
    host, port = srv.target.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    assert srv.stop(sig) == 0
    err = "".join(srv.stderr_lines)
    assert "listening on 127.0.0.1:" in err
    assert "Fatal Python error" not in err


def test_serve_rejects_bad_limits(tmp_path):
    r = _cli("serve", "--port", "0", "--max-sessions", "0", "--state-dir", str(tmp_path))
    assert r.returncode == 1 and "max_sessions must be positive" in r.stderr


def test_export_rpc_is_wired(server):
    ch = grpc.insecure_channel(server.target)
    stub = pb_grpc.HFBridgeStub(ch)
    req = pb.ExportRequest(spec=pb.DatasetSpec(path="parquet", data_files=[pb.DataFiles(
        patterns=["simple_pq/*.parquet"])]), destination="/definitely/outside/the/roots")
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Export(req, timeout=60))
    ch.close()
    assert err.value.code() != grpc.StatusCode.UNIMPLEMENTED
    assert err.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT)
