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
import threading
from typing import Any, Callable

import numpy as np
import pyarrow as pa

__all__ = ["GatherPlan", "plan", "supported_type"]

_INT32_MAX = 2**31 - 1

#: One contiguous run of a field's rows: (array, index of its first row in the array's buffers, row count).
#: The index is absolute (the array's own offset included), so a run reads rows index..index+count-1.
Segment = tuple[pa.Array, int, int]


class GatherPlan:
    """A record batch message ready to be written: metadata bytes plus the body's copies.

    `metadata` is the encapsulation prefix and the flatbuffer (padded, so the
    body starts 8-byte aligned); `copies` lists `(body offset, bytes-like)`
    pairs, in body order, that together cover the body exactly, padding
    included. `size` is the whole message's length, `body_size` the body's.
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
        # Large Arrow buffers are copied by an Arrow writer, which releases the GIL
        # while it copies (so a session thread decoding in this process is not held
        # up); smaller pieces are assigned directly, which costs less than a GIL
        # round trip. Arrow buffers export signed bytes ('b'), the computed pieces
        # unsigned ones ('B'); a memoryview only takes a source of its own format.
        base = len(self.metadata)
        view[:base] = self.metadata
        signed = None
        for offset, src in self.copies:
            start = base + offset
            n = len(src)
            if not isinstance(src, pa.Buffer):
                view[start:start + n] = src
            elif n >= _DIRECT_COPY_MAX:
                pa.FixedSizeBufferWriter(pa.py_buffer(view[start:start + n])).write(src)
            else:
                if signed is None:
                    signed = view.cast("b")
                signed[start:start + n] = src

    def to_bytes(self) -> bytes:
        """The message in a fresh `bytes` (for tests and debugging)."""
        out = bytearray(self.size)
        self.write_into(memoryview(out))
        return bytes(out)


#: Arrow buffers this long or longer are copied with the GIL released (see `GatherPlan.write_into`).
_DIRECT_COPY_MAX = 64 * 1024


def plan(table: pa.Table) -> GatherPlan | None:
    """Lay out `table` (any chunking, any offsets) as one IPC record batch message.

    None when some column's type is not supported (dictionary, map, union,
    extension, view and run-end types, intervals, ...) or when a 32-bit
    offsets column would overflow once combined; the caller then combines
    chunks the ordinary way.
    """
    layout = _schema_layout(table.schema)
    if layout is None:
        return None
    num_rows = table.num_rows
    body = _Body(num_rows, layout.offsets)
    nodes, buffers = body.nodes, body.buffers
    try:
        for field, col in zip(layout.fields, table.columns):
            # A column's segments are its whole chunks (the empty ones left out).
            segs = [(chunk, chunk.offset, n) for chunk in col.iterchunks() if (n := len(chunk))]
            if col.null_count or field.layout is None:
                _gather(field, segs, body)
            else:  # no null in the column (the common case): its node and empty validity are known
                nodes += (num_rows, 0)
                buffers += (body.pos, 0)
                field.layout(field, segs, num_rows, body)
    except _Fallback:
        return None
    body.finish()
    return GatherPlan(num_rows, _message_metadata(num_rows, nodes, buffers, body.pos), body.copies, body.pos)


def supported_type(t: pa.DataType) -> bool:
    """Whether `plan` can gather columns of type `t` (nested types: all their children too)."""
    try:
        _compile(t)
    except _Fallback:
        return False
    return True


class _Fallback(Exception):
    """The table cannot be gathered (unsupported type, or 32-bit offsets that would overflow)."""


# --- field layouts, compiled once per schema ------------------------------------------------------
#
# Reading a type's properties from pyarrow (`ChunkedArray.type`, `value_type`,
# `field(i)`, `byte_width`) builds Python objects on every access, so each
# schema's types are turned once into a tree of `_Field`s, kept in a small
# cache looked up by schema equality (one comparison, done in C++).

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
_U8 = np.dtype("u1")


class _Field:
    """How one field is laid out: the function appending its buffers, the type fact it needs, its children.

    `width` is the byte width of a fixed-width type, the list size of a
    fixed-size list, or the offset width (4 or 8) of a (large) binary or list.
    """

    __slots__ = ("layout", "width", "children")

    def __init__(self, layout: Callable[[_Field, list[Segment], int, _Body], None] | None, width: int = 0,
                 children: tuple[_Field, ...] = ()) -> None:
        self.layout = layout  # None for the null type, which has no buffers
        self.width = width
        self.children = children


def _compile(t: pa.DataType) -> _Field:
    """The `_Field` tree for type `t`; raises `_Fallback` when some type in it is not supported."""
    kind = _KINDS.get(t.id)
    if kind is None:
        raise _Fallback()
    if kind == _NULL:
        return _Field(None)
    if kind == _BOOL:
        return _Field(_bool)
    if kind == _FIXED:
        return _Field(_fixed, t.byte_width)
    if kind in (_BINARY, _LARGE_BINARY):
        return _Field(_binary, 4 if kind == _BINARY else 8)
    if kind in (_LIST, _LARGE_LIST):
        return _Field(_list, 4 if kind == _LIST else 8, (_compile(t.value_type),))
    if kind == _FIXED_LIST:
        return _Field(_fixed_list, t.list_size, (_compile(t.value_type),))
    return _Field(_struct, 0, tuple(_compile(t.field(i).type) for i in range(t.num_fields)))


class _SchemaLayout:
    """The layout of a schema's fields, and how many top-level fields have offsets of each width."""

    __slots__ = ("fields", "offsets")

    def __init__(self, fields: tuple[_Field, ...]) -> None:
        self.fields = fields
        self.offsets: dict[int, int] = {}
        for field in fields:
            if field.layout in (_binary, _list):
                self.offsets[field.width] = self.offsets.get(field.width, 0) + 1


