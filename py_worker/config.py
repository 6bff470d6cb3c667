"""Server configuration shared by the front, the workers and the export service."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from py_worker.limits import Limits


def default_state_dir() -> Path:
    """`$HF_BRIDGE_STATE_DIR`, else `~/.cache/hf_bridge`."""
    env = os.environ.get("HF_BRIDGE_STATE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "hf_bridge"


@dataclass
class ServerConfig:
    """Where data may be read and written, where checkpoints live, and the limits."""

    data_roots: list[Path] = field(default_factory=lambda: [Path.cwd()])
    export_roots: list[Path] = field(default_factory=lambda: [Path.cwd()])
    state_dir: Path = field(default_factory=default_state_dir)
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        self.data_roots = [Path(p).expanduser().resolve() for p in self.data_roots]
        self.export_roots = [Path(p).expanduser().resolve() for p in self.export_roots]
        self.state_dir = Path(self.state_dir).expanduser()

    def to_dict(self) -> dict:
        """A picklable/JSON-safe form (used to hand the config to worker processes)."""
        from dataclasses import asdict

        return {
            "data_roots": [str(p) for p in self.data_roots],
            "export_roots": [str(p) for p in self.export_roots],
            "state_dir": str(self.state_dir),
            "limits": asdict(self.limits),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ServerConfig":
        """Inverse of `to_dict`."""
        return cls(
            data_roots=[Path(p) for p in d["data_roots"]],
            export_roots=[Path(p) for p in d["export_roots"]],
            state_dir=Path(d["state_dir"]),
            limits=Limits(**d["limits"]),
        )
