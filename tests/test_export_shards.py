"""Several processes export disjoint shards into one destination; every row lands exactly once."""

from __future__ import annotations

import json
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq

from export_support import REPO, cli_env, export_cmd, make_parquet_dataset, run_cli, spec_args

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
    proc = run_cli(["--merge", str(dest)])
    assert proc.returncode == 0, proc.stderr
    assert "merged 3,000 rows" in proc.stderr
    assert (dest / "_manifest.json").read_text() == before

    # A shard of a different export cannot join this destination.
    other = run_cli([*spec_args(data), str(dest), *ARGS, "--num-shards", "3", "--shard-index", "1", "--take", "7"])
    assert other.returncode == 1 and "different export" in other.stderr


def test_merge_reports_missing_shards(tmp_path):
    data = make_parquet_dataset(tmp_path / "src", n_files=2, rows_per_file=100)
    dest = tmp_path / "out"
    proc = run_cli([*spec_args(data), str(dest), *ARGS, "--num-shards", "2", "--shard-index", "1"])
    assert proc.returncode == 0, proc.stderr
    assert not (dest / "_manifest.json").exists()
    merge = run_cli(["--merge", str(dest)])
    assert merge.returncode == 1 and "shard(s) [0] of 2 have not finished" in merge.stderr
