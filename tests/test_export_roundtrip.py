"""Exported Parquet reads back — with pyarrow, DuckDB and Polars — as exactly the rows `datasets` yields."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from export_support import expected_table, features, make_parquet_dataset, read_export

from py_worker.config import ServerConfig
from py_worker.export.destination import resolve_destination
from py_worker.export.engine import run_export
from py_worker.export.manifest import schema_from_ipc_base64
from py_worker.export.options import ExportOptions
from py_worker.spec import DatasetSpec


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_parquet_dataset(tmp_path_factory.mktemp("src"), n_files=3, rows_per_file=400)


def _config(tmp: Path, data_dir: Path) -> ServerConfig:
    return ServerConfig(data_roots=[data_dir.parent], export_roots=[tmp])


def _spec(data_dir: Path, **kw) -> DatasetSpec:
    return DatasetSpec(path="parquet", data_files=(("train", (str(data_dir / "*.parquet"),)),), **kw)


def _export(tmp: Path, data_dir: Path, name: str, spec: DatasetSpec, **opts):
    config = _config(tmp, data_dir)
    dest = resolve_destination(str(tmp / name), config.export_roots)
    progress = []
    result = run_export(spec, dest, ExportOptions(**opts), config, progress=progress.append)
    return result, progress


def _rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


def test_multi_file_export_matches_datasets_in_every_reader(tmp_path, data_dir):
    spec = _spec(data_dir)
    result, progress = _export(
        tmp_path, data_dir, "out", spec, max_file_bytes=8_000, row_group_rows=150, batch_size=64
    )
    dest = tmp_path / "out"
    expected = expected_table(data_dir)
    manifest, got = read_export(dest)

    assert result.files == len(manifest["files"]) > 2
    assert result.rows == manifest["totals"]["rows"] == expected.num_rows == 1200
    assert _rows(got) == _rows(expected)
    assert got.schema.remove_metadata().equals(expected.schema.remove_metadata())

    # Every file is listed, complete and checksummed; nothing temporary is left behind.
    names = sorted(p.name for p in dest.iterdir())
    assert names == sorted(["_manifest.json"] + [f["path"] for f in manifest["files"]])
    for f in manifest["files"]:
        data = (dest / f["path"]).read_bytes()
        assert len(data) == f["bytes"]
        assert hashlib.sha256(data).hexdigest() == f["sha256"]
        md = pq.ParquetFile(dest / f["path"]).metadata
        assert md.num_rows == f["rows"]
        assert md.num_row_groups == f["row_groups"]
        assert md.row_group(0).column(0).compression == "ZSTD"
        assert md.row_group(0).column(0).has_offset_index  # page index written
    assert [f["path"] for f in manifest["files"]] == [f"part-{i:05d}.parquet" for i in range(result.files)]
    row_groups = [
        pq.read_metadata(dest / f["path"]).row_group(i).num_rows
        for f in manifest["files"]
        for i in range(f["row_groups"])
    ]
    assert max(row_groups) <= 150 and sum(row_groups) == 1200
    # Files end on input batch boundaries (where the iterator checkpoint is taken).
    assert all(f["rows"] % 64 == 0 for f in manifest["files"][:-1])

    # Features (ClassLabel, Sequence, fixed-length Sequence) and schema survive.
    from datasets import Features

    assert Features.from_dict(manifest["features"]) == features()
    schema = schema_from_ipc_base64(manifest["schema"]["ipc_stream_base64"])
    assert schema.remove_metadata().equals(expected.schema.remove_metadata())
    assert manifest["schema"]["text"] == schema.to_string(show_schema_metadata=False)
    assert manifest["spec"] == spec.to_dict()
    assert manifest["writer"]["compression"] == "zstd" and manifest["writer"]["write_page_index"] is True
    assert manifest["hf_bridge_version"] and manifest["created_at"] <= manifest["finished_at"]
    # datasets itself recovers the features from the exported files.
    assert json.loads(pq.read_schema(dest / "part-00000.parquet").metadata[b"huggingface"])["info"]["features"] == manifest["features"]

    # Progress went up monotonically and ended at the total.
    assert progress[-1].rows == 1200 and progress[-1].total_rows == 1200
    assert [p.rows for p in progress] == sorted(p.rows for p in progress)

    # DuckDB and Polars read the same rows from the published files.
    import duckdb
    import polars as pl

    paths = [str(dest / f["path"]) for f in manifest["files"]]
    con = duckdb.connect()
    rel = con.sql(f"SELECT * FROM read_parquet({paths!r}) ORDER BY id")
    duck = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()
    assert duck.column("id").to_pylist() == expected.column("id").to_pylist()
    assert duck.column("text").to_pylist() == expected.column("text").to_pylist()
    assert duck.column("tokens").to_pylist() == expected.column("tokens").to_pylist()
    assert duck.column("vec").to_pylist() == expected.column("vec").to_pylist()
    assert duck.column("score").to_pylist() == expected.column("score").to_pylist()
    # A glob over the directory sees only the published data files.
    assert con.execute(f"SELECT count(*) FROM read_parquet('{dest}/*.parquet')").fetchone()[0] == 1200

    frame = pl.concat([pl.read_parquet(p) for p in paths])
    assert frame.height == 1200
    assert frame["id"].to_list() == expected.column("id").to_pylist()
    assert frame["text"].to_list() == expected.column("text").to_pylist()
    assert frame["label"].to_list() == expected.column("label").to_pylist()
    assert [list(v) for v in frame["vec"].to_list()] == expected.column("vec").to_pylist()
    assert pl.scan_parquet(str(dest / "*.parquet")).select(pl.len()).collect().item() == 1200


def test_columns_skip_take_and_determinism(tmp_path, data_dir):
    spec = _spec(data_dir, columns=("text", "id", "label"), skip=130, take=700)
    r1, _ = _export(tmp_path, data_dir, "a", spec, max_file_bytes=4_000, row_group_rows=100, batch_size=50)
    r2, _ = _export(tmp_path, data_dir, "b", spec, max_file_bytes=4_000, row_group_rows=100, batch_size=50)
    manifest, got = read_export(tmp_path / "a")
    expected = expected_table(data_dir, columns=("text", "id", "label"), skip=130, take=700)
    assert got.column_names == ["text", "id", "label"]
    assert _rows(got) == _rows(expected)
    assert r1.rows == 700
    # Same rows, same options: byte-identical files (no timestamps inside the Parquet files).
    assert [(f["path"], f["sha256"]) for f in r1.manifest["files"]] == [
        (f["path"], f["sha256"]) for f in r2.manifest["files"]
    ]


@pytest.mark.parametrize("compression", ["snappy", "none"])
def test_other_codecs_and_content_defined_chunking(tmp_path, data_dir, compression):
    spec = _spec(data_dir, take=300)
    result, _ = _export(tmp_path, data_dir, "c", spec, compression=compression, content_defined_chunking=True)
    manifest, got = read_export(tmp_path / "c")
    assert got.num_rows == 300 and result.files == 1
    assert manifest["writer"]["content_defined_chunking"] is True
    codec = pq.ParquetFile(tmp_path / "c" / "part-00000.parquet").metadata.row_group(0).column(0).compression
    assert codec == ("SNAPPY" if compression == "snappy" else "UNCOMPRESSED")


def test_empty_selection_writes_one_empty_file_with_the_schema(tmp_path, data_dir):
    result, _ = _export(tmp_path, data_dir, "e", _spec(data_dir, take=0))
    manifest, got = read_export(tmp_path / "e")
    assert result.rows == 0 and result.files == 1 and got.num_rows == 0
    assert got.column_names == list(features())


def test_manifest_schema_is_an_ipc_stream(tmp_path, data_dir):
    result, _ = _export(tmp_path, data_dir, "s", _spec(data_dir, take=10))
    raw = base64.b64decode(result.manifest["schema"]["ipc_stream_base64"])
    reader = pa.ipc.open_stream(raw)
    assert reader.schema.names == list(features())
    assert reader.read_all().num_rows == 0
