"""The Export RPC: run an export job in its own process and stream its progress.

`export_events` validates the request in the front (bad input fails fast
with INVALID_ARGUMENT / PERMISSION_DENIED), then hands the job to a
`python -m py_worker.export.job` process (started ahead, see `launcher`),
relays its progress as `ExportProgress` events (at most four a second) and
ends with an `ExportResult` carrying the manifest. When the caller goes away the job is asked to stop, then killed if
it does not; its checkpoint lets a later call with `resume` continue.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator

from py_worker.errors import Internal, InvalidArgument, ResourceExhausted, error_for
from py_worker.export.destination import resolve_destination
from py_worker.export.job import ACCEPTED
from py_worker.export.launcher import JobLauncher
from py_worker.export.options import ExportOptions
from py_worker.export.progress import Throttle
from py_worker.memory import EXPORT_ENV

if TYPE_CHECKING:  # pragma: no cover
    from py_worker.config import ServerConfig

STOP_GRACE_SECONDS = 2.0
# Job processes tried for one Export call when one dies before it accepts the job.
HAND_OVER_ATTEMPTS = 3
# Export jobs running at once in one server (each is a process); more get RESOURCE_EXHAUSTED.
MAX_CONCURRENT_EXPORTS = int(os.environ.get("HF_BRIDGE_MAX_EXPORTS", "4") or 4)
_running = 0
PROGRESS_INTERVAL = 0.25
_LINE_LIMIT = 64 * 1024 * 1024


def _progress_event(pb: Any, ev: dict[str, Any]) -> Any:
    prog = pb.ExportProgress(
        rows=int(ev.get("rows", 0)),
        bytes=int(ev.get("bytes", 0)),
        files=int(ev.get("files", 0)),
        elapsed_seconds=float(ev.get("elapsed_seconds", 0.0)),
    )
    if ev.get("total_rows") is not None:
        prog.total_rows = int(ev["total_rows"])
    return pb.ExportEvent(progress=prog)


async def export_events(request: Any, config: "ServerConfig") -> AsyncIterator[Any]:
    """Run the export `request` (a `pb.ExportRequest`) and yield `pb.ExportEvent`s.

    Raises BridgeError for bad input or a failed job (the status code of the
    job's error). Cancelling the consuming task stops the job promptly.
    """
    from py_worker.spec import DatasetSpec

    global _running
    spec = DatasetSpec.from_proto(request.spec)
    options = ExportOptions.from_request(request)
    limit = config.limits.max_batch_rows
    if options.batch_size > limit:
        raise InvalidArgument(f"batch_size {options.batch_size} exceeds the server's limit {limit} (--max-batch-rows)")
    resolve_destination(request.destination, config.export_roots)
    if _running >= MAX_CONCURRENT_EXPORTS:
        raise ResourceExhausted(
            f"{_running} export jobs are already running (at most {MAX_CONCURRENT_EXPORTS}, set by "
            "HF_BRIDGE_MAX_EXPORTS); retry when one has finished"
        )
    _running += 1
    job = _run_job(spec, options, request.destination, config)
    try:
        async for event in job:
            yield event
    finally:
        try:
            await job.aclose()  # stops the process when the caller closed us early
        finally:
            _running -= 1


async def _run_job(spec: Any, options: ExportOptions, destination: str, config: "ServerConfig") -> AsyncIterator[Any]:
    """Start the job process and relay its events (see `export_events`)."""
    from py_worker.wire import pb

    job = {
        "spec": spec.to_dict(),
        "destination": destination,
        "options": options.to_dict(),
        "config": config.to_dict(),
    }
    proc = await _hand_over((json.dumps(job) + "\n").encode("utf-8"))
    assert proc.stdout is not None and proc.stderr is not None
    tail: collections.deque[str] = collections.deque(maxlen=20)
    stderr_task = asyncio.ensure_future(_drain(proc.stderr, tail))
    throttle = Throttle(PROGRESS_INTERVAL)
    finished = False
    pending: dict[str, Any] | None = None
    try:
        while True:
            line = await proc.stdout.readline()
            if not line:
                break
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            kind = ev.get("type")
            if kind == "progress":
                if throttle.ready():
                    yield _progress_event(pb, ev)
                    pending = None
                else:
                    pending = ev
            elif kind == "result":
                finished = True
                if pending is not None:  # the final count always goes out
                    yield _progress_event(pb, pending)
                    pending = None
                yield pb.ExportEvent(
                    result=pb.ExportResult(
                        manifest_uri=ev["manifest_uri"],
                        manifest_json=ev["manifest_json"],
                        rows=int(ev["rows"]),
                        bytes=int(ev["bytes"]),
                        files=int(ev["files"]),
                    )
                )
            elif kind == "error":
                raise error_for(str(ev.get("code", "INTERNAL")), str(ev.get("message", "export failed")))
        rc = await proc.wait()
        if not finished:
            await asyncio.wait({stderr_task}, timeout=1.0)
            detail = " | ".join(line for line in tail if line.strip())[-2000:]
            raise Internal(f"the export job process exited with code {rc} before finishing" + (f": {detail}" if detail else ""))
    finally:
        await _stop(proc)
        stderr_task.cancel()


async def _hand_over(job_line: bytes, attempts: int = HAND_OVER_ATTEMPTS) -> asyncio.subprocess.Process:
    """A job process that has accepted `job_line` (said so on stdout).

    A process that died before reading its job (a spare killed while it
    waited, before the event loop saw it go) never started the export, so
    the job goes to the next process; only a process that accepted it owns it.
    """
    for _ in range(attempts):
        proc = await launcher.take()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(job_line)
            await proc.stdin.drain()
            first = await proc.stdout.readline()
        except (BrokenPipeError, ConnectionResetError):
            first = b""
        except BaseException:  # the call was cancelled meanwhile: its job must not run unwatched
            await _stop(proc)
            raise
        try:
            if json.loads(first) == ACCEPTED:
                return proc
        except ValueError:
            pass
        await _stop(proc)
    raise Internal(f"no export job process took the job ({attempts} started; see the server log)")


async def shutdown() -> None:
    """Stop the spare job process, if one is waiting (the server is stopping)."""
    await launcher.close()


def _job_env() -> dict[str, str]:
    """The server's environment, with this package importable in the job process and Arrow's
    allocator set up for exporting (`memory.EXPORT_ENV`)."""
    env = {**EXPORT_ENV, **os.environ}
    package_parent = str(Path(__file__).resolve().parents[2])
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if package_parent not in paths:
        env["PYTHONPATH"] = os.pathsep.join([package_parent, *paths])
    return env


#: Starts the job processes (one kept ready after the first Export call).
launcher = JobLauncher(_job_env, _LINE_LIMIT)


async def _drain(stream: asyncio.StreamReader, tail: "collections.deque[str]") -> None:
    while True:
        line = await stream.readline()
        if not line:
            return
        tail.append(line.decode("utf-8", "replace").rstrip())


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """Ask the job to stop (close its stdin), then kill it if it has not exited in time."""
    if proc.returncode is not None:
        return
    try:
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
        await asyncio.wait_for(asyncio.shield(proc.wait()), STOP_GRACE_SECONDS)
    except (asyncio.TimeoutError, asyncio.CancelledError, GeneratorExit, Exception):
        pass
    finally:
        if proc.returncode is None:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(proc.wait(), 5.0)
            except BaseException:  # noqa: BLE001 - the process is killed; nothing more to do
                pass
