"""The resume point of an export, saved at the destination after every published file.

A checkpoint holds the dataset iterator's `state_dict()` taken right after
the input batch that closed the last file, the files published so far, and a
fingerprint of everything that decides the files' bytes (the spec and the
content options). A resumed job loads the state into a freshly opened
dataset and continues with the next file number, so it writes exactly the
files an uninterrupted job would have written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from py_worker.errors import FailedPrecondition
from py_worker.export.destination import Destination
from py_worker.export.writer import FileRecord

VERSION = 1


def fingerprint(spec: dict[str, Any], content_options: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of the spec and the content options."""
    text = json.dumps({"spec": spec, "options": content_options}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Checkpoint:
    """Resume point of one export job (or of one shard of a sharded job)."""

    fingerprint: str
    state: dict[str, Any] | None
    files: list[FileRecord] = field(default_factory=list)
    created_at: str = ""
    job_id: str = ""
    schema_ipc_base64: str = ""
    features: dict[str, Any] | None = None

    def to_json(self) -> str:
        """JSON text of the checkpoint."""
        return json.dumps(
            {
                "version": VERSION,
                "fingerprint": self.fingerprint,
                "state": self.state,
                "files": [f.to_dict() for f in self.files],
                "created_at": self.created_at,
                "job_id": self.job_id,
                "schema_ipc_base64": self.schema_ipc_base64,
                "features": self.features,
            },
            indent=1,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str, where: str) -> "Checkpoint":
        """Parse checkpoint text; a damaged checkpoint raises FAILED_PRECONDITION."""
        try:
            data = json.loads(text)
            if data.get("version") != VERSION:
                raise ValueError(f"unknown checkpoint version {data.get('version')!r}")
            return cls(
                fingerprint=str(data["fingerprint"]),
                state=data.get("state"),
                files=[FileRecord.from_dict(f) for f in data.get("files", [])],
                created_at=str(data.get("created_at", "")),
                job_id=str(data.get("job_id", "")),
                schema_ipc_base64=str(data.get("schema_ipc_base64", "")),
                features=data.get("features"),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FailedPrecondition(
                f"checkpoint {where} is damaged ({exc}); rerun the export with overwrite (--overwrite) instead of resume"
            ) from exc

    @property
    def rows(self) -> int:
        """Rows in the files published so far."""
        return sum(f.rows for f in self.files)

    @property
    def bytes(self) -> int:
        """Bytes of the files published so far."""
        return sum(f.bytes for f in self.files)


def save(dest: Destination, name: str, checkpoint: Checkpoint) -> None:
    """Write the checkpoint atomically."""
    dest.write_text(name, checkpoint.to_json())


def load(dest: Destination, name: str) -> Checkpoint | None:
    """The checkpoint at the destination, or None when there is none."""
    text = dest.read_text(name)
    if text is None:
        return None
    return Checkpoint.from_json(text, dest.uri_of(name))
