"""The gathered IPC record batch (py_worker.ipc_gather) and its use by arrow_ipc.BatchEncoder.

Every case is a real round trip: the bytes are read back by pyarrow's IPC
reader and compared with `table.combine_chunks()` (schema metadata included).
"""

from __future__ import annotations

import datetime
import decimal
import random

import numpy as np
import pyarrow as pa
import pytest

from py_worker import arrow_ipc, ipc_gather
from py_worker.arrow_ipc import END_OF_STREAM, BatchEncoder, encode_batch, schema_message
from py_worker.wire import pb

META = {b"huggingface": b'{"info": {"features": {}}}', b"k": b"v"}


# --- helpers ---------------------------------------------------------------------------------------

def _stream(table: pa.Table) -> bytes:
    plan = ipc_gather.plan(table)
    assert plan is not None, f"not gathered: {table.schema}"
    return schema_message(table.schema) + plan.to_bytes() + END_OF_STREAM


def _reference_message(table: pa.Table) -> bytes:
    """pyarrow's own encapsulated record batch message for the combined table."""
    arrays = [pa.concat_arrays(c.chunks) if c.num_chunks else pa.array([], type=c.type) for c in table.columns]
    return pa.RecordBatch.from_arrays(arrays, schema=table.schema).serialize().to_pybytes()


def _assert_roundtrip(table: pa.Table) -> None:
    data = _stream(table)
    # Byte for byte what pyarrow writes for the combined table (metadata layout, padding, bitmaps).
    assert ipc_gather.plan(table).to_bytes() == _reference_message(table)
    reader = pa.ipc.open_stream(data)
    batches = list(reader)
    assert len(batches) == 1, "the stream holds exactly one record batch"
    got = pa.Table.from_batches(batches, schema=reader.schema)
    expected = table.combine_chunks()
    got.validate(full=True)
    assert got.schema.equals(expected.schema, check_metadata=True)
    assert got.equals(expected), (got, expected)


def _chunked(values: list, t: pa.DataType, cuts: list[int], pad: int = 3) -> pa.ChunkedArray:
    """`values` split at `cuts`, each chunk a slice (offset `pad`, not a multiple of 8) of a larger array."""
    bounds = [0, *cuts, len(values)]
    chunks = []
    for a, b in zip(bounds, bounds[1:]):
        filler = values[:pad] if len(values) >= pad else [None] * pad
        arr = pa.array(filler + values[a:b] + filler, type=t)
        chunks.append(arr.slice(pad, b - a))
    return pa.chunked_array(chunks, type=t)


def _multi_chunk_table(columns: dict[str, tuple[list, pa.DataType]], cuts: list[int]) -> pa.Table:
    arrays = [_chunked(v, t, cuts) for v, t in columns.values()]
    schema = pa.schema([pa.field(k, t) for k, (_, t) in columns.items()], metadata=META)
    return pa.Table.from_arrays(arrays, schema=schema)


# --- every supported type ---------------------------------------------------------------------------

