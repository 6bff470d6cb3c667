"""Arrow IPC helpers and the hand-encoded `Batch` message sent on the wire.

Workers encode each `hf_bridge.v1.Batch` themselves (protobuf wire format:
varint fields 1 and 2, length-delimited field 3, bool field 4; see
https://protobuf.dev/programming-guides/encoding/) so that the front can pass
the bytes through to gRPC without decoding or copying the Arrow payload again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Iterator

import pyarrow as pa

from py_worker.ipc_gather import GatherPlan
from py_worker.ipc_gather import plan as gather_plan


def varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def table_to_ipc(table: pa.Table) -> pa.Buffer:
    """A complete IPC stream: schema, one record batch (the table must be one chunk), end-of-stream."""
    sink = pa.BufferOutputStream()
    _write_ipc(sink, table)
    return sink.getvalue()


def schema_to_ipc(schema: pa.Schema) -> bytes:
    """An IPC stream holding only the schema message."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema):
        pass
    return sink.getvalue().to_pybytes()


def ipc_to_table(data: bytes | pa.Buffer) -> pa.Table:
    """Read an IPC stream into a table."""
    return pa.ipc.open_stream(pa.py_buffer(data) if isinstance(data, (bytes, bytearray, memoryview)) else data).read_all()


def ipc_to_schema(data: bytes) -> pa.Schema:
    """Read the schema of an IPC stream."""
    return pa.ipc.open_stream(pa.py_buffer(data)).schema


def batch_message(seq: int, num_rows: int, ipc: pa.Buffer | bytes) -> bytes:
    """The serialised `Batch{seq, num_rows, arrow_ipc}` (one copy of the payload).

    Fields at their default value are left out, as proto3 serialisers do.
    """
    return b"".join((_batch_head(seq, num_rows, len(ipc)), ipc))


def _batch_head(seq: int, num_rows: int, ipc_len: int) -> bytes:
    """Fields 1 and 2 of a `Batch` and the tag and length of field 3 (its bytes follow)."""
    head = (b"\x08" + varint(seq) if seq else b"") + (b"\x10" + varint(num_rows) if num_rows else b"")
    return head + b"\x1a" + varint(ipc_len)


def _write_ipc(sink: pa.NativeFile, table: pa.Table) -> None:
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches():
            writer.write_batch(batch)


def single_chunk(table: pa.Table) -> pa.Table:
    """`table` with every column in one chunk (copied only when some column has several)."""
    if any(col.num_chunks > 1 for col in table.columns):
        return table.combine_chunks()
    return table


def encode_batch(seq: int, num_rows: int, table: pa.Table) -> pa.Buffer:
    """The serialised `Batch{seq, num_rows, arrow_ipc: IPC stream of table}` in one buffer.

    Same bytes as `batch_message(seq, num_rows, table_to_ipc(single_chunk(table)))`:
    the IPC stream holds one record batch whatever the table's chunking. It is
    written once, straight into a buffer of the exact final size: a first pass
    only measures it (no data copied), so the Arrow data is copied once (from
    several chunks it is gathered by `ipc_gather`; twice only for column types
    that module does not handle, whose chunks are combined first) and no
    growing buffer is reallocated.
    """
    encoder = BatchEncoder(seq, num_rows, table)
    buf = pa.allocate_buffer(encoder.size)
    encoder.write_into(memoryview(buf))
    return buf


