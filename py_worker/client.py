"""A small typed Python client for the hf_bridge gRPC service (tests, demos, scripts).

Every failure surfaces as a `py_worker.errors.BridgeError` subclass carrying
the server's status code and message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator

import grpc
import pyarrow as pa

from py_worker.arrow_ipc import ipc_to_schema, ipc_to_table
from py_worker.errors import BridgeError, error_for
from py_worker.spec import DatasetSpec
from py_worker.wire import SERVICE_NAME, pb, pb_grpc


@dataclass(frozen=True)
class Info:
    """GetInfo result."""

    features: dict
    schema: pa.Schema | None
    splits: list[tuple[str, int | None]]
    num_shards: int
    builder: str
    configs: list[str]
    raw: Any


@dataclass(frozen=True)
class SessionHandle:
    """OpenSession / ResumeSession result."""

    session_id: str
    resume_token: str
    schema: pa.Schema | None
    features: dict
    next_seq: int
    worker: str
    batch_size: int


@dataclass(frozen=True)
class ReadBatch:
    """One delivered batch; `table` is None on the end-of-data marker."""

    seq: int
    num_rows: int
    table: pa.Table | None
    end_of_data: bool
    ipc: bytes


def _err(exc: grpc.RpcError) -> BridgeError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return error_for(code.name, details or code.name)


def _spec(spec: DatasetSpec | Any) -> Any:
    return spec.to_proto() if isinstance(spec, DatasetSpec) else spec


class BridgeClient:
    """Blocking client; `target` is "host:port". Use as a context manager or call `close()`."""

    def __init__(self, target: str, timeout: float | None = 120.0, max_message_bytes: int = 256 * 1024 * 1024,
                 token: str | None = None, root_certificates: bytes | None = None,
                 server_name: str | None = None, keepalive_ms: int | None = 30_000,
                 keepalive_timeout_ms: int = 10_000) -> None:
        """Connect to `target`; `token` adds a bearer token, `root_certificates` (PEM) switches to TLS.

        After `keepalive_ms` with nothing received the channel PINGs the server, and a server that
        does not answer within `keepalive_timeout_ms` (it hung, or the network went away without
        closing the connection) fails the calls under way with UNAVAILABLE instead of leaving them
        to their deadlines. `keepalive_ms=None` turns this off. The hf_bridge server takes one PING
        a second on an idle connection.
        """
        self.target = target
        self.timeout = timeout
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.use_local_subchannel_pool", 1),  # one connection per client object
        ]
        if keepalive_ms is not None:
            options += [
                ("grpc.keepalive_time_ms", keepalive_ms),
                ("grpc.keepalive_timeout_ms", keepalive_timeout_ms),
                # grpc-core gives up on an unanswered PING after this one (a minute by default).
                ("grpc.http2.ping_timeout_ms", keepalive_timeout_ms),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.max_pings_without_data", 0),
            ]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        if root_certificates is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.stub = pb_grpc.HFBridgeStub(self.channel)

    def __enter__(self) -> "BridgeClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self, session_id: str | None = None) -> None:
        """CloseSession when `session_id` is given; otherwise close the channel."""
        if session_id is not None:
            self.close_session(session_id)
        else:
            self.channel.close()

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise _err(exc) from None

    def info(self, spec: DatasetSpec | Any) -> Info:
        """GetInfo for a spec."""
        r = self._call(self.stub.GetInfo, _spec(spec))
        return Info(
            features=json.loads(r.features_json or "{}"),
            schema=ipc_to_schema(r.arrow_schema) if r.arrow_schema else None,
            splits=[(s.name, s.num_rows if s.HasField("num_rows") else None) for s in r.splits],
            num_shards=r.num_shards,
            builder=r.builder,
            configs=list(r.configs),
            raw=r,
        )

    @staticmethod
    def _session(r: Any) -> SessionHandle:
        return SessionHandle(
            session_id=r.session_id,
            resume_token=r.resume_token,
            schema=ipc_to_schema(r.arrow_schema) if r.arrow_schema else None,
            features=json.loads(r.features_json or "{}"),
            next_seq=r.next_seq,
            worker=r.worker,
            batch_size=r.batch_size,
        )

    def open(self, spec: DatasetSpec | Any, batch_size: int = 0, max_batch_bytes: int = 0) -> SessionHandle:
        """OpenSession."""
        req = pb.OpenRequest(spec=_spec(spec), batch_size=batch_size, max_batch_bytes=max_batch_bytes)
        return self._session(self._call(self.stub.OpenSession, req))

    def read(self, session_id: str, max_batches: int = 0) -> Iterator[ReadBatch]:
        """ReadBatches as an iterator of decoded batches (ends after end-of-data or `max_batches`)."""
        stream = self.stub.ReadBatches(pb.ReadRequest(session_id=session_id, max_batches=max_batches),
                                       timeout=self.timeout, metadata=self.metadata)
        try:
            for b in stream:
                table = ipc_to_table(b.arrow_ipc) if b.arrow_ipc else None
                yield ReadBatch(b.seq, b.num_rows, table, b.end_of_data, b.arrow_ipc)
        except grpc.RpcError as exc:
            raise _err(exc) from None
        finally:
            stream.cancel()

    def read_all(self, session_id: str) -> pa.Table | None:
        """Read every remaining batch and concatenate them (None when no batch has rows)."""
        tables = [b.table for b in self.read(session_id) if b.table is not None]
        return pa.concat_tables(tables) if tables else None

    def ack(self, session_id: str, seq: int) -> int:
        """Ack; returns the highest acknowledged seq."""
        return self._call(self.stub.Ack, pb.AckRequest(session_id=session_id, seq=seq)).acked_seq

    def resume(self, resume_token: str) -> SessionHandle:
        """ResumeSession."""
        return self._session(self._call(self.stub.ResumeSession, pb.ResumeRequest(resume_token=resume_token)))

    def close_session(self, session_id: str, keep_checkpoint: bool = False) -> None:
        """CloseSession; with `keep_checkpoint` the session stays resumable by its token."""
        self._call(self.stub.CloseSession, pb.CloseRequest(session_id=session_id, keep_checkpoint=keep_checkpoint))

    def health(self, service: str = "") -> str:
        """The grpc.health.v1 status name ("SERVING", ...)."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            r = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise _err(exc) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)

    SERVICE = SERVICE_NAME
