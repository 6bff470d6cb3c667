"""The Export RPC side: `export_events` runs the job in a subprocess, streams progress, ends with the manifest."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from export_support import make_parquet_dataset

from py_worker.config import ServerConfig
from py_worker.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from py_worker.export import service
from py_worker.export.engine import Progress
from py_worker.export.progress import ProgressPrinter, Throttle, format_progress, human_bytes
from py_worker.export.service import export_events
from py_worker.spec import DatasetSpec
from py_worker.wire import pb


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_parquet_dataset(tmp_path_factory.mktemp("src"), n_files=3, rows_per_file=2000, text_len=30)


def _request(data_dir: Path, dest: Path | str, **kw) -> pb.ExportRequest:
    spec = DatasetSpec(path="parquet", data_files=(("train", (str(data_dir / "*.parquet"),)),))
    return pb.ExportRequest(spec=spec.to_proto(), destination=str(dest), **kw)


def _config(tmp: Path, data_dir: Path) -> ServerConfig:
    return ServerConfig(data_roots=[data_dir.parent], export_roots=[tmp], state_dir=tmp / "state")


async def _collect(request, config) -> list:
    return [ev async for ev in export_events(request, config)]


def _run(coro) -> object:
    """Run `coro` in a new event loop, stopping the spare job process it left before the loop ends."""
    async def main() -> object:
        try:
            return await coro
        finally:
            await service.shutdown()

    return asyncio.run(main())


@pytest.fixture(autouse=True)
def no_spare_job_left():
    """Each test starts and ends without a spare job process (each runs its own event loop)."""
    service.launcher.discard()
    yield
    service.launcher.discard()


def _job_children(include_spare: bool = False) -> list[int]:
    """Pids of this process's children running the export job (the waiting spare left out unless asked)."""
    me = os.getpid()
    spare = None if include_spare else service.launcher.spare_pid
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == me and b"py_worker.export.job" in cmd and int(entry) != spare:
            out.append(int(entry))
    return out


def test_export_events_stream_progress_then_the_manifest(tmp_path, data_dir):
    dest = tmp_path / "out"
    events = _run(_collect(_request(data_dir, dest, max_file_bytes=20_000, row_group_rows=500), _config(tmp_path, data_dir)))
    kinds = [ev.WhichOneof("event") for ev in events]
    assert kinds[-1] == "result" and kinds.count("result") == 1
    assert "progress" in kinds
    progress = [ev.progress for ev in events if ev.WhichOneof("event") == "progress"]
    assert [p.rows for p in progress] == sorted(p.rows for p in progress)
    assert progress[-1].rows == 6000 and progress[-1].total_rows == 6000
    result = events[-1].result
    assert result.rows == 6000 and result.files > 1
    assert result.manifest_uri == str(dest / "_manifest.json")
    manifest = json.loads(result.manifest_json)
    assert manifest == json.loads((dest / "_manifest.json").read_text())
    assert manifest["totals"] == {"rows": 6000, "bytes": result.bytes, "files": result.files}
    assert not _job_children()


def test_an_export_leaves_a_job_process_started_for_the_next_one(tmp_path, small_dir):
    config = _config(tmp_path, small_dir)

    async def two_exports() -> None:
        await _collect(_request(small_dir, tmp_path / "a"), config)
        spare = service.launcher.spare_pid
        assert spare is not None and _job_children(include_spare=True) == [spare]
        events = await _collect(_request(small_dir, tmp_path / "b"), config)
        assert events[-1].result.rows == 1600
        # The spare ran the second export and has exited; another one waits now.
        assert spare not in _job_children(include_spare=True)
        assert service.launcher.spare_pid not in (None, spare)
        await service.shutdown()
        assert service.launcher.spare_pid is None

    _run(two_exports())
    assert not _job_children(include_spare=True)


@pytest.mark.parametrize("noticed", [True, False], ids=["death-noticed", "death-unnoticed"])
def test_a_spare_that_died_does_not_fail_the_next_export(tmp_path, small_dir, noticed):
    config = _config(tmp_path, small_dir)

    async def run() -> None:
        await _collect(_request(small_dir, tmp_path / "a"), config)
        dead = service.launcher.spare_pid
        os.kill(dead, 9)
        if noticed:  # the loop sees it die: the launcher starts a fresh process instead
            while service.launcher.spare_pid is not None:
                await asyncio.sleep(0.01)
        else:
            # Block the event loop while the spare dies, so the launcher still
            # takes it as alive: the job line goes to a dead process, which
            # never accepts it, and the job goes to the next process.
            time.sleep(0.5)
            assert service.launcher.spare_pid == dead
        events = await _collect(_request(small_dir, tmp_path / "b"), config)
        assert events[-1].result.rows == 1600
        assert dead not in _job_children(include_spare=True)
        await service.shutdown()

    _run(run())
    assert not _job_children(include_spare=True)


