"""The benchmark data: a text-heavy corpus shaped like a web-text dataset, cached under bench/data/.

Columns: `id` (string), `text` (~2 KB of Zipf-distributed words), `score`
(float64), `token_count` (int64), `num_lines` (int32), `label_ids`
(list<int32>, 0..8 items). The Parquet shards (snappy, 10,000-row row groups,
as `datasets` writes them) total at least the requested size. From them the
same rows are also written as one Arrow IPC stream file (the in-memory
variant: no Parquet decode), a directory of symlinks that repeats the shards
(for the long-running memory figure) and a handful of single-batch IPC
streams (for the Elixir Arrow reader figure). A `Dataset.save_to_disk` copy of
the same rows (`saved/`, `SAVED_SHARDS` Arrow files) is what the server maps
into memory for the in-memory variant.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / "data"
FORMAT_VERSION = 2
SHARDS = 8
ROW_GROUP_ROWS = 10_000
BATCH_ROWS = 1024
SAVED_SHARDS = 8
MiB = 1024 * 1024

SCHEMA = pa.schema([
    ("id", pa.string()),
    ("text", pa.string()),
    ("score", pa.float64()),
    ("token_count", pa.int64()),
    ("num_lines", pa.int32()),
    ("label_ids", pa.list_(pa.int32())),
])


@dataclass(frozen=True)
class BenchData:
    """Paths and sizes of one cached data set."""

    root: Path
    parquet_dir: Path
    parquet_files: list[Path]
    parquet_bytes: int
    rows: int
    arrow_file: Path
    arrow_bytes: int
    ipc_dir: Path
    saved_dir: Path

    @property
    def parquet_glob(self) -> str:
        """Glob matching every Parquet shard."""
        return str(self.parquet_dir / "*.parquet")

    @property
    def arrow_glob(self) -> str:
        """Glob matching the Arrow IPC stream file."""
        return str(self.arrow_file)

    def loop_dir(self, min_bytes: int) -> tuple[str, int]:
        """A directory of symlinks repeating the shards until their Arrow size reaches `min_bytes`.

        Returns (glob, number of passes over the data).
        """
        per_pass = max(self.arrow_bytes, 1)
        passes = max(1, -(-min_bytes // per_pass))
        d = self.root / f"loop_{passes}"
        if not d.exists() or len(list(d.glob("*.parquet"))) != passes * len(self.parquet_files):
            d.mkdir(parents=True, exist_ok=True)
            for old in d.glob("*.parquet"):
                old.unlink()
            for p in range(passes):
                for f in self.parquet_files:
                    (d / f"pass{p:03d}-{f.name}").symlink_to(f)
        return str(d / "*.parquet"), passes


class _TextMaker:
    """Fast pseudo-natural text: words from a fixed vocabulary drawn with a Zipf law."""

    def __init__(self, rng: np.random.Generator, vocab_size: int = 40_000) -> None:
        letters = np.frombuffer(b"etaoinshrdlcumwfgypbvkjxqz", dtype=np.uint8)
        weights = np.linspace(2.0, 0.1, len(letters))
        weights /= weights.sum()
        lengths = np.clip(rng.poisson(5.0, vocab_size), 1, 14)
        words = []
        for n in lengths:
            words.append(bytes(rng.choice(letters, size=n, p=weights)) + b" ")
        self.words = np.array(words, dtype=object)
        ranks = np.arange(1, vocab_size + 1, dtype=np.float64)
        p = 1.0 / ranks ** 1.05
        self.cdf = np.cumsum(p / p.sum())
        self.rng = rng
        self.mean_word = float(np.dot(p / p.sum(), [len(w) for w in words]))

    def texts(self, n: int, mean_bytes: int = 2048) -> list[str]:
        """`n` texts of about `mean_bytes` ASCII bytes each."""
        counts = np.maximum(20, self.rng.normal(mean_bytes / self.mean_word, 60.0, n).astype(np.int64))
        idx = np.searchsorted(self.cdf, self.rng.random(int(counts.sum())))
        idx = np.minimum(idx, len(self.words) - 1)
        chunks = self.words[idx]
        out = []
        pos = 0
        for c in counts:
            row = chunks[pos:pos + c]
            pos += c
            out.append(b"".join(row).decode("ascii"))
        return out


def _table(maker: _TextMaker, rng: np.random.Generator, start: int, n: int) -> pa.Table:
    texts = maker.texts(n)
    lens = rng.integers(0, 9, n)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    values = rng.integers(0, 5000, int(lens.sum()), dtype=np.int32)
    token_counts = np.array([t.count(" ") for t in texts], dtype=np.int64)
    return pa.table({
        "id": pa.array([f"doc-{i:012d}" for i in range(start, start + n)], pa.string()),
        "text": pa.array(texts, pa.string()),
        "score": pa.array(rng.random(n), pa.float64()),
        "token_count": pa.array(token_counts, pa.int64()),
        "num_lines": pa.array((token_counts // 12 + 1).astype(np.int32), pa.int32()),
        "label_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int32())),
    }, schema=SCHEMA)


def _write_parquet(table: pa.Table, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS, compression="snappy")
    os.replace(tmp, path)


def _meta_path(root: Path) -> Path:
    return root / "meta.json"


def ensure(size_mb: int, log=print) -> BenchData:
    """Build (or reuse) the data set of at least `size_mb` MiB of Parquet under bench/data/web-<size>mb."""
    root = DATA_DIR / f"web-{size_mb}mb"
    meta = _meta_path(root)
    if meta.exists():
        m = json.loads(meta.read_text())
        if m.get("version") == FORMAT_VERSION:
            ensure_saved(root / "all.arrows", root / "saved", log)
            return _from_meta(root, m)
    root.mkdir(parents=True, exist_ok=True)
    pdir = root / "parquet"
    pdir.mkdir(exist_ok=True)
    for old in pdir.glob("*"):
        old.unlink()
    t0 = time.perf_counter()
    rng = np.random.default_rng(20240601 + size_mb)
    maker = _TextMaker(rng)
    pilot = _table(maker, rng, 0, 2000)
    sink = pa.BufferOutputStream()
    pq.write_table(pilot, sink, row_group_size=ROW_GROUP_ROWS, compression="snappy")
    per_row = sink.getvalue().size / 2000
    target = size_mb * MiB
    # 3% margin: the pilot's estimate is a little low, and a ninth small shard would
    # make the four-session figure uneven.
    rows_per_shard = max(1000, int(target / per_row / SHARDS * 1.03) + 1)
    files: list[Path] = []
    total = 0
    start = 0
    while total < target or len(files) < SHARDS:
        path = pdir / f"train-{len(files):05d}.parquet"
        chunk = min(rows_per_shard, 50_000)
        parts = []
        made = 0
        while made < rows_per_shard:
            k = min(chunk, rows_per_shard - made)
            parts.append(_table(maker, rng, start + made, k))
            made += k
        _write_parquet(pa.concat_tables(parts), path)
        start += rows_per_shard
        files.append(path)
        total += path.stat().st_size
        log(f"  data: wrote {path.name} ({path.stat().st_size / MiB:.1f} MiB, {total / MiB:.0f}/{size_mb} MiB)")
    arrow_file = root / "all.arrows"
    tmp = arrow_file.with_suffix(".tmp")
    with pa.OSFile(str(tmp), "wb") as sink_f, pa.ipc.new_stream(sink_f, SCHEMA) as w:
        for f in files:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=BATCH_ROWS):
                w.write_batch(batch)
    os.replace(tmp, arrow_file)
    ipc_dir = root / "ipc"
    ipc_dir.mkdir(exist_ok=True)
    for i, batch in enumerate(pq.ParquetFile(files[0]).iter_batches(batch_size=BATCH_ROWS)):
        if i >= 16:
            break
        s = pa.BufferOutputStream()
        with pa.ipc.new_stream(s, SCHEMA) as w:
            w.write_batch(batch)
        (ipc_dir / f"batch-{i:03d}.arrows").write_bytes(s.getvalue().to_pybytes())
    ensure_saved(arrow_file, root / "saved", log, rebuild=True)
    m = {"version": FORMAT_VERSION, "rows": start, "files": [f.name for f in files],
         "parquet_bytes": total, "arrow_bytes": arrow_file.stat().st_size}
    meta.write_text(json.dumps(m))
    log(f"  data: {start} rows, {total / MiB:.0f} MiB Parquet, {m['arrow_bytes'] / MiB:.0f} MiB Arrow "
        f"in {time.perf_counter() - t0:.0f} s")
    return _from_meta(root, m)


def _from_meta(root: Path, m: dict) -> BenchData:
    pdir = root / "parquet"
    return BenchData(
        root=root,
        parquet_dir=pdir,
        parquet_files=[pdir / n for n in m["files"]],
        parquet_bytes=int(m["parquet_bytes"]),
        rows=int(m["rows"]),
        arrow_file=root / "all.arrows",
        arrow_bytes=int(m["arrow_bytes"]),
        ipc_dir=root / "ipc",
        saved_dir=root / "saved",
    )


def ensure_saved(arrow_file: Path, saved_dir: Path, log=print, rebuild: bool = False) -> Path:
    """Build (or reuse, unless `rebuild`) `saved_dir`: the rows of `arrow_file` written by `Dataset.save_to_disk`.

    Written under a temporary name and renamed when complete, so an
    interrupted build is never taken for a whole one.
    """
    if not rebuild and (saved_dir / "state.json").is_file():
        return saved_dir
    import shutil

    import datasets

    t0 = time.perf_counter()
    tmp = saved_dir.with_name(saved_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    datasets.disable_progress_bars()
    ds = datasets.Dataset.from_file(str(arrow_file), in_memory=False)
    shards = min(SAVED_SHARDS, max(1, len(ds)))
    ds.save_to_disk(str(tmp), num_shards=shards)
    shutil.rmtree(saved_dir, ignore_errors=True)
    os.replace(tmp, saved_dir)
    log(f"  data: wrote {saved_dir.name}/ ({len(ds)} rows, save_to_disk in {shards} shards) "
        f"in {time.perf_counter() - t0:.0f} s")
    return saved_dir


def warm(paths: list[Path]) -> None:
    """Read files once so later figures see them in the page cache."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(16 * MiB):
                pass