def _compile_schema(schema: pa.Schema) -> _SchemaLayout | None:
    """The layout of `schema`, or None when some type is not supported."""
    try:
        return _SchemaLayout(tuple(_compile(t) for t in schema.types))
    except _Fallback:
        return None


# Recently seen schemas and their layouts, newest first. The tuple is never
# changed, only replaced (under the lock), so readers need no lock.
_LAYOUTS: tuple[tuple[pa.Schema, _SchemaLayout | None], ...] = ()
_LAYOUTS_MAX = 8
_LAYOUTS_LOCK = threading.Lock()


def _schema_layout(schema: pa.Schema) -> _SchemaLayout | None:
    """The cached layout of `schema` (compiled on first sight), None when some type is not supported."""
    global _LAYOUTS
    for known, layout in _LAYOUTS:
        if known.equals(schema):  # names, types and nullability; metadata is ignored
            return layout
    layout = _compile_schema(schema)
    with _LAYOUTS_LOCK:
        _LAYOUTS = ((schema, layout),) + _LAYOUTS[:_LAYOUTS_MAX - 1]
    return layout


# --- the body --------------------------------------------------------------------------------------

#: Zero padding by length: every body buffer is padded to a multiple of 8 bytes with zeros.
_PADS = tuple(bytes(n) for n in range(8))


