"""The export job: stream a DatasetSpec into Parquet files at a destination.

The dataset is never materialised: `with_format("arrow").iter(batch_size)`
yields Arrow tables that go straight into the rolling writer, read one step
ahead on a thread of their own (`readahead`), so decoding the source and
encoding the export run on two cores. After every published file a
checkpoint (iterator state + files so far) is saved; the manifest is written
last. See `layout` for the names at the destination.
"""

from __future__ import annotations

import glob
import json
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import grpc
import pyarrow as pa

from py_worker.errors import BridgeError, FailedPrecondition, from_exception
from py_worker.export import checkpoint as ckpt
from py_worker.export import manifest as mf
from py_worker.export.destination import Destination, check_bucket
from py_worker.export.layout import MANIFEST, TMP_DIR, Layout, is_export_entry, shard_of_manifest
from py_worker.export.options import ExportOptions
from py_worker.export.readahead import read_ahead
from py_worker.export.writer import FileRecord, RollingParquetWriter

if TYPE_CHECKING:  # pragma: no cover
    from py_worker.config import ServerConfig
    from py_worker.spec import DatasetSpec


class Cancelled(BridgeError):
    """The export was stopped by its caller; its checkpoint allows `resume`."""

    code = grpc.StatusCode.CANCELLED


@dataclass(frozen=True)
class Progress:
    """Where a running export stands."""

    rows: int
    bytes: int
    files: int
    total_rows: int | None
    elapsed_seconds: float


@dataclass(frozen=True)
class ExportResult:
    """A finished export: the manifest that was published and its totals."""

    manifest: dict[str, Any]
    manifest_uri: str
    rows: int
    bytes: int
    files: int
    resumed_from_file: int = 0

    @property
    def manifest_json(self) -> str:
        """The manifest as published (canonical JSON)."""
        return mf.dumps(self.manifest)


ProgressFn = Callable[[Progress], None]


def layout_for(spec: "DatasetSpec") -> Layout:
    """Unsharded layout, or the layout of shard `shard_index` when the spec splits the source."""
    return Layout(shard=spec.shard_index) if spec.num_shards > 1 else Layout()


def merged_spec(spec_dict: dict[str, Any]) -> dict[str, Any]:
    """The spec a merged manifest describes: the shard selection removed."""
    out = dict(spec_dict)
    out["num_shards"] = 0
    out["shard_index"] = 0
    return out


