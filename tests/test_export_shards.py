"""Several processes export disjoint shards into one destination; every row lands exactly once."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from export_support import REPO, cli_env, export_cmd, make_parquet_dataset, spec_args

from py_worker.errors import FailedPrecondition

ARGS = ["--batch-size", "50", "--max-file-bytes", "5000", "--row-group-rows", "100", "--quiet"]


def test_sharded_export_by_three_processes_then_merge(tmp_path):
    data = make_parquet_dataset(tmp_path / "src", n_files=5, rows_per_file=600)
    dest = tmp_path / "out"
    procs = [
        subprocess.Popen(
            export_cmd([*spec_args(data), str(dest), *ARGS, "--num-shards", "3", "--shard-index", str(i)]),
            env=cli_env(),
            cwd=str(REPO),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err

    merged = json.loads((dest / "_manifest.json").read_text())
    assert merged["shards"]["num_shards"] == 3
    assert [s["shard_index"] for s in merged["shards"]["merged"]] == [0, 1, 2]
    assert merged["spec"]["num_shards"] == 0 and merged["totals"]["rows"] == 3000
    paths = [f["path"] for f in merged["files"]]
    assert all(p.startswith(("part-s00000-", "part-s00001-", "part-s00002-")) for p in paths)
    assert sorted(p.name for p in dest.glob("*.parquet")) == sorted(paths)
    for i in range(3):
        shard = json.loads((dest / "_shards" / f"manifest-s{i:05d}.json").read_text())
        assert shard["shards"] == {"num_shards": 3, "shard_index": i}
        assert shard["totals"]["rows"] > 0
    assert not list(dest.glob("_checkpoint*"))

    table = pa.concat_tables([pq.read_table(dest / p) for p in paths])
    assert sorted(table.column("id").to_pylist()) == list(range(3000))

    # --merge publishes the same manifest again from the shard manifests.
    before = (dest / "_manifest.json").read_text()
    (dest / "_manifest.json").unlink()
    result = _merge(dest)
    assert result.rows == 3000 and result.files == len(paths)
    assert (dest / "_manifest.json").read_text() == before

    # A shard of a different export cannot join this destination.
    with pytest.raises(FailedPrecondition) as err:
        _shard_export(tmp_path, data, dest, 3, 1, take=7)
    assert "different export" in str(err.value)


def _merge(dest: Path):
    """`hf-bridge export --merge DEST`, parsed by the real argument parser, run in-process."""
    import argparse

    from py_worker.export.cli import add_export_arguments, run_export_command

    parser = argparse.ArgumentParser()
    add_export_arguments(parser)
    return run_export_command(parser.parse_args(["--merge", str(dest)]), return_result=True)


def _shard_export(tmp: Path, data: Path, dest: Path, n: int, i: int, **spec_kw):
    from py_worker.config import ServerConfig
    from py_worker.export.destination import resolve_destination
    from py_worker.export.engine import run_export
    from py_worker.export.options import ExportOptions
    from py_worker.spec import DatasetSpec

    spec = DatasetSpec(
        path="parquet", data_files=(("train", (str(data / "*.parquet"),)),), num_shards=n, shard_index=i, **spec_kw
    )
    config = ServerConfig(data_roots=[data.parent], export_roots=[tmp])
    options = ExportOptions(batch_size=50, max_file_bytes=5000, row_group_rows=100)
    return run_export(spec, resolve_destination(str(dest), config.export_roots), options, config)


def test_merge_reports_missing_shards(tmp_path):
    data = make_parquet_dataset(tmp_path / "src", n_files=2, rows_per_file=100)
    dest = tmp_path / "out"
    result = _shard_export(tmp_path, data, dest, 2, 1)
    assert result.manifest_uri.endswith("_shards/manifest-s00001.json")
    assert not (dest / "_manifest.json").exists()
    with pytest.raises(FailedPrecondition) as err:
        _merge(dest)
    assert "shard(s) [0] of 2 have not finished" in str(err.value)
    merged = _shard_export(tmp_path, data, dest, 2, 0)
    assert merged.manifest_uri.endswith("/_manifest.json") and merged.rows == 200
