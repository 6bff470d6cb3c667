"""Round-trip truth: rows through the real server equal what `datasets` yields in-process."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from conftest import hf_truth, read_all
from py_worker.spec import DatasetSpec, FilterTerm


def _df(pattern: str, split: str = "") -> tuple:
    return ((split, (pattern,)),)


def assert_same(got: pa.Table | None, expected: pa.Table) -> None:
    if got is None:
        assert expected.num_rows == 0
        return
    assert got.schema.remove_metadata() == expected.schema.remove_metadata()
    assert got.num_rows == expected.num_rows
    assert got.to_pylist() == expected.to_pylist()


def roundtrip(client, spec: DatasetSpec, batch_size: int = 0, max_batch_bytes: int = 0):
    h = client.open(spec, batch_size=batch_size, max_batch_bytes=max_batch_bytes)
    try:
        table, batches = read_all(client, h.session_id)
    finally:
        client.close_session(h.session_id)
    assert batches[-1].end_of_data and batches[-1].table is None
    assert [b.seq for b in batches] == list(range(len(batches)))
    for b in batches[:-1]:
        reader = pa.ipc.open_stream(b.ipc)
        assert len(list(reader)) == 1, "each arrow_ipc holds exactly one record batch"
        assert b.num_rows == b.table.num_rows > 0
    return table, batches, h


@pytest.mark.parametrize("key", ["rich", "rich_arrow"])
def test_every_feature_type(client, data_root, key):
    pattern = {"rich": "rich/*.parquet", "rich_arrow": "rich_arrow/*.arrow"}[key]
    builder = "parquet" if key == "rich" else "arrow"
    table, batches, h = roundtrip(client, DatasetSpec(builder, data_files=_df(pattern)), batch_size=16)
    expected = hf_truth(builder, data_files=str(data_root / pattern))
    assert_same(table, expected)
    assert all(b.num_rows <= 16 for b in batches)
    features = h.features
    assert features["label"]["_type"] == "ClassLabel" and features["label"]["names"] == ["neg", "neu", "pos"]
    assert features["img"]["_type"] == "Image" and features["audio"]["_type"] == "Audio"
    assert table.column("img")[0].as_py()["bytes"].startswith(b"\x89PNG")
    assert table.column("audio")[0].as_py()["bytes"].startswith(b"RIFF")
    assert table.column("maybe").null_count > 0


def test_byte_cap_splits_batches_without_changing_rows(client, data_root):
    table, batches, _ = roundtrip(client, DatasetSpec("parquet", data_files=_df("rich/*.parquet")),
                                  batch_size=50, max_batch_bytes=4096)
    assert_same(table, hf_truth("parquet", data_files=str(data_root / "rich/*.parquet")))
    assert len(batches) > 120 * 1000 // 4096 // 10
    for b in batches[:-1]:
        assert b.table.nbytes <= 4096 or b.num_rows == 1


@pytest.mark.parametrize("builder,key,n", [("json", "simple_json/*.jsonl", 200), ("csv", "simple_csv/*.csv", 150),
                                           ("parquet", "simple_pq/*.parquet", 500)])
def test_packaged_builders(client, data_root, builder, key, n):
    table, _, _ = roundtrip(client, DatasetSpec(builder, data_files=_df(key)), batch_size=64)
    expected = hf_truth(builder, data_files=str(data_root / key))
    assert expected.num_rows == n
    assert_same(table, expected)


def test_columns_keep_requested_order(client, data_root):
    spec = DatasetSpec("parquet", data_files=_df("simple_pq/*.parquet"), columns=("label", "id"))
    table, _, h = roundtrip(client, spec)
    assert table.column_names == ["label", "id"]
    assert h.schema.names == ["label", "id"]
    assert_same(table, hf_truth("parquet", data_files=str(data_root / "simple_pq/*.parquet"),
                                columns=["label", "id"]))


def test_parquet_filters_dnf(client, data_root):
    spec = DatasetSpec("parquet", data_files=_df("simple_pq/*.parquet"), filters=(
        (FilterTerm("label", "==", 1), FilterTerm("score", ">=", 5.0)),
        (FilterTerm("lang", "in", ("de",)),),
    ))
    table, _, _ = roundtrip(client, spec)
    expected = hf_truth("parquet", data_files=str(data_root / "simple_pq/*.parquet"),
                        filters=[[("label", "==", 1), ("score", ">=", 5.0)], [("lang", "in", ["de"])]])
    assert 0 < expected.num_rows < 500
    assert_same(table, expected)
    for r in table.to_pylist():
        assert (r["label"] == 1 and r["score"] >= 5.0) or r["lang"] == "de"


def test_shuffle_with_seed(client, data_root):
    spec = DatasetSpec("parquet", data_files=_df("simple_pq/*.parquet"), shuffle=True, seed=7, shuffle_buffer=50)
    table, _, _ = roundtrip(client, spec, batch_size=33)
    expected = hf_truth("parquet", data_files=str(data_root / "simple_pq/*.parquet"), shuffle=(7, 50))
    assert_same(table, expected)
    assert table.column("id").to_pylist() != sorted(table.column("id").to_pylist())


@pytest.mark.parametrize("num_shards", [2, 4, 8])
def test_shards_partition_the_whole(client, data_root, num_shards):
    pattern = "simple_pq/*.parquet"
    whole = hf_truth("parquet", data_files=str(data_root / pattern))
    ids: list[int] = []
    for i in range(num_shards):
        spec = DatasetSpec("parquet", data_files=_df(pattern), num_shards=num_shards, shard_index=i)
        table, _, _ = roundtrip(client, spec)
        expected = hf_truth("parquet", data_files=str(data_root / pattern), shard=(num_shards, i))
        assert_same(table, expected)
        assert table.num_rows > 0
        ids += table.column("id").to_pylist()
    assert ids == whole.column("id").to_pylist()  # together the whole, in order, no overlap


def test_skip_and_take(client, data_root):
    spec = DatasetSpec("json", data_files=_df("simple_json/*.jsonl"), skip=30, take=100)
    table, _, _ = roundtrip(client, spec, batch_size=7)
    expected = hf_truth("json", data_files=str(data_root / "simple_json/*.jsonl"), skip=30, take=100)
    assert table.column("id").to_pylist() == list(range(30, 130))
    assert_same(table, expected)


def test_take_zero_gives_only_end_marker(client):
    h = client.open(DatasetSpec("json", data_files=_df("simple_json/*.jsonl"), take=0))
    batches = list(client.read(h.session_id))
    assert len(batches) == 1 and batches[0].end_of_data and batches[0].seq == 0
    client.close_session(h.session_id)


@pytest.mark.parametrize("config,split,n", [("small", "train", 60), ("small", "test", 20), ("large", "train", 300),
                                            ("", "train", 60)])
def test_hub_layout_folder_configs(client, data_root, config, split, n):
    spec = DatasetSpec("hubds", config=config, split=split)
    table, _, _ = roundtrip(client, spec, batch_size=25)
    expected = hf_truth(str(data_root / "hubds"), name=config or None, split=split)
    assert expected.num_rows == n
    assert_same(table, expected)


def test_get_info_hub_folder(client):
    info = client.info(DatasetSpec("hubds", config="small"))
    assert info.builder == "parquet"
    assert info.configs == ["small", "large"]
    assert [s for s, _ in info.splits] == ["train", "test"]
    assert info.num_shards == 2
    assert info.schema.names == ["id", "text", "score", "label", "lang"]
    assert json.loads(info.raw.features_json)["id"] == {"dtype": "int64", "_type": "Value"}
    large = client.info(DatasetSpec("hubds", config="large"))
    assert large.num_shards == 3


def test_get_info_packaged_builder(client):
    info = client.info(DatasetSpec("parquet", data_files=_df("rich/*.parquet")))
    assert info.num_shards == 3 and info.builder == "parquet"
    assert info.features["label"]["_type"] == "ClassLabel"
    assert "img" in info.schema.names


def test_real_package_csv(client, data_root):
    # vega_datasets is a test dependency (pyproject's `test` extra): real data it ships.
    assert (data_root / "real" / "seattle-weather.csv").exists(), "pip install -e '.[test]' (vega_datasets)"
    spec = DatasetSpec("csv", data_files=_df("real/seattle-weather.csv"), columns=("date", "weather", "temp_max"))
    table, _, _ = roundtrip(client, spec, batch_size=200)
    expected = hf_truth("csv", data_files=str(data_root / "real/seattle-weather.csv"),
                        columns=["date", "weather", "temp_max"])
    assert expected.num_rows == 1461
    assert_same(table, expected)
    assert set(table.column("weather").to_pylist()) >= {"rain", "sun"}


def test_single_file_path(client, data_root):
    table, _, _ = roundtrip(client, DatasetSpec("simple_csv/part-00000.csv"))
    assert_same(table, hf_truth("csv", data_files=str(data_root / "simple_csv/part-00000.csv")))
