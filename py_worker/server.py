"""`hf-bridge serve`: the grpc.aio front process, its worker pool and health service."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from py_worker.auth import BearerAuth
from py_worker.checkpoints import CheckpointStore
from py_worker.config import ServerConfig
from py_worker.errors import BridgeError, Internal, from_exception
from py_worker.front import Front
from py_worker.pool import Pool, log
from py_worker.wire import SERVICE_NAME, pb


def _identity(data: bytes) -> bytes:
    return data


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    err = exc if isinstance(exc, BridgeError) else Internal(f"{type(exc).__name__}: {exc}")
    if not isinstance(exc, BridgeError):
        log(f"internal error: {type(exc).__name__}: {exc}")
    await context.abort(err.code, err.message)


def _unary(fn: Callable[..., Awaitable[Any]], with_peer: bool = False):
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
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

    async def read_batches(request: Any, context: grpc.aio.ServicerContext):
        try:
            async for data in front.read_batches(request):
                yield data
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            await _abort(context, exc)

    async def export(request: Any, context: grpc.aio.ServicerContext):
        try:
            from py_worker.export.service import export_events
        except ImportError:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "export is not available in this installation")
            return
        try:
            async for event in export_events(request, config):
                yield event
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            await _abort(context, exc if isinstance(exc, BridgeError) else from_exception(exc, "export"))

    ser = lambda m: m.SerializeToString()  # noqa: E731
    methods = {
        "GetInfo": grpc.unary_unary_rpc_method_handler(
            _unary(front.get_info), pb.DatasetSpec.FromString, ser),
        "OpenSession": grpc.unary_unary_rpc_method_handler(
            _unary(front.open_session, True), pb.OpenRequest.FromString, ser),
        "ReadBatches": grpc.unary_stream_rpc_method_handler(
            read_batches, pb.ReadRequest.FromString, _identity),
        "Ack": grpc.unary_unary_rpc_method_handler(_unary(front.ack), pb.AckRequest.FromString, ser),
        "ResumeSession": grpc.unary_unary_rpc_method_handler(
            _unary(front.resume_session, True), pb.ResumeRequest.FromString, ser),
        "CloseSession": grpc.unary_unary_rpc_method_handler(
            _unary(front.close_session), pb.CloseRequest.FromString, ser),
        "Export": grpc.unary_stream_rpc_method_handler(export, pb.ExportRequest.FromString, ser),
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, methods)


async def serve(config: ServerConfig, host: str = "127.0.0.1", port: int = 0, workers: int = 2,
                auth_token: str | None = None, tls_cert: str | None = None, tls_key: str | None = None) -> int:
    """Run the server until SIGTERM/SIGINT; prints `HF_BRIDGE_READY host:port` on stdout when ready.

    With `auth_token`, every RPC but health needs `authorization: Bearer <token>`;
    with `tls_cert`/`tls_key` (PEM files) the port speaks TLS.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    store = CheckpointStore(config.state_dir)
    pool = Pool(config, workers)
    pool.start()
    await pool.wait_ready()
    front = Front(config, pool, store)
    size = config.limits.max_message_bytes
    interceptors = [BearerAuth(auth_token)] if auth_token else []
    server = grpc.aio.server(interceptors=interceptors, options=[
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", size),
        ("grpc.so_reuseport", 0),
    ])
    server.add_generic_rpc_handlers((build_handlers(front, config),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if tls_cert and tls_key:
        creds = grpc.ssl_server_credentials([(Path(tls_key).read_bytes(), Path(tls_cert).read_bytes())])
        bound = server.add_secure_port(f"{host}:{port}", creds)
    else:
        bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        log(f"cannot listen on {host}:{port}")
        await pool.shutdown()
        return 2
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reaper = asyncio.create_task(front.reap_forever())
    shown = f"[{host}]" if ":" in host else host
    sys.stdout.write(f"HF_BRIDGE_READY {shown}:{bound}\n")
    sys.stdout.flush()
    log(f"listening on {shown}:{bound} ({'TLS' if tls_cert else 'plaintext'}"
        f"{', bearer token required' if auth_token else ''}) with {workers} worker(s); data roots: "
        f"{', '.join(map(str, config.data_roots))}; state: {config.state_dir}")
    try:
        await stop.wait()
    finally:
        log("stopping")
        pool.stopping = True
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        reaper.cancel()
        await server.stop(grace=2.0)
        await pool.shutdown()
        store.close()
        log("stopped")
    return 0


def run(config: ServerConfig, host: str, port: int, workers: int, auth_token: str | None = None,
        tls_cert: str | None = None, tls_key: str | None = None) -> int:
    """Blocking entry used by the CLI."""
    return asyncio.run(serve(config, host, port, workers, auth_token, tls_cert, tls_key))
