"""Generators of on-disk HuggingFace-style datasets for tests (importable by any test module).

Everything is deterministic (seeded) and small. Files carry the `huggingface`
schema metadata that `datasets` writes, so features such as ClassLabel, Image
and Audio survive the round trip.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import struct
import wave
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

LABELS = ["neg", "neu", "pos"]


def _png(i: int) -> bytes:
    """A tiny valid 1x1 PNG whose pixel value depends on `i` (built by hand, no Pillow)."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"\x00" + bytes([i % 256, (i * 7) % 256, (i * 13) % 256])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _wav(i: int, frames: int = 32) -> bytes:
    """A tiny mono 16-bit PCM WAV file."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", int(1000 * math.sin((i + k) / 3))) for k in range(frames)))
    return buf.getvalue()


def rich_features():
    """HF Features covering the primitives and composite types the bridge must carry."""
    from datasets import Audio, ClassLabel, Features, Image, List, Value

    return Features({
        "id": Value("int64"),
        "b": Value("bool"),
        "i8": Value("int8"),
        "i16": Value("int16"),
        "i32": Value("int32"),
        "u8": Value("uint8"),
        "u16": Value("uint16"),
        "u32": Value("uint32"),
        "u64": Value("uint64"),
        "f16": Value("float16"),
        "f32": Value("float32"),
        "f64": Value("float64"),
        "s": Value("string"),
        "ls": Value("large_string"),
        "bin": Value("binary"),
        "lbin": Value("large_binary"),
        "ts_s": Value("timestamp[s]"),
        "ts_ms": Value("timestamp[ms]"),
        "ts_us_tz": Value("timestamp[us, tz=UTC]"),
        "ts_ns": Value("timestamp[ns]"),
        "d32": Value("date32"),
        "d64": Value("date64"),
        "t64": Value("time64[us]"),
        "dur": Value("duration[ms]"),
        "label": ClassLabel(names=LABELS),
        "tags": List(Value("string")),
        "matrix": List(List(Value("int32"))),
        "fixed": List(Value("float32"), length=3),
        "nested": {"name": Value("string"), "inner": {"x": Value("int64"), "ys": List(Value("float64"))}},
        "records": List({"k": Value("string"), "v": Value("int32")}),
        "maybe": Value("int64"),
        "img": Image(),
        "audio": Audio(),
    })


def rich_rows(n: int, start: int = 0) -> dict[str, list]:
    """`n` rows of `rich_features()` data as columns (every 5th row has nulls where allowed)."""
    base = dt.datetime(2024, 1, 1, 12, 0, 0)
    cols: dict[str, list] = {k: [] for k in rich_features()}
    for j in range(start, start + n):
        null = j % 5 == 4
        cols["id"].append(j)
        cols["b"].append(None if null else j % 2 == 0)
        cols["i8"].append((j % 200) - 100)
        cols["i16"].append(j * 3 - 1000)
        cols["i32"].append(None if null else j * 1000 - 7)
        cols["u8"].append(j % 256)
        cols["u16"].append(j % 65536)
        cols["u32"].append(j * 12345 % 2**32)
        cols["u64"].append(2**63 + j)
        cols["f16"].append(float(j % 64) / 4)
        cols["f32"].append(j / 8)
        cols["f64"].append(None if null else j * 1.5e-3)
        cols["s"].append(None if null else f"row {j} ünïcødé ✓")
        cols["ls"].append("x" * (j % 17))
        cols["bin"].append(bytes([j % 256]) * (j % 9))
        cols["lbin"].append(None if null else b"\x00\xff" * (j % 4))
        cols["ts_s"].append(base + dt.timedelta(seconds=j))
        cols["ts_ms"].append(base + dt.timedelta(milliseconds=j * 7))
        cols["ts_us_tz"].append((base + dt.timedelta(microseconds=j * 11)).replace(tzinfo=dt.timezone.utc))
        cols["ts_ns"].append(None if null else base + dt.timedelta(microseconds=j))
        cols["d32"].append(dt.date(2020, 1, 1) + dt.timedelta(days=j))
        cols["d64"].append(dt.date(1999, 12, 31) + dt.timedelta(days=j))
        cols["t64"].append(dt.time(j % 24, j % 60, j % 60, j % 1000))
        cols["dur"].append(dt.timedelta(milliseconds=j * 3))
        cols["label"].append(None if null else j % len(LABELS))
        cols["tags"].append(None if null else [f"t{k}" for k in range(j % 4)])
        cols["matrix"].append([[j, k] for k in range(j % 3)])
        cols["fixed"].append([j, j + 0.5, -j])
        cols["nested"].append({"name": f"n{j}", "inner": {"x": j * 2, "ys": [j / 2] * (j % 3)}})
        cols["records"].append([{"k": f"k{k}", "v": k * j} for k in range(j % 3)])
        cols["maybe"].append(None if j % 3 else j)
        cols["img"].append({"bytes": _png(j), "path": None})
        cols["audio"].append(None if null else {"bytes": _wav(j), "path": None})
    return cols


def rich_table(n: int, start: int = 0) -> pa.Table:
    """`rich_rows` as an Arrow table whose schema carries the HF features metadata."""
    return pa.Table.from_pydict(rich_rows(n, start), schema=rich_features().arrow_schema)


def write_parquet_shards(folder: Path, table: pa.Table, shards: int, prefix: str = "part",
                         row_group_size: int | None = None) -> list[Path]:
    """Split `table` into `shards` contiguous Parquet files `prefix-0000i.parquet`."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    per = math.ceil(table.num_rows / shards)
    for i in range(shards):
        path = folder / f"{prefix}-{i:05d}.parquet"
        pq.write_table(table.slice(i * per, per), path, row_group_size=row_group_size)
        out.append(path)
    return out


