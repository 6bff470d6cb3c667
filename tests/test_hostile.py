"""Hostile input: random and mutated protobuf bodies sent raw to every RPC.

The server must answer each call with a status (INVALID_ARGUMENT and the
like), keep serving, and never lose a worker process.
"""

from __future__ import annotations

import random

import grpc
import pytest

from conftest import ServerProcess
from py_worker.client import BridgeClient
from py_worker.spec import DatasetSpec
from py_worker.wire import SERVICE_NAME, pb

SEED = 20_240_229
PQ_PATTERN = "simple_pq/*.parquet"

# Statuses a well-behaved server may answer garbage with (INTERNAL or UNKNOWN would mean an unmapped failure).
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}


def _seeds(session_id: str, token: str) -> dict[str, list[bytes]]:
    """Valid request bodies per RPC, the starting points of mutation."""
    spec = pb.DatasetSpec(path="parquet", data_files=[pb.DataFiles(patterns=[PQ_PATTERN])], take=30,
                          columns=["id"], filters=[pb.FilterClause(all=[pb.Filter(
                              column="id", op="<", value=pb.Scalar(int_value=100))])])
    return {
        "GetInfo": [spec.SerializeToString(), pb.DatasetSpec(path="json", split="train").SerializeToString()],
        "OpenSession": [pb.OpenRequest(spec=spec, batch_size=7).SerializeToString(),
                        pb.OpenRequest(spec=pb.DatasetSpec(path="parquet", shuffle=True, seed=3, shuffle_buffer=5,
                                                           data_files=[pb.DataFiles(patterns=[PQ_PATTERN])]),
                                       max_batch_bytes=4096).SerializeToString()],
        "ReadBatches": [pb.ReadRequest(session_id=session_id, max_batches=2).SerializeToString()],
        "Ack": [pb.AckRequest(session_id=session_id, seq=1).SerializeToString()],
        "ResumeSession": [pb.ResumeRequest(resume_token=token).SerializeToString()],
        "CloseSession": [pb.CloseRequest(session_id="0" * 32).SerializeToString()],
        "Export": [pb.ExportRequest(spec=spec, destination="out").SerializeToString()],
    }


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        if op == 0 and b:  # flip a bit
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:  # replace a byte
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 2:  # insert bytes
            i = rng.randrange(len(b) + 1)
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
        elif op == 3 and b:  # truncate
            del b[rng.randrange(len(b)):]
        else:  # a huge varint / length prefix
            b += bytes([rng.choice([0x08, 0x0A, 0x12, 0x1A, 0x22, 0x7A]), 0xFF, 0xFF, 0xFF, 0xFF, 0x0F])
    return bytes(b)


def _random(rng: random.Random) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 2, 5, 17, 64, 300])))


@pytest.fixture(scope="module")
def hostile_server(data_root, tmp_path_factory):
    srv = ServerProcess("--workers", "2", "--data-root", str(data_root),
                        "--export-root", str(tmp_path_factory.mktemp("exports")),
                        "--state-dir", str(tmp_path_factory.mktemp("state")),
                        "--open-deadline-seconds", "20", "--max-sessions", "2000",
                        "--max-sessions-per-client", "2000", "--idle-ttl-seconds", "5").start()
    try:
        yield srv
    finally:
        srv.stop()


def test_random_and_mutated_bodies_get_statuses_and_nothing_crashes(hostile_server):
    srv = hostile_server
    workers = sorted(srv.worker_pids())
    assert len(workers) == 2
    rng = random.Random(SEED)
    with BridgeClient(srv.target, timeout=60) as c:
        h = c.open(DatasetSpec("parquet", data_files=(("", (PQ_PATTERN,)),)), batch_size=10)
        list(c.read(h.session_id, max_batches=3))
    seeds = _seeds(h.session_id, h.resume_token)
    seen: dict[str, set] = {}
    ch = grpc.insecure_channel(srv.target)
    try:
        for method, bodies in seeds.items():
            path = f"/{SERVICE_NAME}/{method}"
            stream = method in ("ReadBatches", "Export")
            call = (ch.unary_stream if stream else ch.unary_unary)(
                path, request_serializer=None, response_deserializer=None)
            cases = 60 if method == "Export" else 150
            for k in range(cases):
                body = _random(rng) if k % 3 == 0 else _mutate(rng, rng.choice(bodies))
                details = ""
                try:
                    if stream:
                        for i, _msg in enumerate(call(body, timeout=30)):
                            if i >= 3:
                                break
                    else:
                        call(body, timeout=30)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as exc:
                    code, details = exc.code(), exc.details()
                    assert details, (method, body)
                seen.setdefault(method, set()).add(code)
                assert code in ALLOWED, (method, body, code, details)
        # an unparsable body is INVALID_ARGUMENT naming the message type
        with pytest.raises(grpc.RpcError) as err:
            ch.unary_unary(f"/{SERVICE_NAME}/OpenSession", request_serializer=None,
                           response_deserializer=None)(b"\x0a\xff\xff\xff\xff\x0f", timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed OpenRequest" in err.value.details()
    finally:
        ch.close()
    assert all(grpc.StatusCode.INVALID_ARGUMENT in codes for m, codes in seen.items()
               if m not in ("CloseSession", "Export")), seen
    # still serving, with the same worker processes
    assert sorted(srv.worker_pids()) == workers
    assert "worker restart" not in "".join(srv.stderr_lines)
    with BridgeClient(srv.target, timeout=60) as c:
        assert c.health() == "SERVING"
        h = c.open(DatasetSpec("parquet", data_files=(("", (PQ_PATTERN,)),), take=25), batch_size=10)
        assert c.read_all(h.session_id).column("id").to_pylist() == list(range(25))
    assert srv.proc.poll() is None
