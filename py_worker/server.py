"""`hf-bridge serve`: the grpc.aio front process, its worker pool and health service."""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from py_worker.auth import BearerAuth
from py_worker.checkpoints import CheckpointStore
from py_worker.config import ServerConfig
from py_worker.errors import BridgeError, Internal, from_exception
from py_worker.errors import InvalidArgument
from py_worker.front import Front
from py_worker.memory import tune_malloc
from py_worker.metrics import Metrics, MetricsInterceptor, MetricsServer
from py_worker.pool import Pool, log
from py_worker.wire import SERVICE_NAME, pb

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost", "[::1]")
# gRPC core's HTTP/2 write buffer per connection. Sending a streamed message
# completes once it is queued there, so with room for a few batches the next
# batch is handed over while the socket still drains the last one, instead of
# each multi-megabyte batch waiting for the one before it (about +25% MB/s
# into Elixir in `bench` figure 2).
HTTP2_WRITE_BUFFER = 8 * 1024 * 1024

# Clients PING a connection that has been quiet for a while to find a server
# that stopped answering (the Elixir client after 30 s by default). grpc-core
# would take a PING on an idle connection more often than once per 5 minutes
# (2 hours without calls) as abuse and close it with GOAWAY `too_many_pings`;
# this server takes one per second, calls or not.
MIN_CLIENT_PING_INTERVAL_MS = 1000


def _identity(data: bytes) -> bytes:
    return data


def _parse(cls: Any, data: bytes) -> Any:
    """Decode a request; malformed bytes give INVALID_ARGUMENT instead of gRPC's generic INTERNAL."""
    try:
        return cls.FromString(data)
    except Exception as exc:  # noqa: BLE001 - DecodeError, RuntimeWarning-turned-errors, ...
        raise InvalidArgument(f"malformed {cls.DESCRIPTOR.name} message: {exc}") from None


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    err = exc if isinstance(exc, BridgeError) else Internal(f"{type(exc).__name__}: {exc}")
    if not isinstance(exc, BridgeError):
        log(f"internal error: {type(exc).__name__}: {exc}")
    await context.abort(err.code, err.message)


