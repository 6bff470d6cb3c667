"""One Arrow IPC record batch message gathered straight from a multi-chunk table.

`plan(table)` lays out the encapsulated IPC record batch message that
`table.combine_chunks()` would give, without combining anything: the body is a
list of copies from the chunks' own buffers (memory-mapped ones included) plus
a few small computed buffers (rebased offsets, re-packed bitmaps).
`GatherPlan.write_into` then writes every data byte once, straight into the
caller's memory (a fresh buffer or a slot of the worker's shared ring).

Format facts used (Arrow columnar format, "Serialization and Interprocess
Communication" and "Buffer alignment and padding" sections of
https://arrow.apache.org/docs/format/Columnar.html, and format/Message.fbs,
format/Schema.fbs):

* Encapsulated message: 0xFFFFFFFF continuation marker, int32 little-endian
  length of the flatbuffer metadata including padding so that the body starts
  8-byte aligned, the `Message` flatbuffer, then the body.
* `Message { version: MetadataVersion (V5 = 4), header: MessageHeader union
  (RecordBatch = 3), bodyLength: long }`; `RecordBatch { length: long,
  nodes: [FieldNode], buffers: [Buffer] }` with no compression.
  `FieldNode { length, null_count }` and `Buffer { offset, length }` are
  structs of two int64.
* Nodes and buffers are listed in pre-order depth-first over the schema's
  fields. Buffers per layout: null none; boolean and fixed-width validity +
  values; (large) binary/string validity + offsets + data; (large) list
  validity + offsets then the child; fixed-size list validity then the child;
  struct validity then the children.
* Every body buffer starts 8-byte aligned; padding bytes are zero.
* A validity bitmap may be left empty (length 0) when the null count is 0.

Flatbuffer facts used (https://flatbuffers.dev/internals/): little-endian;
the buffer starts with a uint32 offset to the root table; a table starts with
an int32 (table position minus its vtable's position); a vtable is uint16
vtable size, uint16 table size, then one uint16 offset per field (0 = absent);
a reference to a vector is a uint32 offset forward from where it is stored; a
vector is a uint32 count followed by its elements, aligned to the element
alignment (8 here). Scalars sit at offsets aligned to their size.

The metadata is laid out the way the reference flatbuffers builder lays it out
and the body the way Arrow's writer pads it, so the message is byte for byte
the one pyarrow writes for `table.combine_chunks()` (the tests check this).
"""

from __future__ import annotations

import struct
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

__all__ = ["GatherPlan", "plan", "supported_type"]

_ZEROS = bytes(8)
_INT32_MAX = 2**31 - 1

#: One contiguous run of a column: (array, first logical row within it, row count).
Segment = tuple[pa.Array, int, int]


class GatherPlan:
    """A record batch message ready to be written: metadata bytes plus the body's copies.

    `metadata` is the encapsulation prefix and the flatbuffer (padded, so the
    body starts 8-byte aligned); `copies` lists `(body offset, bytes-like)`
    pairs that together cover the body exactly, padding included. `size` is
    the whole message's length, `body_size` the body's.
    """

    __slots__ = ("num_rows", "metadata", "copies", "body_size", "size")

    def __init__(self, num_rows: int, metadata: bytes, copies: list[tuple[int, Any]], body_size: int) -> None:
        self.num_rows = num_rows
        self.metadata = metadata
        self.copies = copies
        self.body_size = body_size
        self.size = len(metadata) + body_size

    def write_into(self, target: memoryview) -> None:
        """Write the message into `target` (exactly `size` writable bytes); each data byte is copied once."""
        view = target if target.format == "B" and target.ndim == 1 else target.cast("B")
        if view.nbytes != self.size:
            raise ValueError(f"target holds {view.nbytes} bytes, the record batch message needs {self.size}")
        # Arrow buffers are copied by an Arrow writer, which releases the GIL while it
        # copies (so a session thread decoding in this process is not held up);
        # the small computed pieces are assigned directly.
        base = len(self.metadata)
        view[:base] = self.metadata
        for offset, src in self.copies:
            start = base + offset
            if isinstance(src, pa.Buffer):
                pa.FixedSizeBufferWriter(pa.py_buffer(view[start:start + src.size])).write(src)
            else:
                view[start:start + len(src)] = src

    def to_bytes(self) -> bytes:
        """The message in a fresh `bytes` (for tests and debugging)."""
        out = bytearray(self.size)
        self.write_into(memoryview(out))
        return bytes(out)


