"""Print the rows `datasets` yields in-process for a dataset spec, as an Elixir term.

The round-trip truth of the Elixir end-to-end tests: whatever the bridge
delivers must equal, row for row, what this script reads with `datasets`
directly (no hf_bridge code involved) for the same spec.

Usage::

    python tests/golden/e2e_rows.py --spec '{"path": "parquet", "data_files": [...], ...}'
    echo '{...}' | python tests/golden/e2e_rows.py --spec -

The spec is JSON with the field names of the proto `DatasetSpec` (path,
config, split, revision, data_files, columns, filters, shuffle, seed,
shuffle_buffer, num_shards, shard_index, skip, take). `filters` may be in the
proto shape (`[{"all": [{"column", "op", "value": {"int_value": 1}}]}]`) or
as plain DNF (`[[{"column", "op", "value"}]]`).

The pipeline is the documented one: select columns, shard, shuffle, skip,
take; filters go to the Parquet reader. Rows are read in Arrow format
(undecoded features, as the bridge serves them) and printed as an Elixir
list of maps with string keys that `Code.eval_string/1` reads:

- str -> "..." (escaped), bytes -> <<...>>, None -> nil, bool/int as is
- float -> float literal, or :nan / :infinity / :neg_infinity
- dict -> %{"k" => v}, list -> [...]
- timestamp without zone -> {:naive_datetime, microseconds since the epoch}
- timestamp with zone -> {:datetime, microseconds since the epoch (UTC)}
- date -> {:date, "YYYY-MM-DD"}, time -> {:time, "HH:MM:SS[.ffffff]"}
- decimal -> {:decimal, "text"}
"""

from __future__ import annotations

import argparse
import datetime as dt
import decimal
import json
import math
import os
import sys
from typing import Any

DEFAULT_SHUFFLE_BUFFER = 1000
_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _scalar(value: Any) -> Any:
    """A filter value from the proto-map shape ({"int_value": 1}) or as is."""
    if isinstance(value, dict):
        for key in ("int_value", "float_value", "string_value", "bool_value"):
            if value.get(key) is not None:
                return value[key]
        raise ValueError(f"empty filter scalar {value!r}")
    return value


def filters_dnf(filters: list) -> list[list[tuple]]:
    """Filters as pyarrow DNF from either accepted JSON shape."""
    dnf = []
    for clause in filters:
        terms = clause["all"] if isinstance(clause, dict) else clause
        out = []
        for term in terms:
            op = term["op"]
            if op in ("in", "not in"):
                raw = term.get("values") or term.get("value")
                value: Any = [_scalar(v) for v in raw]
            else:
                value = _scalar(term["value"])
            out.append((term["column"], op, value))
        dnf.append(out)
    return dnf


def load(spec: dict) -> Any:
    """The streaming IterableDataset for `spec`, built with `datasets` alone."""
    import datasets

    data_files = {(d.get("split") or "train"): list(d["patterns"]) for d in spec.get("data_files") or []}
    kwargs: dict[str, Any] = {}
    if spec.get("filters"):
        kwargs["filters"] = filters_dnf(spec["filters"])
    ds = datasets.load_dataset(
        spec["path"],
        name=spec.get("config") or None,
        data_files=data_files or None,
        revision=spec.get("revision") or None,
        split=spec.get("split") or "train",
        streaming=True,
        **kwargs,
    )
    if ds.features is None:
        ds = ds._resolve_features()
    if spec.get("columns"):
        ds = ds.select_columns(list(spec["columns"]))
    num_shards = int(spec.get("num_shards") or 0)
    if num_shards:
        if num_shards > ds.num_shards:
            ds = ds.reshard()
        ds = ds.shard(num_shards=num_shards, index=int(spec.get("shard_index") or 0))
    if spec.get("shuffle"):
        ds = ds.shuffle(seed=int(spec.get("seed") or 0), buffer_size=int(spec.get("shuffle_buffer") or 0) or DEFAULT_SHUFFLE_BUFFER)
    if spec.get("skip"):
        ds = ds.skip(int(spec["skip"]))
    if spec.get("take") is not None:
        ds = ds.take(int(spec["take"]))
    return ds


def rows(spec: dict, batch_size: int = 1000) -> list[dict]:
    """Every row of `spec` as Python values of the Arrow columns (undecoded features)."""
    out: list[dict] = []
    for table in load(spec).with_format("arrow").iter(batch_size=batch_size):
        out.extend(table.to_pylist())
    return out


def _string(text: str) -> str:
    parts = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\#':
            parts.append("\\" + ch)
        elif 32 <= code < 127:
            parts.append(ch)
        else:
            parts.append("\\u{%X}" % code)
    parts.append('"')
    return "".join(parts)


def _float(value: float) -> str:
    if math.isnan(value):
        return ":nan"
    if math.isinf(value):
        return ":infinity" if value > 0 else ":neg_infinity"
    text = repr(value)
    mantissa, sep, exponent = text.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return mantissa + (("e" + exponent) if sep else "")


def to_elixir(value: Any) -> str:
    """`value` as Elixir source text (see the module docstring for the mapping)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "<<" + ", ".join(str(b) for b in bytes(value)) + ">>"
    if isinstance(value, dict):
        return "%{" + ", ".join(f"{_string(str(k))} => {to_elixir(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(to_elixir(v) for v in value) + "]"
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return "{:naive_datetime, %d}" % ((value - _EPOCH) // dt.timedelta(microseconds=1))
        return "{:datetime, %d}" % ((value - _EPOCH_UTC) // dt.timedelta(microseconds=1))
    if isinstance(value, dt.date):
        return "{:date, %s}" % _string(value.isoformat())
    if isinstance(value, dt.time):
        return "{:time, %s}" % _string(value.isoformat())
    if isinstance(value, decimal.Decimal):
        return "{:decimal, %s}" % _string(str(value))
    raise TypeError(f"no Elixir form for {type(value).__name__}: {value!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", required=True, help="the DatasetSpec as JSON, or - to read it from stdin")
    parser.add_argument("--batch-size", type=int, default=1000, help="rows per Arrow batch while reading")
    args = parser.parse_args(argv)
    text = sys.stdin.read() if args.spec == "-" else args.spec
    spec = json.loads(text)
    sys.stdout.write(to_elixir(rows(spec, args.batch_size)))
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    try:
        code = main()
    except Exception as exc:  # reported, then a hard exit (see the shutdown trap in ARCHITECTURE.md)
        sys.stderr.write(f"e2e_rows: {type(exc).__name__}: {exc}\n")
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
