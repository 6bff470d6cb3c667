"""DatasetSpec conversions and validation, CLI spec parsing, the path policy, limits and wire helpers."""

from __future__ import annotations

import argparse
import json

import pyarrow as pa
import pytest

from py_worker.arrow_ipc import batch_message, end_message, ipc_to_table, split_table, table_to_ipc
from py_worker.cli import add_spec_arguments, parse_filter, spec_from_args
from py_worker.errors import InvalidArgument, NotFound, PermissionDenied, error_for, from_exception
from py_worker.limits import Limits
from py_worker.paths import check_patterns, check_under_roots, find_local, looks_like_path
from py_worker.spec import DatasetSpec, FilterTerm
from py_worker.wire import pb

FULL = DatasetSpec(
    path="parquet",
    config="cfg",
    split="test",
    revision="main",
    data_files=(("train", ("a/*.parquet", "b/*.parquet")), ("test", ("c.parquet",))),
    columns=("x", "y"),
    filters=((FilterTerm("x", ">=", 3), FilterTerm("y", "in", ("a", "b"))), (FilterTerm("z", "==", True),),
             (FilterTerm("w", "<", 1.5),)),
    shuffle=True,
    seed=42,
    shuffle_buffer=77,
    num_shards=4,
    shard_index=3,
    skip=5,
    take=0,
)


def test_proto_round_trip():
    msg = FULL.to_proto()
    assert isinstance(msg, pb.DatasetSpec)
    assert msg.HasField("take") and msg.take == 0
    again = DatasetSpec.from_proto(pb.DatasetSpec.FromString(msg.SerializeToString()))
    assert again == FULL


def test_dict_and_json_round_trip():
    d = FULL.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert DatasetSpec.from_dict(d) == FULL
    assert DatasetSpec.from_json(FULL.to_json()) == FULL
    assert DatasetSpec.from_dict({"path": "x"}) == DatasetSpec("x")


def test_defaults():
    s = DatasetSpec.from_proto(pb.DatasetSpec(path="user/name"))
    assert s.take is None and s.split_name == "train" and s.filters_dnf() == []
    assert FULL.filters_dnf()[0] == [("x", ">=", 3), ("y", "in", ["a", "b"])]
    assert FULL.data_files_dict() == {"train": ["a/*.parquet", "b/*.parquet"], "test": ["c.parquet"]}


@pytest.mark.parametrize("kwargs,text", [
    ({"path": ""}, "empty"),
    ({"path": "p", "columns": ("a", "a")}, "distinct"),
    ({"path": "p", "filters": ((FilterTerm("a", "~", 1),),)}, "not one of"),
    ({"path": "p", "filters": ((FilterTerm("a", "in", ()),),)}, "non-empty list"),
    ({"path": "p", "filters": ((FilterTerm("a", "==", ("x",)),),)}, "exactly one value"),
    ({"path": "p", "filters": ((FilterTerm("a", "<", float("nan")),),)}, "NaN"),
    ({"path": "p", "filters": ((),)}, "empty"),
    ({"path": "p", "num_shards": 2, "shard_index": 2}, "shard_index"),
    ({"path": "p", "shard_index": 1}, "without num_shards"),
    ({"path": "p", "data_files": (("", ()),)}, "no patterns"),
    ({"path": "p", "data_files": (("a", ("x",)), ("a", ("y",)))}, "twice"),
    ({"path": "p", "take": -1}, "take"),
])
def test_validation(kwargs, text):
    with pytest.raises(InvalidArgument, match=text):
        DatasetSpec(**kwargs)


def test_from_dict_malformed():
    with pytest.raises(InvalidArgument):
        DatasetSpec.from_dict({"nopath": 1})


def _args(*argv):
    p = argparse.ArgumentParser()
    add_spec_arguments(p)
    return spec_from_args(p.parse_args(list(argv)))


def test_cli_spec_arguments():
    s = _args("parquet", "--data-files", "data/*.parquet", "--data-files", "test=t/*.parquet", "--columns", "b, a",
              "--filter", "label == 1 and lang in (en, 'fr')", "--filter", "score > 2.5", "--shuffle", "--seed", "3",
              "--num-shards", "2", "--shard-index", "1", "--skip", "4", "--take", "10", "--split", "test")
    assert s.data_files == (("", ("data/*.parquet",)), ("test", ("t/*.parquet",)))
    assert s.columns == ("b", "a")
    assert s.filters_dnf() == [[("label", "==", 1), ("lang", "in", ["en", "fr"])], [("score", ">", 2.5)]]
    assert (s.shuffle, s.seed, s.num_shards, s.shard_index, s.skip, s.take, s.split) == (True, 3, 2, 1, 4, 10, "test")


@pytest.mark.parametrize("text,expected", [
    ("a != 'x y'", (FilterTerm("a", "!=", "x y"),)),
    ("flag == true", (FilterTerm("flag", "==", True),)),
    ("n not in [1, 2]", (FilterTerm("n", "not in", (1, 2)),)),
    ("x<=-3", (FilterTerm("x", "<=", -3),)),
])
def test_parse_filter(text, expected):
    assert parse_filter(text) == expected