def test_bad_requests_fail_fast_with_status_codes(tmp_path, data_dir):
    config = _config(tmp_path, data_dir)
    with pytest.raises(PermissionDenied):
        _run(_collect(_request(data_dir, "/somewhere/else"), config))
    with pytest.raises(InvalidArgument):
        _run(_collect(_request(data_dir, tmp_path / "x", compression="lzma"), config))
    bad_spec = _request(data_dir, tmp_path / "x")
    bad_spec.spec.shard_index = 3
    with pytest.raises(InvalidArgument):
        _run(_collect(bad_spec, config))
    # Errors found by the job process come back with their code and message.
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "data.bin").write_bytes(b"x")
    with pytest.raises(FailedPrecondition) as err:
        _run(_collect(_request(data_dir, tmp_path / "full"), config))
    assert "not empty" in str(err.value)
    assert not _job_children()


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory) -> Path:
    return make_parquet_dataset(tmp_path_factory.mktemp("small"), n_files=2, rows_per_file=800)


@pytest.fixture(scope="module")
def slow_dir(tmp_path_factory) -> Path:
    """Enough rows that an export in 2-row batches is still running when it is cancelled."""
    return make_parquet_dataset(tmp_path_factory.mktemp("slow"), n_files=4, rows_per_file=10_000, text_len=30)


def test_cancel_stops_the_job_and_resume_finishes_it(tmp_path, slow_dir):
    data_dir = slow_dir
    config = _config(tmp_path, data_dir)
    dest = tmp_path / "cancelled"
    request = _request(data_dir, dest, max_file_bytes=4_000, row_group_rows=100, batch_size=2)
    seen: list = []

    async def consume() -> None:
        async for ev in export_events(request, config):
            seen.append(ev)

    async def cancel_after_progress() -> list[int]:
        task = asyncio.ensure_future(consume())
        running: list[int] = []
        while not (running and any(ev.WhichOneof("event") == "progress" and ev.progress.rows > 0 for ev in seen)):
            assert not task.done(), "the export finished before it could be cancelled"
            await asyncio.sleep(0.01)
            running = _job_children()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return running

    running = _run(cancel_after_progress())
    assert len(running) == 1
    assert not _job_children()  # the job process is gone once the cancelled call returns
    assert not (dest / "_manifest.json").exists()
    assert all(ev.WhichOneof("event") == "progress" for ev in seen)

    events = _run(_collect(_request(data_dir, dest, max_file_bytes=4_000, row_group_rows=100, batch_size=2, resume=True), config))
    result = events[-1].result
    assert result.rows == 40_000
    ids = []
    import pyarrow.parquet as pq

    for f in json.loads(result.manifest_json)["files"]:
        ids.extend(pq.read_table(dest / f["path"], columns=["id"]).column("id").to_pylist())
    assert ids == list(range(40_000))


def test_progress_formatting_and_throttle():
    p = Progress(rows=5000, bytes=2_500_000, files=2, total_rows=10_000, elapsed_seconds=2.0)
    line = format_progress(p)
    assert "5,000 / 10,000 rows" in line and "50.0%" in line and "2.5 MB" in line and "2,500 rows/s" in line
    assert "ETA 0:00:02" in line
    assert "ETA" not in format_progress(Progress(10, 0, 0, None, 1.0))
    assert human_bytes(999) == "999 B" and human_bytes(1_500) == "1.5 kB"

    now = [0.0]
    t = Throttle(0.25, clock=lambda: now[0])
    passed = []
    for _ in range(100):
        passed.append(t.ready())
        now[0] += 0.01
    assert sum(passed) == 4  # 1 s of updates every 10 ms, at most 4 per second

    import io

    # The printer's rate counts from the first rows it saw (a resumed export starts high).
    out = io.StringIO()
    printer = ProgressPrinter(out, tty=False, line_interval=0.0)
    printer(Progress(rows=4000, bytes=0, files=0, total_rows=10_000, elapsed_seconds=1.0))
    printer(Progress(rows=6000, bytes=0, files=0, total_rows=10_000, elapsed_seconds=3.0))
    printer.finish("done")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[-1] == "done"
    assert "1,000 rows/s" in lines[1] and "ETA 0:00:04" in lines[1]
    tty = io.StringIO()
    bar = ProgressPrinter(tty, tty=True)
    bar(p)
    bar.finish("done")
    assert tty.getvalue().startswith("\rexport  5,000 / 10,000 rows") and tty.getvalue().endswith("done\n")