class BatchEncoder:
    """A `Batch` message measured first and written later into memory the caller provides.

    `size` is the exact length of the serialised message; `write_into` fills
    a writable buffer of that length (a fresh Arrow buffer, or a slot of the
    worker's shared ring, so the message is written where it is sent from).

    When the table has rows, some column has several chunks and every column
    type is supported by `ipc_gather`, the record batch message is gathered
    straight from the chunks (`gather` is its plan): the stream is the schema
    message, that record batch and the end-of-stream marker, each data byte
    copied once, and the bytes are the same as pyarrow's writer gives for the
    combined table. Otherwise pyarrow's writer encodes the (combined) table.
    With `gather=True` a single-chunk table is gathered too (for `parts`).
    """

    def __init__(self, seq: int, num_rows: int, table: pa.Table, gather: bool = False) -> None:
        self.gather: GatherPlan | None = None
        if table.num_rows and (gather or any(col.num_chunks > 1 for col in table.columns)):
            self.gather = gather_plan(table)
        if self.gather is not None:
            self.table = table
            self.schema_ipc = schema_message(table.schema)
            self.ipc_size = len(self.schema_ipc) + self.gather.size + len(END_OF_STREAM)
        else:
            self.table = single_chunk(table)
            mock = pa.MockOutputStream()
            _write_ipc(mock, self.table)
            self.ipc_size = mock.size()
        self.head = _batch_head(seq, num_rows, self.ipc_size)
        self.size = len(self.head) + self.ipc_size

    def parts(self) -> list[Any] | None:
        """The message as buffers in order (they add up to `size` bytes), the table's own Arrow
        buffers among them; None when it is not gathered (pyarrow's writer must encode it)."""
        if self.gather is None:
            return None
        return [self.head, self.schema_ipc, self.gather.metadata, *(src for _, src in self.gather.copies),
                END_OF_STREAM]

    def write_into(self, target: memoryview) -> None:
        """Write the message into `target` (exactly `size` writable bytes)."""
        if self.gather is not None:
            view = target if target.format == "B" and target.ndim == 1 else target.cast("B")
            if view.nbytes != self.size:
                raise ValueError(f"target holds {view.nbytes} bytes, the Batch message needs {self.size}")
            pos = len(self.head)
            view[:pos] = self.head
            view[pos:pos + len(self.schema_ipc)] = self.schema_ipc
            pos += len(self.schema_ipc)
            self.gather.write_into(view[pos:pos + self.gather.size])
            view[pos + self.gather.size:] = END_OF_STREAM
            return
        sink = pa.FixedSizeBufferWriter(pa.py_buffer(target))
        sink.write(self.head)
        _write_ipc(sink, self.table)
        if sink.tell() != self.size:  # the two passes must agree byte for byte in length
            raise RuntimeError(
                f"Arrow IPC stream size changed between passes ({self.ipc_size} then {sink.tell() - len(self.head)})")


#: The IPC end-of-stream marker: continuation token and a zero metadata length.
END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"

_schema_cache: "OrderedDict[int, tuple[pa.Schema, bytes]]" = OrderedDict()
_schema_cache_lock = threading.Lock()
_SCHEMA_CACHE_SIZE = 32


def schema_message(schema: pa.Schema) -> bytes:
    """pyarrow's encapsulated IPC schema message for `schema` (metadata included), without end-of-stream.

    Kept for the last few schemas seen: the same schema object, or an equal
    one (metadata compared too), reuses the bytes.
    """
    with _schema_cache_lock:
        hit = _schema_cache.get(id(schema))
        if hit is None or hit[0] is not schema:
            hit = next((v for v in _schema_cache.values() if v[0].equals(schema, check_metadata=True)), None)
        if hit is not None:
            return hit[1]
    stream = schema_to_ipc(schema)
    if not stream.endswith(END_OF_STREAM):
        raise RuntimeError("pyarrow's schema stream does not end with the end-of-stream marker")
    message = stream[:-len(END_OF_STREAM)]
    with _schema_cache_lock:
        _schema_cache[id(schema)] = (schema, message)  # holding the schema keeps its id from being reused
        while len(_schema_cache) > _SCHEMA_CACHE_SIZE:
            _schema_cache.popitem(last=False)
    return message


def end_message(seq: int) -> bytes:
    """The serialised `Batch{seq, end_of_data: true}`."""
    return (b"\x08" + varint(seq) if seq else b"") + b"\x20\x01"


def split_table(table: pa.Table, start: int, max_bytes: int) -> Iterator[tuple[int, pa.Table]]:
    """Slice `table` from row `start` into single-chunk pieces of at most `max_bytes` Arrow bytes.

    Yields `(end_row, piece)`; a single row larger than the cap travels alone.
    """
    for end_row, piece in slice_table(table, start, max_bytes):
        yield end_row, single_chunk(piece)


def slice_table(table: pa.Table, start: int, max_bytes: int) -> Iterator[tuple[int, pa.Table]]:
    """Like `split_table`, but the pieces are zero-copy slices that may span chunks.

    Combining chunks is left to whoever encodes the piece (`encode_batch`), so
    cutting a table costs no copy.
    """
    if table.num_rows == 0 or start >= table.num_rows:
        return
    n = table.num_rows
    total = table.nbytes
    if total <= max_bytes and start == 0:
        yield n, table
        return
    per_row = max(total / n, 1.0)
    pos = start
    while pos < n:
        k = max(1, min(n - pos, int(max_bytes // per_row)))
        piece = table.slice(pos, k)
        while k > 1 and piece.nbytes > max_bytes:
            k //= 2
            piece = table.slice(pos, k)
        pos += k
        yield pos, piece