D = decimal.Decimal
SAMPLES: dict[str, tuple[pa.DataType, list]] = {
    "null": (pa.null(), [None] * 6),
    "bool": (pa.bool_(), [True, False, True, True, False, False, True, False, True]),
    "int8": (pa.int8(), [1, -2, 3, 127, -128]),
    "int16": (pa.int16(), [1, -2, 30000]),
    "int32": (pa.int32(), [1, -2, 2**31 - 1]),
    "int64": (pa.int64(), [1, -2, 2**62]),
    "uint8": (pa.uint8(), [0, 255, 7]),
    "uint16": (pa.uint16(), [0, 65535]),
    "uint32": (pa.uint32(), [0, 2**32 - 1]),
    "uint64": (pa.uint64(), [0, 2**64 - 1]),
    "float16": (pa.float16(), [np.float16(1.5), np.float16(-2.0)]),
    "float32": (pa.float32(), [1.5, -0.25]),
    "float64": (pa.float64(), [1.5, float("inf"), -3.25]),
    "date32": (pa.date32(), [datetime.date(2020, 1, 2), datetime.date(1970, 1, 1)]),
    "date64": (pa.date64(), [datetime.date(2020, 1, 2)]),
    "time32s": (pa.time32("s"), [datetime.time(1, 2, 3)]),
    "time32ms": (pa.time32("ms"), [datetime.time(1, 2, 3, 4000)]),
    "time64us": (pa.time64("us"), [datetime.time(1, 2, 3, 4)]),
    "time64ns": (pa.time64("ns"), [5, 6_000_000_000]),
    "timestamp": (pa.timestamp("us"), [datetime.datetime(2021, 5, 6, 7, 8, 9)]),
    "timestamp_tz": (pa.timestamp("ns", tz="UTC"), [1, 2, 3]),
    "duration": (pa.duration("ms"), [datetime.timedelta(seconds=3), datetime.timedelta(0)]),
    "decimal128": (pa.decimal128(12, 3), [D("1.234"), D("-99999.999")]),
    "decimal256": (pa.decimal256(50, 4), [D("1.2345"), D("-12345678901234567890123.4567")]),
    "decimal32": (pa.decimal32(7, 2), [D("12.34"), D("-99999.99")]),
    "decimal64": (pa.decimal64(15, 3), [D("1.234"), D("-999999999.999")]),
    "fixed_size_binary": (pa.binary(3), [b"abc", b"xyz", b"\x00\x01\x02"]),
    "string": (pa.string(), ["", "a", "héllo", "x" * 40]),
    "binary": (pa.binary(), [b"", b"\x00\xff", b"abc" * 7]),
    "large_string": (pa.large_string(), ["big", "", "strings"]),
    "large_binary": (pa.large_binary(), [b"\x01", b"", b"\x02" * 20]),
    "list": (pa.list_(pa.int32()), [[1, 2], [], [3], [4, 5, 6]]),
    "large_list": (pa.large_list(pa.string()), [["a"], [], ["b", "c"]]),
    "fixed_size_list": (pa.list_(pa.float64(), 2), [[1.0, 2.0], [3.0, 4.0]]),
    "struct": (pa.struct([("a", pa.int64()), ("b", pa.string())]), [{"a": 1, "b": "x"}, {"a": 2, "b": None}]),
    "list<struct<list<string>>>": (
        pa.list_(pa.struct([("w", pa.list_(pa.string())), ("n", pa.int16())])),
        [[{"w": ["a", "b"], "n": 1}], [], [{"w": [], "n": None}, {"w": ["c"], "n": 3}]],
    ),
    "fixed_size_list<struct>": (
        pa.list_(pa.struct([("x", pa.bool_()), ("y", pa.large_string())]), 2),
        [[{"x": True, "y": "p"}, {"x": False, "y": ""}], [{"x": None, "y": "q"}, {"x": True, "y": None}]],
    ),
}


def _values(name: str, n: int, nulls: bool) -> list:
    _, base = SAMPLES[name]
    vals = [base[i % len(base)] for i in range(n)]
    if nulls:
        vals = [None if i % 3 == 1 else v for i, v in enumerate(vals)]
    return vals


@pytest.mark.parametrize("nulls", [False, True], ids=["no-nulls", "nulls"])
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_supported_type_round_trips_from_several_chunks(name, nulls):
    t, _ = SAMPLES[name]
    n = 37
    table = _multi_chunk_table({"c": (_values(name, n, nulls), t)}, cuts=[5, 5, 17, 30])  # one empty chunk
    assert table.column(0).num_chunks == 5
    _assert_roundtrip(table)
    for start, length in [(0, n), (3, 20), (6, 11), (11, 1), (36, 1), (4, 0)]:
        _assert_roundtrip(table.slice(start, length))


def test_all_types_side_by_side_in_a_sliced_concatenation():
    n = 29
    cols = {name: (_values(name, n, nulls=(i % 2 == 0)), SAMPLES[name][0]) for i, name in enumerate(sorted(SAMPLES))}
    base = _multi_chunk_table(cols, cuts=[9, 20])
    table = pa.concat_tables([base, base.slice(5, 13), base.slice(0, 0), base])
    _assert_roundtrip(table)
    for start, length in [(0, table.num_rows), (7, 30), (27, 9), (40, 3), (table.num_rows, 0)]:
        _assert_roundtrip(table.slice(start, length))


