"""Server limits: one validated dataclass with the defaults and the CLI flags that set them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Resource limits enforced by the gRPC front and the workers.

    Exceeding a session limit gives RESOURCE_EXHAUSTED naming the flag; an
    out-of-range batch size or byte cap in a request gives INVALID_ARGUMENT.
    """

    max_sessions: int = 256
    max_sessions_per_client: int = 64
    default_batch_rows: int = 1024
    max_batch_rows: int = 1_000_000
    default_batch_bytes: int = 8 * MiB
    max_batch_bytes: int = 64 * MiB
    max_message_bytes: int = 128 * MiB
    idle_ttl_seconds: float = 600.0
    open_deadline_seconds: float = 90.0
    prefetch_batches: int = 8
    worker_prefetch_bytes: int = 512 * MiB
    worker_ring_bytes: int = 64 * MiB
    parquet_readahead: int = 2
    checkpoint_ttl_seconds: float = 30 * 86400.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _ZERO_ALLOWED:
                if value < 0:
                    raise ValueError(f"{self.flag(f.name)} must be 0 or more, got {value}")
            elif value <= 0:
                raise ValueError(f"{self.flag(f.name)} must be positive, got {value}")
        if self.max_sessions_per_client > self.max_sessions:
            raise ValueError("max_sessions_per_client must not exceed max_sessions")
        if self.default_batch_rows > self.max_batch_rows:
            raise ValueError("default_batch_rows must not exceed max_batch_rows")
        if self.default_batch_bytes > self.max_batch_bytes:
            raise ValueError("default_batch_bytes must not exceed max_batch_bytes")
        if self.max_batch_bytes > self.max_message_bytes // 2:
            raise ValueError("max_batch_bytes must be at most half of max_message_bytes (room for IPC framing)")

    @staticmethod
    def flag(name: str) -> str:
        """The CLI flag that sets the limit `name` (e.g. "max_sessions" -> "--max-sessions")."""
        return "--" + name.replace("_", "-")


# Limits where 0 means "off".
_ZERO_ALLOWED = frozenset({"worker_ring_bytes", "parquet_readahead"})

_HELP = {
    "max_sessions": "open sessions in the whole server",
    "max_sessions_per_client": "open sessions per client connection (gRPC peer)",
    "default_batch_rows": "rows per batch when a request gives 0",
    "max_batch_rows": "largest batch size a request may ask for",
    "default_batch_bytes": "byte cap per batch when a request gives 0",
    "max_batch_bytes": "largest byte cap per batch a request may ask for",
    "max_message_bytes": "largest gRPC message sent or received",
    "idle_ttl_seconds": "sessions idle this long are reaped (still resumable by token)",
    "open_deadline_seconds": "deadline for opening or describing a dataset",
    "prefetch_batches": "batches prepared ahead per session",
    "worker_prefetch_bytes": "bytes of prepared batches a worker holds across its sessions "
    "(past it, each session keeps one batch ready)",
    "worker_ring_bytes": "shared memory per worker through which batches reach the front without a "
    "socket copy (0: off; payloads that do not fit go over the socket)",
    "parquet_readahead": "Parquet row groups a session's reader decodes ahead of the one it serves, "
    "in parallel, each held in memory until served (fewer where row groups are large: at most "
    "128 MiB ahead per file; 0: one at a time, as datasets does; exports always decode one at a time)",
    "checkpoint_ttl_seconds": "stored checkpoints unused this long are deleted (resume tokens expire)",
}


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one `--max-...`-style flag per `Limits` field to `parser`."""
    group = parser.add_argument_group("limits")
    defaults = Limits()
    for f in fields(Limits):
        default = getattr(defaults, f.name)
        group.add_argument(
            Limits.flag(f.name),
            dest=f"limit_{f.name}",
            type=type(default),
            default=default,
            metavar="N",
            help=f"{_HELP[f.name]} (default: {default})",
        )


def limits_from_args(args: argparse.Namespace) -> Limits:
    """Build `Limits` from flags added by `add_limit_arguments` (raises ValueError when invalid)."""
    return Limits(**{f.name: getattr(args, f"limit_{f.name}") for f in fields(Limits)})
