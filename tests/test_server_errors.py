"""Bad input: each case gives its status code and an actionable message; a healthy session is unaffected."""

from __future__ import annotations

import grpc
import pytest

from py_worker.client import BridgeClient
from py_worker.errors import BridgeError
from py_worker.spec import DatasetSpec, FilterTerm
from py_worker.wire import pb

PQ_FILES = (("", ("simple_pq/*.parquet",)),)
JSON_FILES = (("", ("simple_json/*.jsonl",)),)


@pytest.fixture(scope="module")
def healthy(server):
    """A session read one batch at a time between the bad calls."""
    c = BridgeClient(server.target, timeout=60)
    h = c.open(DatasetSpec("parquet", data_files=PQ_FILES), batch_size=5)
    state = {"client": c, "h": h, "next_id": 0, "seq": 0}
    yield state
    rest = [i for b in c.read(h.session_id) if b.table is not None for i in b.table.column("id").to_pylist()]
    assert rest == list(range(state["next_id"], 500))
    c.close_session(h.session_id)
    c.close()


def _step(healthy) -> None:
    c, h = healthy["client"], healthy["h"]
    (b,) = list(c.read(h.session_id, max_batches=1))
    assert b.seq == healthy["seq"]
    assert b.table.column("id").to_pylist() == list(range(healthy["next_id"], healthy["next_id"] + 5))
    healthy["seq"] += 1
    healthy["next_id"] += 5


def _spec(**kw) -> DatasetSpec:
    return DatasetSpec(**kw)


OPEN_CASES = [
    ("unknown hub dataset", lambda o: _spec(path="nosuchuser/nosuchds"), "NOT_FOUND", "Hub is offline"),
    ("missing local folder", lambda o: _spec(path="./no_such_folder"), "NOT_FOUND", "does not exist"),
    ("unknown split", lambda o: _spec(path="hubds", config="small", split="validation"), "NOT_FOUND",
     "available splits"),
    ("unknown config", lambda o: _spec(path="hubds", config="huge"), "NOT_FOUND", "huge"),
    ("no matching files", lambda o: _spec(path="parquet", data_files=(("", ("simple_pq/*.nothing",)),)),
     "NOT_FOUND", "no data files matched"),
    ("builder without files", lambda o: _spec(path="parquet"), "INVALID_ARGUMENT", "needs data_files"),
    ("unknown column", lambda o: _spec(path="parquet", data_files=PQ_FILES, columns=("id", "nope")),
     "INVALID_ARGUMENT", "nope"),
    ("filter on unknown column",
     lambda o: _spec(path="parquet", data_files=PQ_FILES, filters=((FilterTerm("nope", "==", 1),),)),
     "INVALID_ARGUMENT", "filter column 'nope'"),
    ("filter with mismatched type",
     lambda o: _spec(path="parquet", data_files=PQ_FILES, filters=((FilterTerm("id", "<", "abc"),),)),
     "INVALID_ARGUMENT", "filter does not apply"),
    ("filter on JSON data",
     lambda o: _spec(path="json", data_files=JSON_FILES, filters=((FilterTerm("id", "<", 3),),)),
     "INVALID_ARGUMENT", "Parquet data only"),
    ("too many shards", lambda o: _spec(path="parquet", data_files=PQ_FILES, num_shards=1000),
     "INVALID_ARGUMENT", "exceeds"),
    ("dot-dot escape", lambda o: _spec(path="../outside"), "PERMISSION_DENIED", "outside the allowed roots"),
    ("absolute path outside", lambda o: _spec(path=str(o / "secret")), "PERMISSION_DENIED", "allowed roots"),
    ("symlink pointing outside", lambda o: _spec(path="escape"), "PERMISSION_DENIED", "allowed roots"),
    ("pattern through symlink", lambda o: _spec(path="parquet", data_files=(("", ("escape/*.parquet",)),)),
     "PERMISSION_DENIED", "allowed roots"),
    ("pattern escaping root", lambda o: _spec(path="parquet", data_files=(("", ("../*/secret/*.parquet",)),)),
     "PERMISSION_DENIED", "allowed roots"),
    ("dataset needing remote code", lambda o: _spec(path="scripted"), "FAILED_PRECONDITION", "never runs"),
]


@pytest.mark.parametrize("name,make,code,text", OPEN_CASES, ids=[c[0] for c in OPEN_CASES])
def test_open_errors(client, healthy, outside_dir, name, make, code, text):
    with pytest.raises(BridgeError) as err:
        client.open(make(outside_dir))
    assert err.value.code.name == code, err.value.message
    assert text in err.value.message
    _step(healthy)


@pytest.mark.parametrize("name,make,code,text", OPEN_CASES[:6] + OPEN_CASES[11:], ids=[c[0] for c in OPEN_CASES[:6] + OPEN_CASES[11:]])
def test_get_info_errors(client, healthy, outside_dir, name, make, code, text):
    with pytest.raises(BridgeError) as err:
        client.info(make(outside_dir))
    assert err.value.code.name == code, err.value.message
    assert text in err.value.message
    _step(healthy)


