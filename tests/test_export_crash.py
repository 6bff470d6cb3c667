"""Crash safety: an export killed with SIGKILL publishes no manifest, and --resume finishes it
with exactly the files (names, rows, sha256) of an uninterrupted export."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from export_support import REPO, cli_env, export_cmd, make_parquet_dataset, run_cli, spec_args

ARGS = ["--batch-size", "20", "--max-file-bytes", "6000", "--row-group-rows", "100", "--quiet"]


def _files(manifest: dict) -> list[tuple[str, int, int, str]]:
    return [(f["path"], f["rows"], f["bytes"], f["sha256"]) for f in manifest["files"]]


def _checkpoint_files(dest: Path) -> int:
    try:
        return len(json.loads((dest / "_checkpoint.json").read_text())["files"])
    except (OSError, ValueError):
        return 0


def test_kill_9_then_resume_equals_uninterrupted(tmp_path):
    data = make_parquet_dataset(tmp_path / "src", n_files=4, rows_per_file=2000, text_len=40)
    # The reference runs in-process with the options the CLI flags give.
    reference = _engine_export(
        tmp_path, data, "ref", {}, plain_options=dict(batch_size=20, max_file_bytes=6000, row_group_rows=100)
    ).manifest
    assert reference["totals"]["rows"] == 8000 and len(reference["files"]) > 10

    dest = tmp_path / "crash"
    proc = subprocess.Popen(
        export_cmd([*spec_args(data), str(dest), *ARGS]),
        env=cli_env(),
        cwd=str(REPO),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while _checkpoint_files(dest) < 3:
            assert proc.poll() is None, "the export finished before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    # Interrupted: no manifest, a checkpoint, only some of the files.
    assert not (dest / "_manifest.json").exists()
    published = sorted(p.name for p in dest.glob("part-*.parquet"))
    assert 3 <= len(published) < len(reference["files"])
    # Every published file is complete (readable) even though the process died.
    for name in published:
        pq.read_metadata(dest / name)

    # Resuming without --resume is refused; with --resume it completes.
    refused = run_cli([*spec_args(data), str(dest), *ARGS])
    assert refused.returncode == 1 and "--resume" in refused.stderr
    resumed = run_cli([*spec_args(data), str(dest), *ARGS, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed after" in resumed.stderr
    result = json.loads((dest / "_manifest.json").read_text())
    assert _files(result) == _files(reference)
    assert result["totals"] == reference["totals"]
    assert sorted(p.name for p in dest.iterdir()) == sorted(["_manifest.json"] + [f["path"] for f in result["files"]])


def _engine_export(
    tmp: Path, data: Path, name: str, spec_kw: dict, stop_after_files: int | None = None,
    plain_options: dict | None = None, **opts,
):
    """Run the engine in-process; with `stop_after_files` cancel once that many files are published."""
    from py_worker.config import ServerConfig
    from py_worker.export.destination import resolve_destination
    from py_worker.export.engine import run_export
    from py_worker.export.options import ExportOptions
    from py_worker.spec import DatasetSpec

    spec = DatasetSpec(path="parquet", data_files=(("train", (str(data / "*.parquet"),)),), **spec_kw)
    config = ServerConfig(data_roots=[data.parent], export_roots=[tmp])
    dest = resolve_destination(str(tmp / name), config.export_roots)
    seen = {"files": 0}

    def progress(p) -> None:
        seen["files"] = p.files

    def should_stop() -> bool:
        return stop_after_files is not None and seen["files"] >= stop_after_files

    options = ExportOptions(**(plain_options or dict(batch_size=25, max_file_bytes=3000, row_group_rows=60)), **opts)
    return run_export(spec, dest, options, config, progress=progress, should_stop=should_stop)


@pytest.mark.parametrize(
    "spec_kw",
    [{}, {"columns": ("id", "tokens"), "skip": 111, "take": 1500}, {"num_shards": 2, "shard_index": 1}],
    ids=["plain", "columns-skip-take", "shard"],
)
def test_cancelled_then_resumed_equals_uninterrupted(tmp_path, spec_kw):
    from py_worker.export.engine import Cancelled

    data = make_parquet_dataset(tmp_path / "src", n_files=4, rows_per_file=500)
    reference = _engine_export(tmp_path, data, "ref", spec_kw)
    with pytest.raises(Cancelled):
        _engine_export(tmp_path, data, "cut", spec_kw, stop_after_files=3)
    resumed = _engine_export(tmp_path, data, "cut", spec_kw, resume=True)
    assert resumed.resumed_from_file == 3
    assert _files(resumed.manifest) == _files(reference.manifest)
    assert resumed.rows == reference.rows > 0


def test_shuffled_export_refuses_inexact_resume(tmp_path):
    from py_worker.errors import FailedPrecondition
    from py_worker.export.engine import Cancelled

    data = make_parquet_dataset(tmp_path / "src", n_files=1, rows_per_file=1000)
    kw = {"shuffle": True, "seed": 5, "shuffle_buffer": 100}
    with pytest.raises(Cancelled):
        _engine_export(tmp_path, data, "sh", kw, stop_after_files=2)
    with pytest.raises(FailedPrecondition) as err:
        _engine_export(tmp_path, data, "sh", kw, resume=True)
    assert "shuffle" in str(err.value)
    assert not (tmp_path / "sh" / "_manifest.json").exists()