def test_bitmaps_at_every_bit_offset():
    """Chunks starting at bit offsets 0..15 (validity and boolean values re-packed)."""
    rng = random.Random(7)
    values = [rng.choice([True, False, None]) for _ in range(80)]
    ints = [None if v is None else i for i, v in enumerate(values)]
    for pad in range(16):
        chunks_b, chunks_i = [], []
        for a, b in [(0, 13), (13, 13), (13, 40), (40, 80)]:
            chunks_b.append(pa.array([True] * pad + values[a:b], pa.bool_()).slice(pad))
            chunks_i.append(pa.array([0] * pad + ints[a:b], pa.int32()).slice(pad))
        table = pa.table({"b": pa.chunked_array(chunks_b), "i": pa.chunked_array(chunks_i)})
        _assert_roundtrip(table)
        _assert_roundtrip(table.slice(pad, 50))


def test_nulls_only_in_some_chunks_and_all_null_chunks():
    a = pa.chunked_array([pa.array([1, 2, 3]), pa.array([None, None], pa.int64()), pa.array([4, None, 6])])
    s = pa.chunked_array([pa.array(["x", "y", None]), pa.array([None, None], pa.string()), pa.array(["z", "w", "v"])])
    table = pa.table({"a": a, "s": s})
    _assert_roundtrip(table)
    _assert_roundtrip(table.slice(2, 4))
    _assert_roundtrip(table.slice(3, 2))
    # Rows that are all valid, from chunks with nulls elsewhere: the validity bitmap is left out (length 0).
    part = pa.concat_tables([table.slice(0, 2), table.slice(5, 1), table.slice(7, 1)])
    plan = ipc_gather.plan(part)
    got = pa.ipc.open_stream(schema_message(part.schema) + plan.to_bytes() + END_OF_STREAM).read_all()
    assert got.equals(part.combine_chunks())
    assert all(got.column(i).chunk(0).null_count == 0 for i in range(2))
    # ...and the body holds only the values: 4 int64 (32 bytes), 5 offsets (20 -> 24) and 4 bytes of text (-> 8).
    assert plan.body_size == 32 + 24 + 8


def test_zero_rows_and_empty_chunks():
    t = pa.table({"a": pa.chunked_array([[], []], pa.int64()), "s": pa.chunked_array([[], []], pa.string()),
                  "l": pa.chunked_array([[], []], pa.list_(pa.string()))})
    _assert_roundtrip(t)
    full = pa.concat_tables([pa.table({"a": [1, 2], "s": ["x", "y"], "l": [["p"], []]})] * 3)
    _assert_roundtrip(full.slice(2, 0))
    _assert_roundtrip(full.slice(6, 0))
    empty_first = pa.concat_tables([full.slice(0, 0), full.slice(1, 1), full.slice(0, 0), full])
    _assert_roundtrip(empty_first)


def test_edge_shapes_empty_struct_zero_width_lists_and_null_children():
    columns = {
        "empty_struct": pa.chunked_array([pa.array([{}, None, {}], pa.struct([])), pa.array([{}], pa.struct([]))]),
        "fsl0": pa.chunked_array([pa.array([[], None], pa.list_(pa.int8(), 0)),
                                  pa.array([[]], pa.list_(pa.int8(), 0))]),
        "list_null": pa.chunked_array([pa.array([[None], None], pa.list_(pa.null())),
                                       pa.array([[None, None], []], pa.list_(pa.null()))]),
        "fsl_fsl": pa.chunked_array([pa.array([[[1]], None, [[3]]], pa.list_(pa.list_(pa.int64(), 1), 1)).slice(1),
                                     pa.array([[[2]]], pa.list_(pa.list_(pa.int64(), 1), 1))]),
    }
    for name, col in columns.items():
        table = pa.table({name: col})
        _assert_roundtrip(table)
        _assert_roundtrip(table.slice(1, 2))


def test_large_types_and_nested_large_lists():
    t = pa.large_list(pa.large_list(pa.large_binary()))
    vals = [[[b"a", b""], []], [], None, [[b"xyz" * 9]], [[None, b"q"]]]
    table = _multi_chunk_table({"x": (vals * 4, t), "s": ([f"s{i}" * i for i in range(20)], pa.large_string())},
                               cuts=[3, 11])
    _assert_roundtrip(table)
    _assert_roundtrip(table.slice(2, 15))


# --- the top-level shortcut, offsets arenas, overflow and copies -----------------------------------