# Layout kinds, found from a type's integer id (checking a type id is far cheaper than hashing a type).
_NULL, _BOOL, _FIXED, _BINARY, _LARGE_BINARY, _LIST, _LARGE_LIST, _FIXED_LIST, _STRUCT = range(9)


def _kind_table() -> dict[int, int]:
    """Layout kind by type id, for every supported type (parametrised types share one id per kind)."""
    fixed = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64(),
             pa.float16(), pa.float32(), pa.float64(), pa.date32(), pa.date64(), pa.time32("s"), pa.time64("us"),
             pa.timestamp("s"), pa.duration("s"), pa.decimal128(10, 2), pa.decimal256(40, 2), pa.binary(3)]
    for name, args in (("decimal32", (5, 2)), ("decimal64", (12, 2))):  # newer fixed-width decimals
        if hasattr(pa, name):
            fixed.append(getattr(pa, name)(*args))
    kinds = {t.id: _FIXED for t in fixed}
    kinds.update({pa.null().id: _NULL, pa.bool_().id: _BOOL, pa.string().id: _BINARY, pa.binary().id: _BINARY,
                  pa.large_string().id: _LARGE_BINARY, pa.large_binary().id: _LARGE_BINARY,
                  pa.list_(pa.int8()).id: _LIST, pa.large_list(pa.int8()).id: _LARGE_LIST,
                  pa.list_(pa.int8(), 2).id: _FIXED_LIST, pa.struct([]).id: _STRUCT})
    return kinds


_KINDS = _kind_table()
_I32 = np.dtype("<i4")
_I64 = np.dtype("<i8")


def supported_type(t: pa.DataType) -> bool:
    """Whether `plan` can gather columns of type `t` (nested types: all their children too)."""
    kind = _KINDS.get(t.id)
    if kind is None:
        return False
    if kind in (_LIST, _LARGE_LIST, _FIXED_LIST):
        return supported_type(t.value_type)
    if kind == _STRUCT:
        return all(supported_type(t.field(i).type) for i in range(t.num_fields))
    return True


def plan(table: pa.Table) -> GatherPlan | None:
    """Lay out `table` (any chunking, any offsets) as one IPC record batch message.

    None when some column's type is not supported (dictionary, map, union,
    extension, view and run-end types, intervals, ...) or when a 32-bit
    offsets column would overflow once combined; the caller then combines
    chunks the ordinary way.
    """
    body = _Body()
    try:
        for col in table.columns:
            _gather(col.type, [(chunk, 0, len(chunk)) for chunk in col.chunks], body)
    except _Fallback:
        return None
    metadata = _message_metadata(table.num_rows, body.nodes, body.buffers, body.pos)
    return GatherPlan(table.num_rows, metadata, body.copies, body.pos)


class _Fallback(Exception):
    """The table cannot be gathered (unsupported type, or 32-bit offsets that would overflow)."""


class _Body:
    """The body being laid out: field nodes, buffer descriptors and the copies that fill it."""

    __slots__ = ("nodes", "buffers", "copies", "pos")

    def __init__(self) -> None:
        self.nodes: list[int] = []  # flattened (length, null_count) pairs
        self.buffers: list[int] = []  # flattened (offset, length) pairs
        self.copies: list[tuple[int, Any]] = []
        self.pos = 0

    def add(self, parts: Sequence[Any]) -> None:
        """Append one body buffer made of `parts` (bytes-likes, format 'B') back to back, then pad to 8."""
        start = pos = self.pos
        copies = self.copies
        for part in parts:
            n = len(part)
            if n:
                copies.append((pos, part))
                pos += n
        pad = -pos & 7
        if pad:
            copies.append((pos, _ZEROS[:pad]))
        self.buffers += (start, pos - start)
        self.pos = pos + pad

    def empty(self) -> None:
        """Append a zero-length body buffer."""
        self.buffers += (self.pos, 0)