def write_arrow_shards(folder: Path, table: pa.Table, shards: int, prefix: str = "part") -> list[Path]:
    """Arrow IPC stream files (the format the `arrow` builder reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    per = math.ceil(table.num_rows / shards)
    out = []
    for i in range(shards):
        path = folder / f"{prefix}-{i:05d}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table.slice(i * per, per), max_chunksize=17)
        out.append(path)
    return out


def simple_table(n: int, start: int = 0) -> pa.Table:
    """id (int64), text (string), score (float64), label (int64 0..2), lang (string) — JSON/CSV friendly."""
    ids = list(range(start, start + n))
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "text": [f"text number {i}" for i in ids],
        "score": [round((i * 37 % 100) / 10, 1) for i in ids],
        "label": [i % 3 for i in ids],
        "lang": [("en", "fr", "de")[i % 3 * (i % 2)] for i in ids],
    })


def write_jsonl_shards(folder: Path, table: pa.Table, shards: int, prefix: str = "part") -> list[Path]:
    """JSON lines shards of `table`."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = table.to_pylist()
    per = math.ceil(len(rows) / shards)
    out = []
    for i in range(shards):
        path = folder / f"{prefix}-{i:05d}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for r in rows[i * per:(i + 1) * per]:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        out.append(path)
    return out


def write_csv_shards(folder: Path, table: pa.Table, shards: int, prefix: str = "part") -> list[Path]:
    """CSV shards of `table` (header in each file)."""
    import pyarrow.csv as pacsv

    folder.mkdir(parents=True, exist_ok=True)
    per = math.ceil(table.num_rows / shards)
    out = []
    for i in range(shards):
        path = folder / f"{prefix}-{i:05d}.csv"
        pacsv.write_csv(table.slice(i * per, per), path)
        out.append(path)
    return out


HUB_README = """---
configs:
- config_name: small
  data_files:
  - split: train
    path: small/train-*.parquet
  - split: test
    path: small/test-*.parquet
  default: true
- config_name: large
  data_files:
  - split: train
    path: large/train-*.parquet
---
# Test dataset

A dataset laid out as on the Hub, with two configurations.
"""


def write_hub_folder(folder: Path) -> Path:
    """A Hub-layout folder: README.md card with two configs, `small` (train+test) and `large` (train)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(HUB_README, encoding="utf-8")
    write_parquet_shards(folder / "small", simple_table(60), 2, prefix="train")
    write_parquet_shards(folder / "small", simple_table(20, start=1000), 1, prefix="test")
    write_parquet_shards(folder / "large", simple_table(300, start=5000), 3, prefix="train", row_group_size=40)
    return folder


def write_script_folder(folder: Path) -> Path:
    """A folder holding a dataset loading script (needs remote code, never run)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{folder.name}.py").write_text("raise SystemExit('dataset code must never run')\n")
    return folder


def package_csv(name: str = "seattle-weather.csv") -> Path | None:
    """A real CSV shipped inside the `vega_datasets` PyPI package, or None when it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("vega_datasets")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "_data" / name
    return path if path.exists() else None


def build_all(root: Path) -> dict[str, Any]:
    """Build every test dataset under `root`; returns a dict of their paths (relative to root)."""
    root.mkdir(parents=True, exist_ok=True)
    write_parquet_shards(root / "rich", rich_table(120), 3, row_group_size=25)
    write_arrow_shards(root / "rich_arrow", rich_table(50), 2)
    write_parquet_shards(root / "simple_pq", simple_table(500), 4, row_group_size=60)
    write_jsonl_shards(root / "simple_json", simple_table(200), 2)
    write_csv_shards(root / "simple_csv", simple_table(150), 3)
    write_hub_folder(root / "hubds")
    write_script_folder(root / "scripted")
    real = package_csv()
    if real is not None:
        (root / "real").mkdir(exist_ok=True)
        (root / "real" / real.name).write_bytes(real.read_bytes())
    return {
        "rich": "rich/*.parquet",
        "rich_arrow": "rich_arrow/*.arrow",
        "parquet": "simple_pq/*.parquet",
        "json": "simple_json/*.jsonl",
        "csv": "simple_csv/*.csv",
        "hub": "hubds",
        "script": "scripted",
        "real": "real/seattle-weather.csv" if real is not None else None,
    }
