"""Names of everything an export puts at its destination.

An unsharded export::

    part-00000.parquet  part-00001.parquet  ...   data files, published when closed
    _checkpoint.json                               resume point (removed when done)
    _manifest.json                                 written last: the export is complete
    _tmp/                                          files being written (never read these)

Shard `i` of a job split into `n` shards (`DatasetSpec.num_shards > 1`)::

    part-s0000i-00000.parquet ...
    _checkpoint-s0000i.json
    _shards/manifest-s0000i.json                   this shard is complete
    _manifest.json                                 every shard is complete (merged)

Readers should list the files of `_manifest.json` rather than glob the
directory; every name starting with `_` or `.` is bookkeeping, which pyarrow,
DuckDB and Polars globs of `*.parquet` skip as well.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MANIFEST = "_manifest.json"
TMP_DIR = "_tmp"
SHARDS_DIR = "_shards"

_PART_RE = re.compile(r"^part-(?:s(\d{5})-)?(\d{5})\.parquet$")
_SHARD_MANIFEST_RE = re.compile(r"^_shards/manifest-s(\d{5})\.json$")
_CHECKPOINT_RE = re.compile(r"^_checkpoint(?:-s(\d{5}))?\.json$")


@dataclass(frozen=True)
class Layout:
    """File names for one export job: `shard` is None for an unsharded export."""

    shard: int | None = None

    @property
    def prefix(self) -> str:
        """Prefix of this job's data files."""
        return "part-" if self.shard is None else f"part-s{self.shard:05d}-"

    def part(self, index: int) -> str:
        """Final name of data file number `index`."""
        return f"{self.prefix}{index:05d}.parquet"

    def tmp(self, name: str) -> str:
        """Temporary name under which `name` is written."""
        return f"{TMP_DIR}/{name}"

    @property
    def checkpoint(self) -> str:
        """Name of this job's checkpoint."""
        return "_checkpoint.json" if self.shard is None else f"_checkpoint-s{self.shard:05d}.json"

    @property
    def manifest(self) -> str:
        """Name of the manifest this job publishes when it finishes."""
        return MANIFEST if self.shard is None else shard_manifest(self.shard)

    def owns(self, name: str) -> bool:
        """True for entries this job writes (its data files, temporaries, checkpoint, manifest)."""
        if name == self.checkpoint or name == self.manifest:
            return True
        if name.startswith(TMP_DIR + "/"):
            name = name[len(TMP_DIR) + 1 :]
        return is_part(name) and part_shard(name) == self.shard


def shard_manifest(shard: int) -> str:
    """Name of the manifest of shard `shard`."""
    return f"{SHARDS_DIR}/manifest-s{shard:05d}.json"


def is_part(name: str) -> bool:
    """True for a data file name (`part-00000.parquet` or `part-s00001-00000.parquet`)."""
    return _PART_RE.match(name) is not None


def part_shard(name: str) -> int | None:
    """The shard index in a data file name, None when it has none."""
    m = _PART_RE.match(name)
    if m is None or m.group(1) is None:
        return None
    return int(m.group(1))


def shard_of_manifest(name: str) -> int | None:
    """The shard index of a shard manifest name, or None for any other name."""
    m = _SHARD_MANIFEST_RE.match(name)
    return int(m.group(1)) if m else None


def is_export_entry(name: str) -> bool:
    """True for any name an export writes; anything else at a destination is foreign."""
    if name == MANIFEST or is_part(name) or _CHECKPOINT_RE.match(name) or shard_of_manifest(name) is not None:
        return True
    return name.startswith(TMP_DIR + "/")