class _Body:
    """The body being laid out: field nodes, buffer descriptors and the copies that fill it.

    The layout functions append a body buffer's parts to `copies` themselves
    (each at the body position it lands on) and then `close` the buffer.
    Offsets buffers are filled in by `finish` (see `_Arena`).
    """

    __slots__ = ("nodes", "buffers", "copies", "pos", "arenas", "filling", "rows", "top_offsets")

    def __init__(self, rows: int, top_offsets: dict[int, int]) -> None:
        self.nodes: list[int] = []  # flattened (length, null_count) pairs
        self.buffers: list[int] = []  # flattened (offset, length) pairs
        self.copies: list[tuple[int, Any]] = []
        self.pos = 0
        self.arenas: list[_Arena] = []
        self.filling: dict[int, _Arena] = {}  # by offset width: the arena being filled
        self.rows = rows
        self.top_offsets = top_offsets  # top-level fields with offsets, by width: a first arena's room

    def close(self, start: int, end: int) -> None:
        """Record the body buffer spanning `start`..`end` (its parts already in `copies`); pad to 8 bytes."""
        self.buffers += (start, end - start)
        pad = -end & 7
        if pad:
            self.copies.append((end, _PADS[pad]))
        self.pos = end + pad

    def single(self, part: Any) -> None:
        """Append a body buffer made of the one bytes-like `part` (its len() is its size in bytes)."""
        start = self.pos
        if len(part):
            self.copies.append((start, part))
        self.close(start, start + len(part))

    def arena(self, width: int, need: int) -> _Arena:
        """The arena of `width`-byte offsets with room for `need` more values."""
        arena = self.filling.get(width)
        if arena is None:  # room for the top-level offsets buffers of that width
            capacity = max(need, (self.rows + 1) * self.top_offsets.get(width, 0))
        elif len(arena.values) - arena.used >= need:
            return arena
        else:  # nested offsets take more: a bigger arena
            capacity = max(need, 2 * len(arena.values))
        arena = self.filling[width] = _Arena(width, capacity)
        self.arenas.append(arena)
        return arena

    def finish(self) -> None:
        """Compute the offsets buffers the layout left to the end (see `_Arena`)."""
        for arena in self.arenas:
            arena.finish(self.copies)


def _gather(field: _Field, segs: list[Segment], body: _Body) -> None:
    """Append the node and buffers of one field (and, recursively, its children) built from `segs`.

    Segments with no rows are dropped first: they contribute no bytes.
    """
    live = []
    length = 0
    maybe_nulls = False
    for seg in segs:
        n = seg[2]
        if n:
            live.append(seg)
            length += n
            # An array's null count covers all its rows, so it only says whether the run may hold nulls.
            maybe_nulls = maybe_nulls or seg[0].null_count != 0
    layout = field.layout
    if layout is None:  # the null type: every row null, no buffers
        body.nodes += (length, length)
        return
    if maybe_nulls:
        nulls = _validity(live, length, body)
    else:  # a validity bitmap may be left empty (length 0) when the null count is 0
        nulls = 0
        body.buffers += (body.pos, 0)
    body.nodes += (length, nulls)
    layout(field, live, length, body)


def _fixed(field: _Field, segs: list[Segment], length: int, body: _Body) -> None:
    """Values buffer of a fixed-width type: a slice of each segment's values buffer."""
    width = field.width
    copies = body.copies
    start = pos = body.pos
    for arr, first, n in segs:
        size = n * width
        copies.append((pos, arr.buffers()[1].slice(first * width, size)))
        pos += size
    body.close(start, pos)


def _binary(field: _Field, segs: list[Segment], length: int, body: _Body) -> None:
    """Offsets and data buffers of a (large) binary or string type."""
    ranges = _offsets(field.width, segs, length, body)
    copies = body.copies
    start = pos = body.pos
    for bufs, lo, hi in ranges:
        if hi > lo:
            copies.append((pos, bufs[2].slice(lo, hi - lo)))
            pos += hi - lo
    body.close(start, pos)


def _list(field: _Field, segs: list[Segment], length: int, body: _Body) -> None:
    """Offsets buffer of a (large) list type, then its child over the values the rows reference."""
    ranges = _offsets(field.width, segs, length, body)
    child = []
    for (arr, _, _), (_, lo, hi) in zip(segs, ranges):
        if hi > lo:
            values = arr.values  # the whole child: list offsets index it from its own offset
            child.append((values, values.offset + lo, hi - lo))
    _gather(field.children[0], child, body)


def _fixed_list(field: _Field, segs: list[Segment], length: int, body: _Body) -> None:
    """The child of a fixed-size list type (it has no buffer of its own besides validity)."""
    size = field.width
    child = []
    for arr, first, n in segs:
        values = arr.values  # the whole child: row i's values start at i * size from its own offset
        child.append((values, values.offset + first * size, n * size))
    _gather(field.children[0], child, body)


