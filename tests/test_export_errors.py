"""Bad input to an export gets a clear error value, and nothing partial is published."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from export_support import make_parquet_dataset, run_cli, spec_args

from py_worker.config import ServerConfig
from py_worker.errors import BridgeError, FailedPrecondition, InvalidArgument, PermissionDenied
from py_worker.export.destination import resolve_destination
from py_worker.export.engine import run_export
from py_worker.export.layout import Layout, is_export_entry
from py_worker.export.options import ExportOptions
from py_worker.spec import DatasetSpec


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_parquet_dataset(tmp_path_factory.mktemp("src"), n_files=2, rows_per_file=100)


def _spec(data_dir: Path, **kw) -> DatasetSpec:
    return DatasetSpec(path="parquet", data_files=(("train", (str(data_dir / "*.parquet"),)),), **kw)


def _run(tmp: Path, data_dir: Path, dest: str, spec: DatasetSpec | None = None, **opts):
    config = ServerConfig(data_roots=[data_dir.parent], export_roots=[tmp / "exports"])
    (tmp / "exports").mkdir(exist_ok=True)
    d = resolve_destination(dest, config.export_roots)
    return run_export(spec or _spec(data_dir), d, ExportOptions(**opts), config)


def test_destination_outside_export_roots_is_permission_denied(tmp_path, data_dir):
    outside = tmp_path / "elsewhere"
    with pytest.raises(PermissionDenied) as err:
        _run(tmp_path, data_dir, str(outside))
    assert "outside the allowed roots" in str(err.value)
    with pytest.raises(PermissionDenied):
        _run(tmp_path, data_dir, str(tmp_path / "exports" / ".." / "escape"))
    assert not outside.exists() and not (tmp_path / "escape").exists()
    # A symlink inside the root pointing outside it is refused as well.
    (tmp_path / "exports").mkdir(exist_ok=True)
    (tmp_path / "exports" / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PermissionDenied):
        _run(tmp_path, data_dir, str(tmp_path / "exports" / "link" / "x"))


def test_non_empty_destination_needs_overwrite_and_is_left_untouched(tmp_path, data_dir):
    dest = tmp_path / "exports" / "out"
    _run(tmp_path, data_dir, str(dest), max_file_bytes=2000, row_group_rows=40)
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    with pytest.raises(FailedPrecondition) as err:
        _run(tmp_path, data_dir, str(dest), _spec(data_dir, take=5))
    assert "not empty" in str(err.value) and "overwrite" in str(err.value)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before

    # With overwrite the old export is replaced entirely (no stale files remain).
    result = _run(tmp_path, data_dir, str(dest), _spec(data_dir, take=5), overwrite=True)
    assert result.rows == 5
    assert sorted(p.name for p in dest.iterdir()) == ["_manifest.json", "part-00000.parquet"]


def test_overwrite_refuses_to_delete_foreign_files(tmp_path, data_dir):
    dest = tmp_path / "exports" / "mine"
    dest.mkdir(parents=True)
    (dest / "notes.txt").write_text("keep me")
    for opts in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(FailedPrecondition) as err:
            _run(tmp_path, data_dir, str(dest), **opts)
        assert "notes.txt" in str(err.value)
    assert sorted(p.name for p in dest.iterdir()) == ["notes.txt"]


def test_unwritable_destination_gives_a_clear_error(tmp_path, data_dir):
    (tmp_path / "exports").mkdir()
    blocker = tmp_path / "exports" / "file.txt"
    blocker.write_text("x")
    with pytest.raises(BridgeError) as err:
        _run(tmp_path, data_dir, str(blocker))
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "not a directory" in str(err.value)
    with pytest.raises(BridgeError) as err:
        _run(tmp_path, data_dir, str(blocker / "sub"))
    assert err.value.code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED)
    assert str(blocker) in str(err.value)
    if os.geteuid() != 0:  # root writes through directory permissions
        ro = tmp_path / "exports" / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(PermissionDenied) as err:
                _run(tmp_path, data_dir, str(ro / "out"))
            assert "permission denied" in str(err.value)
        finally:
            ro.chmod(0o700)


def test_resume_refuses_a_checkpoint_of_another_job(tmp_path, data_dir):
    dest = tmp_path / "exports" / "r"
    _run(tmp_path, data_dir, str(dest), max_file_bytes=2000, row_group_rows=40)
    # Resuming a finished export with the same arguments reports it instead of rewriting it.
    again = _run(tmp_path, data_dir, str(dest), max_file_bytes=2000, row_group_rows=40, resume=True)
    assert again.rows == 200
    with pytest.raises(FailedPrecondition) as err:
        _run(tmp_path, data_dir, str(dest), max_file_bytes=5000, row_group_rows=40, resume=True)
    assert "different spec or options" in str(err.value)


@pytest.mark.parametrize(
    "opts, needle",
    [
        ({"compression": "lzma"}, "compression"),
        ({"max_file_bytes": 10}, "max_file_bytes"),
        ({"row_group_rows": 0}, "row_group_rows"),
        ({"batch_size": -1}, "batch_size"),
        ({"overwrite": True, "resume": True}, "exclude"),
        ({"compression": "snappy", "compression_level": 3}, "level"),
        ({"job_id": "a b"}, "job_id"),
    ],
)
def test_invalid_options(opts, needle):
    with pytest.raises(InvalidArgument) as err:
        ExportOptions(**opts)
    assert needle in str(err.value)


@pytest.mark.parametrize(
    "dest, needle",
    [("", "empty"), ("ftp://host/x", "only local"), ("s3://", "no bucket"), ("s3://b/a//c", "segments"), ("/", "root")],
)
def test_invalid_destinations(dest, needle):
    with pytest.raises(BridgeError) as err:
        resolve_destination(dest, None)
    assert needle in str(err.value)


def test_layout_names():
    assert Layout().part(3) == "part-00003.parquet"
    assert Layout(shard=7).part(12) == "part-s00007-00012.parquet"
    assert Layout(shard=7).owns("_tmp/part-s00007-00000.parquet")
    assert not Layout(shard=7).owns("part-s00008-00000.parquet")
    assert not Layout().owns("part-s00001-00000.parquet")
    assert Layout(shard=1).manifest == "_shards/manifest-s00001.json"
    assert is_export_entry("_checkpoint-s00002.json") and not is_export_entry("readme.md")


def test_cli_reports_errors_with_exit_code_1(tmp_path, data_dir):
    (tmp_path / "exports").mkdir()
    proc = run_cli([*spec_args(data_dir), str(tmp_path / "out"), "--export-root", str(tmp_path / "exports")])
    assert proc.returncode == 1
    assert "PERMISSION_DENIED" in proc.stderr and "outside the allowed roots" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli([str(tmp_path / "exports" / "x")])
    assert proc.returncode == 1 and "needs SPEC and DEST" in proc.stderr


def test_missing_data_files_publish_nothing(tmp_path, data_dir):
    from py_worker.errors import NotFound

    spec = DatasetSpec(path="parquet", data_files=(("train", (str(data_dir / "missing-*.parquet"),)),))
    with pytest.raises(NotFound) as err:
        _run(tmp_path, data_dir, str(tmp_path / "exports" / "x"), spec)
    assert "no data files matched" in str(err.value)
    assert not (tmp_path / "exports" / "x" / "_manifest.json").exists()
