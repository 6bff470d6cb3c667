"""The gRPC servicer: session table, routing to workers, limits, acks and resume.

Every call of a session goes to the worker that owns it. Batches flow from the
worker under a credit window (at most `prefetch_batches` in flight per
session); batches received but not yet delivered wait in the session's
buffer, so a cancelled ReadBatches loses nothing. A batch counts as delivered
once it is handed to gRPC; its checkpoint is kept until an Ack commits it to
sqlite or a later Ack supersedes it.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import grpc

from py_worker.arrow_ipc import end_message
from py_worker.checkpoints import CheckpointStore, SessionRecord
from py_worker.config import ServerConfig
from py_worker.errors import (
    BridgeError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    DeadlineExceeded,
)
from py_worker.limits import Limits
from py_worker.pool import Pool, WorkerHandle, log
from py_worker.spec import DatasetSpec
from py_worker.wire import pb

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
MAX_PENDING_CHECKPOINTS = 20_000


@dataclass
class _Item:
    seq: int
    num_rows: int
    checkpoint: str | None
    end: bool
    payload: bytes | None
    error: BridgeError | None = None


@dataclass(eq=False)
class Session:
    """Front-side state of one session."""

    session_id: str
    token: str
    spec: DatasetSpec
    batch_size: int
    max_batch_bytes: int
    peer: str
    worker: WorkerHandle | None = None
    acked_seq: int = -1
    delivered_seq: int = -1
    buffer: deque = field(default_factory=deque)
    outstanding: int = 0
    pending: dict = field(default_factory=dict)
    event: asyncio.Event = field(default_factory=asyncio.Event)
    error: BridgeError | None = None
    ended_seq: int | None = None
    reading: bool = False
    orphaned: bool = False
    last_used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wkey: str = ""
    opening: bool = False
    schema: bytes = b""
    features_json: str = "{}"

    def reset(self, next_seq: int) -> None:
        """Forget the batches in flight and start over after the acknowledged point (before a re-open).

        The checkpoints of batches already delivered stay in `pending`: the
        client holds those batches, and its Ack for one of them may arrive
        after a re-open on another worker, before that worker has sent the
        batch again. The stream is deterministic, so they remain valid.
        """
        self.buffer.clear()
        self.outstanding = 0
        self.error = None
        self.ended_seq = None
        self.delivered_seq = next_seq - 1
        self.orphaned = False


def _abort_code(exc: BridgeError) -> grpc.StatusCode:
    return exc.code


class Front:
    """Implements the HFBridge RPCs on top of a `Pool`."""

    def __init__(self, config: ServerConfig, pool: Pool, store: CheckpointStore) -> None:
        self.config = config
        self.limits: Limits = config.limits
        self.pool = pool
        self.store = store
        self.sessions: dict[str, Session] = {}
        self.by_wkey: dict[str, Session] = {}
        self.resuming: set[str] = set()
        self.opening = 0
        pool.on_message = self._on_message
        pool.on_death = self._on_worker_death

    # ---- worker events ------------------------------------------------------

    def _on_message(self, worker: WorkerHandle, header: tuple, payload: bytes | None) -> None:
        kind, wkey = header[0], header[1]
        s = self.by_wkey.get(wkey)
        if s is None or s.worker is not worker:
            return
        if kind == "batch":
            _, _, seq, num_rows, ckpt, end, _has = header
            s.buffer.append(_Item(seq, num_rows, ckpt, end, payload))
        elif kind == "error":
            _, _, code, message, _has = header
            from py_worker.errors import error_for

            s.buffer.append(_Item(-1, 0, None, False, None, error_for(code, message)))
        s.outstanding = max(0, s.outstanding - 1)
        s.event.set()

    def _on_worker_death(self, worker: WorkerHandle) -> None:
        for wkey in list(worker.sessions):
            s = self.by_wkey.get(wkey)
            if s is None:
                continue
            sid = s.session_id
            s.orphaned = True
            s.worker = None
            s.error = Unavailable(
                f"worker {worker.name} stopped; session {sid} continues from batch {s.acked_seq + 1} "
                "(after the last acknowledged one) on the next ReadBatches"
            )
            s.event.set()

    # ---- helpers --------------------------------------------------------------

    def _get(self, session_id: str) -> Session:
        if not session_id:
            raise InvalidArgument("session_id is empty")
        s = self.sessions.get(session_id)
        if s is None:
            raise NotFound(
                f"unknown or closed session '{session_id}' (sessions idle for more than "
                f"{self.limits.idle_ttl_seconds:g}s are reaped; resume them with their resume token)"
            )
        s.last_used = time.monotonic()
        return s

    def _check_capacity(self, peer: str) -> None:
        total = len(self.sessions)  # sessions still opening are already in the table
        if total >= self.limits.max_sessions:
            raise ResourceExhausted(
                f"session limit reached: {total} open (--max-sessions {self.limits.max_sessions}); "
                "close sessions or raise the limit"
            )
        mine = sum(1 for s in self.sessions.values() if s.peer == peer)
        if mine >= self.limits.max_sessions_per_client:
            raise ResourceExhausted(
                f"per-client session limit reached: {mine} open from {peer} "
                f"(--max-sessions-per-client {self.limits.max_sessions_per_client}); close sessions first"
            )

    def _batch_params(self, batch_size: int, max_bytes: int) -> tuple[int, int]:
        lim = self.limits
        if batch_size == 0:
            batch_size = lim.default_batch_rows
        if batch_size > lim.max_batch_rows:
            raise InvalidArgument(
                f"batch_size {batch_size} exceeds the server maximum (--max-batch-rows {lim.max_batch_rows})"
            )
        if max_bytes == 0:
            max_bytes = lim.default_batch_bytes
        if max_bytes > lim.max_batch_bytes:
            raise InvalidArgument(
                f"max_batch_bytes {max_bytes} exceeds the server maximum (--max-batch-bytes {lim.max_batch_bytes})"
            )
        return batch_size, max_bytes

    async def _start_on_worker(self, s: Session, start_seq: int, checkpoint: str | None) -> None:
        """Open `s` on the least-loaded worker, starting at `start_seq` from `checkpoint`."""
        worker = self.pool.least_loaded()
        if s.wkey:
            self.by_wkey.pop(s.wkey, None)
        s.wkey = uuid.uuid4().hex
        s.worker = worker
        worker.sessions.add(s.wkey)
        self.sessions[s.session_id] = s
        self.by_wkey[s.wkey] = s
        s.reset(start_seq)
        s.opening = True
        try:
            reply = await self.pool.request(
                worker, "open", s.wkey, s.spec.to_dict(), s.batch_size, s.max_batch_bytes, start_seq,
                checkpoint, timeout=self.limits.open_deadline_seconds,
            )
        except BaseException as exc:
            worker.sessions.discard(s.wkey)
            self.by_wkey.pop(s.wkey, None)
            if self.sessions.get(s.session_id) is s:
                del self.sessions[s.session_id]
            try:
                worker.send(("close", s.wkey))
            except BridgeError:
                pass
            if isinstance(exc, asyncio.TimeoutError):
                raise DeadlineExceeded(
                    f"opening '{s.spec.path}' took longer than {self.limits.open_deadline_seconds:g}s "
                    "(--open-deadline-seconds); is the Hub reachable?"
                ) from None
            raise
        finally:
            s.opening = False
            s.last_used = time.monotonic()
        s.schema = reply["arrow_schema"]
        s.features_json = reply["features_json"]

    def _info(self, s: Session, next_seq: int) -> Any:
        return pb.SessionInfo(
            session_id=s.session_id,
            resume_token=s.token,
            arrow_schema=s.schema,
            features_json=s.features_json,
            next_seq=next_seq,
            worker=s.worker.name if s.worker else "",
            batch_size=s.batch_size,
        )

    def _grant(self, s: Session, want: int) -> None:
        """Let the worker prepare up to `want` batches (at most the prefetch window) beyond those
        buffered or on their way. Credits go out a quarter window at a time, not one per batch:
        whatever is held back, a buffered or outstanding batch brings this call round again."""
        goal = min(self.limits.prefetch_batches, want)
        need = goal - len(s.buffer) - s.outstanding
        if need >= max(1, goal // 4) and s.worker is not None and s.ended_seq is None:
            s.worker.send(("credit", s.wkey, need))
            s.outstanding += need

    def _release(self, s: Session, why: str) -> None:
        if self.sessions.get(s.session_id) is s:
            del self.sessions[s.session_id]
        self.by_wkey.pop(s.wkey, None)
        if s.worker is not None:
            s.worker.sessions.discard(s.wkey)
            try:
                s.worker.send(("close", s.wkey))
            except BridgeError:
                pass
        s.error = NotFound(f"session '{s.session_id}' was {why}")
        s.event.set()

    # ---- RPCs -----------------------------------------------------------------

    async def get_info(self, request: Any) -> Any:
        """GetInfo: describe a dataset on a worker."""
        spec = DatasetSpec.from_proto(request)
        worker = self.pool.least_loaded()
        try:
            data = await self.pool.request(worker, "info", spec.to_dict(), timeout=self.limits.open_deadline_seconds)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(
                f"describing '{spec.path}' took longer than {self.limits.open_deadline_seconds:g}s "
                "(--open-deadline-seconds)"
            ) from None
        return pb.DatasetInfo.FromString(data)

    async def open_session(self, request: Any, peer: str) -> Any:
        """OpenSession: validate, check limits, place on the least-loaded worker, persist."""
        if not request.HasField("spec"):
            raise InvalidArgument("OpenRequest.spec is missing")
        spec = DatasetSpec.from_proto(request.spec)
        batch_size, max_bytes = self._batch_params(request.batch_size, request.max_batch_bytes)
        self._check_capacity(peer)
        s = Session(uuid.uuid4().hex, secrets.token_urlsafe(24), spec, batch_size, max_bytes, peer)
        self.opening += 1
        try:
            await self._start_on_worker(s, 0, None)
        finally:
            self.opening -= 1
        await asyncio.to_thread(self.store.create, s.token, s.session_id, spec.to_json(), batch_size, max_bytes)
        log(f"session open id={s.session_id} worker={s.worker.name} peer={peer} path={spec.path!r}")
        return self._info(s, 0)

    async def resume_session(self, request: Any, peer: str) -> Any:
        """ResumeSession: rebuild from the stored spec and checkpoint; continue at acked_seq + 1."""
        token = request.resume_token
        if not TOKEN_RE.match(token or ""):
            raise InvalidArgument("resume_token is malformed (expected the opaque token OpenSession returned)")
        if token in self.resuming:
            raise FailedPrecondition("this session is already being resumed by another call; retry shortly")
        self.resuming.add(token)
        try:
            return await self._resume(token, peer)
        finally:
            self.resuming.discard(token)

    async def _resume(self, token: str, peer: str) -> Any:
        rec: SessionRecord | None = await asyncio.to_thread(self.store.get, token)
        if rec is None:
            raise NotFound("unknown resume token (the session was closed, expired, or another --state-dir is in use)")
        live = self.sessions.get(rec.session_id)
        if live is not None:
            self._release(live, "superseded by ResumeSession")
        spec = DatasetSpec.from_json(rec.spec_json)
        self._check_capacity(peer)
        s = Session(rec.session_id, token, spec, rec.batch_size, rec.max_batch_bytes, peer, acked_seq=rec.acked_seq)
        self.opening += 1
        try:
            await self._start_on_worker(s, rec.acked_seq + 1, rec.checkpoint)
        finally:
            self.opening -= 1
        await asyncio.to_thread(self.store.touch, token)
        log(f"session resume id={s.session_id} worker={s.worker.name} peer={peer} next_seq={rec.acked_seq + 1}")
        return self._info(s, rec.acked_seq + 1)

    async def _reopen(self, s: Session) -> None:
        rec = await asyncio.to_thread(self.store.get, s.token)
        if rec is None:
            raise NotFound(f"session '{s.session_id}' has no stored checkpoint")
        s.acked_seq = rec.acked_seq
        await self._start_on_worker(s, rec.acked_seq + 1, rec.checkpoint)
        log(f"session resume id={s.session_id} worker={s.worker.name} reason=worker-restart "
            f"next_seq={rec.acked_seq + 1}")

    async def read_batches(self, request: Any) -> AsyncIterator[bytes]:
        """ReadBatches: yield serialised Batch messages in sequence order."""
        s = self._get(request.session_id)
        if s.reading:
            raise FailedPrecondition(f"session '{s.session_id}' is already being read by another ReadBatches call")
        s.reading = True
        try:
            if s.orphaned:
                await self._reopen(s)
            limit = request.max_batches
            sent = 0
            while limit == 0 or sent < limit:
                if s.ended_seq is not None and not s.buffer:
                    yield end_message(s.ended_seq)
                    return
                self._grant(s, (limit - sent) if limit else self.limits.prefetch_batches)
                while not s.buffer:
                    if s.error is not None:
                        raise s.error
                    s.event.clear()
                    await s.event.wait()
                item: _Item = s.buffer.popleft()
                if item.error is not None:
                    s.error = item.error
                    raise item.error
                if item.end:
                    s.ended_seq = item.seq
                    s.pending[item.seq] = item.checkpoint
                    s.delivered_seq = item.seq
                    yield item.payload
                    return
                if len(item.payload) > self.limits.max_message_bytes:
                    s.buffer.appendleft(item)
                    raise ResourceExhausted(
                        f"batch {item.seq} is {len(item.payload)} bytes, above --max-message-bytes "
                        f"{self.limits.max_message_bytes} (a single row is too large); raise the limit"
                    )
                s.pending[item.seq] = item.checkpoint
                if len(s.pending) > MAX_PENDING_CHECKPOINTS:
                    s.pending.pop(next(iter(s.pending)))
                s.delivered_seq = item.seq
                s.last_used = time.monotonic()
                yield item.payload
                sent += 1
        finally:
            s.reading = False
            s.last_used = time.monotonic()

    async def ack(self, request: Any) -> Any:
        """Ack: commit the checkpoint after batch `seq` to sqlite."""
        s = self._get(request.session_id)
        seq = request.seq
        async with s.lock:
            if seq <= s.acked_seq:
                return pb.AckResponse(acked_seq=s.acked_seq)
            ckpt = s.pending.get(seq)
            if seq > s.delivered_seq and ckpt is None:
                raise InvalidArgument(
                    f"cannot ack batch {seq}: the last delivered batch of session '{s.session_id}' is {s.delivered_seq}"
                )
            if ckpt is None:
                raise FailedPrecondition(f"the checkpoint of batch {seq} is no longer held; ack more often")
            ok = self.store.commit(s.token, seq, ckpt)
            if not ok:
                raise NotFound(f"session '{s.session_id}' has no stored record")
            s.acked_seq = seq
            for k in [k for k in s.pending if k <= seq]:
                del s.pending[k]
        return pb.AckResponse(acked_seq=s.acked_seq)

    async def close_session(self, request: Any) -> Any:
        """CloseSession: release the worker state and delete the checkpoint (kept, and resumable by
        token, with `keep_checkpoint`)."""
        s = self._get(request.session_id)
        self._release(s, "closed")
        if request.keep_checkpoint:
            log(f"session close id={s.session_id} checkpoint=kept acked_seq={s.acked_seq}")
        else:
            await asyncio.to_thread(self.store.delete, s.token)
            log(f"session close id={s.session_id}")
        return pb.CloseResponse()

    async def reap_forever(self) -> None:
        """Close sessions idle longer than the TTL (their checkpoints stay resumable)."""
        ttl = self.limits.idle_ttl_seconds
        next_purge = 0.0
        while True:
            if time.monotonic() >= next_purge:
                removed = await asyncio.to_thread(self.store.purge_older_than, self.limits.checkpoint_ttl_seconds)
                if removed:
                    log(f"checkpoints purged count={removed} (older than --checkpoint-ttl-seconds)")
                next_purge = time.monotonic() + 3600.0
            await asyncio.sleep(min(max(ttl / 4, 0.2), 5.0))
            now = time.monotonic()
            for s in list(self.sessions.values()):
                if not s.reading and not s.opening and now - s.last_used > ttl:
                    await asyncio.to_thread(self.store.touch, s.token)
                    self._release(s, f"reaped after {ttl:g}s idle")
                    log(f"session reap id={s.session_id} idle={now - s.last_used:.0f}s")