def run_export(
    spec: "DatasetSpec",
    dest: Destination,
    options: ExportOptions,
    config: "ServerConfig",
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ExportResult:
    """Run one export (or one shard of a sharded export) to completion.

    Raises BridgeError: FAILED_PRECONDITION for a non-empty destination
    without overwrite or resume and for a checkpoint of a different job,
    PERMISSION_DENIED / UNAUTHENTICATED / NOT_FOUND for storage problems,
    CANCELLED when `should_stop` returns True (the checkpoint stays, so the
    job can be resumed).
    """
    start = time.monotonic()
    layout = layout_for(spec)
    spec_dict = spec.to_dict()
    fp = ckpt.fingerprint(spec_dict, options.content_options())

    done = _prepare(dest, layout, options, spec, fp)
    if isinstance(done, ExportResult):
        return done
    cp: ckpt.Checkpoint | None = done
    dest.check_writable()

    from py_worker.spec import open_iterable

    ds = open_iterable(spec, config).with_format("arrow")
    if cp is not None and cp.state is not None:
        try:
            ds.load_state_dict(cp.state)
        except Exception as exc:
            raise FailedPrecondition(f"cannot restore the checkpoint at {dest.uri_of(layout.checkpoint)}: {exc}") from exc
    features = ds.features.to_dict() if ds.features is not None else (cp.features if cp else None)
    total = known_total_rows(spec, config, ds)
    files: list[FileRecord] = list(cp.files) if cp else []
    created_at = (cp.created_at if cp and cp.created_at else mf.utc_now())
    schema: pa.Schema | None = mf.schema_from_ipc_base64(cp.schema_ipc_base64) if cp and cp.schema_ipc_base64 else None
    writer: RollingParquetWriter | None = None
    rows = sum(f.rows for f in files)
    state: dict | None = None  # the iterator state after the last table written

    def report() -> None:
        if progress is not None:
            current = writer.current_file_bytes if writer is not None else 0
            progress(
                Progress(
                    rows=rows,
                    bytes=sum(f.bytes for f in files) + current,
                    files=len(files),
                    total_rows=total,
                    elapsed_seconds=time.monotonic() - start,
                )
            )

    def new_writer(s: pa.Schema) -> RollingParquetWriter:
        return RollingParquetWriter(dest, layout, s, options, first_index=len(files))

    def save_checkpoint() -> None:
        assert schema is not None and state is not None
        ckpt.save(
            dest,
            layout.checkpoint,
            ckpt.Checkpoint(
                fingerprint=fp,
                state=json.loads(json.dumps(state)),
                files=files,
                created_at=created_at,
                job_id=options.job_id,
                schema_ipc_base64=mf.schema_to_ipc_base64(schema),
                features=features,
            ),
        )

    report()
    try:
        try:
            for table, state in read_ahead(ds, options.batch_size, options.row_group_bytes):
                if should_stop is not None and should_stop():
                    raise Cancelled(
                        f"export to {dest.uri} was cancelled; run it again with resume (--resume) to continue from its checkpoint"
                    )
                if writer is None:
                    if schema is None:
                        schema = table.schema
                    writer = new_writer(schema)
                closed = writer.write(table)
                rows += table.num_rows
                if closed:
                    files.extend(closed)
                    save_checkpoint()
                report()
            if schema is None:
                if ds.features is None:
                    raise FailedPrecondition("the dataset yielded no rows and its features are unknown; nothing to export")
                schema = ds.features.arrow_schema
            if writer is None:
                writer = new_writer(schema)
            files.extend(writer.finish(write_empty=not files))
        except BridgeError:
            raise
        except Exception as exc:
            raise from_exception(exc, f"exporting to {dest.uri}") from exc
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    report()
    finished_at = mf.utc_now()
    shards = {"num_shards": spec.num_shards, "shard_index": spec.shard_index} if layout.shard is not None else None
    manifest = mf.build_manifest(
        spec=spec_dict,
        schema=schema,
        features=features,
        files=files,
        created_at=created_at,
        finished_at=finished_at,
        writer=mf.writer_info(options.content_options()),
        job_id=options.job_id,
        shards=shards,
    )
    dest.write_text(layout.manifest, mf.dumps(manifest))
    _cleanup(dest, layout)
    result = ExportResult(
        manifest=manifest,
        manifest_uri=dest.uri_of(layout.manifest),
        rows=rows,
        bytes=sum(f.bytes for f in files),
        files=len(files),
        resumed_from_file=len(cp.files) if cp else 0,
    )
    if layout.shard is not None:
        merged = try_merge(dest, spec.num_shards)
        if merged is not None:
            return merged
    return result


def _cleanup(dest: Destination, layout: Layout) -> None:
    """Remove the checkpoint and this job's temporaries after the manifest is published."""
    dest.delete(layout.checkpoint)
    if layout.shard is None:
        dest.delete_dir(TMP_DIR)
    else:
        for name in dest.list():
            if name.startswith(TMP_DIR + "/") and layout.owns(name):
                dest.delete(name)


def _result_from_manifest(dest: Destination, name: str, manifest: dict[str, Any]) -> ExportResult:
    t = manifest.get("totals", {})
    return ExportResult(
        manifest=manifest,
        manifest_uri=dest.uri_of(name),
        rows=int(t.get("rows", 0)),
        bytes=int(t.get("bytes", 0)),
        files=int(t.get("files", 0)),
        resumed_from_file=int(t.get("files", 0)),
    )


def _same_job(manifest: dict[str, Any], spec_dict: dict[str, Any], options: ExportOptions) -> bool:
    writer = manifest.get("writer", {})
    same_options = all(writer.get(k) == v for k, v in options.content_options().items())
    return manifest.get("spec") == spec_dict and same_options


def _prepare(
    dest: Destination, layout: Layout, options: ExportOptions, spec: "DatasetSpec", fp: str
) -> ckpt.Checkpoint | ExportResult | None:
    """Check the destination against overwrite / resume; clean what this job owns.

    Returns the checkpoint to resume from (or None for a fresh start), or the
    result of an already complete job when resuming one that had finished.
    """
    check_bucket(dest)
    entries = dest.list()
    foreign = [e for e in entries if not is_export_entry(e)]
    spec_dict = spec.to_dict()
    where = dest.uri

    if foreign:
        if options.overwrite:
            raise FailedPrecondition(
                f"destination {where} holds files that are not part of an hf_bridge export "
                f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); refusing to overwrite them — "
                "choose an empty directory or prefix"
            )
        raise FailedPrecondition(
            f"destination {where} is not empty ({len(entries)} entries, e.g. {', '.join(foreign[:3])}); "
            "choose an empty directory or prefix"
        )

    if layout.shard is not None:
        _check_sibling_shards(dest, entries, spec_dict, spec.num_shards)

    own = [e for e in entries if layout.owns(e)]
    if layout.shard is None:
        own = list(entries)

    if options.overwrite:
        # The manifest goes first, so a reader never sees it next to half-replaced files.
        if MANIFEST in entries:
            dest.delete(MANIFEST)
        for name in own:
            if name != MANIFEST:
                dest.delete(name)
        return None

    if options.resume:
        if layout.manifest in entries:
            manifest = mf.loads(dest.read_text(layout.manifest) or "", dest.uri_of(layout.manifest))
            if not _same_job(manifest, spec_dict, options):
                raise FailedPrecondition(
                    f"destination {where} holds a finished export of a different spec or options; "
                    "use overwrite (--overwrite) to replace it"
                )
            if layout.shard is not None:
                merged = try_merge(dest, spec.num_shards)
                if merged is not None:
                    return merged
            return _result_from_manifest(dest, layout.manifest, manifest)
        cp = ckpt.load(dest, layout.checkpoint)
        if cp is not None and cp.fingerprint != fp:
            raise FailedPrecondition(
                f"the checkpoint at {dest.uri_of(layout.checkpoint)} belongs to an export of a different spec or "
                "options; resume with the same arguments, or use overwrite (--overwrite) to start again"
            )
        if cp is not None and spec.shuffle:
            raise FailedPrecondition(
                "a shuffled export cannot be resumed exactly: the dataset's checkpoint does not hold the "
                "shuffle buffer, so rows would be lost; use overwrite (--overwrite) to run it again"
            )
        keep = {f.path for f in cp.files} if cp else set()
        for f in cp.files if cp else []:
            size = dest.size(f.path)
            if size != f.bytes:
                raise FailedPrecondition(
                    f"{dest.uri_of(f.path)} listed in the checkpoint is missing or has a different size; "
                    "use overwrite (--overwrite) to start again"
                )
        for name in own:
            if name in keep or name == layout.checkpoint:
                continue
            dest.delete(name)
        return cp

    if layout.shard is None:
        if entries:
            raise FailedPrecondition(
                f"destination {where} is not empty ({len(entries)} entries"
                f"{', complete export' if MANIFEST in entries else ''}); use overwrite (--overwrite) to replace it, "
                "or resume (--resume) to continue an interrupted export"
            )
        return None
    if own or MANIFEST in entries:
        raise FailedPrecondition(
            f"destination {where} already holds shard {layout.shard} of this export"
            f"{' (the merged export is complete)' if MANIFEST in entries else ''}; use overwrite (--overwrite) to replace it, "
            "or resume (--resume) to continue it"
        )
    return None


