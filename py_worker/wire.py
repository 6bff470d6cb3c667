"""Generated protobuf and gRPC stubs for `proto/hf_bridge/v1`.

The stubs are generated from the `.proto` files with `grpc_tools.protoc` into
`py_worker/_gen/` (at install time by `make`, or on first import when they are
missing or older than the `.proto`), and are never edited by hand.

Usage::

    from py_worker.wire import pb, pb_grpc
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from pathlib import Path
from types import ModuleType

PACKAGE_DIR = Path(__file__).resolve().parent
PROTO_ROOT = PACKAGE_DIR.parent / "proto"
GEN_DIR = PACKAGE_DIR / "_gen"
PROTO_FILES = ("hf_bridge/v1/hf_bridge.proto",)

_lock = threading.Lock()


def _stale() -> bool:
    for rel in PROTO_FILES:
        src = PROTO_ROOT / rel
        out = GEN_DIR / rel.replace(".proto", "_pb2.py")
        if not out.exists():
            return True
        if src.exists() and src.stat().st_mtime > out.stat().st_mtime:
            return True
    return False


def generate(force: bool = False) -> None:
    """Run protoc over the wire contract into `py_worker/_gen/` when needed."""
    with _lock:
        if not force and not _stale():
            return
        from grpc_tools import protoc  # imported lazily: only needed to generate

        GEN_DIR.mkdir(parents=True, exist_ok=True)
        include = Path(protoc.__file__).resolve().parent / "_proto"
        for rel in PROTO_FILES:
            args = [
                "protoc",
                f"-I{PROTO_ROOT}",
                f"-I{include}",
                f"--python_out={GEN_DIR}",
                f"--pyi_out={GEN_DIR}",
                f"--grpc_python_out={GEN_DIR}",
                str(PROTO_ROOT / rel),
            ]
            if protoc.main(args) != 0:
                raise RuntimeError(f"protoc failed on {rel}")
        for sub in ("hf_bridge", "hf_bridge/v1"):
            init = GEN_DIR / sub / "__init__.py"
            init.parent.mkdir(parents=True, exist_ok=True)
            init.touch()


def _load() -> tuple[ModuleType, ModuleType]:
    if PROTO_ROOT.exists():
        generate()
    gen = str(GEN_DIR)
    if gen not in sys.path:
        sys.path.insert(0, gen)
    return (
        importlib.import_module("hf_bridge.v1.hf_bridge_pb2"),
        importlib.import_module("hf_bridge.v1.hf_bridge_pb2_grpc"),
    )


pb, pb_grpc = _load()

SERVICE_NAME = "hf_bridge.v1.HFBridge"

if __name__ == "__main__":
    generate(force="--force" in sys.argv)
    print(f"stubs in {os.path.relpath(GEN_DIR)}")
