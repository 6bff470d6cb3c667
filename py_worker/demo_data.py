"""The bundled default dataset that `make run` streams.

A deterministic, HF-style dataset folder laid out as on the Hub: Parquet
shards under `data/` and a `README.md` card whose `configs:` block names the
splits. It is generated on first use (a few seconds) into the cache folder and
reused afterwards. Its shape follows a small web-text corpus: an id, a title,
a body of a few hundred bytes, a class label, a score, tags and a timestamp.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

DEMO_NAME = "hf_bridge_demo"
DEFAULT_ROWS = {"train": 100_000, "test": 10_000}
ROWS_PER_SHARD = 25_000
TOPICS = ["science", "sports", "business", "arts", "technology"]

_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there one all we their can has been if more when "
    "will would who so no data stream river mountain signal market energy music paper model "
    "garden library theory engine harbor season picture network station planet language memory "
    "question history village machine window surface pattern balance measure culture vessel"
).split()

CARD = """---
pretty_name: hf_bridge demo corpus
license: cc0-1.0
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
  - split: test
    path: data/test-*.parquet
---

# hf_bridge demo corpus

A generated web-text-shaped corpus used by `make run`: `id`, `title`,
`text` (a few hundred bytes), `label` (ClassLabel over {topics}), `score`,
`tags` (a list of strings) and `published` (a timestamp). Generated
deterministically by `py_worker.demo_data`.
"""


def default_cache_dir() -> Path:
    """Where the demo dataset lives: `$HF_BRIDGE_CACHE` or `<repo>/.cache`."""
    import os

    env = os.environ.get("HF_BRIDGE_CACHE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / ".cache"


def _sentence(rng: random.Random, n: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(n)]
    return " ".join(words).capitalize() + "."


def _rows(split: str, start: int, count: int) -> dict[str, list]:
    rng = random.Random(f"{split}:{start}")
    base = dt.datetime(2024, 1, 1)
    cols: dict[str, list] = {k: [] for k in ("id", "title", "text", "label", "score", "tags", "published")}
    for i in range(start, start + count):
        cols["id"].append(i)
        cols["title"].append(_sentence(rng, rng.randint(3, 8))[:-1])
        cols["text"].append(" ".join(_sentence(rng, rng.randint(8, 20)) for _ in range(rng.randint(3, 7))))
        cols["label"].append(rng.randrange(len(TOPICS)))
        cols["score"].append(round(rng.random(), 4))
        cols["tags"].append(rng.sample(_WORDS, rng.randint(0, 4)))
        cols["published"].append(base + dt.timedelta(minutes=rng.randrange(525_600)))
    return cols


def build(root: Path, rows: dict[str, int] | None = None) -> Path:
    """Write the demo dataset folder under `root` (idempotent) and return it."""
    import datasets

    rows = rows or DEFAULT_ROWS
    datasets.disable_progress_bars()
    folder = root / DEMO_NAME
    done = folder / ".complete"
    if done.exists():
        return folder
    features = datasets.Features(
        {
            "id": datasets.Value("int64"),
            "title": datasets.Value("string"),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=TOPICS),
            "score": datasets.Value("float32"),
            "tags": datasets.List(datasets.Value("string")),
            "published": datasets.Value("timestamp[ms]"),
        }
    )
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for split, total in rows.items():
        shards = max(1, -(-total // ROWS_PER_SHARD))
        for shard in range(shards):
            start = shard * ROWS_PER_SHARD
            count = min(ROWS_PER_SHARD, total - start)
            table = datasets.Dataset.from_dict(_rows(split, start, count), features=features)
            table.to_parquet(str(folder / "data" / f"{split}-{shard:05d}-of-{shards:05d}.parquet"))
    (folder / "README.md").write_text(CARD.replace("{topics}", ", ".join(TOPICS)))
    done.touch()
    return folder


if __name__ == "__main__":
    print(build(default_cache_dir()))
