"""Export job processes, with one started ahead so that an Export call does not wait for imports.

A job process spends about a second importing `datasets` and pyarrow before
it can read its job. After the first Export call the launcher keeps one
more process started (`python -m py_worker.export.job`, which imports first
and then waits for its job line on stdin), so the next call takes a process
that is ready. A spare nobody takes within `SPARE_IDLE_SECONDS` is stopped,
so an idle server holds no job process; a spare that died is replaced by a
fresh start (and one that died unnoticed is caught by the job line handshake
in `service`). A spare whose server goes away reads end-of-file and exits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Callable

__all__ = ["JobLauncher", "SPARE_IDLE_SECONDS"]

#: How long a spare job process waits to be taken before it is stopped.
SPARE_IDLE_SECONDS = 600.0


class JobLauncher:
    """Starts export job processes; keeps one spare after the first is taken."""

    def __init__(self, env: Callable[[], dict[str, str]], line_limit: int,
                 idle_seconds: float = SPARE_IDLE_SECONDS) -> None:
        self._env = env
        self._line_limit = line_limit
        self._idle_seconds = idle_seconds
        self._spare: asyncio.subprocess.Process | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the spare's event loop
        self._retire: asyncio.TimerHandle | None = None

    @property
    def spare_pid(self) -> int | None:
        """The spare process's pid, when one is waiting (for tests and diagnostics)."""
        return self._spare.pid if self._spare is not None and self._spare.returncode is None else None

    async def take(self) -> asyncio.subprocess.Process:
        """A job process waiting for its job line: the spare when it is alive, else a new one.
        Another spare is started meanwhile for the next call."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self.discard()  # started under another event loop, which cannot wait for it
        proc, self._spare = self._spare, None
        self._cancel_retire()
        if proc is None or proc.returncode is not None:
            proc = await self._start()
        try:
            self._spare, self._loop = await self._start(), loop
            self._retire = loop.call_later(self._idle_seconds, lambda: asyncio.ensure_future(self.close()))
        except OSError:
            self._spare = None  # no spare this time: the next call starts its own
        return proc

    def discard(self) -> None:
        """Kill the spare, if any, without waiting for it (its reaping is left to asyncio's child watcher)."""
        proc, self._spare, self._loop = self._spare, None, None
        self._cancel_retire()
        if proc is not None and proc.returncode is None:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    async def close(self) -> None:
        """Stop the spare, if any (closing its stdin ends it; it is killed if it lingers)."""
        if self._loop is not asyncio.get_running_loop():
            self.discard()
            return
        proc, self._spare, self._loop = self._spare, None, None
        self._cancel_retire()
        if proc is None or proc.returncode is not None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            await asyncio.wait_for(proc.wait(), 2.0)
        except (asyncio.TimeoutError, OSError):
            pass
        finally:
            if proc.returncode is None:
                try:
                    proc.kill()
                    await asyncio.wait_for(proc.wait(), 5.0)
                except (ProcessLookupError, asyncio.TimeoutError):
                    pass

    def _cancel_retire(self) -> None:
        if self._retire is not None:
            try:
                self._retire.cancel()
            except RuntimeError:
                pass  # its event loop is closed
            self._retire = None

    async def _start(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "py_worker.export.job",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=self._line_limit,
            env=self._env(),
        )