def _general_path_message(table: pa.Table) -> bytes:
    """The message laid out by the general per-field path only (no top-level shortcut for null-free columns)."""
    layout = ipc_gather._schema_layout(table.schema)
    assert layout is not None
    body = ipc_gather._Body(table.num_rows, {})  # no room planned: arenas are made (and grown) on demand
    for field, col in zip(layout.fields, table.columns):
        ipc_gather._gather(field, [(chunk, chunk.offset, len(chunk)) for chunk in col.chunks], body)
    body.finish()
    metadata = ipc_gather._message_metadata(table.num_rows, body.nodes, body.buffers, body.pos)
    return ipc_gather.GatherPlan(table.num_rows, metadata, body.copies, body.pos).to_bytes()


@pytest.mark.parametrize("nulls", [False, True], ids=["no-nulls", "nulls"])
def test_top_level_shortcut_matches_the_general_path(nulls):
    n = 23
    cols = {name: (_values(name, n, nulls), SAMPLES[name][0]) for name in sorted(SAMPLES)}
    base = _multi_chunk_table(cols, cuts=[4, 4, 15])  # sliced chunks (offset 3), one of them empty
    for table in (base, base.slice(2, 17), base.slice(9, 1), base.slice(5, 0)):
        if not nulls:  # the shortcut is taken for every column but the null-typed one
            assert all(col.null_count == 0 for col in table.columns if col.type != pa.null())
        assert ipc_gather.plan(table).to_bytes() == _general_path_message(table) == _reference_message(table)


def test_offsets_of_both_widths_and_nested_offsets_beyond_the_first_arena():
    """Offsets of several buffers, widths and depths share arenas; nested ones outgrow the first arena."""
    rng = random.Random(5)
    n = 60
    words = [["".join(rng.choice("xyz") for _ in range(rng.randint(0, 5))) for _ in range(rng.randint(0, 9))]
             for _ in range(n)]
    cols = {
        "s": ([f"v{i}" * (i % 4) for i in range(n)], pa.string()),
        "ls": ([f"w{i}" * (i % 3) for i in range(n)], pa.large_string()),
        "words": (words, pa.list_(pa.string())),  # its child's offsets hold ~4 values per row
        "deep": ([[w, [], w[:2]] for w in words], pa.large_list(pa.list_(pa.large_binary()))),
    }
    cols["deep"] = ([[[s.encode() for s in w], [], [s.encode() for s in w[:2]]] for w in words], cols["deep"][1])
    table = _multi_chunk_table(cols, cuts=[7, 31, 31, 44])
    for part in (table, table.slice(3, 50), table.slice(31, 1), table.slice(59, 1)):
        _assert_roundtrip(part)
        assert ipc_gather.plan(part).to_bytes() == _general_path_message(part)


def _huge_string_chunk(t: pa.DataType, size: int) -> pa.Array:
    """One string of `size` bytes; its data buffer is allocated but never touched, so it costs no memory."""
    data = pa.allocate_buffer(size)
    width = 4 if t in (pa.string(), pa.binary()) else 8
    offsets = pa.py_buffer(np.array([0, size], dtype=f"<i{width}").tobytes())
    return pa.Array.from_buffers(t, 1, [None, offsets, data])


def test_32_bit_offsets_that_would_overflow_fall_back():
    size = 2**30 + 1  # two of them hold 2**31 + 2 bytes: past the largest 32-bit offset
    big = _huge_string_chunk(pa.string(), size)
    small = pa.array(["a"], pa.string())
    assert ipc_gather.plan(pa.table({"s": pa.chunked_array([big, small])})) is not None
    assert ipc_gather.plan(pa.table({"s": pa.chunked_array([big, big])})) is None
    # ...also as a nested field (the child of a list), and after columns already laid out.
    nested = pa.ListArray.from_arrays(pa.array([0, 1], pa.int32()), big)
    table = pa.table({"i": pa.chunked_array([[1], [2]], pa.int64()), "l": pa.chunked_array([nested, nested])})
    assert ipc_gather.plan(table) is None
    # 64-bit offsets take the same rows.
    large = _huge_string_chunk(pa.large_string(), size)
    gathered = ipc_gather.plan(pa.table({"s": pa.chunked_array([large, large])}))
    assert gathered is not None and gathered.num_rows == 2 and gathered.body_size >= 2 * size


