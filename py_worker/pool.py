"""The worker pool as seen from the gRPC front: processes, pipes, requests and supervision.

Each worker is a `multiprocessing` spawn process connected by one duplex
pipe (a Unix socket pair): commands go out as pickled `send_bytes` messages,
and a reader thread per worker receives the worker's frames (`py_worker.frames`:
headers plus raw batch bytes, read without copies in Python) and turns them
into calls on the asyncio loop. A worker that offers a shared ring in its
"ready" message (`("ready", pid, ring_size)`, the ring's memfd attached to
it) gets it mapped by the reader thread and is then told `("ring_ok", lend)`;
from then on large payloads arrive through the ring, or are lent: when the
probe the "ready" message carries reads back from the worker's memory, the
reader copies batches straight out of it (`py_worker.peer_memory`). A worker that dies is restarted under the same name; the
`on_death` callback lets the front fail in-flight calls and re-home sessions.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import multiprocessing as mp
import os
import pickle
import sys
import threading
import time
from typing import Any, Callable

from py_worker import peer_memory
from py_worker.config import ServerConfig
from py_worker.errors import Unavailable, error_for
from py_worker.frames import PATHS, Ring, recv_frame, recv_frame_with_fds, socket_of


def _close_all(fds: list[int]) -> None:
    """Close descriptors received from a worker that are not kept."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _kill(proc: Any) -> None:
    """Kill a worker process that can no longer be trusted (it may be gone already)."""
    try:
        proc.kill()
    except Exception:  # noqa: BLE001
        pass


def log(text: str) -> None:
    """One log line on stderr."""
    sys.stderr.write(f"hf_bridge {time.strftime('%H:%M:%S')} {text}\n")
    sys.stderr.flush()


class WorkerHandle:
    """One worker process and its pipe."""

    def __init__(self, pool: "Pool", name: str) -> None:
        self.pool = pool
        self.name = name
        self.generation = 0
        self.sessions: set[str] = set()
        self.pending: dict[int, asyncio.Future] = {}
        self.alive = False
        self.ready: asyncio.Event = asyncio.Event()
        self.pid = 0
        self.proc: Any = None
        self.conn: Any = None
        # Payload bytes received from this worker (all its processes) by path (see `py_worker.frames`).
        self.payload_bytes: dict[str, int] = dict.fromkeys(PATHS, 0)

    @property
    def load(self) -> int:
        """Sessions placed on this worker plus requests in flight."""
        return len(self.sessions) + len(self.pending)

    def start(self) -> None:
        """Spawn the process and its reader thread."""
        from py_worker.worker import worker_main

        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        self.generation += 1
        proc = ctx.Process(
            target=worker_main,
            args=(child, self.pool.config.to_dict(), self.name),
            name=f"hf-bridge-{self.name}",
            daemon=True,
        )
        self.ready = asyncio.Event()
        proc.start()
        child.close()
        self.proc, self.conn, self.alive = proc, parent, True
        gen = self.generation
        threading.Thread(target=self._reader, args=(parent, gen, proc), name=f"reader-{self.name}",
                         daemon=True).start()

    def _reader(self, conn: Any, gen: int, proc: Any) -> None:
        loop = self.pool.loop
        sock = None
        ring: Ring | None = None
        lender = 0  # the worker's pid once it may lend batches (see `py_worker.frames`)
        try:
            sock = socket_of(conn)
            ready = False
            while True:
                if ready:
                    header, payload = recv_frame(sock, ring, lender, self.payload_bytes)
                else:  # the "ready" frame carries the ring's descriptor
                    header, payload, fds = recv_frame_with_fds(sock, ring)
                    if header[0] == "ready":
                        ready = True
                        size = header[2] if len(header) > 2 and isinstance(header[2], int) else 0
                        ring = self._attach_ring(fds, size)
                        if ring is not None and self._may_lend(proc.pid, header):
                            lender = proc.pid
                        header = ("ready", header[1], ring is not None, bool(lender))
                    else:
                        _close_all(fds)
                try:
                    loop.call_soon_threadsafe(self.pool._dispatch, self, header, payload)
                except RuntimeError:
                    return  # the event loop is closed: the server is gone
        except (EOFError, OSError):
            pass  # the worker exited (or was killed)
        except peer_memory.PeerMemoryError as exc:
            if exc.errno != errno.ESRCH:  # else it exited while lending a batch
                log(f"worker {self.name} lent a batch that cannot be read ({exc}); restarting it")
                _kill(proc)
        except Exception as exc:  # noqa: BLE001 - a garbled frame: the worker cannot be trusted any more
            log(f"worker {self.name} sent an unreadable message ({type(exc).__name__}: {exc}); restarting it")
            _kill(proc)
        finally:
            if sock is not None:
                sock.close()
            if ring is not None:
                try:
                    ring.close()
                except (BufferError, OSError, ValueError):
                    pass  # still referenced somewhere: unmapped when collected; the restart must go on
            try:
                loop.call_soon_threadsafe(self.pool._died, self, gen)
            except RuntimeError:
                pass  # the event loop is closed: the server is gone

    def _may_lend(self, pid: int, ready: tuple) -> bool:
        """Whether the worker offered lending in its "ready" header (`ready`) and its probe reads back."""
        if len(ready) < 6 or not isinstance(ready[3], int) or not isinstance(ready[4], bytes):
            return False
        if peer_memory.probe(pid, ready[3], ready[4]):
            return True
        log(f"worker {self.name}: its memory cannot be read here; batches go through the shared ring")
        return False

    def _attach_ring(self, fds: list[int], size: int) -> Ring | None:
        """Map the worker's ring from the descriptor it sent; None (payloads stay on the socket) when
        it offered none or mapping is not possible here. Every descriptor in `fds` is closed."""
        if not fds or size <= 0:
            _close_all(fds)
            return None
        _close_all(fds[1:])
        try:
            return Ring.attach(fds[0], size)
        except (OSError, ValueError, TypeError) as exc:
            log(f"worker {self.name}: shared ring unavailable ({exc}); batches go over the socket")
            return None

    def send(self, cmd: tuple) -> None:
        """Send a command; raises Unavailable when the worker is gone."""
        if not self.alive:
            raise Unavailable(f"worker {self.name} is restarting; retry")
        try:
            self.conn.send_bytes(pickle.dumps(cmd, protocol=pickle.HIGHEST_PROTOCOL))
        except (OSError, ValueError) as exc:
            raise Unavailable(f"worker {self.name} is unreachable ({exc}); retry") from exc