def _check_sibling_shards(dest: Destination, entries: list[str], spec_dict: dict[str, Any], num_shards: int) -> None:
    """Refuse to mix shards of different jobs at one destination."""
    base = merged_spec(spec_dict)
    for name in entries:
        if shard_of_manifest(name) is None:
            continue
        other = mf.loads(dest.read_text(name) or "", dest.uri_of(name))
        shards = other.get("shards") or {}
        if merged_spec(other.get("spec", {})) != base or shards.get("num_shards") != num_shards:
            raise FailedPrecondition(
                f"destination {dest.uri} holds shards of a different export ({name}); "
                "every shard of one destination must use the same spec and num_shards"
            )


def try_merge(dest: Destination, num_shards: int | None = None) -> ExportResult | None:
    """Publish the merged `_manifest.json` when every shard's manifest is present.

    Returns the merged result, or None while shards are missing. With
    `num_shards` None it is read from the shard manifests (the `--merge`
    command); a missing shard then raises FAILED_PRECONDITION naming it.
    """
    names = [n for n in dest.list() if shard_of_manifest(n) is not None]
    manifests = [mf.loads(dest.read_text(n) or "", dest.uri_of(n)) for n in names]
    strict = num_shards is None
    if not manifests:
        if strict:
            raise FailedPrecondition(f"destination {dest.uri} holds no shard manifests to merge")
        return None
    counts = {int((m.get("shards") or {}).get("num_shards", 0)) for m in manifests}
    bases = {json.dumps(merged_spec(m.get("spec", {})), sort_keys=True) for m in manifests}
    if len(counts) != 1 or len(bases) != 1:
        raise FailedPrecondition(f"destination {dest.uri} holds shard manifests of different exports; cannot merge")
    n = counts.pop()
    if num_shards is not None and n != num_shards:
        raise FailedPrecondition(f"destination {dest.uri} holds shards of a {n}-shard export, not {num_shards}")
    present = {int(m["shards"]["shard_index"]) for m in manifests}
    missing = sorted(set(range(n)) - present)
    if missing:
        if strict:
            raise FailedPrecondition(
                f"cannot merge {dest.uri}: shard(s) {missing[:10]} of {n} have not finished"
            )
        return None
    merged = mf.merge(manifests, merged_spec(manifests[0]["spec"]))
    dest.write_text(MANIFEST, mf.dumps(merged))
    if dest.local:
        try:
            os.rmdir(dest.path(TMP_DIR))  # only when empty: another job may still be writing
        except OSError:
            pass
    return _result_from_manifest(dest, MANIFEST, merged)