def test_large_buffers_are_copied_by_the_arrow_writer_and_small_ones_directly():
    text = ["x" * 50_000, "y" * 30_000, "", "z" * 90_000, "w"]  # data pieces on both sides of the threshold
    table = pa.table({"t": _chunked(text * 3, pa.string(), [4, 9]), "i": _chunked(list(range(15)), pa.int64(), [2])})
    plan = ipc_gather.plan(table)
    sizes = [len(src) for _, src in plan.copies if isinstance(src, pa.Buffer)]
    assert max(sizes) >= ipc_gather._DIRECT_COPY_MAX > min(sizes)
    _assert_roundtrip(table)
    _assert_roundtrip(table.slice(1, 13))
    _assert_roundtrip(pa.table({"i": _chunked(list(range(20_000)), pa.int64(), [3, 15_000])}))
    # A target that is not a flat byte view is written the same.
    out = bytearray(plan.size + (-plan.size % 8))
    plan.write_into(memoryview(out)[:plan.size].cast("B").cast("c"))
    assert bytes(out[:plan.size]) == _reference_message(table)


def test_layouts_are_cached_per_schema_and_plans_are_thread_safe():
    from concurrent.futures import ThreadPoolExecutor

    rng = random.Random(31)
    tables = [_random_table(rng) for _ in range(3 * ipc_gather._LAYOUTS_MAX)]  # more schemas than the cache holds
    expected = [_reference_message(t) if ipc_gather.plan(t) is not None else None for t in tables]
    assert sum(e is not None for e in expected) > len(tables) // 2

    def encode(i: int) -> bytes | None:
        got = ipc_gather.plan(tables[i])
        return None if got is None else got.to_bytes()

    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            assert list(pool.map(encode, range(len(tables)))) == expected
    assert len(ipc_gather._LAYOUTS) <= ipc_gather._LAYOUTS_MAX
    schema = tables[0].schema
    assert ipc_gather._schema_layout(schema) is ipc_gather._schema_layout(pa.schema(list(schema)))  # equal schema


# --- randomized ---------------------------------------------------------------------------------------

LEAVES = ["null", "bool", "int8", "int32", "uint64", "float16", "float64", "date32", "time64ns", "timestamp_tz",
          "duration", "decimal128", "decimal256", "fixed_size_binary", "string", "binary", "large_string",
          "large_binary"]


def _random_type(rng: random.Random, depth: int) -> pa.DataType:
    if depth >= 3 or rng.random() < 0.55:
        return SAMPLES[rng.choice(LEAVES)][0]
    pick = rng.randrange(5)
    child = _random_type(rng, depth + 1)
    if pick == 0:
        return pa.list_(child)
    if pick == 1:
        return pa.large_list(child)
    if pick == 2:
        return pa.list_(child, rng.randint(1, 3))
    return pa.struct([(f"f{i}", _random_type(rng, depth + 1)) for i in range(rng.randint(1, 3))])


def _random_value(rng: random.Random, t: pa.DataType, null_rate: float):
    if pa.types.is_null(t) or rng.random() < null_rate:
        return None
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return [_random_value(rng, t.value_type, null_rate) for _ in range(rng.randint(0, 3))]
    if pa.types.is_fixed_size_list(t):
        return [_random_value(rng, t.value_type, null_rate) for _ in range(t.list_size)]
    if pa.types.is_struct(t):
        return {t.field(i).name: _random_value(rng, t.field(i).type, null_rate) for i in range(t.num_fields)}
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "".join(rng.choice("abcé") for _ in range(rng.randint(0, 6)))
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 6)))
    if pa.types.is_fixed_size_binary(t):
        return bytes(rng.randrange(256) for _ in range(t.byte_width))
    if pa.types.is_boolean(t):
        return rng.random() < 0.5
    if pa.types.is_decimal(t):
        return D(rng.randint(-10**6, 10**6)).scaleb(-t.scale)
    if pa.types.is_floating(t):
        v = rng.uniform(-100, 100)
        return np.float16(v) if t == pa.float16() else v
    if pa.types.is_unsigned_integer(t):
        return rng.randrange(2**t.bit_width)
    if pa.types.is_integer(t):
        return rng.randrange(-(2**(t.bit_width - 1)), 2**(t.bit_width - 1))
    if pa.types.is_date32(t):
        return datetime.date(2000, 1, 1) + datetime.timedelta(days=rng.randrange(10000))
    if pa.types.is_duration(t):
        return datetime.timedelta(milliseconds=rng.randrange(10**9))
    return rng.randrange(2**40)  # time64 / timestamp as integers