def _unary(fn: Callable[..., Awaitable[Any]], cls: Any, with_peer: bool = False) -> Callable[..., Awaitable[Any]]:
    async def handler(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            request = _parse(cls, raw)
            if with_peer:
                return await fn(request, context.peer() or "unknown")
            return await fn(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            await _abort(context, exc)

    return handler


def build_handlers(front: Front, config: ServerConfig) -> grpc.GenericRpcHandler:
    """The HFBridge method handlers (ReadBatches passes pre-encoded Batch bytes through)."""

    async def read_batches(raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        try:
            request = _parse(pb.ReadRequest, raw)
            async for data in front.read_batches(request):
                yield data
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            await _abort(context, exc)

    async def export(raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            from py_worker.export.service import export_events
        except ImportError:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "export is not available in this installation")
            return
        try:
            request = _parse(pb.ExportRequest, raw)
            async for event in export_events(request, config):
                yield event
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            await _abort(context, exc if isinstance(exc, BridgeError) else from_exception(exc, "export"))

    ser = lambda m: m.SerializeToString()  # noqa: E731
    methods = {
        "GetInfo": grpc.unary_unary_rpc_method_handler(
            _unary(front.get_info, pb.DatasetSpec), _identity, ser),
        "OpenSession": grpc.unary_unary_rpc_method_handler(
            _unary(front.open_session, pb.OpenRequest, True), _identity, ser),
        "ReadBatches": grpc.unary_stream_rpc_method_handler(read_batches, _identity, _identity),
        "Ack": grpc.unary_unary_rpc_method_handler(_unary(front.ack, pb.AckRequest), _identity, ser),
        "ResumeSession": grpc.unary_unary_rpc_method_handler(
            _unary(front.resume_session, pb.ResumeRequest, True), _identity, ser),
        "CloseSession": grpc.unary_unary_rpc_method_handler(
            _unary(front.close_session, pb.CloseRequest), _identity, ser),
        "Export": grpc.unary_stream_rpc_method_handler(export, _identity, ser),
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, methods)


@dataclass(frozen=True)
class ServeOptions:
    """How `serve` listens: address, workers, auth, TLS, metrics and shutdown grace."""

    host: str = "127.0.0.1"
    port: int = 0
    workers: int = 2
    auth_token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    metrics_port: int | None = None
    drain_seconds: float = 5.0
    client_keepalive_seconds: float = 60.0


def _client_keepalive(seconds: float) -> list[tuple[str, int]]:
    """grpc options that PING quiet client connections every `seconds` and drop those that do not
    answer within as long again (none when `seconds` is 0). Without them a client that vanished
    without closing its TCP connection holds its calls until the system's TCP keepalive, hours later."""
    if seconds <= 0:
        return []
    ms = max(1, int(seconds * 1000))
    return [("grpc.keepalive_time_ms", ms), ("grpc.keepalive_timeout_ms", ms),
            # grpc-core gives up on an unanswered PING after this one (a minute by default).
            ("grpc.http2.ping_timeout_ms", ms)]


def _credentials(opts: ServeOptions) -> grpc.ServerCredentials:
    pair = [(Path(opts.tls_key).read_bytes(), Path(opts.tls_cert).read_bytes())]
    if opts.tls_client_ca:
        # Mutual TLS: clients must present a certificate signed by this CA.
        return grpc.ssl_server_credentials(pair, root_certificates=Path(opts.tls_client_ca).read_bytes(),
                                           require_client_auth=True)
    return grpc.ssl_server_credentials(pair)


def bind_warning(host: str, auth_token: str | None, tls: bool) -> str | None:
    """The warning printed when binding beyond loopback without a token (None when there is nothing to say)."""
    if host in LOOPBACK_HOSTS or auth_token:
        return None
    return (f"WARNING: listening on {host} without --auth-token-file: anyone who can reach this address can "
            f"read every dataset under the data roots{'' if tls else ' (and traffic is not encrypted)'}")


async def _drain(front: Front, server: grpc.aio.Server, grace: float) -> None:
    """Refuse new RPCs, let in-flight ones finish (up to `grace` seconds), then persist session records."""
    await server.stop(grace=grace)
    for s in list(front.sessions.values()):
        try:  # reaped/restarted sessions resume from here: keep their records fresh
            await asyncio.to_thread(front.store.touch, s.token)
        except Exception:  # noqa: BLE001
            pass


async def serve(config: ServerConfig, opts: ServeOptions) -> int:
    """Run the server until SIGTERM/SIGINT; prints `HF_BRIDGE_READY host:port` on stdout when ready.

    With `auth_token`, every RPC but health needs `authorization: Bearer <token>`;
    with `tls_cert`/`tls_key` (PEM files) the port speaks TLS, and with
    `tls_client_ca` clients must present a certificate signed by that CA.
    With `metrics_port`, Prometheus text metrics are served on 127.0.0.1.
    SIGTERM drains: new calls are refused, in-flight ones get `drain_seconds`
    to finish, checkpoints are flushed, and the exit code is 0.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    warning = bind_warning(opts.host, opts.auth_token, bool(opts.tls_cert))
    if warning:
        log(warning)
    store = CheckpointStore(config.state_dir)
    pool = Pool(config, opts.workers)
    pool.start()
    await pool.wait_ready()
    front = Front(config, pool, store)
    metrics = Metrics()
    metrics.attach(front, pool)
    size = config.limits.max_message_bytes
    interceptors: list[grpc.aio.ServerInterceptor] = [MetricsInterceptor(metrics)]
    if opts.auth_token:
        interceptors.append(BearerAuth(opts.auth_token))
    server = grpc.aio.server(interceptors=interceptors, options=[
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", size),
        ("grpc.so_reuseport", 0),
        ("grpc.http2.write_buffer_size", HTTP2_WRITE_BUFFER),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
        *_client_keepalive(opts.client_keepalive_seconds),
    ])
    server.add_generic_rpc_handlers((build_handlers(front, config),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"{opts.host}:{opts.port}"
    try:
        bound = server.add_secure_port(address, _credentials(opts)) if opts.tls_cert and opts.tls_key \
            else server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    metrics_server: MetricsServer | None = None
    if bound and opts.metrics_port is not None:
        try:
            metrics_server = MetricsServer(metrics, "127.0.0.1", opts.metrics_port).start()
        except OSError as exc:
            log(f"cannot serve metrics on 127.0.0.1:{opts.metrics_port}: {exc}")
            bound = 0
    if bound == 0:
        log(f"cannot listen on {address}")
        await pool.shutdown()
        store.close()
        return 2
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reaper = asyncio.create_task(front.reap_forever())
    shown = f"[{opts.host}]" if ":" in opts.host else opts.host
    if metrics_server is not None:
        sys.stdout.write(f"HF_BRIDGE_METRICS 127.0.0.1:{metrics_server.port}\n")
    sys.stdout.write(f"HF_BRIDGE_READY {shown}:{bound}\n")
    sys.stdout.flush()
    tls = "TLS" + (" with client certificates" if opts.tls_client_ca else "") if opts.tls_cert else "plaintext"
    log(f"listening on {shown}:{bound} ({tls}{', bearer token required' if opts.auth_token else ''}) with "
        f"{opts.workers} worker(s); data roots: {', '.join(map(str, config.data_roots))}; state: {config.state_dir}"
        + (f"; metrics on http://127.0.0.1:{metrics_server.port}/metrics" if metrics_server else ""))
    try:
        await stop.wait()
    finally:
        log(f"stopping: draining in-flight calls (up to {opts.drain_seconds:g}s)")
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        reaper.cancel()
        await _drain(front, server, opts.drain_seconds)
        pool.stopping = True
        await pool.shutdown()
        service = sys.modules.get("py_worker.export.service")
        if service is not None:  # loaded by an Export call: stop its spare job process
            await service.shutdown()
        store.close()
        if metrics_server is not None:
            metrics_server.stop()
        log("stopped")
    return 0


def run(config: ServerConfig, opts: ServeOptions) -> int:
    """Blocking entry used by the CLI."""
    tune_malloc()  # before the workers are spawned: they inherit it through the environment
    return asyncio.run(serve(config, opts))