def _gather(t: pa.DataType, segs: list[Segment], body: _Body) -> None:
    """Append the node and buffers of one field (and, recursively, its children) built from `segs`."""
    kind = _KINDS.get(t.id)
    if kind is None:
        raise _Fallback()
    segs = [seg for seg in segs if seg[2]]
    length = 0
    for seg in segs:
        length += seg[2]
    if kind == _NULL:
        body.nodes += (length, length)
        return
    at = len(body.nodes)
    body.nodes += (length, 0)
    body.nodes[at + 1] = _validity(segs, length, body)

    if kind == _FIXED:
        width = t.byte_width
        parts = []
        for arr, start, n in segs:
            first = (arr.offset + start) * width
            parts.append(arr.buffers()[1].slice(first, n * width))
        body.add(parts)
    elif kind == _BINARY or kind == _LARGE_BINARY:
        offsets, ranges = _offsets(segs, _I32 if kind == _BINARY else _I64)
        body.add(offsets)
        body.add([bufs[2].slice(lo, hi - lo) for bufs, lo, hi in ranges if hi > lo])
    elif kind == _LIST or kind == _LARGE_LIST:
        offsets, ranges = _offsets(segs, _I32 if kind == _LIST else _I64)
        body.add(offsets)
        child = [(arr.values, lo, hi - lo) for (arr, _, _), (_, lo, hi) in zip(segs, ranges)]
        _gather(t.value_type, child, body)
    elif kind == _FIXED_LIST:
        size = t.list_size
        # FixedSizeListArray.values ignores the parent's offset: row i's values start at (offset + i) * size.
        _gather(t.value_type, [(arr.values, (arr.offset + start) * size, n * size) for arr, start, n in segs], body)
    elif kind == _STRUCT:
        for i in range(t.num_fields):
            # StructArray.field(i) is the child already sliced to the parent's offset and length.
            _gather(t.field(i).type, [(arr.field(i), start, n) for arr, start, n in segs], body)
    else:  # _BOOL
        body.add([np.packbits(_unpacked_bits(segs, 1), bitorder="little").tobytes()] if length else [])


def _validity(segs: list[Segment], length: int, body: _Body) -> int:
    """Append the combined validity bitmap (empty when nothing is null); returns the null count."""
    for arr, _, _ in segs:
        if arr.null_count:
            break
    else:
        body.empty()
        return 0
    bits = _unpacked_bits(segs, 0)
    valid = int(np.count_nonzero(bits))
    if valid == length:
        body.empty()
        return 0
    body.add([np.packbits(bits, bitorder="little").tobytes()])
    return length - valid