def _random_table(rng: random.Random) -> pa.Table:
    types = [_random_type(rng, 0) for _ in range(rng.randint(1, 4))]
    schema = pa.schema([pa.field(f"c{i}", t) for i, t in enumerate(types)],
                       metadata={b"case": str(rng.random()).encode()})
    null_rate = rng.choice([0.0, 0.0, 0.1, 0.5])
    pieces = []
    for _ in range(rng.randint(1, 5)):
        n = rng.choice([0, 1, 3, 8, 9, 17, 40])
        pad = rng.randint(0, 9)
        cols = []
        for t in types:
            vals = [_random_value(rng, t, null_rate) for _ in range(n + 2 * pad)]
            cols.append(pa.array(vals, type=t).slice(pad, n))
        pieces.append(pa.Table.from_arrays(cols, schema=schema))
    table = pa.concat_tables(pieces)
    if table.num_rows and rng.random() < 0.7:
        start = rng.randrange(table.num_rows)
        table = table.slice(start, rng.randint(0, table.num_rows - start))
    return table


def test_randomized_round_trips():
    rng = random.Random(20261123)
    for _ in range(300):
        table = _random_table(rng)
        _assert_roundtrip(table)


def test_randomized_batches_are_the_same_bytes_as_the_combining_path():
    """`encode_batch` keeps its contract: the same bytes as combining chunks and using pyarrow's writer."""
    rng = random.Random(99)
    gathered = 0
    for seq in range(150):
        table = _random_table(rng)
        encoder = BatchEncoder(seq, table.num_rows, table)
        gathered += encoder.gather is not None
        out = bytearray(encoder.size)
        encoder.write_into(memoryview(out))
        expected = arrow_ipc.batch_message(seq, table.num_rows, arrow_ipc.table_to_ipc(table.combine_chunks()))
        assert bytes(out) == expected
        assert encode_batch(seq, table.num_rows, table).to_pybytes() == expected
    assert gathered > 50


# --- BatchEncoder ------------------------------------------------------------------------------------

def _sample_table() -> pa.Table:
    base = pa.table({"id": [f"row-{i}" for i in range(100)], "x": list(range(100)),
                     "l": [[i, i + 1] if i % 7 else None for i in range(100)]}).replace_schema_metadata(META)
    return pa.concat_tables([base.slice(0, 37), base.slice(37, 63)]).slice(10, 70)


def test_batch_encoder_gathers_multi_chunk_tables_without_combining(monkeypatch):
    table = _sample_table()
    assert all(col.num_chunks == 2 for col in table.columns)

    def no_combining(_table):
        raise AssertionError("chunks were combined")

    monkeypatch.setattr(arrow_ipc, "single_chunk", no_combining)
    encoder = BatchEncoder(41, 70, table)
    assert isinstance(encoder.gather, ipc_gather.GatherPlan)
    out = bytearray(b"\xaa" * (encoder.size + 16))  # garbage around and under the message
    encoder.write_into(memoryview(out)[8:8 + encoder.size])
    assert out[:8] == b"\xaa" * 8 and out[-8:] == b"\xaa" * 8
    msg = pb.Batch.FromString(bytes(out[8:8 + encoder.size]))
    assert (msg.seq, msg.num_rows, msg.end_of_data) == (41, 70, False)
    assert len(msg.arrow_ipc) == encoder.ipc_size
    got = arrow_ipc.ipc_to_table(msg.arrow_ipc)
    assert got.equals(table.combine_chunks()) and got.schema.equals(table.schema, check_metadata=True)
    # Padding is written, not left over: a zeroed target gives the same bytes.
    clean = bytearray(encoder.size)
    encoder.write_into(memoryview(clean))
    assert bytes(clean) == bytes(out[8:8 + encoder.size])


def test_encode_batch_size_and_stream_shape():
    table = _sample_table()
    buf = encode_batch(5, table.num_rows, table)
    encoder = BatchEncoder(5, table.num_rows, table)
    assert buf.size == encoder.size
    msg = pb.Batch.FromString(buf.to_pybytes())
    assert (msg.seq, msg.num_rows) == (5, 70)
    assert msg.arrow_ipc.endswith(END_OF_STREAM)
    assert msg.arrow_ipc.startswith(schema_message(table.schema))
    reader = pa.ipc.open_stream(msg.arrow_ipc)
    assert len(list(reader)) == 1
    # The same bytes as the one-chunk path, read back.
    single = encode_batch(5, table.num_rows, table.combine_chunks())
    assert arrow_ipc.ipc_to_table(pb.Batch.FromString(single.to_pybytes()).arrow_ipc).equals(
        arrow_ipc.ipc_to_table(msg.arrow_ipc))


