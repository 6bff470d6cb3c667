"""Options of an export job: a validated, immutable dataclass with documented defaults.

Defaults (chosen for scan-friendly Parquet that every reader handles well):

- `max_file_bytes` 256 MiB: a file is closed at the first input batch
  boundary where its size (counting buffered rows at the file's compression
  ratio so far) reaches this, then the next `part-NNNNN.parquet` is started.
  It is a target, not a hard cap: a file may overshoot by about one batch.
- `row_group_rows` 100,000 and `row_group_bytes` 128 MiB: a row group is cut
  when either is reached (`row_group_bytes` counts uncompressed Arrow bytes),
  which keeps row groups large enough for fast scans and small enough for
  readers to hold one in memory.
- `compression` zstd at its default level; the page index and page checksums
  are always written.
- `batch_size` 1,000 rows per read from the dataset iterator.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from py_worker.errors import InvalidArgument

MiB = 1024 * 1024

DEFAULT_MAX_FILE_BYTES = 256 * MiB
DEFAULT_ROW_GROUP_ROWS = 100_000
DEFAULT_ROW_GROUP_BYTES = 128 * MiB
DEFAULT_BATCH_SIZE = 1_000
DEFAULT_COMPRESSION = "zstd"

COMPRESSIONS = ("zstd", "snappy", "gzip", "lz4", "brotli", "none")

# Bounds that reject nonsense early, with a message naming the limit.
MIN_MAX_FILE_BYTES = 1024
MAX_BATCH_SIZE = 1_000_000
MAX_ROW_GROUP_ROWS = 64 * 1024 * 1024


@dataclass(frozen=True)
class ExportOptions:
    """How an export writes its files. Construct with keywords; invalid values raise InvalidArgument."""

    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS
    row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES
    compression: str = DEFAULT_COMPRESSION
    compression_level: int | None = None
    content_defined_chunking: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE
    overwrite: bool = False
    resume: bool = False
    job_id: str = ""

    def __post_init__(self) -> None:
        comp = (self.compression or DEFAULT_COMPRESSION).strip().lower()
        if comp == "uncompressed":
            comp = "none"
        object.__setattr__(self, "compression", comp)
        if comp not in COMPRESSIONS:
            raise InvalidArgument(
                f"compression '{self.compression}' is not supported; use one of {', '.join(COMPRESSIONS)}"
            )
        _int_at_least("max_file_bytes", self.max_file_bytes, MIN_MAX_FILE_BYTES)
        _int_at_least("row_group_rows", self.row_group_rows, 1, MAX_ROW_GROUP_ROWS)
        _int_at_least("row_group_bytes", self.row_group_bytes, 1024)
        _int_at_least("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        if self.compression_level is not None:
            if comp in ("none", "snappy", "lz4"):
                raise InvalidArgument(f"compression '{comp}' takes no compression level")
            if not isinstance(self.compression_level, int) or isinstance(self.compression_level, bool):
                raise InvalidArgument("compression_level must be an integer")
        if self.content_defined_chunking and _pyarrow_major() < 21:
            raise InvalidArgument("content-defined chunking needs pyarrow 21 or newer on the server")
        if self.overwrite and self.resume:
            raise InvalidArgument("overwrite and resume exclude each other: resume continues an export, overwrite replaces it")
        if self.job_id and (len(self.job_id) > 128 or not all(c.isalnum() or c in "-_." for c in self.job_id)):
            raise InvalidArgument("job_id must be at most 128 characters of letters, digits, '-', '_' or '.'")

    @classmethod
    def from_request(cls, request: Any) -> "ExportOptions":
        """Options from a `pb.ExportRequest`; zero / empty fields take the defaults."""
        return cls(
            max_file_bytes=int(request.max_file_bytes) or DEFAULT_MAX_FILE_BYTES,
            row_group_rows=int(request.row_group_rows) or DEFAULT_ROW_GROUP_ROWS,
            compression=request.compression or DEFAULT_COMPRESSION,
            content_defined_chunking=bool(request.content_defined_chunking),
            batch_size=int(request.batch_size) or DEFAULT_BATCH_SIZE,
            overwrite=bool(request.overwrite),
            resume=bool(request.resume),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of every option."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExportOptions":
        """Inverse of `to_dict` (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def content_options(self) -> dict[str, Any]:
        """The options that decide the bytes of the files (compared when resuming)."""
        return {
            "max_file_bytes": self.max_file_bytes,
            "row_group_rows": self.row_group_rows,
            "row_group_bytes": self.row_group_bytes,
            "compression": self.compression,
            "compression_level": self.compression_level,
            "content_defined_chunking": self.content_defined_chunking,
            "batch_size": self.batch_size,
        }

    def parquet_writer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `pyarrow.parquet.ParquetWriter`.

        Nothing time-dependent goes into a file, so the same rows with the
        same options always give byte-identical files.
        """
        kwargs: dict[str, Any] = {
            "compression": self.compression,
            "write_page_index": True,
            "write_page_checksum": True,
            "write_statistics": True,
            "store_schema": True,
        }
        if self.compression_level is not None:
            kwargs["compression_level"] = self.compression_level
        if self.content_defined_chunking:
            kwargs["use_content_defined_chunking"] = True
        return kwargs


def _int_at_least(name: str, value: Any, low: int, high: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise InvalidArgument(f"{name} must be at least {low}, got {value}")
    if high is not None and value > high:
        raise InvalidArgument(f"{name} must be at most {high}, got {value}")


def _pyarrow_major() -> int:
    import pyarrow

    try:
        return int(pyarrow.__version__.split(".", 1)[0])
    except ValueError:  # pragma: no cover - unusual version strings
        return 0