def known_total_rows(spec: "DatasetSpec", config: "ServerConfig", ds: Any) -> int | None:
    """Rows the export will write when that is cheap to know, else None.

    Known from the split info, or for Parquet data without filters from the
    files' footers; shard selection makes it unknown.
    """
    if spec.num_shards > 1 or spec.filters:
        return None
    n: int | None = None
    try:
        splits = ds.info.splits
        if splits and spec.split_name in splits and splits[spec.split_name].num_examples:
            n = int(splits[spec.split_name].num_examples)
    except Exception:  # noqa: BLE001 - a missing total only costs the ETA
        n = None
    if n is None:
        n = _parquet_rows(spec, config)
    if n is None:
        return None
    n = max(0, n - spec.skip)
    if spec.take is not None:
        n = min(n, spec.take)
    return n


def _parquet_rows(spec: "DatasetSpec", config: "ServerConfig") -> int | None:
    try:
        import pyarrow.parquet as pq

        from py_worker.spec import resolve

        res = resolve(spec, config)
        if res.path != "parquet" or not res.data_files:
            return None
        patterns = res.data_files.get(spec.split_name)
        if not patterns:
            return None
        paths = sorted({p for pat in patterns for p in glob.glob(pat, recursive=True)})
        if not paths or len(paths) > 10_000:
            return None
        return sum(pq.read_metadata(p).num_rows for p in paths)
    except Exception:  # noqa: BLE001 - a missing total only costs the ETA
        return None