def test_write_into_refuses_a_target_of_the_wrong_size():
    encoder = BatchEncoder(1, 70, _sample_table())
    with pytest.raises(ValueError):
        encoder.write_into(memoryview(bytearray(encoder.size + 1)))
    with pytest.raises(ValueError):
        encoder.gather.write_into(memoryview(bytearray(encoder.gather.size - 1)))


def test_single_chunk_tables_keep_pyarrows_writer():
    table = pa.table({"a": [1, 2, 3]})
    encoder = BatchEncoder(1, 3, table)
    assert encoder.gather is None
    buf = encode_batch(1, 3, table)
    assert arrow_ipc.ipc_to_table(pb.Batch.FromString(buf.to_pybytes()).arrow_ipc).equals(table)


class _Celsius(pa.ExtensionType):
    def __init__(self) -> None:
        super().__init__(pa.float64(), "hf_bridge.test.celsius")

    def __arrow_ext_serialize__(self) -> bytes:
        return b""

    @classmethod
    def __arrow_ext_deserialize__(cls, storage_type, serialized):
        return cls()


def _unsupported_columns() -> dict[str, pa.ChunkedArray]:
    dict_arr = pa.array(["a", "b", "a", None]).dictionary_encode()
    ext = pa.ExtensionArray.from_storage(_Celsius(), pa.array([1.0, 2.0, None, 4.0]))
    return {
        "dictionary": pa.chunked_array([dict_arr, dict_arr.slice(1)]),
        "map": pa.chunked_array([pa.array([[("k", 1)], [], None, [("a", 2), ("b", 3)]],
                                          pa.map_(pa.string(), pa.int64()))] * 2),
        "union": pa.chunked_array([pa.UnionArray.from_sparse(pa.array([0, 1, 0], pa.int8()),
                                                             [pa.array([1, 2, 3]), pa.array(["x", "y", "z"])])] * 2),
        "extension": pa.chunked_array([ext, ext.slice(2)]),
        "string_view": pa.chunked_array([pa.array(["a", "bb", None], pa.string_view())] * 2),
        "list<dictionary>": pa.chunked_array([pa.ListArray.from_arrays(pa.array([0, 1, 3]), dict_arr.slice(0, 3))] * 2),
        "interval": pa.chunked_array([pa.array([pa.MonthDayNano([1, 2, 3])], pa.month_day_nano_interval())] * 2),
    }


@pytest.mark.parametrize("name", sorted(_unsupported_columns()))
def test_unsupported_types_fall_back_and_stay_correct(name):
    col = _unsupported_columns()[name]
    table = pa.table({"ok": pa.chunked_array([list(range(len(c))) for c in col.chunks]), name: col})
    assert not ipc_gather.supported_type(col.type)
    assert ipc_gather.plan(table) is None
    encoder = BatchEncoder(3, table.num_rows, table)
    assert encoder.gather is None
    out = bytearray(encoder.size)
    encoder.write_into(memoryview(out))
    msg = pb.Batch.FromString(bytes(out))
    assert msg.num_rows == table.num_rows
    pa.register_extension_type(_Celsius())  # so the reader rebuilds the extension column
    try:
        assert arrow_ipc.ipc_to_table(msg.arrow_ipc).equals(table.combine_chunks())
    finally:
        pa.unregister_extension_type("hf_bridge.test.celsius")


def test_schema_message_is_cached_and_ends_before_end_of_stream():
    schema = pa.schema([("a", pa.int64())], metadata={b"x": b"1"})
    first = schema_message(schema)
    assert schema_message(schema) is first
    assert schema_message(pa.schema([("a", pa.int64())], metadata={b"x": b"1"})) is first  # equal schema
    other = schema_message(pa.schema([("a", pa.int64())], metadata={b"x": b"2"}))
    assert other != first  # metadata differs, so does the message
    assert pa.ipc.open_stream(first + END_OF_STREAM).schema.equals(schema, check_metadata=True)