def _struct(field: _Field, segs: list[Segment], length: int, body: _Body) -> None:
    """The children of a struct type, in field order."""
    for i, child in enumerate(field.children):
        child_segs = []
        for arr, first, n in segs:
            # StructArray.field(i) is the child already sliced to the parent's offset and length,
            # so the parent's row `first - arr.offset` is the child's row of that index.
            values = arr.field(i)
            child_segs.append((values, values.offset + first - arr.offset, n))
        _gather(child, child_segs, body)


def _bool(field: _Field, segs: list[Segment], length: int, body: _Body) -> None:
    """Values bitmap of the boolean type, re-packed from every segment's bits."""
    body.single(np.packbits(_unpacked_bits(segs, 1), bitorder="little").tobytes() if length else b"")


def _validity(segs: list[Segment], length: int, body: _Body) -> int:
    """Append the combined validity bitmap of segments that may hold nulls; returns the null count.

    The bitmap is left empty when the rows taken hold no null after all.
    """
    bits = _unpacked_bits(segs, 0)
    valid = int(np.count_nonzero(bits))
    if valid == length:
        body.buffers += (body.pos, 0)
        return 0
    body.single(np.packbits(bits, bitorder="little").tobytes())
    return length - valid


def _unpacked_bits(segs: list[Segment], index: int) -> np.ndarray:
    """The bits of buffer `index` (0: validity, 1: boolean values) over all segments, one uint8 per bit.

    Bitmaps are LSB-first; an array without nulls contributes all-set
    validity bits (its bitmap may be absent).
    """
    pieces = []
    for arr, bit, n in segs:
        if index == 0 and arr.null_count == 0:
            pieces.append(np.ones(n, dtype=np.uint8))
            continue
        lo = bit >> 3
        raw = np.frombuffer(arr.buffers()[index], _U8, ((bit + n + 7) >> 3) - lo, lo)
        shift = bit & 7
        pieces.append(np.unpackbits(raw, bitorder="little")[shift:shift + n])
    if not pieces:
        return np.zeros(0, dtype=np.uint8)
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


# --- offsets ---------------------------------------------------------------------------------------
#
# A combined offsets buffer starts at 0 and runs on without a break: each
# segment's n + 1 offsets shifted by one delta (its first offset minus the
# bytes or values taken so far), its first landing on the previous segment's
# last (the same value). The walk copies each segment's raw offsets into an
# arena shared by all offsets buffers of the plan of one width (reading the
# first and last there: they give the data or child range) and notes the
# delta; `_Body.finish` then shifts the whole arena with one vectorised
# subtraction (a call per segment would cost more than the arithmetic).

_DTYPES = {4: _I32, 8: _I64}
_TYPECODES = {4: "i", 8: "q"}


class _Arena:
    """Offsets of one width for a plan: raw segment offsets copied back to back, shifted at the end.

    Run i is `counts[i]` values, all shifted by `deltas[i]`; a segment's run
    is its n values, the last segment of a buffer also keeping its final
    value (the next buffer's first segment would otherwise overwrite it).
    `slots` are the copies to point at finished buffers.
    """

    __slots__ = ("width", "values", "whole", "signed", "typed", "used", "deltas", "counts", "slots")

    def __init__(self, width: int, capacity: int) -> None:
        self.width = width
        self.values = np.empty(capacity, _DTYPES[width])
        self.whole = memoryview(self.values).cast("B")
        self.signed = self.whole.cast("b")  # Arrow buffers export signed bytes; a memoryview copies like to like
        self.typed = self.whole.cast(_TYPECODES[width])  # to read single offsets (little-endian, as the arena)
        self.used = 0  # values written so far
        self.deltas: list[int] = []
        self.counts: list[int] = []
        self.slots: list[tuple[int, int, int]] = []  # (index in copies, first value, value count)

    def finish(self, copies: list[tuple[int, Any]]) -> None:
        """Shift every run by its delta and put each buffer (as bytes) in its slot of `copies`."""
        used = self.used
        if any(self.deltas):
            values = self.values[:used]
            np.subtract(values, np.array(self.deltas, values.dtype).repeat(self.counts), values)
        whole = self.whole
        width = self.width
        for index, first, count in self.slots:
            copies[index] = (copies[index][0], whole[first * width:(first + count) * width])


