"""Golden Arrow IPC streams for the Elixir reader (HFBridge.Arrow).

Usage: python arrow_golden.py OUTDIR

For every case this writes ``OUTDIR/<name>.arrows`` (an IPC stream written by
pyarrow) and ``OUTDIR/<name>.exs`` (an Elixir term literal, loaded by the
ExUnit tests with ``Code.eval_string``) holding what pyarrow itself reports
for the stream: the schema, the batch sizes, every column's ``to_pylist()``
and the table's rows, printed in the representation HFBridge.Arrow documents
(decimals as ``{unscaled, scale}``, timestamps as DateTime/NaiveDateTime or
integers, durations as integers in their unit, maps as lists of tuples, ...).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

UTC = dt.timezone.utc
EPOCH_NAIVE = dt.datetime(1970, 1, 1)
EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=UTC)
US_PER = {"s": 1_000_000, "ms": 1_000, "us": 1}
UNIT_ATOM = {"s": ":second", "ms": ":millisecond", "us": ":microsecond", "ns": ":nanosecond"}
PRECISION = {"s": 0, "ms": 3, "us": 6, "ns": 6}


# --------------------------------------------------------------------------
# Python value -> Elixir literal, directed by the Arrow type


def ex_binary(b: bytes) -> str:
    if b and all(32 <= c < 127 and chr(c) not in '"\\#' for c in b):
        return '"' + b.decode("ascii") + '"'
    if not b:
        return '""'
    if len(b) <= 8:
        return "<<" + ", ".join(str(c) for c in b) + ">>"
    return 'Base.decode64!("' + base64.b64encode(b).decode("ascii") + '")'


def ex_float(x: float) -> str:
    if math.isnan(x):
        return ":nan"
    if math.isinf(x):
        return ":infinity" if x > 0 else ":neg_infinity"
    s = repr(float(x))
    if "e" in s:
        mantissa, exp = s.split("e")
        if "." not in mantissa:
            mantissa += ".0"
        return f"{mantissa}e{int(exp)}"
    return s


def total_us(delta: dt.timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def in_unit(us: int, ns: int | None, unit: str) -> int:
    if unit == "ns":
        return ns if ns is not None else us * 1000
    return us // US_PER[unit]


def nanos(v: Any) -> int | None:
    # pandas Timestamp / Timedelta carry exact nanoseconds in `.value`.
    value = getattr(v, "value", None)
    return value if isinstance(value, int) else None


def ex_fields(**kv: Any) -> str:
    return ", ".join(f"{k}: {v}" for k, v in kv.items())


def lit(v: Any, t: pa.DataType, raw: bool) -> str:
    if v is None:
        return "nil"
    if pa.types.is_dictionary(t):
        return lit(v, t.value_type, raw)
    if pa.types.is_null(t):
        return "nil"
    if pa.types.is_boolean(t):
        return "true" if v else "false"
    if pa.types.is_integer(t):
        return str(int(v))
    if pa.types.is_floating(t):
        return ex_float(float(v))
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return ex_binary(v.encode("utf-8"))
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return ex_binary(bytes(v))
    if pa.types.is_decimal(t):
        sign, digits, exp = v.as_tuple()
        unscaled = int("".join(map(str, digits)) or "0")
        shift = exp + t.scale
        unscaled = unscaled * 10**shift if shift >= 0 else unscaled // 10 ** (-shift)
        return f"{{{-unscaled if sign else unscaled}, {t.scale}}}"
    if pa.types.is_date32(t) or pa.types.is_date64(t):
        days = (v - dt.date(1970, 1, 1)).days
        if raw:
            return str(days if pa.types.is_date32(t) else days * 86_400_000)
        return f"Date.new!({v.year}, {v.month}, {v.day})"
    if pa.types.is_time(t):
        us = ((v.hour * 60 + v.minute) * 60 + v.second) * 1_000_000 + v.microsecond
        if raw:
            return str(in_unit(us, None, t.unit))
        micro = f"{{{us % 1_000_000 if t.unit != 's' else 0}, {PRECISION[t.unit]}}}"
        return f"%Time{{{ex_fields(hour=v.hour, minute=v.minute, second=v.second, microsecond=micro)}}}"
    if pa.types.is_timestamp(t):
        if t.tz is not None:
            us = total_us(v - EPOCH_UTC)
        else:
            us = total_us(v - EPOCH_NAIVE)
        if raw:
            return str(in_unit(us, nanos(v), t.unit))
        if t.tz is not None:
            v = v.astimezone(UTC)
        micro = f"{{{v.microsecond}, {PRECISION[t.unit]}}}"
        fields = ex_fields(year=v.year, month=v.month, day=v.day, hour=v.hour, minute=v.minute, second=v.second, microsecond=micro)
        if t.tz is None:
            return f"%NaiveDateTime{{{fields}}}"
        return f'%DateTime{{{fields}, time_zone: "Etc/UTC", zone_abbr: "UTC", utc_offset: 0, std_offset: 0}}'
    if pa.types.is_duration(t):
        return str(in_unit(total_us(v), nanos(v), t.unit))
    if pa.types.is_map(t):
        pairs = (f"{{{lit(k, t.key_type, raw)}, {lit(x, t.item_type, raw)}}}" for k, x in v)
        return "[" + ", ".join(pairs) + "]"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return "[" + ", ".join(lit(x, t.value_type, raw) for x in v) + "]"
    if pa.types.is_struct(t):
        members = (f"{ex_binary(f.name.encode())} => {lit(v[f.name], f.type, raw)}" for f in t)
        return "%{" + ", ".join(members) + "}"
    raise TypeError(f"no Elixir literal for {t}")


# --------------------------------------------------------------------------
# Arrow type / field -> the Elixir schema terms HFBridge.Arrow.Schema uses


def ex_type(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        return ex_type(t.value_type)
    simple = {
        pa.null(): ":null", pa.bool_(): ":bool",
        pa.int8(): ":int8", pa.int16(): ":int16", pa.int32(): ":int32", pa.int64(): ":int64",
        pa.uint8(): ":uint8", pa.uint16(): ":uint16", pa.uint32(): ":uint32", pa.uint64(): ":uint64",
        pa.float16(): ":float16", pa.float32(): ":float32", pa.float64(): ":float64",
        pa.string(): ":utf8", pa.large_string(): ":large_utf8",
        pa.binary(): ":binary", pa.large_binary(): ":large_binary",
        pa.date32(): ":date32", pa.date64(): ":date64",
    }
    for k, name in simple.items():
        if t == k:
            return name
    if pa.types.is_fixed_size_binary(t):
        return f"{{:fixed_size_binary, {t.byte_width}}}"
    if pa.types.is_decimal(t):
        return f"{{:decimal, {t.precision}, {t.scale}, {t.bit_width}}}"
    if pa.types.is_time32(t):
        return f"{{:time32, {UNIT_ATOM[t.unit]}}}"
    if pa.types.is_time64(t):
        return f"{{:time64, {UNIT_ATOM[t.unit]}}}"
    if pa.types.is_timestamp(t):
        tz = "nil" if t.tz is None else ex_binary(t.tz.encode())
        return f"{{:timestamp, {UNIT_ATOM[t.unit]}, {tz}}}"
    if pa.types.is_duration(t):
        return f"{{:duration, {UNIT_ATOM[t.unit]}}}"
    if pa.types.is_map(t):
        return f"{{:map, {'true' if t.keys_sorted else 'false'}}}"
    if pa.types.is_list(t):
        return ":list"
    if pa.types.is_large_list(t):
        return ":large_list"
    if pa.types.is_fixed_size_list(t):
        return f"{{:fixed_size_list, {t.list_size}}}"
    if pa.types.is_struct(t):
        return ":struct"
    return '{:unsupported, "?"}'


def children(t: pa.DataType) -> list[pa.Field]:
    if pa.types.is_dictionary(t):
        return children(t.value_type)
    if pa.types.is_map(t):
        return [pa.field("entries", pa.struct([t.key_field, t.item_field]), nullable=False)]
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return [t.value_field]
    if pa.types.is_struct(t):
        return list(t)
    return []


def ex_field(f: pa.Field) -> str:
    t = f.type
    if pa.types.is_dictionary(t):
        dictionary = f"%{{index_type: {ex_type(t.index_type)}, ordered: {'true' if t.ordered else 'false'}}}"
    else:
        dictionary = "nil"
    kids = "[" + ", ".join(ex_field(c) for c in children(t)) + "]"
    return "%{" + ex_fields(
        name=ex_binary(f.name.encode()),
        type=ex_type(t),
        nullable="true" if f.nullable else "false",
        children=kids,
        dictionary=dictionary,
    ) + "}"


def ex_metadata(md: dict[bytes, bytes] | None) -> str:
    items = (f"{ex_binary(k)} => {ex_binary(v)}" for k, v in (md or {}).items())
    return "%{" + ", ".join(items) + "}"


# --------------------------------------------------------------------------
# Cases


@dataclass
class Case:
    name: str
    schema: pa.Schema
    batches: list[pa.RecordBatch]
    write: dict[str, Any] = field(default_factory=dict)
    opts: str = "[]"  # Elixir keyword list passed to HFBridge.Arrow.read_stream/2
    raw: bool = False
    error: str | None = None  # expected error code atom, e.g. ":unsupported"


def table_case(name: str, table: pa.Table, chunk: int | None = None, **kw: Any) -> Case:
    return Case(name, table.schema, table.to_batches(max_chunksize=chunk), **kw)


def primitives() -> pa.Table:
    n = [None]
    return pa.table({
        "null": pa.array([None] * 9, pa.null()),
        "bool": pa.array([True, False, None, True, True, False, False, True, None]),
        "i8": pa.array([-128, 127, None, 0, -1, 1, 5, 6, 7], pa.int8()),
        "i16": pa.array([-32768, 32767, None, 0, -1, 1, 5, 6, 7], pa.int16()),
        "i32": pa.array([-2**31, 2**31 - 1, None, 0, -1, 1, 5, 6, 7], pa.int32()),
        "i64": pa.array([-2**63, 2**63 - 1, None, 0, -1, 1, 5, 6, 7], pa.int64()),
        "u8": pa.array([0, 255, None, 1, 2, 3, 4, 5, 6], pa.uint8()),
        "u16": pa.array([0, 65535, None, 1, 2, 3, 4, 5, 6], pa.uint16()),
        "u32": pa.array([0, 2**32 - 1, None, 1, 2, 3, 4, 5, 6], pa.uint32()),
        "u64": pa.array([0, 2**64 - 1, None, 1, 2, 3, 4, 5, 6], pa.uint64()),
        "f16": pa.array([1.5, -2.0, None, float("nan"), float("inf"), float("-inf"), 0.0, 65504.0, 6.103515625e-05], pa.float16()),
        "f32": pa.array([1.5, -2.25, None, float("nan"), float("inf"), float("-inf"), 0.1, 3.4e38, 1e-45], pa.float32()),
        "f64": pa.array([1.5, -2.25, None, float("nan"), float("inf"), float("-inf"), 0.1, 1e300, -0.0], pa.float64()),
        "no_nulls": pa.array(range(9), pa.int32()),
        "all_nulls": pa.array(n * 9, pa.int64()),
    })


def strings() -> pa.Table:
    words = ["", "a", None, "héllo wörld", "日本語", "x" * 100, None, "quote\"hash#{}", "\\"]
    blobs = [None if w is None else w.encode() + b"\x00\xff" for w in words]
    return pa.table({
        "utf8": pa.array(words, pa.string()),
        "large_utf8": pa.array(words, pa.large_string()),
        "binary": pa.array(blobs, pa.binary()),
        "large_binary": pa.array(blobs, pa.large_binary()),
        "fixed": pa.array([None if b is None else (b + b"....")[:4] for b in blobs], pa.binary(4)),
    })


def temporals() -> pa.Table:
    d = [dt.date(2024, 2, 29), dt.date(1969, 12, 31), None, dt.date(1, 1, 1), dt.date(9999, 12, 31)]
    t = [dt.time(0, 0), dt.time(23, 59, 59, 999_000), None, dt.time(12, 30, 15, 250_000), dt.time(1, 2, 3)]
    tu = [dt.time(0, 0), dt.time(23, 59, 59, 999_999), None, dt.time(12, 30, 15, 250_001), dt.time(1, 2, 3)]
    ts = [dt.datetime(2024, 2, 29, 12, 0, 1, 123_000), dt.datetime(1969, 12, 31, 23, 59, 59), None,
          dt.datetime(2000, 1, 1), dt.datetime(1900, 6, 15, 8, 30)]
    tsu = [x if x is None else x.replace(microsecond=x.microsecond + 456) for x in ts]
    nyc = [1_700_000_000_123_456, -86_400_000_000 - 1, None, 0, 951_782_400_000_000]
    durs = [0, -5, None, 86_400, 123_456_789]
    return pa.table({
        "date32": pa.array(d, pa.date32()),
        "date64": pa.array(d, pa.date64()),
        "time32_s": pa.array([None if x is None else x.replace(microsecond=0) for x in t], pa.time32("s")),
        "time32_ms": pa.array(t, pa.time32("ms")),
        "time64_us": pa.array(tu, pa.time64("us")),
        "time64_ns": pa.array(tu, pa.time64("ns")),
        "ts_s": pa.array([None if x is None else x.replace(microsecond=0) for x in ts], pa.timestamp("s")),
        "ts_ms": pa.array(ts, pa.timestamp("ms")),
        "ts_us": pa.array(tsu, pa.timestamp("us")),
        "ts_ns": pa.array(tsu, pa.timestamp("ns")),
        "ts_utc": pa.array(tsu, pa.timestamp("us", tz="UTC")),
        "ts_nyc": pa.array(nyc, pa.timestamp("us", tz="America/New_York")),
        "ts_offset_ns": pa.array([None if x is None else x * 1000 for x in nyc], pa.timestamp("ns", tz="+05:30")),
        "dur_s": pa.array(durs, pa.duration("s")),
        "dur_ms": pa.array(durs, pa.duration("ms")),
        "dur_us": pa.array(durs, pa.duration("us")),
        "dur_ns": pa.array(durs, pa.duration("ns")),
    })


def decimals() -> pa.Table:
    D = decimal.Decimal
    return pa.table({
        "d10_2": pa.array([D("1.50"), D("-12345678.99"), None, D("0.00"), D("0.01")], pa.decimal128(10, 2)),
        "d38_10": pa.array([D("1234567890123456789012345678.0123456789"), D("-0.0000000001"), None,
                            D("9" * 28 + "." + "9" * 10), D("0E-10")], pa.decimal128(38, 10)),
        "d5_0": pa.array([D("12345"), D("-1"), None, D("0"), D("99999")], pa.decimal128(5, 0)),
        "d50_5": pa.array([D("123456789012345678901234567890123456789012345.12345"), D("-1.00001"), None,
                           D("0.00000"), D("-" + "9" * 45 + ".99999")], pa.decimal256(50, 5)),
        "d_neg_scale": pa.array([D("1.2E+3"), None, D("-5E+2"), D("0E+2"), D("9.9E+4")], pa.decimal128(4, -2)),
    })


def nested() -> pa.Table:
    point = pa.struct([("x", pa.int32()), ("label", pa.string())])
    return pa.table({
        "list_i64": pa.array([[1, 2, 3], [], None, [None, 4], [5]], pa.list_(pa.int64())),
        "large_list_str": pa.array([["a"], None, [], ["b", None, "c"], ["dd"]], pa.large_list(pa.string())),
        "fsl_f32": pa.array([[1.0, 2.0, 3.0], None, [0.5, None, -1.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]],
                            pa.list_(pa.float32(), 3)),
        "struct": pa.array([{"x": 1, "label": "a"}, None, {"x": None, "label": None}, {"x": 4, "label": "d"},
                            {"x": 5, "label": ""}], point),
        "list_struct": pa.array([[{"x": 1, "label": "p"}, None], [], None, [{"x": 3, "label": "q"}], None],
                                pa.list_(point)),
        "struct_list": pa.array([{"ids": [1, 2], "name": "n"}, {"ids": None, "name": None}, None,
                                 {"ids": [], "name": "e"}, {"ids": [9], "name": "z"}],
                                pa.struct([("ids", pa.list_(pa.int64())), ("name", pa.string())])),
        "list_list": pa.array([[[1], [2, 3]], [[]], None, [None, [4]], []], pa.list_(pa.list_(pa.int16()))),
        "map": pa.array([[("a", 1), ("b", None)], [], None, [("c", 3)], [("d", 4), ("e", 5), ("f", 6)]],
                        pa.map_(pa.string(), pa.int64())),
        "struct_map": pa.array([{"m": [("k", [1.5])], "n": 1}, None, {"m": None, "n": 2}, {"m": [], "n": 3},
                                {"m": [("z", None), ("y", [])], "n": None}],
                               pa.struct([("m", pa.map_(pa.string(), pa.list_(pa.float64()))), ("n", pa.int8())])),
        "fsl_struct": pa.array([[{"x": 1, "label": "a"}, {"x": 2, "label": "b"}], None,
                                [None, {"x": 3, "label": None}], [{"x": 4, "label": "c"}, {"x": 5, "label": "d"}],
                                [{"x": 6, "label": "e"}, None]], pa.list_(point, 2)),
        "empty_struct": pa.array([{}, None, {}, {}, {}], pa.struct([])),
    })


def dict_array(indices: list[int | None], values: list[Any], index_type: pa.DataType = pa.int32(),
               value_type: pa.DataType = pa.string()) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(indices, index_type), pa.array(values, value_type))


def dictionaries() -> pa.Table:
    offsets = pa.array([0, 2, 2, 3, 5], pa.int32())
    return pa.table({
        "dict_i8": dict_array([0, 1, None, 1, 0, 2], ["red", "green", "blue"], pa.int8()),
        "dict_u16": dict_array([2, 2, 1, None, 0, 0], ["x", "", "zz"], pa.uint16()),
        "dict_i64_int": dict_array([0, None, 1, 1, 0, 1], [10, 20], pa.int64(), pa.int64()),
        "dict_nulls_in_values": dict_array([0, 1, 0, 1, 1, None], [None, "v"]),
        "list_dict": pa.concat_arrays([
            pa.ListArray.from_arrays(offsets, dict_array([0, 1, 1, 0, 0], ["p", "q"], pa.int16())),
            pa.array([None, []], pa.list_(pa.dictionary(pa.int16(), pa.string()))),
        ]),
        "struct_dict": pa.StructArray.from_arrays(
            [dict_array([0, 0, 1, None, 1, 0], ["s", "t"], pa.int8()), pa.array(range(6), pa.int32())],
            names=["d", "i"]),
        "dict_list": dict_array([1, 0, None, 1, 1, 0], [[1, 2], []], pa.int8(), pa.list_(pa.int32())),
    })


def hf_like(rows: int = 40) -> pa.Table:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "text": pa.array([f"sample text number {i} ✓" if i % 7 else None for i in range(rows)], pa.string()),
        "label": pa.array([i % 5 for i in range(rows)], pa.int64()),
        "score": pa.array([i / 3 if i % 11 else None for i in range(rows)], pa.float64()),
        "tokens": pa.array([list(range(i % 9)) if i % 13 else None for i in range(rows)], pa.list_(pa.int64())),
        "meta": pa.array([{"source": f"s{i % 3}", "len": i} for i in range(rows)],
                         pa.struct([("source", pa.string()), ("len", pa.int32())])),
        "image": pa.array([{"bytes": png[: 50 + i], "path": f"img/{i}.png"} if i % 6 else None for i in range(rows)],
                          image),
        "embedding": pa.array([[float(i), i + 0.5] for i in range(rows)], pa.list_(pa.float32(), 2)),
    })
    features = '{"info": {"features": {"text": {"dtype": "string", "_type": "Value"}}}}'
    return table.replace_schema_metadata({"huggingface": features})


def cases() -> list[Case]:
    out: list[Case] = []
    prim, strs, temp, decs, nest, dicts = primitives(), strings(), temporals(), decimals(), nested(), dictionaries()

    out.append(table_case("primitives", prim))
    out.append(table_case("primitives_batches", prim, 2))
    out.append(table_case("primitives_sliced", prim.slice(3, 5)))
    out.append(table_case("primitives_sliced_batches", prim.slice(1, 7), 3))
    out.append(table_case("strings", strs))
    out.append(table_case("strings_copy", strs, 4, opts="[copy: true]"))
    out.append(table_case("strings_sliced", strs.slice(2, 6)))
    out.append(table_case("strings_sliced_large", strs.slice(5, 3), opts="[copy: true]"))
    out.append(table_case("temporal", temp))
    out.append(table_case("temporal_raw", temp, 2, opts="[temporal: :raw]", raw=True))
    out.append(table_case("temporal_sliced", temp.slice(1, 3)))
    out.append(table_case("decimals", decs))
    out.append(table_case("decimals_sliced", decs.slice(2, 2)))
    out.append(table_case("nested", nest))
    out.append(table_case("nested_batches", nest, 2))
    out.append(table_case("nested_sliced", nest.slice(1, 3)))
    out.append(table_case("nested_sliced_tail", nest.slice(3)))
    out.append(table_case("dictionaries", dicts))
    out.append(table_case("dictionaries_sliced", dicts.slice(2, 3)))
    out.append(table_case("hf_like", hf_like(), 16))
    out.append(table_case("hf_like_sliced", hf_like().slice(5, 20), 7, opts="[copy: true]"))
    out.append(table_case("hf_like_big", hf_like(1000), 300))

    # Empty batches: a stream with only a schema, and empty batches between full ones.
    out.append(Case("schema_only", prim.schema, []))
    out.append(Case("empty_batch", prim.schema, [prim.slice(0, 0).to_batches()[0]] if prim.slice(0, 0).to_batches()
                    else [pa.RecordBatch.from_pylist([], prim.schema)]))
    empty = pa.RecordBatch.from_pylist([], schema=nest.schema)
    out.append(Case("empty_between", nest.schema, [empty, *nest.to_batches(max_chunksize=2), empty]))

    # Encapsulation variants.
    out.append(table_case("legacy_format", nest, 3, write={"use_legacy_format": True}))
    out.append(table_case("metadata_v4", prim, 4, write={"metadata_version": pa.ipc.MetadataVersion.V4}))
    out.append(table_case("legacy_dicts", dicts, 4, write={"use_legacy_format": True}))

    # Dictionary replacement and delta batches.
    s = pa.schema([("tag", pa.dictionary(pa.int32(), pa.string())), ("n", pa.int64())])
    b1 = pa.record_batch([dict_array([0, 1, None], ["a", "b"]), pa.array([1, 2, 3])], schema=s)
    b2 = pa.record_batch([dict_array([2, 0, 2], ["a", "b", "c"]), pa.array([4, 5, 6])], schema=s)
    b3 = pa.record_batch([dict_array([3, 3, 1], ["a", "b", "c", "d"]), pa.array([7, 8, 9])], schema=s)
    b4 = pa.record_batch([dict_array([1, 0, None], ["new", "old"]), pa.array([10, 11, 12])], schema=s)
    out.append(Case("dict_deltas", s, [b1, b2, b3], write={"emit_dictionary_deltas": True}))
    out.append(Case("dict_replacement", s, [b1, b2, b4]))
    out.append(Case("dict_deltas_then_replacement", s, [b1, b2, b4, b1], write={"emit_dictionary_deltas": True}))

    # Unsupported features give an :unsupported error.
    out.append(table_case("compressed_lz4", prim, write={"compression": "lz4"}, error=":unsupported"))
    out.append(table_case("compressed_zstd", strs, write={"compression": "zstd"}, error=":unsupported"))
    union = pa.UnionArray.from_sparse(pa.array([0, 1, 0], pa.int8()), [pa.array([1, 2, 3]), pa.array(["a", "b", "c"])])
    out.append(table_case("union", pa.table({"u": union}), error=":unsupported"))
    out.append(table_case("interval", pa.table({"iv": pa.array([pa.MonthDayNano([1, 2, 3])], pa.month_day_nano_interval())}),
                          error=":unsupported"))
    return out


# --------------------------------------------------------------------------


def write_stream(case: Case) -> bytes:
    options = pa.ipc.IpcWriteOptions(**case.write)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, case.schema, options=options) as writer:
        for b in case.batches:
            writer.write_batch(b)
    return sink.getvalue().to_pybytes()


def expected(case: Case) -> str:
    schema = case.schema
    parts = {
        "name": ex_binary(case.name.encode()),
        "opts": case.opts,
        "error": case.error or "nil",
        "fields": "[" + ", ".join(ex_field(f) for f in schema) + "]",
        "metadata": ex_metadata(schema.metadata),
    }
    if case.error is None:
        table = pa.Table.from_batches(case.batches, schema=schema)
        columns = []
        for f, col in zip(schema, table.columns):
            values = ", ".join(lit(v, f.type, case.raw) for v in col.to_pylist())
            columns.append(f"{{{ex_binary(f.name.encode())}, [{values}]}}")
        rows = []
        # Large cases skip the row-wise copy (the Elixir test then checks rows against the columns).
        for row in table.to_pylist() if table.num_rows <= 200 else []:
            rows.append("%{" + ", ".join(
                f"{ex_binary(f.name.encode())} => {lit(row[f.name], f.type, case.raw)}" for f in schema) + "}")
        parts["num_rows"] = str(table.num_rows)
        parts["batch_rows"] = "[" + ", ".join(str(b.num_rows) for b in case.batches) + "]"
        parts["columns"] = "[" + ", ".join(columns) + "]"
        parts["rows"] = "[" + ", ".join(rows) + "]" if table.num_rows <= 200 else "nil"
    return "%{" + ",\n  ".join(f"{k}: {v}" for k, v in parts.items()) + "}\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: arrow_golden.py OUTDIR", file=sys.stderr)
        return 2
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for case in cases():
        (out / f"{case.name}.arrows").write_bytes(write_stream(case))
        (out / f"{case.name}.exs").write_text(expected(case), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
