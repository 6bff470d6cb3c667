"""Bearer tokens, TLS and client-certificate verification against a real server (certificates made with openssl)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest

from conftest import ServerProcess
from py_worker.auth import token_matches
from py_worker.wire import pb, pb_grpc

pytestmark = pytest.mark.skipif(subprocess.run(["which", "openssl"], capture_output=True).returncode != 0,
                                reason="openssl is not installed")

SPEC = pb.DatasetSpec(path="json", data_files=[pb.DataFiles(patterns=["simple_json/*.jsonl"])], take=3)


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(d: Path, ca: str, name: str, cn: str, usage: str) -> None:
    _openssl(d, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={cn}")
    (d / f"{name}.ext").write_text(f"subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                                   f"extendedKeyUsage={usage}\n")
    _openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A test CA, a server certificate and a client certificate it signed, and a rogue CA's client certificate."""
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "rogue"):
        _openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                 "-days", "2", "-subj", f"/CN=hf_bridge {ca} CA")
    _issue(d, "ca", "server", "localhost", "serverAuth")
    _issue(d, "ca", "client", "hf_bridge client", "clientAuth")
    _issue(d, "rogue", "intruder", "intruder", "clientAuth")
    (d / "token").write_text("correct-horse-battery\n")
    return d


@pytest.fixture(scope="module")
def mtls_server(pki, data_root, tmp_path_factory):
    """TLS, client certificates from `ca` required, and a bearer token."""
    srv = ServerProcess("--workers", "1", "--data-root", str(data_root),
                        "--state-dir", str(tmp_path_factory.mktemp("state")),
                        "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
                        "--tls-client-ca", str(pki / "ca.pem"), "--auth-token-file", str(pki / "token")).start()
    try:
        yield srv
    finally:
        assert srv.stop() == 0


@pytest.fixture(scope="module")
def tls_server(pki, data_root, tmp_path_factory):
    """TLS without client certificates; the token comes from $HF_BRIDGE_AUTH_TOKEN."""
    srv = ServerProcess("--workers", "1", "--data-root", str(data_root),
                        "--state-dir", str(tmp_path_factory.mktemp("state")),
                        "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
                        env={"HF_BRIDGE_AUTH_TOKEN": "from-the-env"}).start()
    try:
        yield srv
    finally:
        assert srv.stop() == 0


def _channel(target: str, pki: Path, client: str | None = None, root: str = "ca") -> grpc.Channel:
    key = (pki / f"{client}.key").read_bytes() if client else None
    chain = (pki / f"{client}.pem").read_bytes() if client else None
    creds = grpc.ssl_channel_credentials((pki / f"{root}.pem").read_bytes(), key, chain)
    return grpc.secure_channel(target.replace("127.0.0.1", "localhost"), creds)


def _info(ch: grpc.Channel, token: str | None) -> grpc.StatusCode:
    md = (("authorization", f"Bearer {token}"),) if token is not None else None
    try:
        pb_grpc.HFBridgeStub(ch).GetInfo(SPEC, timeout=20, metadata=md)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_token_compare_is_exact():
    assert token_matches("Bearer abc", "abc")
    assert token_matches(b"Bearer abc", "abc")
    for wrong in ("Bearer ab", "Bearer abcd", "bearer abc", "abc", "", "Bearer  abc", "Bearer abc\n"):
        assert not token_matches(wrong, "abc"), wrong


def test_tokens_wrong_missing_correct(mtls_server, pki):
    with _channel(mtls_server.target, pki, "client") as ch:
        assert _info(ch, "correct-horse-battery") == grpc.StatusCode.OK
        assert _info(ch, "correct-horse-batter") == grpc.StatusCode.UNAUTHENTICATED
        assert _info(ch, "wrong") == grpc.StatusCode.UNAUTHENTICATED
        assert _info(ch, None) == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.HFBridgeStub(ch).GetInfo(SPEC, timeout=20)
        assert "bearer token" in err.value.details()
        # a stream RPC is refused the same way
        with pytest.raises(grpc.RpcError) as err:
            list(pb_grpc.HFBridgeStub(ch).ReadBatches(pb.ReadRequest(session_id="x"), timeout=20))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_token_from_environment(tls_server, pki):
    with _channel(tls_server.target, pki) as ch:
        assert _info(ch, "from-the-env") == grpc.StatusCode.OK
        assert _info(ch, "nope") == grpc.StatusCode.UNAUTHENTICATED


def test_client_certificate_is_verified(mtls_server, pki):
    with _channel(mtls_server.target, pki, "client") as ch:
        assert _info(ch, "correct-horse-battery") == grpc.StatusCode.OK
    with _channel(mtls_server.target, pki, None) as ch:  # no client certificate
        assert _info(ch, "correct-horse-battery") == grpc.StatusCode.UNAVAILABLE
    with _channel(mtls_server.target, pki, "intruder") as ch:  # signed by another CA
        assert _info(ch, "correct-horse-battery") == grpc.StatusCode.UNAVAILABLE
    assert "with client certificates" in "".join(mtls_server.stderr_lines)


def test_server_certificate_is_verified_by_the_client(tls_server, pki):
    with _channel(tls_server.target, pki, root="rogue") as ch:  # trusts the wrong CA
        assert _info(ch, "from-the-env") == grpc.StatusCode.UNAVAILABLE


def test_plaintext_client_against_tls_server_fails_clearly(tls_server):
    with grpc.insecure_channel(tls_server.target) as ch:
        code = _info(ch, "from-the-env")
    assert code == grpc.StatusCode.UNAVAILABLE


def test_tls_flags_are_validated(tmp_path, pki):
    import os
    import sys

    from conftest import PYTHON, ROOT

    def serve(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([PYTHON, "-m", "py_worker", "serve", "--port", "0", "--state-dir", str(tmp_path), *args],
                              capture_output=True, text=True, cwd=str(ROOT), timeout=60,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})

    r = serve("--tls-client-ca", str(pki / "ca.pem"))
    assert r.returncode == 1 and "--tls-client-ca needs --tls-cert" in r.stderr
    r = serve("--tls-cert", str(pki / "server.pem"), "--tls-key", str(tmp_path / "missing.key"))
    assert r.returncode == 1 and "no such file" in r.stderr
    assert sys.executable