class Pool:
    """N workers, least-loaded placement and request/reply over the pipes."""

    def __init__(self, config: ServerConfig, size: int) -> None:
        self.config = config
        self.workers = [WorkerHandle(self, f"w{i}") for i in range(size)]
        self.loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
        self._req = itertools.count(1)
        self.on_message: Callable[[WorkerHandle, tuple, bytes | None], None] = lambda w, h, p: None
        self.on_death: Callable[[WorkerHandle], None] = lambda w: None
        self.stopping = False

    def start(self) -> None:
        """Start every worker."""
        for w in self.workers:
            w.start()

    async def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait until every worker finished its imports (or `timeout` passed)."""
        try:
            await asyncio.wait_for(asyncio.gather(*(w.ready.wait() for w in self.workers)), timeout)
        except asyncio.TimeoutError:
            log("some workers are still starting; serving anyway")

    def least_loaded(self) -> WorkerHandle:
        """The live worker with the fewest sessions (Unavailable when none is alive)."""
        live = [w for w in self.workers if w.alive]
        if not live:
            raise Unavailable("no worker is running; retry shortly")
        return min(live, key=lambda w: (w.load, w.name))

    async def request(self, worker: WorkerHandle, op: str, *args: Any, timeout: float | None = None) -> Any:
        """Send `(op, req, *args)` and await the reply value (raises the worker's BridgeError)."""
        req = next(self._req)
        fut: asyncio.Future = self.loop.create_future()
        worker.pending[req] = fut
        try:
            worker.send((op, req) + args)
            return await asyncio.wait_for(fut, timeout)
        finally:
            worker.pending.pop(req, None)

    def _dispatch(self, worker: WorkerHandle, header: tuple, payload: bytes | None) -> None:
        if header[0] == "ready":
            worker.pid = header[1]
            if len(header) > 2 and header[2]:
                try:
                    worker.send(("ring_ok", len(header) > 3 and header[3]))
                except Unavailable:
                    pass
            worker.ready.set()
            return
        if header[0] == "reply":
            _, req, ok, value, _has = header
            fut = worker.pending.get(req)
            if fut is not None and not fut.done():
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(error_for(*value))
            return
        self.on_message(worker, header, payload)

    def _died(self, worker: WorkerHandle, gen: int) -> None:
        if gen != worker.generation or not worker.alive:
            return
        worker.alive = False
        for fut in list(worker.pending.values()):
            if not fut.done():
                fut.set_exception(Unavailable(f"worker {worker.name} stopped while serving the request; retry"))
        worker.pending.clear()
        if self.stopping:
            return
        code = worker.proc.exitcode if worker.proc is not None else None
        if code is None:
            try:
                worker.proc.join(0.5)
                code = worker.proc.exitcode
            except Exception:  # noqa: BLE001
                pass
        log(f"worker restart name={worker.name} exitcode={code} sessions={len(worker.sessions)}")
        try:
            self.on_death(worker)
        finally:
            worker.sessions.clear()
            if not self.stopping:
                worker.start()

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Ask every worker to stop; kill those that do not leave in time."""
        self.stopping = True
        for w in self.workers:
            try:
                if w.alive:
                    w.conn.send_bytes(pickle.dumps(("shutdown",)))
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + timeout
        for w in self.workers:
            if w.proc is None:
                continue
            remaining = max(0.0, deadline - time.monotonic())
            await asyncio.get_running_loop().run_in_executor(None, w.proc.join, remaining)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(1)