def _unpacked_bits(segs: list[Segment], index: int) -> np.ndarray:
    """The bits of buffer `index` (0: validity, 1: boolean values) over all segments, one uint8 per bit.

    Bitmaps are LSB-first; an array without nulls contributes all-set
    validity bits (its bitmap may be absent).
    """
    pieces = []
    for arr, start, n in segs:
        if index == 0 and arr.null_count == 0:
            pieces.append(np.ones(n, dtype=np.uint8))
            continue
        buf = arr.buffers()[index]
        bit = arr.offset + start
        lo = bit >> 3
        raw = np.frombuffer(buf, dtype=np.uint8, count=((bit + n + 7) >> 3) - lo, offset=lo)
        shift = bit & 7
        pieces.append(np.unpackbits(raw, bitorder="little")[shift:shift + n])
    if not pieces:
        return np.zeros(0, dtype=np.uint8)
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def _offsets(segs: list[Segment], dtype: np.dtype) -> tuple[list[np.ndarray], list[tuple[list, int, int]]]:
    """The rebased combined offsets (from 0, continuous) as byte arrays, and per segment `(buffers, lo, hi)`.

    `lo`/`hi` is the range the segment references in the array's data buffer
    (binary) or its child (lists).
    """
    parts = []
    ranges = []
    running = 0
    size = dtype.itemsize
    for arr, start, n in segs:
        bufs = arr.buffers()
        raw = np.frombuffer(bufs[1], dtype=dtype, count=n + 1, offset=(arr.offset + start) * size)
        lo = raw.item(0)
        hi = raw.item(n)
        if size == 4 and running + (hi - lo) > _INT32_MAX:
            raise _Fallback()
        # |lo - running| < 2**31, so the result stays in dtype; the first part keeps its leading 0.
        parts.append((raw[1:] if parts else raw) - (lo - running))
        ranges.append((bufs, lo, hi))
        running += hi - lo
    if not parts:
        parts.append(np.zeros(1, dtype=dtype))
    return [part.view(np.uint8) for part in parts], ranges


# --- flatbuffer `Message` holding a `RecordBatch` -------------------------------------------------
#
# The flatbuffer is laid out the way the reference FlatBufferBuilder lays it
# out (built back to front: each object padded so it is aligned counting from
# the buffer's end, tables' fields added largest first and, among equal sizes,
# last declared first, fields equal to their default left out, identical
# vtables shared, the whole buffer aligned to its largest alignment), so the
# metadata is byte for byte what Arrow's own IPC writer produces for the
# combined table.

_METADATA_V5 = 4  # MetadataVersion.V5
_HEADER_RECORD_BATCH = 3  # MessageHeader union tag for RecordBatch

# Field ids (slot numbers) in Message.fbs; a union takes two slots (type, value).
_MESSAGE_VERSION, _MESSAGE_HEADER_TYPE, _MESSAGE_HEADER, _MESSAGE_BODY_LENGTH = 0, 1, 2, 3
_BATCH_LENGTH, _BATCH_NODES, _BATCH_BUFFERS = 0, 1, 2