@pytest.mark.parametrize("text", ["a", "a ~ 3", "a in 3", "== 3"])
def test_parse_filter_malformed(text):
    with pytest.raises(InvalidArgument):
        parse_filter(text)


def test_path_policy(tmp_path):
    root = tmp_path / "root"
    (root / "ds").mkdir(parents=True)
    (root / "ds" / "f.parquet").write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.parquet").write_bytes(b"x")
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "filelink.parquet").symlink_to(outside / "secret.parquet")
    roots = [root.resolve()]
    assert check_under_roots("ds", roots) == (root / "ds").resolve()
    assert check_under_roots(str(root / "ds" / "f.parquet"), roots).name == "f.parquet"
    for bad in ["../outside", str(outside), "link", "link/secret.parquet", "ds/../../outside", "filelink.parquet"]:
        with pytest.raises(PermissionDenied, match="outside the allowed roots"):
            check_under_roots(bad, roots)
    assert find_local("user/name", roots) is None
    assert find_local("ds", roots) == (root / "ds").resolve()
    with pytest.raises(PermissionDenied):
        find_local("/etc", roots)
    assert check_patterns(["ds/*.parquet"], None, roots) == [str(root.resolve() / "ds" / "*.parquet")]
    for bad in ["link/*.parquet", "*.parquet", "../outside/*.parquet"]:
        with pytest.raises(PermissionDenied):
            check_patterns([bad], None, roots)
    assert check_patterns(["hf://datasets/x/y.parquet"], None, roots) == ["hf://datasets/x/y.parquet"]


def test_looks_like_path():
    assert looks_like_path("./x") and looks_like_path("/x") and looks_like_path("a/b/c") and looks_like_path("..")
    assert not looks_like_path("user/name") and not looks_like_path("squad")


def test_limits_validation_and_flags():
    assert Limits().max_sessions == 256
    assert Limits.flag("idle_ttl_seconds") == "--idle-ttl-seconds"
    with pytest.raises(ValueError):
        Limits(max_sessions=0)
    with pytest.raises(ValueError):
        Limits(max_sessions=2, max_sessions_per_client=3)
    with pytest.raises(ValueError):
        Limits(max_batch_bytes=100 * 1024 * 1024, max_message_bytes=100 * 1024 * 1024)


def test_batch_message_is_a_valid_protobuf_batch():
    table = pa.table({"a": list(range(1000)), "s": [str(i) for i in range(1000)]})
    data = batch_message(300, table.num_rows, table_to_ipc(table))
    msg = pb.Batch.FromString(data)
    assert (msg.seq, msg.num_rows, msg.end_of_data) == (300, 1000, False)
    assert ipc_to_table(msg.arrow_ipc).equals(table)
    end = pb.Batch.FromString(end_message(2**40))
    assert end.end_of_data and end.seq == 2**40 and end.num_rows == 0 and not end.arrow_ipc
    # byte-identical to what the protobuf runtime writes
    for seq in (0, 1, 127, 128, 2**63):
        assert end_message(seq) == pb.Batch(seq=seq, end_of_data=True).SerializeToString()
        ipc = table_to_ipc(table.slice(0, 3)).to_pybytes()
        assert batch_message(seq, 3, ipc) == pb.Batch(seq=seq, num_rows=3, arrow_ipc=ipc).SerializeToString()


def test_split_table_respects_the_byte_cap():
    table = pa.concat_tables([pa.table({"a": list(range(i * 100, i * 100 + 100))}) for i in range(5)])
    pieces = list(split_table(table, 37, 800))
    assert pieces[-1][0] == 500
    rows = [r for _, p in pieces for r in p.column("a").to_pylist()]
    assert rows == list(range(37, 500))
    assert all(p.nbytes <= 800 for _, p in pieces)
    assert all(p.column("a").num_chunks == 1 for _, p in pieces)


def test_error_mapping():
    assert isinstance(error_for("NOT_FOUND", "x"), NotFound)
    assert from_exception(ValueError("Bad split: x. Available splits: ['a']")).code.name == "NOT_FOUND"
    assert from_exception(FileNotFoundError("gone")).code.name == "NOT_FOUND"
    assert from_exception(ConnectionError("Couldn't reach 'x' on the Hub (LocalEntryNotFoundError)")).code.name \
        == "UNAVAILABLE"
    assert from_exception(RuntimeError("Dataset scripts are no longer supported, but found x.py")).code.name \
        == "FAILED_PRECONDITION"
    assert from_exception(pa.ArrowInvalid("bad")).code.name == "INVALID_ARGUMENT"
    import pickle

    e = pickle.loads(pickle.dumps(NotFound("gone")))
    assert isinstance(e, NotFound) and e.message == "gone"