def _offsets(width: int, segs: list[Segment], length: int, body: _Body) -> list[tuple[list, int, int]]:
    """Append the combined offsets buffer of `segs` (`width`-byte offsets); returns per segment `(buffers, lo, hi)`.

    `lo`/`hi` is the range the segment references in the array's data buffer
    (binary) or its child (lists).
    """
    arena = body.filling.get(width)
    if arena is None or len(arena.values) - arena.used <= length:
        arena = body.arena(width, length + 1)
    signed, typed, deltas, counts = arena.signed, arena.typed, arena.deltas, arena.counts
    first_value = at = arena.used
    ranges = []
    running = 0
    for arr, first, n in segs:
        bufs = arr.buffers()
        signed[at * width:(at + n + 1) * width] = bufs[1].slice(first * width, (n + 1) * width)
        lo = typed[at]
        hi = typed[at + n]
        if width == 4 and running + (hi - lo) > _INT32_MAX:
            raise _Fallback()
        # |lo - running| < 2**31 when width is 4 (both are valid offsets), so the deltas fit the type.
        deltas.append(lo - running)
        counts.append(n)
        ranges.append((bufs, lo, hi))
        running += hi - lo
        at += n
    if segs:
        counts[-1] += 1  # the buffer's last value
    else:  # no rows: the buffer is a single 0
        typed[at] = 0
        deltas.append(0)
        counts.append(1)
    arena.used = at + 1
    start = body.pos
    arena.slots.append((len(body.copies), first_value, length + 1))
    body.copies.append((start, None))  # filled by `_Body.finish`
    body.close(start, start + (length + 1) * width)
    return ranges


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
        """Where a field written at `at` (counted from the buffer's end) sits in the message, or -1 if unwritten."""
        return -1 if at is None else end - at

    where = [start_of(batch_fields.get(_BATCH_LENGTH)), start_of(message_fields.get(_MESSAGE_BODY_LENGTH)),
             end - nodes_at + 4, end - buffers_at + 4]
    return struct.pack("<Ii", 0xFFFFFFFF, len(flat)) + flat, where


# Metadata layouts by shape, with the structs packing their values. Entries
# are only added (a race builds one twice, harmlessly) or all dropped at once.
_TEMPLATES: dict[tuple[int, int, bool, bool], tuple[bytes, int, int, int, struct.Struct, bytes]] = {}
_TEMPLATES_MAX = 256
_INT64 = struct.Struct("<q")


def _template(key: tuple[int, int, bool, bool]) -> tuple[bytes, int, int, int, struct.Struct, bytes]:
    """The metadata template for a shape, where its scalars go, and one struct for both vectors.

    The buffers' vector lies before the nodes' (the builder writes the nodes
    first, back to front), so the two are packed in one go with the bytes
    between them (the nodes' count and padding) passed through unchanged.
    """
    n_nodes, n_buffers = key[0], key[1]
    template, (length_at, body_at, nodes_at, buffers_at) = _metadata_template(*key)
    between = template[buffers_at + 8 * n_buffers:nodes_at]
    vectors = struct.Struct(f"<{n_buffers}q{len(between)}s{n_nodes}q")
    return template, length_at, body_at, buffers_at, vectors, between


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
        hit = _TEMPLATES[key] = _template(key)
    template, length_at, body_at, buffers_at, vectors, between = hit
    out = bytearray(template)
    if length_at >= 0:
        _INT64.pack_into(out, length_at, num_rows)
    if body_at >= 0:
        _INT64.pack_into(out, body_at, body_length)
    vectors.pack_into(out, buffers_at, *buffers, between, *nodes)
    return bytes(out)
