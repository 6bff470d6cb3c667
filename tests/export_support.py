"""Shared helpers of the export tests: small datasets on disk, the CLI in a subprocess, a loopback S3 server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from conftest import free_port

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def features():
    """HF features exercising ClassLabel, a variable-length Sequence and a fixed-length Sequence."""
    from datasets import ClassLabel, Features, Sequence, Value

    return Features(
        {
            "id": Value("int64"),
            "text": Value("string"),
            "label": ClassLabel(names=["neg", "pos", "neutral"]),
            "tokens": Sequence(Value("int32")),
            "vec": Sequence(Value("float32"), length=3),
            "score": Value("float64"),
        }
    )


def make_parquet_dataset(root: Path, n_files: int = 3, rows_per_file: int = 200, text_len: int = 12) -> Path:
    """Write `n_files` Parquet shards of an HF-style dataset under `root/data`; returns that directory.

    Rows are a pure function of their id, so tests can predict them. Nulls
    appear in `text` and `score`.
    """
    feats = features()
    schema = feats.arrow_schema
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    for f in range(n_files):
        ids = list(range(f * rows_per_file, (f + 1) * rows_per_file))
        table = pa.Table.from_pydict(
            {
                "id": ids,
                "text": [None if i % 17 == 0 else (f"row {i} " + "é" * (i % 5)).ljust(text_len, "x") for i in ids],
                "label": [i % 3 for i in ids],
                "tokens": [list(range(i % 7)) for i in ids],
                "vec": [[float(i), i / 2.0, -float(i)] for i in ids],
                "score": [None if i % 11 == 0 else i * 0.25 for i in ids],
            },
            schema=schema,
        )
        pq.write_table(table, data / f"train-{f:05d}-of-{n_files:05d}.parquet", row_group_size=97)
    return data


def expected_table(data_dir: Path, columns: Sequence[str] = (), skip: int = 0, take: int | None = None) -> pa.Table:
    """What `datasets` yields in-process for the parquet builder over `data_dir`, as one Arrow table."""
    import datasets

    ds = datasets.load_dataset(
        "parquet", data_files={"train": str(data_dir / "*.parquet")}, split="train", streaming=True
    )
    if columns:
        ds = ds.select_columns(list(columns))
    if skip:
        ds = ds.skip(skip)
    if take is not None:
        ds = ds.take(take)
    tables = list(ds.with_format("arrow").iter(batch_size=1000))
    if not tables:
        return ds.features.arrow_schema.empty_table()
    return pa.concat_tables(tables)


def read_export(dest: Path) -> tuple[dict[str, Any], pa.Table]:
    """The manifest of a local export and the rows of its files (in manifest order) read with pyarrow."""
    manifest = json.loads((dest / "_manifest.json").read_text())
    tables = [pq.read_table(dest / f["path"]) for f in manifest["files"]]
    return manifest, pa.concat_tables(tables)


def spec_args(data_dir: Path) -> list[str]:
    """CLI arguments for the parquet builder over `data_dir`."""
    return ["parquet", "--data-files", str(data_dir / "*.parquet")]


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for CLI subprocesses: offline Hub, the repo importable."""
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    env["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if extra:
        env.update(extra)
    return env


def export_cmd(args: Sequence[str]) -> list[str]:
    """The argv running `hf-bridge export ARGS` with this interpreter."""
    return [sys.executable, "-m", "py_worker.export", *args]


def run_cli(args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `hf-bridge export ARGS` to completion; returns the completed process (text output)."""
    return subprocess.run(
        export_cmd(args), env=env or cli_env(), capture_output=True, text=True, timeout=timeout, cwd=str(REPO)
    )


class MotoS3:
    """moto's standalone S3 server in a subprocess on loopback."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1).read()
                break
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto server did not start")
                time.sleep(0.1)

    def client(self, service: str = "s3", key: str = "testing", secret: str = "testing"):
        """A boto3 client for `service` on this server."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=key,
            aws_secret_access_key=secret,
        )

    def set_auth(self, enabled: bool) -> None:
        """Turn moto's IAM authentication of requests on (unknown access keys rejected) or off."""
        body = b"0" if enabled else b"inf"
        req = urllib.request.Request(
            self.endpoint + "/moto-api/reset-auth", data=body, method="POST", headers={"Content-Type": "text/plain"}
        )
        urllib.request.urlopen(req, timeout=5).read()

    def env(self, key: str = "testing", secret: str = "testing") -> dict[str, str]:
        """AWS_* variables pointing the export at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def stop(self) -> None:
        """Stop the server."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class BridgeServer:
    """`python -m py_worker serve --port 0` in a subprocess; `target` is host:port once it is ready."""

    def __init__(self, data_root: Path, export_root: Path, state_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "py_worker", "serve", "--port", "0", "--workers", "1",
             "--data-root", str(data_root), "--export-root", str(export_root), "--state-dir", str(state_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=cli_env(), cwd=str(REPO),
        )
        self.target = ""
        deadline = time.monotonic() + 60
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("HF_BRIDGE_READY "):
                self.target = line.split()[1]
                break
            if time.monotonic() > deadline:
                break
        if not self.target:
            self.stop()
            raise RuntimeError("hf_bridge server did not become ready")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
