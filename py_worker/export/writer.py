"""Rolling Parquet writer: Arrow tables in, size-bounded Parquet files out.

Row groups are cut when `row_group_rows` rows or `row_group_bytes`
uncompressed bytes are buffered. After each input table the current file is
closed when its size — bytes written plus the rows still buffered, estimated
at the file's compression ratio so far — has reached `max_file_bytes`, so
files always end at an input batch boundary: the point where the dataset
iterator's state is taken. Every decision depends only on the rows of the
current file, which is what makes a resumed export write the same files as
an uninterrupted one.

Each file is written under `_tmp/` while its bytes stream through a SHA-256,
then published under its final name by the destination.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from py_worker.errors import FailedPrecondition
from py_worker.export.destination import Destination
from py_worker.export.layout import Layout
from py_worker.export.options import ExportOptions


@dataclass(frozen=True)
class FileRecord:
    """A published data file."""

    path: str
    rows: int
    bytes: int
    sha256: str
    row_groups: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FileRecord":
        """Inverse of `to_dict`."""
        return cls(
            path=str(data["path"]),
            rows=int(data["rows"]),
            bytes=int(data["bytes"]),
            sha256=str(data["sha256"]),
            row_groups=int(data.get("row_groups", 0)),
        )


class HashingSink:
    """A write-only file object that forwards to a pyarrow stream and hashes what passes."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._sha = hashlib.sha256()
        self._pos = 0
        self.closed = False

    def write(self, data: Any) -> int:
        """Write `data` (bytes-like); returns its length."""
        view = memoryview(data)
        self._stream.write(view)
        self._sha.update(view)
        self._pos += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        """Bytes written so far."""
        return self._pos

    def flush(self) -> None:
        """Nothing is buffered here; the underlying stream buffers."""

    def writable(self) -> bool:
        """Always True."""
        return True

    def seekable(self) -> bool:
        """Always False: Parquet is written front to back."""
        return False

    def readable(self) -> bool:
        """Always False."""
        return False

    def close(self) -> None:
        """Close the underlying stream (for S3 this completes the upload)."""
        if not self.closed:
            self.closed = True
            self._stream.close()

    def hexdigest(self) -> str:
        """SHA-256 of everything written."""
        return self._sha.hexdigest()


