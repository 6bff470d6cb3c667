"""The `hf-bridge` command line: info output and errors, serve's READY line and clean signal exits."""

from __future__ import annotations

import json
import os
import signal
import subprocess

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
    assert r.returncode == 1 and "--max-sessions must be positive" in r.stderr


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


def test_bearer_token_and_tls(tmp_path, data_root):
    from py_worker.client import BridgeClient
    from py_worker.errors import Unauthenticated
    from py_worker.spec import DatasetSpec

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    (tmp_path / "token").write_text("s3cret-token\n")
    srv = ServerProcess("--workers", "1", "--data-root", str(data_root), "--state-dir", str(tmp_path / "state"),
                        "--auth-token-file", str(tmp_path / "token"), "--tls-cert", str(cert), "--tls-key", str(key))
    srv.start()
    try:
        spec = DatasetSpec("json", data_files=(("", ("simple_json/*.jsonl",)),), take=3)
        with BridgeClient(srv.target, root_certificates=cert.read_bytes(), token="s3cret-token") as c:
            h = c.open(spec)
            assert c.read_all(h.session_id).num_rows == 3
            assert c.health() == "SERVING"
        with BridgeClient(srv.target, root_certificates=cert.read_bytes(), token="wrong") as c:
            with pytest.raises(Unauthenticated, match="bearer token"):
                c.open(spec)
            with pytest.raises(Unauthenticated):
                list(c.read(h.session_id))
            assert c.health() == "SERVING"  # health stays open for probes
        with BridgeClient(srv.target, root_certificates=cert.read_bytes()) as c:
            with pytest.raises(Unauthenticated):
                c.info(spec)
    finally:
        assert srv.stop() == 0


def test_open_deadline(tmp_path, data_root):
    from py_worker.client import BridgeClient
    from py_worker.errors import DeadlineExceeded
    from py_worker.spec import DatasetSpec

    srv = ServerProcess("--workers", "1", "--data-root", str(data_root), "--state-dir", str(tmp_path),
                        "--open-deadline-seconds", "0.001").start()
    try:
        with BridgeClient(srv.target) as c:
            spec = DatasetSpec("hubds", config="large")
            with pytest.raises(DeadlineExceeded, match="--open-deadline-seconds"):
                c.open(spec)
            with pytest.raises(DeadlineExceeded, match="--open-deadline-seconds"):
                c.info(spec)
            assert c.health() == "SERVING"
    finally:
        assert srv.stop() == 0
