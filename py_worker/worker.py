"""A worker process: holds many streaming sessions and answers the front over one pipe.

Front -> worker commands (pickled tuples):
  ("open", req, sid, spec_dict, batch_size, max_batch_bytes, start_seq, checkpoint_json|None)
  ("info", req, spec_dict)
  ("credit", sid, n)      allow the session to push n more batches
  ("close", sid)
  ("ring_ok", lend)       the front mapped the worker's ring: large payloads may use it; with
                          `lend` true it can also read this process's memory, so batches are lent
  ("shutdown",)
Worker -> front messages (`py_worker.frames`: a pickled header, then an
optional raw payload, on the same socket; each header ends with a
"has payload" flag):
  ("reply", req, ok, value)            value: result dict, or (code_name, message)
  ("batch", sid, seq, num_rows, checkpoint_json, end)   + payload (a serialised Batch)
  ("error", sid, code_name, message)   the session's iteration failed
  ("ready", pid, ring_size[, probe_address, probe])
                                       sent once, after the heavy imports, with the ring's memfd
                                       attached (SCM_RIGHTS); ring_size 0 without a shared ring
                                       (see `py_worker.frames.Ring`); the probe (random bytes at
                                       that address) lets the front try reading our memory

Each session has one producer thread that opens the dataset, iterates
`with_format("arrow").iter(batch_size)`, cuts tables by the byte cap
(zero-copy slices) and keeps up to `prefetch` pieces ready — and, once the
worker's sessions together hold `--worker-prefetch-bytes`, only one. One
sender thread per worker sends ready batches of every session, one per
credit the front granted, in the order the credits and batches arrived, so
`datasets` iteration never waits for encoding or the socket. A piece is
encoded as a complete Batch message (one buffer, see
`arrow_ipc.encode_batch`) by whichever thread gets to it first: the
producer when it has nothing else to do (its queue is full), else the
sender just before sending. When the front can read this process's memory
the sender encodes nothing: it lends the piece (`_Piece.lend`, see
`py_worker.frames`), and the front copies the Arrow buffers themselves.
A checkpoint is `{"hf": state_dict, "skip": rows}`: the HF iterator state
plus rows already delivered after it, so a wire batch cut from the middle
of a HF batch still resumes exactly (see `_Session._items`).
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import sys
import threading
import traceback
from collections import deque
from typing import Any, Iterator

from py_worker import parquet_readahead
from py_worker.config import ServerConfig
from py_worker.errors import from_exception
from py_worker.frames import Ring, send_frame, send_frame_with_fds, send_lent_frame, send_ring_frame, socket_of
from py_worker.memory import release_free_memory


def _log(name: str, text: str) -> None:
    sys.stderr.write(f"hf_bridge[{name}] {text}\n")
    sys.stderr.flush()


class _Piece:
    """A ready batch: a table piece, encoded at most once, by whichever thread needs it first.

    `size` is what the worker's byte budget counts for it: the piece's Arrow
    bytes until it is encoded, the encoded message's size after (while the
    piece is still queued; see `_Session._encode_ahead`).
    """

    __slots__ = ("seq", "num_rows", "table", "size", "buf", "error", "queued", "lock")

    def __init__(self, seq: int, num_rows: int, table: Any) -> None:
        self.seq = seq
        self.num_rows = num_rows
        self.table = table
        self.size = table.nbytes
        self.buf: Any = None
        self.error: BaseException | None = None
        self.queued = True  # in its session's ready queue (its size is held)
        self.lock = threading.Lock()

    def encode(self) -> tuple[Any, bool]:
        """The serialised Batch (a pyarrow Buffer) and whether this call encoded it."""
        from py_worker.arrow_ipc import encode_batch

        with self.lock:
            if self.buf is not None:
                return self.buf, False
            if self.error is not None:
                raise self.error
            try:
                self.buf = encode_batch(self.seq, self.num_rows, self.table)
            except Exception as exc:
                self.error = exc
                raise
            self.table = None
            return self.buf, True

    def lend(self) -> tuple[bytes, int, Any] | None:
        """The piece as spans of this process's memory: `(span table, message length, keep)`.

        The spans (`peer_memory.spans_table`) cover the whole serialised Batch,
        the Arrow buffers of the table included, and stay valid while `keep`
        is held. None when the piece was encoded already or cannot be gathered
        (`ipc_gather.plan`); it is then sent another way.
        """
        from py_worker.arrow_ipc import BatchEncoder
        from py_worker.peer_memory import spans_table

        with self.lock:
            if self.buf is not None or self.error is not None:
                return None
            try:
                encoder = BatchEncoder(self.seq, self.num_rows, self.table, gather=True)
                parts = encoder.parts()
                if parts is None:
                    return None
                spans, total = spans_table(parts)
            except Exception as exc:
                self.error = exc
                raise
            if total != encoder.size:
                raise RuntimeError(f"lent spans cover {total} bytes, the Batch message is {encoder.size}")
            self.table = None
            return spans, total, parts

    def encode_into(self, ring: Ring) -> tuple[int, int] | None:
        """Encode straight into a reserved slot of `ring` (committed): `(position, length)`.

        None when the piece was encoded already, or when the ring has no room
        (the piece is then encoded into its own buffer, which `encode` returns).
        """
        import pyarrow as pa

        from py_worker.arrow_ipc import BatchEncoder

        with self.lock:
            if self.buf is not None or self.error is not None:
                return None
            try:
                encoder = BatchEncoder(self.seq, self.num_rows, self.table)
                slot = ring.reserve(encoder.size)
                if slot is None:
                    buf = pa.allocate_buffer(encoder.size)
                    encoder.write_into(memoryview(buf))
                    self.buf, self.table = buf, None
                    return None
                pos, view = slot
                encoder.write_into(view)
            except Exception as exc:
                self.error = exc
                raise
            ring.commit(pos, encoder.size)
            self.table = None
            return pos, encoder.size


class _Session:
    """One session's producer thread and its bounded queue of ready batches (sent by the worker's sender)."""

    def __init__(self, worker: "Worker", sid: str, spec: dict, batch_size: int, max_bytes: int,
                 start_seq: int, checkpoint: str | None, prefetch: int) -> None:
        self.worker = worker
        self.sid = sid
        self.spec = spec
        self.batch_size = batch_size
        self.max_bytes = max_bytes
        self.seq = start_seq
        self.checkpoint = json.loads(checkpoint) if checkpoint else None
        self.prefetch = prefetch
        self.cond = threading.Condition()
        self.credits = 0
        self.ready: deque = deque()
        self.first_schema: Any = None
        self.num_shards = 0
        self.done = False
        self.closed = False
        self.live = False  # the open reply went out: batches may follow it
        self.thread = threading.Thread(target=self._run, name=f"session-{sid[:8]}", daemon=True)

    # -- control (called from the worker's command loop) --
    def add_credit(self, n: int) -> None:
        """Allow `n` more batches to be sent (the front's flow control)."""
        with self.cond:
            self.credits += n
        self.worker.wake(self)

    def close(self) -> None:
        """Stop the session thread at its next batch."""
        with self.cond:
            self.closed = True
            self.cond.notify()

    # -- called by the worker's sender thread --
    def take(self) -> tuple[tuple, Any, bool] | None:
        """Pop the next batch to send when a credit allows it: `(header, payload, more_sendable)`."""
        with self.cond:
            if not self._sendable():
                return None
            header, payload = self.ready.popleft()
            self.worker.hold(-_size((header, payload)))
            if isinstance(payload, _Piece):
                payload.queued = False
            self.credits -= 1
            self.cond.notify()  # room to prepare more, or the end was sent
            return header, payload, self._sendable()

    def _sendable(self) -> bool:
        return self.live and not self.closed and self.credits > 0 and bool(self.ready)

    # -- producer thread --
    def _open(self) -> Any:
        """Build the pipeline; returns (formatted dataset, checkpoint, features, exact schema or None)."""
        from py_worker.spec import DatasetSpec, known_features, open_iterable

        spec = DatasetSpec.from_dict(self.spec)
        ds = open_iterable(spec, self.worker.config)
        exact = ds.features.arrow_schema if ds.features is not None else None
        features = known_features(ds, spec)
        fds = ds.with_format("arrow")
        ckpt = self.checkpoint or {"hf": None, "skip": 0}
        if ckpt.get("hf") is not None:
            try:
                fds.load_state_dict(ckpt["hf"])
            except Exception as exc:
                raise from_exception(exc, "restoring the session checkpoint") from exc
        self.num_shards = ds.num_shards
        return fds, ckpt, features, exact

    def _items(self, fds: Any, ckpt: dict) -> Iterator[tuple]:
        """Ready batches (`_Piece`s) with the checkpoint after each; the end marker comes last.

        Unshuffled: `{"hf": state before the current HF batch, "skip": rows of it
        already delivered}`. Shuffled: `datasets` loses its shuffle buffer on
        `load_state_dict`, so the checkpoint is `{"hf": None, "skip": rows
        delivered}` and resuming replays the seeded order from the start,
        dropping those rows — exact, at the cost of re-reading the prefix.
        """
        from py_worker.arrow_ipc import end_message, slice_table

        replay = bool(self.spec.get("shuffle"))
        before = ckpt.get("hf")
        skip = int(ckpt.get("skip", 0))
        total = skip
        for table in fds.iter(batch_size=self.batch_size):
            after = fds.state_dict()
            n = table.num_rows
            if skip >= n:  # replaying a shuffled session: rows delivered before the checkpoint
                skip -= n
                before = after
                continue
            for end_row, piece in slice_table(table, skip, self.max_bytes):
                if self.first_schema is None:
                    self.first_schema = piece.schema
                total += piece.num_rows
                if replay:
                    state = {"hf": None, "skip": total}
                elif end_row >= n:
                    state = {"hf": after, "skip": 0}
                else:
                    state = {"hf": before, "skip": end_row}
                header = ("batch", self.sid, self.seq, piece.num_rows, json.dumps(state), False)
                yield header, _Piece(self.seq, piece.num_rows, piece)
                self.seq += 1
            skip = 0
            before = after
        state = {"hf": None, "skip": total} if replay else {"hf": before, "skip": 0}
        yield ("batch", self.sid, self.seq, 0, json.dumps(state), True), end_message(self.seq)

    def start(self, req: int) -> None:
        """Start the session thread; `req` is the open request its first reply answers."""
        self._req = req
        self.thread.start()

    def _run(self) -> None:
        from py_worker.arrow_ipc import schema_to_ipc
        from py_worker.spec import features_json

        try:
            fds, ckpt, features, schema = self._open()
            gen = self._items(fds, ckpt)
            if schema is None:
                # Types are inferred lazily (JSON, CSV): report the schema of the first real batch.
                try:
                    first = next(gen)
                    self.ready.append(first)
                    self.worker.hold(_size(first))
                except StopIteration:
                    self.done = True
                schema = self.first_schema or (features.arrow_schema if features is not None else None)
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a status
            err = from_exception(exc, f"opening '{self.spec.get('path')}'")
            self.worker.reply(self._req, False, (err.code.name, err.message))
            self.worker.hold(-sum(_size(i) for i in self.ready))
            self.ready.clear()
            self.worker.forget(self.sid, self)
            return
        self.worker.reply(self._req, True, {
            "arrow_schema": schema_to_ipc(schema) if schema is not None else b"",
            "features_json": features_json(features),
            "num_shards": self.num_shards,
        })
        with self.cond:
            self.live = True
        self.worker.wake(self)
        try:
            while True:
                todo: _Piece | None = None
                with self.cond:
                    while True:
                        if self.closed or (self.done and not self.ready):
                            return
                        if self._may_prepare():
                            break
                        # With the shared ring, the sender encodes each batch straight into
                        # it (one copy); a batch encoded ahead into its own buffer would take
                        # the socket instead and cost more copies than it saves in waiting.
                        todo = None if self.worker.ring_enabled else self._unencoded()
                        if todo is not None:
                            break
                        # Held back by the worker's byte budget: other sessions
                        # free it without notifying this one, so look again soon.
                        self.cond.wait(None if len(self.ready) >= self.prefetch or self.done else 0.05)
                if todo is not None:
                    self._encode_ahead(todo)
                    continue
                try:
                    item = next(gen)
                except StopIteration:
                    with self.cond:
                        self.done = True
                    continue
                except BaseException as exc:  # noqa: BLE001
                    err = from_exception(exc, f"reading '{self.spec.get('path')}'")
                    item = (("error", self.sid, err.code.name, err.message), None)
                    with self.cond:
                        self.done = True
                with self.cond:
                    self.ready.append(item)
                    self.worker.hold(_size(item))
                self.worker.wake(self)
        finally:
            gen.close() if hasattr(gen, "close") else None
            with self.cond:
                self.worker.hold(-sum(_size(i) for i in self.ready))
                for _, payload in self.ready:
                    if isinstance(payload, _Piece):
                        payload.queued = False
                self.ready.clear()
            self.worker.forget(self.sid, self)

    def _unencoded(self) -> "_Piece | None":
        """The oldest ready piece nobody has encoded yet (called with `cond` held)."""
        for _, payload in self.ready:
            if isinstance(payload, _Piece) and payload.buf is None and payload.error is None:
                return payload
        return None

    def _encode_ahead(self, piece: _Piece) -> None:
        """Encode a queued piece while there is nothing else to do; its held size becomes the encoded size."""
        try:
            buf, fresh = piece.encode()
        except Exception:  # noqa: BLE001 - the sender meets the same error and reports it
            return
        if fresh:
            with self.cond:
                if piece.queued:
                    self.worker.hold(buf.size - piece.size)
                    piece.size = buf.size

    def _may_prepare(self) -> bool:
        """Whether to prepare another batch: under `prefetch`, and one ready at least
        whatever the worker's byte budget (so no session waits on another's)."""
        if self.done or len(self.ready) >= self.prefetch:
            return False
        return not self.ready or self.worker.held_bytes < self.worker.config.limits.worker_prefetch_bytes


def _size(item: tuple) -> int:
    """Bytes a ready item holds: a `_Piece`'s size, or its payload's (a pyarrow Buffer, bytes, or None)."""
    payload = item[1]
    if payload is None:
        return 0
    return payload.size if hasattr(payload, "size") else len(payload)


class Worker:
    """The command loop of one worker process."""

    def __init__(self, conn: Any, config: ServerConfig, name: str) -> None:
        self.conn = conn
        self.sock = socket_of(conn)
        self.config = config
        self.name = name
        self.sessions: dict[str, _Session] = {}
        self.ring = _make_ring(name, config.limits.worker_ring_bytes)
        self.ring_enabled = False  # set once the front says it mapped the ring
        self.lending = False  # set once the front says it can read our memory
        self._probe = os.urandom(32)  # what the front reads back to find out
        self._loans: deque = deque()  # (lent frame number, what keeps its spans valid), oldest first
        self._lent = 0  # lent frames sent
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._held_lock = threading.Lock()
        self.held_bytes = 0  # payload bytes of prepared, unsent batches across sessions
        self._out = threading.Condition()
        self._due: deque = deque()  # sessions that may have a batch to send, in wake order
        self._stopping = False
        self._sender = threading.Thread(target=self._send_loop, name=f"{name}-sender", daemon=True)
        self._sender.start()

    def wake(self, session: "_Session") -> None:
        """Tell the sender thread that `session` may have a batch it can send."""
        with self._out:
            if session not in self._due:
                self._due.append(session)
                self._out.notify()

    def _send_loop(self) -> None:
        """The sender thread: one batch per credit, sessions served in turn, each in sequence order."""
        while True:
            with self._out:
                while not self._due and not self._stopping:
                    self._out.wait()
                if self._stopping:
                    return
                session = self._due.popleft()
            try:
                self._send_one(session)
            except Exception:  # noqa: BLE001 - the sender must outlive any one session
                _log(self.name, "sending failed: " + traceback.format_exc().replace("\n", " | "))

    def _send_one(self, session: "_Session") -> None:
        taken = session.take()
        if taken is None:
            return
        header, payload, more = taken
        if more:
            self.wake(session)  # behind the other sessions that wait
        if isinstance(payload, _Piece):
            try:
                if self._send_piece_via_ring(header, payload):
                    return
                payload, _ = payload.encode()
            except Exception as exc:  # noqa: BLE001 - a batch that cannot be encoded ends its session
                err = from_exception(exc, f"encoding a batch of '{session.spec.get('path')}'")
                self.send(("error", session.sid, err.code.name, err.message))
                session.close()
                return
        self.send(header, payload)

    def _send_piece_via_ring(self, header: tuple, piece: _Piece) -> bool:
        """Lend `piece`, or encode it into the shared ring, and send its frame; False when neither is
        possible (no ring, piece encoded ahead already, or no room: the caller sends it the usual way)."""
        if not self.ring_enabled or self.ring is None:
            return False
        with self._send_lock:
            if self.lending:
                self._return_loans()
                lent = piece.lend()
                if lent is not None:
                    spans, total, keep = lent
                    self._lent += 1
                    self._loans.append((self._lent, keep))
                    try:
                        send_lent_frame(self.sock, header + (True,), spans, total)
                    except (OSError, ValueError):
                        pass  # the front is gone, as in `send`
                    return True
            placed = piece.encode_into(self.ring)
            if placed is None:
                return False
            try:
                send_ring_frame(self.sock, header + (True,), *placed)
            except (OSError, ValueError):
                pass  # the front is gone, as in `send`
            return True

    def _return_loans(self) -> None:
        """Let go of the spans of every lent frame the front has read (under the send lock)."""
        loans = self._loans
        if loans and self.ring is not None:
            returned = self.ring.loans_returned()
            while loans and loans[0][0] <= returned:
                loans.popleft()

    def stop_sender(self) -> None:
        """Stop the sender thread (batches not yet sent are dropped)."""
        with self._out:
            self._stopping = True
            self._out.notify()

    def hold(self, delta: int) -> None:
        """Account `delta` bytes of prepared batches (negative when sent or dropped)."""
        with self._held_lock:
            self.held_bytes += delta

    def send(self, header: tuple, payload: Any = None) -> None:
        """Send one message (and its payload: bytes or a pyarrow Buffer) to the front; drops it when the pipe is gone."""
        try:
            with self._send_lock:
                self._return_loans()
                send_frame(self.sock, header + ((payload is not None),), payload,
                           self.ring if self.ring_enabled else None)
        except (OSError, ValueError):
            pass

    def reply(self, req: int, ok: bool, value: Any) -> None:
        """Answer request `req`."""
        self.send(("reply", req, ok, value))

    def forget(self, sid: str, session: "_Session | None" = None) -> None:
        """Drop a finished or closed session (only if it is still `session`, when given); the last
        one gone, the worker gives the memory its batches used back to the system."""
        with self._lock:
            if session is None or self.sessions.get(sid) is session:
                self.sessions.pop(sid, None)
            idle = not self.sessions
        if idle:
            with self._send_lock:
                self._return_loans()  # those the front has read: their batches' memory goes back too
            release_free_memory()

    def _info(self, req: int, spec_dict: dict) -> None:
        try:
            from py_worker.spec import DatasetSpec, describe

            info = describe(DatasetSpec.from_dict(spec_dict), self.config)
            self.reply(req, True, info.SerializeToString())
        except BaseException as exc:  # noqa: BLE001
            err = from_exception(exc, f"describing '{spec_dict.get('path')}'")
            self.reply(req, False, (err.code.name, err.message))

    def handle(self, cmd: tuple) -> bool:
        """Run one command; False means shut down."""
        op = cmd[0]
        if op == "credit":
            s = self.sessions.get(cmd[1])
            if s is not None:
                s.add_credit(cmd[2])
        elif op == "open":
            _, req, sid, spec, batch_size, max_bytes, start_seq, ckpt = cmd
            s = _Session(self, sid, spec, batch_size, max_bytes, start_seq, ckpt,
                         self.config.limits.prefetch_batches)
            with self._lock:
                old = self.sessions.pop(sid, None)
                self.sessions[sid] = s
            if old is not None:
                old.close()
            s.start(req)
        elif op == "info":
            threading.Thread(target=self._info, args=(cmd[1], cmd[2]), daemon=True).start()
        elif op == "close":
            with self._lock:
                s = self.sessions.pop(cmd[1], None)
            if s is not None:
                s.close()
        elif op == "ring_ok":
            self.ring_enabled = self.ring is not None
            self.lending = self.ring_enabled and len(cmd) > 1 and bool(cmd[1])
        elif op == "shutdown":
            return False
        return True

    def ready_message(self) -> tuple:
        """The first message to the front: the pid, the size of the shared ring on offer (0: none) and,
        with a ring and unless `HF_BRIDGE_LEND=0`, the probe for lending (its address and bytes)."""
        if self.ring is None:
            return ("ready", os.getpid(), 0)
        if os.environ.get("HF_BRIDGE_LEND", "1") == "0":
            return ("ready", os.getpid(), self.ring.size)
        import pyarrow as pa

        return ("ready", os.getpid(), self.ring.size, pa.py_buffer(self._probe).address, self._probe)

    def send_ready(self) -> None:
        """Send `ready_message()`, with the ring's memfd attached when there is a ring."""
        try:
            with self._send_lock:
                if self.ring is None or self.ring.fd is None:
                    send_frame(self.sock, self.ready_message() + (False,))
                else:
                    send_frame_with_fds(self.sock, self.ready_message() + (False,), [self.ring.fd])
        except (OSError, ValueError):
            pass

    def run(self) -> None:
        """Serve commands until shutdown or until the front goes away."""
        while True:
            try:
                data = self.conn.recv_bytes()
            except (EOFError, OSError):
                break
            try:
                if not self.handle(pickle.loads(data)):
                    break
            except Exception:  # noqa: BLE001 - a bad command must not kill the worker
                _log(self.name, "command failed: " + traceback.format_exc().replace("\n", " | "))
        with self._lock:
            sessions = list(self.sessions.values())
            self.sessions.clear()
        for s in sessions:
            s.close()
        self.stop_sender()


def _make_ring(name: str, size: int) -> Ring | None:
    """The worker's shared ring of `size` bytes; None when off (0) or when memfds are unavailable."""
    if size <= 0:
        return None
    try:
        return Ring.create(size)
    except (OSError, AttributeError) as exc:  # AttributeError: no os.memfd_create on this platform
        _log(name, f"no shared ring ({exc}); batches go over the socket")
        return None


def tune_datasets() -> None:
    """Process-wide `datasets` settings for serving.

    `datasets` sleeps 5 s whenever a shuffled multi-file Parquet iteration
    ends, a guard for a pyarrow thread-shutdown bug (apache/arrow#45214) that
    its own Parquet reader only works around up to pyarrow 24; with newer
    pyarrow the sleep only delays end-of-data, so it is turned off.
    """
    import datasets.config
    import pyarrow

    if int(pyarrow.__version__.split(".")[0]) >= 25:
        datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0


def worker_main(conn: Any, config_dict: dict, name: str) -> None:
    """Entry point of a worker process (multiprocessing spawn target); always leaves with os._exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    code = 0
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
        tune_datasets()
        config = ServerConfig.from_dict(config_dict)
        if config.limits.parquet_readahead and not parquet_readahead.enable(config.limits.parquet_readahead):
            _log(name, "this datasets version reads Parquet its own way: --parquet-readahead has no effect")
        worker = Worker(conn, config, name)
        worker.send_ready()
        worker.run()
    except BaseException:  # noqa: BLE001
        _log(name, "worker crashed: " + traceback.format_exc().replace("\n", " | "))
        code = 1
    finally:
        try:  # unlink semaphores (tqdm's lock) so the resource tracker has nothing to report
            import multiprocessing.util

            multiprocessing.util._run_finalizers()
        except Exception:  # noqa: BLE001
            pass
        sys.stderr.flush()
        # datasets + pyarrow can abort during interpreter finalisation after
        # streaming; leave without running it.
        os._exit(code)