class RollingParquetWriter:
    """Write Arrow tables into `part-NNNNN.parquet` files at a destination, rolling by size."""

    def __init__(
        self,
        dest: Destination,
        layout: Layout,
        schema: pa.Schema,
        options: ExportOptions,
        first_index: int = 0,
    ) -> None:
        self.dest = dest
        self.layout = layout
        self.schema = schema
        self.options = options
        self.next_index = first_index
        self._kwargs = options.parquet_writer_kwargs()
        self._sink: HashingSink | None = None
        self._writer: pq.ParquetWriter | None = None
        self._name = ""
        self._rows_in_file = 0
        self._row_groups = 0
        self._flushed_nbytes = 0
        self._buffer: list[pa.Table] = []
        self._buffer_rows = 0
        self._buffer_bytes = 0
        self.files: list[FileRecord] = []

    @property
    def current_file_bytes(self) -> int:
        """Bytes of the file being written (0 when none is open)."""
        return self._sink.tell() if self._sink is not None else 0

    def write(self, table: pa.Table | pa.RecordBatch) -> list[FileRecord]:
        """Append one input batch; returns the files closed and published because of it."""
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        table = self._conform(table)
        if table.num_rows == 0:
            return []
        self._buffer.append(table)
        self._buffer_rows += table.num_rows
        self._buffer_bytes += table.nbytes
        while self._buffer_rows >= self.options.row_group_rows:
            self._flush_rows(self.options.row_group_rows)
        if self._buffer_bytes >= self.options.row_group_bytes:
            self._flush_rows(self._buffer_rows)
        if self._estimated_file_bytes() >= self.options.max_file_bytes:
            if self._flushed_nbytes == 0 and self._buffer_rows:
                # No ratio known yet for this file: write what is buffered as its first
                # row group, then decide on the real size.
                self._flush_rows(self._buffer_rows)
                if self.current_file_bytes < self.options.max_file_bytes:
                    return []
            # The file ends with this input batch: its remaining rows go in too, so that the
            # iterator state taken now is exactly the end of the file.
            if self._buffer_rows:
                self._flush_rows(self._buffer_rows)
            return [self._close_file()]
        return []

    def _estimated_file_bytes(self) -> int:
        """Bytes of the current file if the buffered rows were written now.

        Buffered (uncompressed) bytes count at the ratio this file achieved
        so far, or 1:1 before its first row group (which is then written
        early to learn the ratio). Only this file's own data enters the
        estimate, so a resumed export rolls at the same rows.
        """
        written = self.current_file_bytes
        ratio = written / self._flushed_nbytes if self._flushed_nbytes else 1.0
        return int(written + self._buffer_bytes * ratio)

    def finish(self, write_empty: bool = False) -> list[FileRecord]:
        """Flush and publish the last file; with `write_empty`, an empty file keeps the schema visible."""
        if self._buffer_rows:
            self._flush_rows(self._buffer_rows)
        if self._writer is None and write_empty:
            self._open_file()
        if self._writer is not None:
            return [self._close_file()]
        return []

    def abort(self) -> None:
        """Close the open file without publishing it (it stays under `_tmp/`)."""
        try:
            if self._writer is not None:
                self._writer.close()
            if self._sink is not None:
                self._sink.close()
        except Exception:  # noqa: BLE001 - best effort on the failure path
            pass
        self._writer = None
        self._sink = None

    def _conform(self, table: pa.Table) -> pa.Table:
        if table.schema.equals(self.schema, check_metadata=False):
            if table.schema.metadata != self.schema.metadata:
                table = table.replace_schema_metadata(self.schema.metadata)
            return table
        try:
            return table.cast(self.schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
            raise FailedPrecondition(
                f"the dataset's schema changed mid-stream and cannot be cast to the first batch's schema: {exc}"
            ) from exc

    def _flush_rows(self, rows: int) -> None:
        """Write the first `rows` buffered rows as one row group."""
        table = pa.concat_tables(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        # One contiguous chunk per row group: page boundaries then depend on the rows alone,
        # not on how the input happened to be chunked.
        head = table.slice(0, rows).combine_chunks()
        rest = table.slice(rows)
        if self._writer is None:
            self._open_file()
        assert self._writer is not None
        self._writer.write_table(head, row_group_size=max(1, head.num_rows))
        self._rows_in_file += head.num_rows
        self._row_groups += 1
        self._flushed_nbytes += head.nbytes
        self._buffer = [rest] if rest.num_rows else []
        self._buffer_rows = rest.num_rows
        self._buffer_bytes = rest.nbytes if rest.num_rows else 0

    def _open_file(self) -> None:
        self._name = self.layout.part(self.next_index)
        stream = self.dest.open_output(self.layout.tmp(self._name))
        self._sink = HashingSink(stream)
        try:
            self._writer = pq.ParquetWriter(self._sink, self.schema, **self._kwargs)
        except Exception:
            self._sink.close()
            raise
        self._rows_in_file = 0
        self._row_groups = 0
        self._flushed_nbytes = 0

    def _close_file(self) -> FileRecord:
        assert self._writer is not None and self._sink is not None
        self._writer.close()
        size = self._sink.tell()
        digest = self._sink.hexdigest()
        self.dest.guarded("closing", self._sink.close, self.layout.tmp(self._name))
        self._writer = None
        self._sink = None
        self._flushed_nbytes = 0
        self.dest.publish(self.layout.tmp(self._name), self._name)
        record = FileRecord(self._name, self._rows_in_file, size, digest, self._row_groups)
        self.files.append(record)
        self.next_index += 1
        return record