class _BackBuilder:
    """A flatbuffer written back to front; positions are counted from the buffer's end."""

    __slots__ = ("parts", "size", "minalign", "vtables")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.minalign = 1
        self.vtables: list[tuple[bytes, int]] = []

    def _pad_to(self, extra: int, align: int) -> None:
        self.minalign = max(self.minalign, align)
        pad = -(self.size + extra) & (align - 1)
        if pad:
            self.parts.append(bytes(pad))
            self.size += pad

    def _push(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)

    def struct_vector(self, flat: list[int]) -> int:
        """A vector of 16-byte structs of two int64 from flattened pairs; returns its position."""
        data = struct.pack(f"<{len(flat)}q", *flat)
        if data:  # an empty vector gets no pre-alignment
            self._pad_to(len(data), 4)
            self._pad_to(len(data), 8)
            self._push(data)
        self._pad_to(0, 4)
        self._push(struct.pack("<I", len(flat) // 2))
        return self.size

    def table(self, fields: list[tuple[int, str, int, bool]]) -> tuple[int, dict[int, int]]:
        """A table from `(field id, struct format, value, is reference)` in the order they are added.

        References (to objects already written, by position) are uint32
        offsets; other values equal to 0, their default here, are left out.
        Returns the table's position and where each written field starts.
        """
        start = self.size
        placed = []
        for fid, fmt, value, is_ref in fields:
            width = struct.calcsize(fmt)
            if is_ref:
                self._pad_to(0, 4)
                value = self.size - value + 4
            elif value == 0:
                continue
            self._pad_to(0, width)
            self._push(struct.pack("<" + fmt, value))
            placed.append((fid, self.size))
        self._pad_to(0, 4)
        table_at = self.size + 4  # where the table's int32 (to its vtable) ends up
        vt_size = 4 + 2 * (max(fid for fid, _ in placed) + 1) if placed else 4
        slots = [0] * ((vt_size - 4) // 2)
        for fid, at in placed:
            slots[fid] = table_at - at
        vtable = struct.pack(f"<{2 + len(slots)}H", vt_size, table_at - start, *slots)
        shared = next((at for vt, at in self.vtables if vt == vtable), None)
        if shared is not None:
            self._push(struct.pack("<i", shared - table_at))
        else:
            self._push(struct.pack("<i", vt_size))  # the vtable goes right before the table
            self._push(vtable)
            self.vtables.append((vtable, self.size))
        return table_at, dict(placed)

    def finish(self, root: int) -> bytes:
        """The finished buffer: aligned, starting with the uint32 offset to `root`."""
        self._pad_to(4, self.minalign)
        self._pad_to(0, 4)
        self._push(struct.pack("<I", self.size - root + 4))
        return b"".join(reversed(self.parts))


def _metadata_template(n_nodes: int, n_buffers: int, has_rows: bool, has_body: bool) -> tuple[bytes, list[int]]:
    """The metadata for a shape, with placeholder values, and where the values go.

    The layout depends only on the vectors' lengths and on which of the two
    int64 fields are 0 (left out); positions (from the start of the
    encapsulated metadata, -1 when left out) are: RecordBatch.length,
    Message.bodyLength, first FieldNode, first Buffer.
    """
    fbb = _BackBuilder()
    nodes_at = fbb.struct_vector([0] * n_nodes)
    buffers_at = fbb.struct_vector([0] * n_buffers)
    batch, batch_fields = fbb.table([
        (_BATCH_LENGTH, "q", int(has_rows), False), (_BATCH_BUFFERS, "I", buffers_at, True),
        (_BATCH_NODES, "I", nodes_at, True)])
    message, message_fields = fbb.table([
        (_MESSAGE_BODY_LENGTH, "q", int(has_body), False), (_MESSAGE_HEADER, "I", batch, True),
        (_MESSAGE_VERSION, "h", _METADATA_V5, False), (_MESSAGE_HEADER_TYPE, "B", _HEADER_RECORD_BATCH, False)])
    flat = fbb.finish(message)
    flat += bytes(-len(flat) % 8)  # the body starts 8-byte aligned after the 8-byte prefix
    end = 8 + fbb.size  # positions from the end -> from the start of the encapsulated metadata

    def start_of(at: int | None) -> int:
        return -1 if at is None else end - at

    where = [start_of(batch_fields.get(_BATCH_LENGTH)), start_of(message_fields.get(_MESSAGE_BODY_LENGTH)),
             end - nodes_at + 4, end - buffers_at + 4]
    return struct.pack("<Ii", 0xFFFFFFFF, len(flat)) + flat, where


_TEMPLATES: dict[tuple[int, int, bool, bool], tuple[bytes, list[int]]] = {}
_TEMPLATES_MAX = 256


def _message_metadata(num_rows: int, nodes: list[int], buffers: list[int], body_length: int) -> bytes:
    """The encapsulation prefix and the `Message` flatbuffer for one uncompressed record batch.

    `nodes` and `buffers` are flattened pairs: (length, null_count) and (offset, length).
    The layout for each shape is built once and kept; values are then packed into a copy.
    """
    key = (len(nodes), len(buffers), num_rows != 0, body_length != 0)
    hit = _TEMPLATES.get(key)
    if hit is None:
        if len(_TEMPLATES) >= _TEMPLATES_MAX:
            _TEMPLATES.clear()
        hit = _TEMPLATES[key] = _metadata_template(*key)
    template, (length_at, body_at, nodes_at, buffers_at) = hit
    out = bytearray(template)
    if length_at >= 0:
        struct.pack_into("<q", out, length_at, num_rows)
    if body_at >= 0:
        struct.pack_into("<q", out, body_at, body_length)
    struct.pack_into(f"<{len(nodes)}q", out, nodes_at, *nodes)
    struct.pack_into(f"<{len(buffers)}q", out, buffers_at, *buffers)
    return bytes(out)
