"""Limits: every cap answers RESOURCE_EXHAUSTED (or INVALID_ARGUMENT for request fields) naming the limit,
and clients that stay within their share keep working."""

from __future__ import annotations

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ServerProcess
from py_worker.client import BridgeClient
from py_worker.errors import InvalidArgument, ResourceExhausted
from py_worker.spec import DatasetSpec
from py_worker.wire import pb, pb_grpc

MiB = 1024 * 1024
PQ = DatasetSpec("parquet", data_files=(("", ("small/*.parquet",)),))
BIG = DatasetSpec("parquet", data_files=(("", ("big/*.parquet",)),))


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    root = tmp_path_factory.mktemp("limits_data")
    (root / "small").mkdir()
    pq.write_table(pa.table({"id": list(range(300))}), root / "small" / "part-0.parquet")
    (root / "big").mkdir()  # rows 0-1 small, row 2 alone is larger than a whole message
    pq.write_table(pa.table({"id": [0, 1, 2], "blob": ["a", "b", "x" * (3 * MiB)]}), root / "big" / "part-0.parquet")
    srv = ServerProcess("--workers", "2", "--data-root", str(root), "--state-dir", str(tmp_path_factory.mktemp("st")),
                        "--max-sessions", "5", "--max-sessions-per-client", "3",
                        "--max-message-bytes", str(2 * MiB), "--max-batch-bytes", str(MiB),
                        "--default-batch-bytes", str(MiB // 2), "--max-batch-rows", "500", "--default-batch-rows", "100",
                        "--prefetch-batches", "2").start()
    try:
        yield srv
    finally:
        assert srv.stop() == 0


def test_per_client_and_global_session_caps(limited):
    a, b, c = (BridgeClient(limited.target, timeout=60) for _ in range(3))
    try:
        mine = [a.open(PQ, batch_size=100) for _ in range(3)]
        with pytest.raises(ResourceExhausted, match=r"--max-sessions-per-client 3"):
            a.open(PQ)
        # another client is not affected by a's cap
        theirs = [b.open(PQ, batch_size=100) for _ in range(2)]
        assert b.read_all(theirs[0].session_id).num_rows == 300
        with pytest.raises(ResourceExhausted, match=r"--max-sessions 5\b"):
            c.open(PQ)
        # sessions already open keep working while the server is full
        assert a.read_all(mine[0].session_id).num_rows == 300
        assert b.read_all(theirs[1].session_id).num_rows == 300
        # closing frees capacity
        a.close_session(mine[0].session_id)
        h = c.open(PQ, batch_size=300)
        assert c.read_all(h.session_id).num_rows == 300
        for client, handles in ((a, mine[1:]), (b, theirs), (c, [h])):
            for x in handles:
                client.close_session(x.session_id)
    finally:
        for x in (a, b, c):
            x.close()


def test_request_field_limits_name_the_flag(limited):
    with BridgeClient(limited.target) as c:
        with pytest.raises(InvalidArgument, match="--max-batch-rows 500"):
            c.open(PQ, batch_size=501)
        with pytest.raises(InvalidArgument, match=f"--max-batch-bytes {MiB}"):
            c.open(PQ, max_batch_bytes=MiB + 1)


def test_message_size_limit_both_ways(limited):
    # receiving: a request above --max-message-bytes is refused by the transport, naming the limit
    ch = grpc.insecure_channel(limited.target, options=[("grpc.max_send_message_length", 8 * MiB)])
    huge = pb.OpenRequest(spec=pb.DatasetSpec(path="parquet", columns=["c" * 1000] * 2200))
    assert huge.ByteSize() > 2 * MiB
    with pytest.raises(grpc.RpcError) as err:
        pb_grpc.HFBridgeStub(ch).OpenSession(huge, timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(2 * MiB) in err.value.details()
    ch.close()
    # sending: a batch that cannot fit in one message (a single 3 MiB row) is refused, naming the flag;
    # the rows before it arrive, and the session and server stay usable
    with BridgeClient(limited.target, max_message_bytes=16 * MiB) as c:
        h = c.open(BIG, batch_size=1)
        got = []
        with pytest.raises(ResourceExhausted, match=r"--max-message-bytes"):
            for b in c.read(h.session_id):
                got.append(b.seq)
        assert got == [0, 1]
        c.close_session(h.session_id)
        h2 = c.open(PQ, batch_size=100)
        assert c.read_all(h2.session_id).num_rows == 300
        c.close_session(h2.session_id)


def test_byte_cap_bounds_each_batch(limited):
    with BridgeClient(limited.target) as c:
        h = c.open(DatasetSpec("parquet", data_files=BIG.data_files, take=2), batch_size=500)
        batches = [b for b in c.read(h.session_id) if b.table is not None]
        assert sum(b.num_rows for b in batches) == 2
        assert all(len(b.ipc) <= MiB for b in batches)
        c.close_session(h.session_id)
