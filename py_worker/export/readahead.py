"""Reading a dataset ahead of the export writer, on a thread of its own.

Decoding the source (Parquet decompression, `datasets`' formatting) and
encoding the export (zstd, page index, checksums) are both mostly native
code that releases the GIL, so running them on two threads lets an export
use two cores where a plain read-then-write loop uses one. The writer
works in bursts (a row group is compressed when enough rows are buffered),
so the reader may run ahead by up to about a row group's bytes: it then
decodes the next row group while the writer compresses the last.

The reader thread hands over each table together with the iterator state
taken right after it (`IterableDataset.state_dict()`), so a checkpoint
saved by the writer names the position after the last table it wrote, not
wherever the reader has got to. The reader stops at the next table when the
consumer closes the iterator (or raises), and an error in the reader
reaches the consumer in order, after the tables read before it.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Iterator

import pyarrow as pa

__all__ = ["read_ahead"]


class _Handover:
    """Tables (with their states) on their way from the reader thread to the writer, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.items: deque = deque()  # (table, state), then possibly a final ("end"|exception,)
        self.bytes = 0
        self.closed = False  # the consumer has gone
        self.cond = threading.Condition()

    def put(self, table: pa.Table, state: dict) -> bool:
        """Queue a table once there is room (one is always let through); False when the consumer has gone."""
        with self.cond:
            while self.items and self.bytes >= self.max_bytes and not self.closed:
                self.cond.wait()
            if self.closed:
                return False
            self.items.append((table, state))
            self.bytes += table.nbytes
            self.cond.notify_all()
            return True

    def finish(self, outcome: Any) -> None:
        """Queue the end of the tables: `None`, or the exception the reader stopped with."""
        with self.cond:
            self.items.append((outcome,))
            self.cond.notify_all()

    def take(self) -> tuple:
        """The next item, waiting for one."""
        with self.cond:
            while not self.items:
                self.cond.wait()
            item = self.items.popleft()
            if len(item) == 2:
                self.bytes -= item[0].nbytes
            self.cond.notify_all()
            return item

    def close(self) -> None:
        """The consumer is gone: let the reader stop."""
        with self.cond:
            self.closed = True
            self.items.clear()
            self.cond.notify_all()


def read_ahead(ds: Any, batch_size: int, max_bytes: int) -> Iterator[tuple[pa.Table, dict]]:
    """`(table, state after it)` for each table of `ds.iter(batch_size=batch_size)`, read ahead by a thread
    by up to `max_bytes` of Arrow data.

    `ds` is an `IterableDataset` in Arrow format; nothing else may use it
    while the iterator is open.
    """
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    handover = _Handover(max_bytes)

    def run() -> None:
        try:
            for table in ds.iter(batch_size=batch_size):
                if not handover.put(table, ds.state_dict()):
                    return
            handover.finish(None)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            handover.finish(exc)

    thread = threading.Thread(target=run, name="export-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = handover.take()
            if len(item) == 2:
                yield item
            elif item[0] is None:
                return
            else:
                raise item[0]
    finally:
        handover.close()
        thread.join()
