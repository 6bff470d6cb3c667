"""Durable session records and their acknowledged checkpoints, in sqlite (WAL mode).

One row per session, keyed by its resume token: the spec, the batch
parameters, the highest acknowledged sequence number and the checkpoint taken
right after that batch. A record outlives its server process, so a resume
token is valid across restarts that share the same state directory.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    token TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    spec TEXT NOT NULL,
    batch_size INTEGER NOT NULL,
    max_batch_bytes INTEGER NOT NULL,
    acked_seq INTEGER NOT NULL DEFAULT -1,
    checkpoint TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_id ON sessions(session_id);
"""


@dataclass(frozen=True)
class SessionRecord:
    """A stored session: `acked_seq` is -1 and `checkpoint` None until the first Ack."""

    token: str
    session_id: str
    spec_json: str
    batch_size: int
    max_batch_bytes: int
    acked_seq: int
    checkpoint: str | None
    created: float
    updated: float


class CheckpointStore:
    """Thread-safe access to the sessions table in `<state_dir>/checkpoints.sqlite3`."""

    def __init__(self, state_dir: Path) -> None:
        """Open (creating when needed) the database under `state_dir`."""
        state_dir = Path(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "checkpoints.sqlite3"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def create(self, token: str, session_id: str, spec_json: str, batch_size: int, max_batch_bytes: int) -> None:
        """Store a new session with no acknowledged batch."""
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO sessions(token, session_id, spec, batch_size, max_batch_bytes, acked_seq, checkpoint,"
                " created, updated) VALUES (?, ?, ?, ?, ?, -1, NULL, ?, ?)",
                (token, session_id, spec_json, batch_size, max_batch_bytes, now, now),
            )

    def commit(self, token: str, acked_seq: int, checkpoint: str) -> bool:
        """Record that batches up to `acked_seq` are consumed, with the checkpoint after it.

        Never moves backwards; returns False when the token is unknown.
        """
        with self._lock:
            cur = self._db.execute(
                "UPDATE sessions SET acked_seq = ?, checkpoint = ?, updated = ? WHERE token = ? AND acked_seq < ?",
                (acked_seq, checkpoint, time.time(), token, acked_seq),
            )
            if cur.rowcount:
                return True
            return self._db.execute("SELECT 1 FROM sessions WHERE token = ?", (token,)).fetchone() is not None

    def get(self, token: str) -> SessionRecord | None:
        """The record for `token`, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT token, session_id, spec, batch_size, max_batch_bytes, acked_seq, checkpoint, created, updated"
                " FROM sessions WHERE token = ?",
                (token,),
            ).fetchone()
        return SessionRecord(*row) if row else None

    def delete(self, token: str) -> None:
        """Forget a session (after CloseSession)."""
        with self._lock:
            self._db.execute("DELETE FROM sessions WHERE token = ?", (token,))

    def touch(self, token: str) -> None:
        """Mark a record as used now (resume)."""
        with self._lock:
            self._db.execute("UPDATE sessions SET updated = ? WHERE token = ?", (time.time(), token))

    def purge_older_than(self, seconds: float) -> int:
        """Delete records not used for `seconds`; returns how many were removed."""
        with self._lock:
            cur = self._db.execute("DELETE FROM sessions WHERE updated < ?", (time.time() - seconds,))
            return cur.rowcount

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