def test_export_rpc_through_the_real_server(tmp_path, data_dir):
    import grpc

    from export_support import BridgeServer
    from py_worker.wire import pb_grpc

    exports = tmp_path / "exports"
    exports.mkdir()
    server = BridgeServer(data_dir.parent, exports, tmp_path / "state")
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.HFBridgeStub(channel)
            events = list(stub.Export(_request(data_dir, exports / "rpc", max_file_bytes=30_000), timeout=120))
            assert events[-1].WhichOneof("event") == "result"
            manifest = json.loads(events[-1].result.manifest_json)
            assert manifest["totals"]["rows"] == 6000
            assert (exports / "rpc" / "_manifest.json").exists()

            with pytest.raises(grpc.RpcError) as err:
                list(stub.Export(_request(data_dir, tmp_path / "outside"), timeout=60))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(grpc.RpcError) as err:
                list(stub.Export(_request(data_dir, exports / "rpc"), timeout=60))
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "not empty" in err.value.details()
    finally:
        server.stop()


def test_closing_the_stream_early_stops_the_job(tmp_path, small_dir):
    data_dir = small_dir
    config = _config(tmp_path, data_dir)
    request = _request(data_dir, tmp_path / "closed", max_file_bytes=4_000, row_group_rows=100, batch_size=2)

    async def first_progress_then_close() -> list[int]:
        gen = export_events(request, config)
        first = await gen.__anext__()
        assert first.WhichOneof("event") == "progress"
        running = _job_children()
        await gen.aclose()
        return running

    assert len(_run(first_progress_then_close())) == 1
    assert not _job_children()
    assert not (tmp_path / "closed" / "_manifest.json").exists()


def test_too_large_batch_size_is_invalid(tmp_path, data_dir):
    with pytest.raises(InvalidArgument) as err:
        _run(_collect(_request(data_dir, tmp_path / "x", batch_size=999_999_999), _config(tmp_path, data_dir)))
    assert "batch_size" in str(err.value)


def test_concurrent_exports_are_limited(tmp_path, small_dir, monkeypatch):
    from py_worker.errors import ResourceExhausted
    from py_worker.export import service

    monkeypatch.setattr(service, "MAX_CONCURRENT_EXPORTS", 1)
    config = _config(tmp_path, small_dir)

    async def two_at_once() -> None:
        first = export_events(_request(small_dir, tmp_path / "one", batch_size=2), config)
        await first.__anext__()
        try:
            with pytest.raises(ResourceExhausted) as err:
                await _collect(_request(small_dir, tmp_path / "two"), config)
            assert "HF_BRIDGE_MAX_EXPORTS" in str(err.value)
        finally:
            await first.aclose()
        # The slot is free again once the first call ended.
        events = await _collect(_request(small_dir, tmp_path / "three"), config)
        assert events[-1].result.rows == 1600

    _run(two_at_once())
    assert not _job_children()


def test_a_job_process_given_no_job_leaves_quietly_and_a_malformed_one_is_an_error():
    import subprocess
    import sys

    from conftest import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "py_worker.export.job"]
    idle = subprocess.run(cmd, input=b"", capture_output=True, env=env, timeout=60)
    assert idle.returncode == 0 and idle.stdout == b""
    bad = subprocess.run(cmd, input=b"{not json\n", capture_output=True, env=env, timeout=60)
    assert bad.returncode == 2
    first, *_, last = bad.stdout.decode().splitlines()
    assert json.loads(first) == {"type": "accepted"}
    event = json.loads(last)
    assert event["type"] == "error" and event["code"] == "INVALID_ARGUMENT"
    assert "malformed export job" in event["message"]


def test_a_spare_nobody_takes_is_stopped_after_its_idle_time():
    from py_worker.export.launcher import JobLauncher

    async def run() -> None:
        launcher = JobLauncher(service._job_env, 1 << 20, idle_seconds=0.5)
        taken = await launcher.take()
        spare = launcher.spare_pid
        assert spare is not None and spare != taken.pid
        taken.stdin.close()  # not given a job: it leaves
        assert await asyncio.wait_for(taken.wait(), 30) == 0
        for _ in range(300):  # the spare is stopped once its idle time is up
            if launcher.spare_pid is None and spare not in _job_children(include_spare=True):
                break
            await asyncio.sleep(0.05)
        assert launcher.spare_pid is None
        assert spare not in _job_children(include_spare=True)

    asyncio.run(run())
    assert not _job_children(include_spare=True)
