"""Where an export writes: a local directory under the export roots, or `s3://bucket/prefix`.

Both kinds sit behind one small interface over `pyarrow.fs`, so the writer,
checkpoint and manifest code never care which one they talk to. The two
differ only in how a finished file is published: a local file is renamed
(atomic within one file system), an S3 object is copied to its final key and
the temporary object deleted (S3 has no rename; a PUT or COPY is atomic per
object, so readers see either no object or the whole one).

S3 settings come from the standard AWS environment variables —
`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, `AWS_REGION` /
`AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_SESSION_TOKEN` — unless overridden by explicit values (CLI flags).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar
from urllib.parse import urlparse

from pyarrow import fs as pafs

from py_worker.errors import (
    BridgeError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from py_worker.export.layout import TMP_DIR

T = TypeVar("T")


@dataclass(frozen=True)
class S3Settings:
    """Connection settings for S3 and S3-compatible servers. Empty fields fall back to the environment."""

    endpoint: str = ""
    region: str = ""
    access_key: str = ""
    secret_key: str = ""
    session_token: str = ""

    @classmethod
    def from_env(cls, endpoint: str = "", region: str = "") -> "S3Settings":
        """Settings from the AWS_* environment variables, with `endpoint` / `region` taking precedence."""
        env = os.environ
        return cls(
            endpoint=endpoint or env.get("AWS_ENDPOINT_URL_S3", "") or env.get("AWS_ENDPOINT_URL", ""),
            region=region or env.get("AWS_REGION", "") or env.get("AWS_DEFAULT_REGION", ""),
            access_key=env.get("AWS_ACCESS_KEY_ID", ""),
            secret_key=env.get("AWS_SECRET_ACCESS_KEY", ""),
            session_token=env.get("AWS_SESSION_TOKEN", ""),
        )

    def filesystem(self) -> pafs.S3FileSystem:
        """A `pyarrow.fs.S3FileSystem` for these settings."""
        kwargs: dict = {
            # Small objects go up with one PutObject instead of a multipart upload.
            "allow_delayed_open": True,
            "connect_timeout": 5,
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3),
        }
        if self.endpoint:
            url = urlparse(self.endpoint if "://" in self.endpoint else "http://" + self.endpoint)
            if not url.hostname:
                raise InvalidArgument(f"S3 endpoint '{self.endpoint}' is not a URL such as http://127.0.0.1:9000")
            kwargs["endpoint_override"] = url.netloc
            kwargs["scheme"] = url.scheme or "https"
        kwargs["region"] = self.region or "us-east-1"
        if self.access_key or self.secret_key:
            kwargs["access_key"] = self.access_key
            kwargs["secret_key"] = self.secret_key
            if self.session_token:
                kwargs["session_token"] = self.session_token
        return pafs.S3FileSystem(**kwargs)


class Destination:
    """A directory-like place holding one export: names are relative, '/'-separated."""

    def __init__(self, filesystem: pafs.FileSystem, root: str, uri: str, local: bool) -> None:
        self.fs = filesystem
        self.root = root.rstrip("/")
        self.uri = uri.rstrip("/")
        self.local = local

    def path(self, name: str) -> str:
        """File-system path of `name`."""
        return f"{self.root}/{name}"

    def uri_of(self, name: str) -> str:
        """Display form (local path or s3:// URI) of `name`."""
        return f"{self.uri}/{name}"

    def list(self) -> list[str]:
        """Relative names of every file at the destination (recursive); [] when it does not exist."""
        sel = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        infos = self.guarded("listing", lambda: self.fs.get_file_info(sel))
        base = self.root + "/"
        return sorted(i.path[len(base):] for i in infos if i.type == pafs.FileType.File and i.path.startswith(base))

    def size(self, name: str) -> int | None:
        """Size in bytes of `name`, or None when it does not exist."""
        info = self.guarded("reading", lambda: self.fs.get_file_info(self.path(name)))
        return info.size if info.type == pafs.FileType.File else None

    def open_output(self, name: str) -> Any:
        """A writable pyarrow stream for `name` (parent directories created)."""
        self._mkparent(name)
        return self.guarded("writing", lambda: self.fs.open_output_stream(self.path(name)), name)

    def read_text(self, name: str) -> str | None:
        """The UTF-8 text of `name`, or None when it does not exist."""
        if self.size(name) is None:
            return None

        def read() -> bytes:
            with self.fs.open_input_stream(self.path(name)) as f:
                return f.read()

        return self.guarded("reading", read, name).decode("utf-8")

    def write_text(self, name: str, text: str) -> None:
        """Write `name` so that a reader sees the old content or the new, never a mix."""
        data = text.encode("utf-8")
        if self.local:
            tmp = f"{TMP_DIR}/{name.replace('/', '_')}.{uuid.uuid4().hex}.tmp"
            self._mkparent(tmp)
            self._mkparent(name)

            def write_local() -> None:
                with self.fs.open_output_stream(self.path(tmp)) as f:
                    f.write(data)
                os.replace(self.path(tmp), self.path(name))

            self.guarded("writing", write_local, name)
        else:

            def write_s3() -> None:
                with self.fs.open_output_stream(self.path(name)) as f:
                    f.write(data)

            self.guarded("writing", write_s3, name)

    def publish(self, tmp_name: str, final_name: str) -> None:
        """Move a finished temporary file to its final name (rename locally, copy + delete on S3)."""
        self._mkparent(final_name)
        if self.local:
            self.guarded("publishing", lambda: os.replace(self.path(tmp_name), self.path(final_name)), final_name)
        else:
            self.guarded("publishing", lambda: self.fs.copy_file(self.path(tmp_name), self.path(final_name)), final_name)
            self.delete(tmp_name)

    def delete(self, name: str) -> None:
        """Remove `name` if it exists."""
        if self.size(name) is None:
            return
        self.guarded("deleting", lambda: self.fs.delete_file(self.path(name)), name)

    def delete_dir(self, name: str) -> None:
        """Remove the directory (or key prefix) `name` and everything below it, if present."""
        info = self.guarded("listing", lambda: self.fs.get_file_info(self.path(name)))
        if info.type == pafs.FileType.NotFound:
            if not self.local:
                for entry in [n for n in self.list() if n.startswith(name + "/")]:
                    self.delete(entry)
            return
        self.guarded("deleting", lambda: self.fs.delete_dir(self.path(name)), name)

    def check_writable(self) -> None:
        """Create the destination if needed and prove it accepts writes (a probe file is written and removed)."""
        if self.local:
            self.guarded("creating", lambda: self.fs.create_dir(self.root, recursive=True))
        probe = f"{TMP_DIR}/probe-{uuid.uuid4().hex}"
        self._mkparent(probe)

        def write_probe() -> None:
            with self.fs.open_output_stream(self.path(probe)) as f:
                f.write(b"probe")

        self.guarded("writing", write_probe)
        self.guarded("deleting", lambda: self.fs.delete_file(self.path(probe)))

    def _mkparent(self, name: str) -> None:
        if self.local and "/" in name:
            parent = self.path(name.rsplit("/", 1)[0])
            self.guarded("creating", lambda: self.fs.create_dir(parent, recursive=True), name)

    def guarded(self, action: str, fn: Callable[[], T], name: str | None = None) -> T:
        """Run `fn()`; a storage exception becomes a BridgeError saying what failed where."""
        try:
            return fn()
        except BridgeError:
            raise
        except Exception as exc:  # noqa: BLE001 - every storage failure becomes a clear error value
            where = self.uri_of(name) if name else self.uri
            raise storage_error(exc, f"{action} {where}") from exc


def storage_error(exc: BaseException, context: str) -> BridgeError:
    """Map a local or S3 storage exception to a `BridgeError` whose message says what to fix."""
    text = str(exc)
    upper = text.upper()
    msg = f"{context}: {text}"
    if isinstance(exc, PermissionError) or "PERMISSION DENIED" in upper:
        return PermissionDenied(f"{context}: permission denied (the path is not writable by this process)")
    if isinstance(exc, (FileExistsError, NotADirectoryError, IsADirectoryError)):
        return FailedPrecondition(f"{context}: {text} (a file is in the way of the export directory)")
    if "READ-ONLY FILE SYSTEM" in upper:
        return PermissionDenied(f"{context}: the file system is read-only")
    if "NO SPACE LEFT" in upper:
        return ResourceExhausted(f"{context}: no space left on device")
    if "NO_SUCH_BUCKET" in upper or "NOSUCHBUCKET" in upper or "BUCKET DOES NOT EXIST" in upper:
        return NotFound(f"{context}: the bucket does not exist (create it first)")
    if "INVALID_ACCESS_KEY_ID" in upper or "INVALIDACCESSKEYID" in upper:
        return Unauthenticated(f"{context}: the S3 access key id was rejected (check AWS_ACCESS_KEY_ID)")
    if "SIGNATURE_DOES_NOT_MATCH" in upper or "SIGNATUREDOESNOTMATCH" in upper:
        return Unauthenticated(f"{context}: the S3 request signature was rejected (check AWS_SECRET_ACCESS_KEY)")
    if "ACCESS_DENIED" in upper or "ACCESSDENIED" in upper or "FORBIDDEN" in upper:
        return PermissionDenied(f"{context}: access denied by S3 (check the credentials and the bucket policy)")
    if "NETWORK_CONNECTION" in upper or "COULD NOT CONNECT" in upper or "CONNECTION REFUSED" in upper or "COULDN'T CONNECT" in upper:
        return Unavailable(f"{context}: the S3 endpoint could not be reached ({text})")
    if isinstance(exc, FileNotFoundError):
        return NotFound(msg)
    return Internal(msg)


def resolve_destination(
    destination: str,
    export_roots: Sequence[Path] | None,
    s3: S3Settings | None = None,
) -> Destination:
    """Parse and check `destination` without touching storage.

    `s3://bucket/prefix` gives an S3 destination (the prefix may be empty).
    Anything else is a local directory, which must resolve under one of
    `export_roots` (PERMISSION_DENIED otherwise); `export_roots=None` means
    unrestricted (the CLI run by a user on their own machine).
    """
    text = (destination or "").strip()
    if not text:
        raise InvalidArgument("destination is empty: give a local directory or s3://bucket/prefix")
    if "://" in text:
        url = urlparse(text)
        if url.scheme != "s3":
            raise InvalidArgument(f"destination '{text}': only local directories and s3://bucket/prefix are supported")
        bucket = url.netloc
        if not bucket:
            raise InvalidArgument(f"destination '{text}' names no bucket (expected s3://bucket/prefix)")
        prefix = url.path.strip("/")
        if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
            raise InvalidArgument(f"destination '{text}': the key prefix has empty, '.' or '..' segments")
        root = f"{bucket}/{prefix}" if prefix else bucket
        settings = s3 or S3Settings.from_env()
        uri = f"s3://{root}"
        return Destination(settings.filesystem(), root, uri, local=False)
    if export_roots is None:
        real = Path(os.path.realpath(os.path.expanduser(text)))
    else:
        from py_worker.paths import check_under_roots

        real = check_under_roots(text, list(export_roots), "export destination")
    if real == Path(real.anchor):
        raise InvalidArgument("destination must not be the file-system root")
    if real.exists() and not real.is_dir():
        raise FailedPrecondition(f"destination '{real}' exists and is not a directory")
    return Destination(pafs.LocalFileSystem(), str(real), str(real), local=True)


def check_bucket(dest: Destination) -> None:
    """For S3, fail early and clearly when the bucket is missing or the credentials are rejected."""
    if dest.local:
        return
    dest.list()  # a listing (GET) names the credential problem; a HEAD answers only "403"
    bucket = dest.root.split("/", 1)[0]
    info = dest.guarded("checking bucket of", lambda: dest.fs.get_file_info(bucket))
    if info.type == pafs.FileType.NotFound:
        raise NotFound(f"S3 bucket '{bucket}' does not exist (create it first, or check AWS_ENDPOINT_URL)")
