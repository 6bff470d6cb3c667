"""Prometheus text metrics of a running server, served over HTTP on loopback.

`Metrics` keeps counters fed by `MetricsInterceptor` (a grpc.aio server
interceptor that sees every RPC: its final status code, and for ReadBatches
every Batch message with its rows, bytes and the time it took to produce)
and reads gauges the front and the pool already keep (open sessions, worker
restarts). `MetricsServer` answers `GET /metrics` with the text exposition
format (version 0.0.4) from a daemon thread using only `http.server`.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import grpc

# Upper bounds (seconds) of the batch latency histogram buckets.
LATENCY_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def batch_header(data: bytes) -> tuple[int, bool]:
    """(num_rows, end_of_data) of a serialised `Batch`, read from its leading fields without a full parse.

    Unknown or malformed input gives (0, False): metrics never fail a call.
    """
    rows, end, pos, n = 0, False, 0, len(data)
    try:
        while pos < n:
            key, pos = _varint(data, pos)
            field, wire = key >> 3, key & 7
            if wire == 0:
                value, pos = _varint(data, pos)
                if field == 2:
                    rows = value
                elif field == 4:
                    end = bool(value)
            elif wire == 2:
                size, pos = _varint(data, pos)
                pos += size
            else:
                break
    except IndexError:
        pass
    return rows, end


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


class Metrics:
    """Counters and a histogram; `render()` gives the Prometheus text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: dict[tuple[str, str], int] = {}
        self.batches = 0
        self.rows = 0
        self.bytes = 0
        self.buckets = [0] * len(LATENCY_BUCKETS)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.started = time.time()
        self.front: Any = None
        self.pool: Any = None

    def attach(self, front: Any, pool: Any) -> None:
        """Read gauges (open sessions, workers, restarts) from the running `Front` and `Pool`."""
        self.front, self.pool = front, pool

    def record_call(self, method: str, code: grpc.StatusCode) -> None:
        """Count one finished RPC by method and status code."""
        key = (method, code.name)
        with self._lock:
            self.calls[key] = self.calls.get(key, 0) + 1

    def record_batch(self, num_rows: int, size: int, seconds: float) -> None:
        """Count one delivered Batch message and observe how long it took to produce."""
        with self._lock:
            self.batches += 1
            self.rows += num_rows
            self.bytes += size
            self.latency_sum += seconds
            self.latency_count += 1
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    self.buckets[i] += 1
                    break

    def render(self) -> str:
        """The current values in the Prometheus text exposition format."""
        with self._lock:
            calls = dict(self.calls)
            batches, rows, size = self.batches, self.rows, self.bytes
            buckets, lsum, lcount = list(self.buckets), self.latency_sum, self.latency_count
        out: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(f"{name}{labels} {_num(v)}" for labels, v in samples)

        sessions = len(self.front.sessions) if self.front is not None else 0
        metric("hf_bridge_sessions_open", "gauge", "Sessions currently open.", [("", sessions)])
        metric("hf_bridge_batches_total", "counter", "Batch messages delivered by ReadBatches.", [("", batches)])
        metric("hf_bridge_rows_total", "counter", "Rows delivered by ReadBatches.", [("", rows)])
        metric("hf_bridge_bytes_total", "counter", "Bytes of Batch messages delivered.", [("", size)])
        workers = list(self.pool.workers) if self.pool is not None else []
        restarts = sum(max(0, w.generation - 1) for w in workers)
        metric("hf_bridge_worker_restarts_total", "counter", "Worker processes restarted after they died.",
               [("", restarts)])
        metric("hf_bridge_workers_alive", "gauge", "Worker processes running.",
               [("", sum(1 for w in workers if w.alive))])
        metric("hf_bridge_worker_sessions", "gauge", "Sessions placed on each worker (pid: its process).",
               [(f'{{worker="{w.name}",pid="{w.pid}"}}', len(w.sessions)) for w in workers])
        paths: dict[str, int] = {}
        for w in workers:
            for path, n in w.payload_bytes.items():
                paths[path] = paths.get(path, 0) + n
        metric("hf_bridge_worker_payload_bytes_total", "counter",
               "Batch bytes received from the workers, by path: lent (read from the worker's memory), "
               "ring (shared memory) or inline (the socket).",
               [(f'{{path="{p}"}}', v) for p, v in sorted(paths.items())])
        metric("hf_bridge_rpcs_total", "counter", "Finished RPCs by method and status code.",
               [(f'{{method="{m}",code="{c}"}}', v) for (m, c), v in sorted(calls.items())])
        errors: dict[str, int] = {}
        for (_m, c), v in calls.items():
            if c != "OK":
                errors[c] = errors.get(c, 0) + v
        metric("hf_bridge_errors_total", "counter", "RPCs that ended with a non-OK status, by code.",
               [(f'{{code="{c}"}}', v) for c, v in sorted(errors.items())])
        name = "hf_bridge_batch_latency_seconds"
        out.append(f"# HELP {name} Time to produce each delivered batch (waiting on the worker included).")
        out.append(f"# TYPE {name} histogram")
        acc = 0
        for bound, n in zip(LATENCY_BUCKETS, buckets):
            acc += n
            out.append(f'{name}_bucket{{le="{bound:g}"}} {acc}')
        out.append(f'{name}_bucket{{le="+Inf"}} {lcount}')
        out.append(f"{name}_sum {lsum:.6f}")
        out.append(f"{name}_count {lcount}")
        metric("hf_bridge_start_time_seconds", "gauge", "Unix time the server started.", [("", self.started)])
        return "\n".join(out) + "\n"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.6f}"


