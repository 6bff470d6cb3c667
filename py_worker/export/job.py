"""Export job runner process: `python -m py_worker.export.job`.

The gRPC front starts one of these per Export call so the export never holds
the front's GIL or event loop. Protocol, one JSON object per line:

- stdin, first line: `{"spec": {...}, "destination": "...", "options": {...}, "config": {...}}`.
  Closing stdin afterwards asks the job to stop (it stops at the next batch,
  leaving its checkpoint, and reports CANCELLED).
- stdout: `{"type": "accepted"}` as soon as the job line is read (a process
  that dies before saying so never started the job, so the front may hand
  the job to another), then `{"type": "progress", "rows", "bytes", "files", "total_rows", "elapsed_seconds"}`
  (a few per second), then either
  `{"type": "result", "manifest_uri", "manifest_json", "rows", "bytes", "files"}` or
  `{"type": "error", "code": "NOT_FOUND", "message": "..."}`.

Anything libraries print goes to stderr. The process leaves with `os._exit`
(see the interpreter-shutdown trap in the architecture notes).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
from typing import Any, BinaryIO, Callable

from py_worker.export.progress import Throttle


#: The first line a job process writes: it has read its job line.
ACCEPTED = {"type": "accepted"}


class _Emitter:
    """Writes protocol lines to the original stdout, whatever else prints."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def emit(self, event: dict[str, Any]) -> None:
        """Write one event as a JSON line (thread-safe)."""
        data = (json.dumps(event, separators=(",", ":")) + "\n").encode("utf-8")
        with self._lock:
            self._out.write(data)
            self._out.flush()


def run(job: dict[str, Any], emit: Callable[[dict[str, Any]], None], stop: threading.Event) -> int:
    """Run the export described by `job`, reporting through `emit`; returns the exit code."""
    from py_worker.config import ServerConfig
    from py_worker.errors import BridgeError, from_exception
    from py_worker.export.destination import resolve_destination
    from py_worker.export.engine import Progress, run_export
    from py_worker.export.options import ExportOptions
    from py_worker.spec import DatasetSpec

    throttle = Throttle(0.25)
    last: list[Progress] = []

    def on_progress(p: Progress) -> None:
        last[:] = [p]
        if throttle.ready():
            emit({"type": "progress", **p.__dict__})

    try:
        config = ServerConfig.from_dict(job["config"])
        spec = DatasetSpec.from_dict(job["spec"])
        options = ExportOptions.from_dict(job.get("options", {}))
        dest = resolve_destination(job["destination"], config.export_roots)
        result = run_export(spec, dest, options, config, progress=on_progress, should_stop=stop.is_set)
    except BridgeError as exc:
        emit({"type": "error", "code": exc.code.name, "message": exc.message})
        return 1
    except Exception as exc:  # noqa: BLE001 - reported as a clear error value, never a traceback
        err = from_exception(exc, "export")
        emit({"type": "error", "code": err.code.name, "message": err.message})
        return 1
    emit(
        {
            "type": "progress",
            "rows": result.rows,
            "bytes": result.bytes,
            "files": result.files,
            "total_rows": result.rows,
            "elapsed_seconds": last[0].elapsed_seconds if last else 0.0,
        }
    )
    emit(
        {
            "type": "result",
            "manifest_uri": result.manifest_uri,
            "manifest_json": result.manifest_json,
            "rows": result.rows,
            "bytes": result.bytes,
            "files": result.files,
        }
    )
    return 0


def _preload() -> None:
    """Import what every job needs (`datasets`, pyarrow, the export engine): about a second."""
    for name in ("datasets", "py_worker.export.engine", "py_worker.spec"):
        importlib.import_module(name)


def main() -> None:
    """Process entry point: read the job from stdin, run it, report on stdout, `os._exit`."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    emitter = _Emitter(out)
    _preload()  # a process started ahead does this while it waits for its job
    line = sys.stdin.buffer.readline()
    if not line:  # stopped before it was given a job (a spare no longer needed)
        os._exit(0)
    emitter.emit(ACCEPTED)
    stop = threading.Event()

    def watch_stdin() -> None:
        try:
            while sys.stdin.buffer.read(65536):
                pass
        except Exception:  # noqa: BLE001 - any failure means the parent is gone
            pass
        stop.set()

    code = 2
    try:
        job = json.loads(line)
        threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()
        code = run(job, emitter.emit, stop)
    except ValueError as exc:
        emitter.emit({"type": "error", "code": "INVALID_ARGUMENT", "message": f"malformed export job: {exc}"})
    finally:
        try:
            out.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


if __name__ == "__main__":
    main()