def _raw(server):
    ch = grpc.insecure_channel(server.target)
    from py_worker.wire import pb_grpc

    return ch, pb_grpc.HFBridgeStub(ch)


@pytest.mark.parametrize("name,request_,code,text", [
    ("malformed filter op", pb.OpenRequest(spec=pb.DatasetSpec(
        path="parquet", data_files=[pb.DataFiles(patterns=["simple_pq/*.parquet"])],
        filters=[pb.FilterClause(all=[pb.Filter(column="id", op="~=", value=pb.Scalar(int_value=1))])])),
     "INVALID_ARGUMENT", "not one of"),
    ("filter without value", pb.OpenRequest(spec=pb.DatasetSpec(
        path="parquet", data_files=[pb.DataFiles(patterns=["simple_pq/*.parquet"])],
        filters=[pb.FilterClause(all=[pb.Filter(column="id", op="==")])])),
     "INVALID_ARGUMENT", "no value"),
    ("'in' without values", pb.OpenRequest(spec=pb.DatasetSpec(
        path="parquet", data_files=[pb.DataFiles(patterns=["simple_pq/*.parquet"])],
        filters=[pb.FilterClause(all=[pb.Filter(column="id", op="in")])])),
     "INVALID_ARGUMENT", "non-empty list"),
    ("empty path", pb.OpenRequest(spec=pb.DatasetSpec()), "INVALID_ARGUMENT", "empty"),
    ("missing spec", pb.OpenRequest(), "INVALID_ARGUMENT", "missing"),
    ("absurd batch size", pb.OpenRequest(spec=pb.DatasetSpec(
        path="parquet", data_files=[pb.DataFiles(patterns=["simple_pq/*.parquet"])]), batch_size=4_000_000_000),
     "INVALID_ARGUMENT", "--max-batch-rows"),
    ("absurd byte cap", pb.OpenRequest(spec=pb.DatasetSpec(
        path="parquet", data_files=[pb.DataFiles(patterns=["simple_pq/*.parquet"])]), max_batch_bytes=2**60),
     "INVALID_ARGUMENT", "--max-batch-bytes"),
    ("shard index out of range", pb.OpenRequest(spec=pb.DatasetSpec(
        path="parquet", data_files=[pb.DataFiles(patterns=["simple_pq/*.parquet"])], num_shards=2, shard_index=2)),
     "INVALID_ARGUMENT", "shard_index"),
])
def test_malformed_open_requests(server, healthy, name, request_, code, text):
    ch, stub = _raw(server)
    with pytest.raises(grpc.RpcError) as err:
        stub.OpenSession(request_, timeout=30)
    ch.close()
    assert err.value.code().name == code, err.value.details()
    assert text in err.value.details()
    _step(healthy)


def test_batch_size_zero_means_server_default(client, healthy):
    h = client.open(DatasetSpec("parquet", data_files=PQ_FILES), batch_size=0)
    assert h.batch_size == 1024
    (b,) = list(client.read(h.session_id, max_batches=1))
    assert b.num_rows == 500  # the whole dataset fits one default batch... capped by the data itself
    client.close_session(h.session_id)
    _step(healthy)


@pytest.mark.parametrize("call", ["read", "ack", "close"])
@pytest.mark.parametrize("which", ["unknown", "closed", "empty"])
def test_unknown_closed_or_empty_session(client, healthy, call, which):
    if which == "closed":
        h = client.open(DatasetSpec("json", data_files=JSON_FILES))
        client.close_session(h.session_id)
        sid = h.session_id
    else:
        sid = "0" * 32 if which == "unknown" else ""
    with pytest.raises(BridgeError) as err:
        if call == "read":
            list(client.read(sid))
        elif call == "ack":
            client.ack(sid, 0)
        else:
            client.close_session(sid)
    expected = "INVALID_ARGUMENT" if which == "empty" else "NOT_FOUND"
    assert err.value.code.name == expected
    assert ("unknown or closed session" in err.value.message) or which == "empty"
    _step(healthy)


@pytest.mark.parametrize("token,code", [("", "INVALID_ARGUMENT"), ("not a token!", "INVALID_ARGUMENT"),
                                        ("A" * 32, "NOT_FOUND"), ("x" * 500, "INVALID_ARGUMENT")])
def test_bad_resume_token(client, healthy, token, code):
    with pytest.raises(BridgeError) as err:
        client.resume(token)
    assert err.value.code.name == code
    assert "token" in err.value.message
    _step(healthy)


def test_health_service(client):
    assert client.health() == "SERVING"
    assert client.health("hf_bridge.v1.HFBridge") == "SERVING"


def test_health_watch_streams_the_status(client):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    call = health_pb2_grpc.HealthStub(client.channel).Watch(health_pb2.HealthCheckRequest(), timeout=10)
    try:
        first = next(call)
        assert health_pb2.HealthCheckResponse.ServingStatus.Name(first.status) == "SERVING"
    finally:
        call.cancel()