@contextlib.contextmanager
def _recorded(m: Metrics, method: str, context: grpc.aio.ServicerContext) -> Iterator[None]:
    """Count the call's final status: the one the handler set, else OK, or UNKNOWN when it raised."""
    try:
        yield
    except BaseException:
        m.record_call(method, _status_of(context, grpc.StatusCode.UNKNOWN))
        raise
    m.record_call(method, _status_of(context, grpc.StatusCode.OK) or grpc.StatusCode.OK)


def _status_of(context: grpc.aio.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    try:
        code = context.code()
    except Exception:  # noqa: BLE001 - older grpc without ServicerContext.code()
        return default
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        for c in grpc.StatusCode:
            if c.value[0] == code:
                return c
    return default


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts every RPC's final status and, for ReadBatches, every delivered batch."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: grpc.HandlerCallDetails
    ) -> Any:
        """Wrap the handler chosen by the rest of the chain."""
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method.rsplit("/", 1)[-1] or details.method
        m = self.metrics
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                with _recorded(m, method, context):
                    return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream is not None and not inspect.isasyncgenfunction(handler.unary_stream):
            # A streaming handler that sends with `context.write()` (the health service's Watch).
            inner_writer = handler.unary_stream

            async def writer(request: Any, context: grpc.aio.ServicerContext) -> None:
                with _recorded(m, method, context):
                    await inner_writer(request, context)

            return grpc.unary_stream_rpc_method_handler(
                writer, handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream
            batches = method == "ReadBatches"

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                with _recorded(m, method, context):
                    t0 = time.perf_counter()
                    async for item in inner_stream(request, context):
                        if batches and isinstance(item, (bytes, bytearray, memoryview)):
                            rows, end = batch_header(item)
                            if not end:
                                m.record_batch(rows, len(item), time.perf_counter() - t0)
                        yield item
                        t0 = time.perf_counter()

            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer)
        return handler


class MetricsServer:
    """`GET /metrics` on `host:port` from a daemon thread; `port` 0 picks a free one."""

    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 0) -> None:
        render = metrics.render

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                    self.send_error(404, "try /metrics")
                    return
                body = render().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port: int = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> "MetricsServer":
        """Start answering."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop answering and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()
