"""Export to S3 against a real S3-protocol server (moto's standalone server) on loopback.

moto accepts any credentials by default. Its IAM authentication (switched on
through `/moto-api/reset-auth`) rejects unknown access key ids, which is how
the wrong-credentials case is tested; with it on, moto's own SigV4 check also
rejects valid signatures of listings with a key prefix, so the successful
round trips run with authentication off.
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import fs as pafs

from export_support import MotoS3, expected_table, make_parquet_dataset, run_cli, spec_args, cli_env

ARGS = ["--batch-size", "64", "--max-file-bytes", "6000", "--row-group-rows", "100", "--quiet"]


@pytest.fixture(scope="module")
def s3():
    server = MotoS3()
    try:
        server.client().create_bucket(Bucket="exports")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_parquet_dataset(tmp_path_factory.mktemp("src"), n_files=2, rows_per_file=300)


def _keys(s3, prefix: str) -> list[str]:
    """Object keys under `prefix`, without the empty directory markers pyarrow's S3 layer leaves."""
    resp = s3.client().list_objects_v2(Bucket="exports", Prefix=prefix)
    return sorted(o["Key"] for o in resp.get("Contents", []) if not o["Key"].endswith("/"))


def test_s3_round_trip(s3, data_dir):
    proc = run_cli([*spec_args(data_dir), "s3://exports/runs/one", *ARGS], env=cli_env(s3.env()))
    assert proc.returncode == 0, proc.stderr
    assert "manifest: s3://exports/runs/one/_manifest.json" in proc.stderr

    client = s3.client()
    manifest = json.loads(client.get_object(Bucket="exports", Key="runs/one/_manifest.json")["Body"].read())
    names = [f["path"] for f in manifest["files"]]
    assert len(names) > 1
    # Only the data files and the manifest remain: temporaries and the checkpoint are gone.
    assert _keys(s3, "runs/one/") == sorted(["runs/one/_manifest.json"] + [f"runs/one/{n}" for n in names])

    for f in manifest["files"]:
        body = client.get_object(Bucket="exports", Key=f"runs/one/{f['path']}")["Body"].read()
        assert len(body) == f["bytes"] and hashlib.sha256(body).hexdigest() == f["sha256"]

    # Read back through pyarrow's S3 file system, as a consumer would.
    s3fs = pafs.S3FileSystem(
        endpoint_override=s3.endpoint.split("://", 1)[1], scheme="http", access_key="testing",
        secret_key="testing", region="us-east-1",
    )
    table = pa.concat_tables([pq.read_table(f"exports/runs/one/{n}", filesystem=s3fs) for n in names])
    assert table.to_pylist() == expected_table(data_dir).to_pylist()

    # A second export without --overwrite is refused; with it the prefix is replaced.
    again = run_cli([*spec_args(data_dir), "s3://exports/runs/one", *ARGS, "--take", "10"], env=cli_env(s3.env()))
    assert again.returncode == 1 and "not empty" in again.stderr
    again = run_cli(
        [*spec_args(data_dir), "s3://exports/runs/one", *ARGS, "--take", "10", "--overwrite"], env=cli_env(s3.env())
    )
    assert again.returncode == 0, again.stderr
    assert _keys(s3, "runs/one/") == ["runs/one/_manifest.json", "runs/one/part-00000.parquet"]


def test_s3_endpoint_flag_overrides_environment(s3, data_dir):
    env = cli_env({**s3.env(), "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    proc = run_cli([*spec_args(data_dir), "s3://exports/flag", *ARGS, "--take", "5", "--s3-endpoint", s3.endpoint], env=env)
    assert proc.returncode == 0, proc.stderr
    assert "runs" not in _keys(s3, "flag/")[0] and "flag/_manifest.json" in _keys(s3, "flag/")


def test_missing_bucket_is_a_clear_error(s3, data_dir):
    proc = run_cli([*spec_args(data_dir), "s3://no-such-bucket/x", *ARGS], env=cli_env(s3.env()))
    assert proc.returncode == 1
    assert "NOT_FOUND" in proc.stderr and "bucket 'no-such-bucket' does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_wrong_credentials_are_a_clear_error(s3, data_dir):
    s3.set_auth(True)
    try:
        proc = run_cli(
            [*spec_args(data_dir), "s3://exports/denied", *ARGS], env=cli_env(s3.env("AKIAWRONGWRONGWRONG", "nope"))
        )
    finally:
        s3.set_auth(False)
    assert proc.returncode == 1
    assert "UNAUTHENTICATED" in proc.stderr and "access key id was rejected" in proc.stderr
    assert _keys(s3, "denied/") == []


def test_unreachable_endpoint_is_unavailable(data_dir):
    from export_support import free_port

    env = cli_env({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_ACCESS_KEY_ID": "a",
                   "AWS_SECRET_ACCESS_KEY": "b", "AWS_EC2_METADATA_DISABLED": "true"})
    proc = run_cli([*spec_args(data_dir), "s3://exports/x", *ARGS], env=env)
    assert proc.returncode == 1
    assert "UNAVAILABLE" in proc.stderr and "could not be reached" in proc.stderr
