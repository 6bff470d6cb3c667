"""The `_manifest.json` of an export: what was exported, how, and which files hold it.

The manifest is written last. Its presence means every file it lists is
complete; readers should take the file list from it rather than globbing.
Layout (format `hf_bridge.export/v1`)::

    {
      "format": "hf_bridge.export/v1",
      "hf_bridge_version": "0.1.0",
      "job_id": "...",
      "spec": {...DatasetSpec as a dict...},
      "schema": {"text": "...", "ipc_stream_base64": "..."},
      "features": {...HF Features.to_dict()...} | null,
      "files": [{"path", "rows", "bytes", "sha256", "row_groups"}, ...],
      "totals": {"rows", "bytes", "files"},
      "created_at": "2024-01-01T00:00:00Z", "finished_at": "...",
      "writer": {...options, pyarrow and datasets versions...},
      "shards": null | {"num_shards": n, "shard_index": i} | {"num_shards": n, "merged": [...]}
    }
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, Iterable, Sequence

import pyarrow as pa

from py_worker.errors import FailedPrecondition
from py_worker.export.writer import FileRecord

FORMAT = "hf_bridge.export/v1"


def utc_now() -> str:
    """The current UTC time as an RFC 3339 timestamp (RFC 3339 section 5.6), seconds precision."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def schema_to_ipc_base64(schema: pa.Schema) -> str:
    """The schema as an Arrow IPC stream holding only the schema message, base64-encoded."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema):
        pass
    return base64.b64encode(sink.getvalue().to_pybytes()).decode("ascii")


def schema_from_ipc_base64(text: str) -> pa.Schema:
    """Inverse of `schema_to_ipc_base64`."""
    return pa.ipc.open_stream(pa.py_buffer(base64.b64decode(text))).schema


def writer_info(options: dict[str, Any]) -> dict[str, Any]:
    """Writer settings recorded in the manifest: the content options plus library versions."""
    import datasets

    info = dict(options)
    info["write_page_index"] = True
    info["write_page_checksum"] = True
    info["pyarrow_version"] = pa.__version__
    info["datasets_version"] = datasets.__version__
    return info


def build_manifest(
    *,
    spec: dict[str, Any],
    schema: pa.Schema,
    features: dict[str, Any] | None,
    files: Sequence[FileRecord],
    created_at: str,
    finished_at: str,
    writer: dict[str, Any],
    job_id: str = "",
    shards: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble a manifest dict (see the module doc for its layout)."""
    from py_worker import __version__

    return {
        "format": FORMAT,
        "hf_bridge_version": __version__,
        "job_id": job_id,
        "spec": spec,
        "schema": {
            "text": schema.to_string(show_schema_metadata=False),
            "ipc_stream_base64": schema_to_ipc_base64(schema),
        },
        "features": features,
        "files": [f.to_dict() for f in files],
        "totals": totals(files),
        "created_at": created_at,
        "finished_at": finished_at,
        "writer": writer,
        "shards": shards,
    }


def totals(files: Iterable[FileRecord]) -> dict[str, int]:
    """Row, byte and file counts over `files`."""
    files = list(files)
    return {"rows": sum(f.rows for f in files), "bytes": sum(f.bytes for f in files), "files": len(files)}


def dumps(manifest: dict[str, Any]) -> str:
    """Canonical JSON text of a manifest (sorted keys, two-space indent, trailing newline)."""
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def loads(text: str, where: str = "manifest") -> dict[str, Any]:
    """Parse and sanity-check manifest text."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise FailedPrecondition(f"{where} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise FailedPrecondition(f"{where} is not an hf_bridge export manifest (format {FORMAT})")
    return data


def files_of(manifest: dict[str, Any]) -> list[FileRecord]:
    """The file records of a manifest."""
    return [FileRecord.from_dict(f) for f in manifest.get("files", [])]


def merge(shard_manifests: Sequence[dict[str, Any]], spec: dict[str, Any]) -> dict[str, Any]:
    """One manifest for a sharded job from its per-shard manifests (ordered by shard index).

    `spec` is the job's spec without shard selection. The result is a pure
    function of its inputs, so several shards merging at once write the same
    bytes.
    """
    ordered = sorted(shard_manifests, key=lambda m: m["shards"]["shard_index"])
    first = ordered[0]
    files: list[FileRecord] = []
    for m in ordered:
        files.extend(files_of(m))
    out = {
        "format": FORMAT,
        "hf_bridge_version": first["hf_bridge_version"],
        "job_id": first.get("job_id", ""),
        "spec": spec,
        "schema": first["schema"],
        "features": first.get("features"),
        "files": [f.to_dict() for f in files],
        "totals": totals(files),
        "created_at": min(m["created_at"] for m in ordered),
        "finished_at": max(m["finished_at"] for m in ordered),
        "writer": first["writer"],
        "shards": {
            "num_shards": first["shards"]["num_shards"],
            "merged": [
                {"shard_index": m["shards"]["shard_index"], **m["totals"]}
                for m in ordered
            ],
        },
    }
    return out
