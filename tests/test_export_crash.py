"""Crash safety: an export killed with SIGKILL publishes no manifest, and --resume finishes it
with exactly the files (names, rows, sha256) of an uninterrupted export."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq

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
    data = make_parquet_dataset(tmp_path / "src", n_files=4, rows_per_file=3000, text_len=40)
    ref = tmp_path / "ref"
    done = run_cli([*spec_args(data), str(ref), *ARGS])
    assert done.returncode == 0, done.stderr
    reference = json.loads((ref / "_manifest.json").read_text())
    assert reference["totals"]["rows"] == 12000 and len(reference["files"]) > 10

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
