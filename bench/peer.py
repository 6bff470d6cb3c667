"""Baseline programs, each run as its own process: `python -m bench.peer COMMAND ...`.

Measurements print one line `RESULT {json}`; servers print `READY <port>`
once listening and serve until SIGTERM.

Commands:
  a               in-process `datasets` streaming, `with_format("arrow").iter(batch_size)`
  raw-server      grpcio server streaming pre-built Arrow IPC batch streams (one per message)
  raw-client      grpcio client reading that stream (the grpcio transport ceiling)
  flight-server   pyarrow.flight server whose do_get returns the in-memory table
  flight-client   pyarrow.flight do_get of that table
  json-server     grpcio server sending each batch's rows as one JSON message
  export          plain pyarrow read-and-write of the Parquet shards
  pylist          pyarrow `Table.to_pylist()` materialisation rate
  ipc-read        pyarrow reading single-batch IPC streams from memory into Python column lists
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import sys
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any, Iterator

RAW_PATH = "/hf_bridge_bench.Raw/Read"
JSON_PATH = "/hf_bridge_bench.Json/Read"
MSG_LIMIT = 256 * 1024 * 1024
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MSG_LIMIT),
    ("grpc.max_receive_message_length", MSG_LIMIT),
    ("grpc.so_reuseport", 0),
]


def result(**fields: Any) -> None:
    """Print the measurement line the orchestrator parses (with this process's CPU seconds)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    fields.setdefault("cpu_seconds", round(ru.ru_utime + ru.ru_stime, 3))
    sys.stdout.write("RESULT " + json.dumps(fields) + "\n")
    sys.stdout.flush()


def _cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _ready(port: int) -> None:
    sys.stdout.write(f"READY {port}\n")
    sys.stdout.flush()


def _wait_for_term() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


def _files(pattern: str) -> list[str]:
    return sorted(glob.glob(pattern))


# ---- A: in-process datasets streaming --------------------------------------------

def cmd_a(args: argparse.Namespace) -> None:
    """A: load the Parquet set with `datasets` streaming and iterate Arrow batches in-process."""
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    c0 = _cpu()
    t0 = time.perf_counter()
    ds = datasets.load_dataset("parquet", data_files=_files(args.files), split="train", streaming=True)
    it = ds.with_format("arrow").iter(batch_size=args.batch_size)
    t_load = time.perf_counter()
    rows = 0
    nbytes = 0
    t_first = None
    for table in it:
        if t_first is None:
            t_first = time.perf_counter()
        rows += table.num_rows
        nbytes += table.nbytes
        if args.first_only or (args.max_rows and rows >= args.max_rows):
            break
    t_end = time.perf_counter()
    result(rows=rows, bytes=nbytes, seconds=t_end - t0, load_seconds=t_load - t0,
           first_batch_seconds=(t_first or t_end) - t0, cpu_seconds=round(_cpu() - c0, 3))


# ---- B: raw grpcio stream of the same Arrow IPC bytes ------------------------------

def _ipc_messages(arrow_file: str, batch_size: int) -> list[bytes]:
    import pyarrow as pa

    table = pa.ipc.open_stream(pa.memory_map(arrow_file)).read_all()
    out = []
    for batch in table.combine_chunks().to_batches(max_chunksize=batch_size):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as w:
            w.write_batch(batch)
        out.append(sink.getvalue().to_pybytes())
    return out


def _serve_generic(path: str, handler_fn) -> None:
    import grpc

    service, method = path.strip("/").split("/")
    handler = grpc.method_handlers_generic_handler(service, {
        method: grpc.unary_stream_rpc_method_handler(handler_fn, request_deserializer=None,
                                                     response_serializer=None),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=GRPC_OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    _ready(port)
    _wait_for_term()
    server.stop(1).wait(5)


def cmd_raw_server(args: argparse.Namespace) -> None:
    """B server: stream the pre-built IPC messages of the whole table on every call."""
    messages = _ipc_messages(args.arrow_file, args.batch_size)

    def read(request: bytes, context: Any) -> Iterator[bytes]:
        yield from messages

    _serve_generic(RAW_PATH, read)


def cmd_raw_client(args: argparse.Namespace) -> None:
    """B client: receive every message, count bytes."""
    import grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{args.port}", options=GRPC_OPTIONS)
    call = channel.unary_stream(RAW_PATH, request_serializer=None, response_deserializer=None)
    c0 = _cpu()
    t0 = time.perf_counter()
    nbytes = 0
    messages = 0
    for data in call(b"", timeout=args.timeout):
        nbytes += len(data)
        messages += 1
    seconds = time.perf_counter() - t0
    cpu = _cpu() - c0
    channel.close()
    result(bytes=nbytes, messages=messages, seconds=seconds, cpu_seconds=round(cpu, 3))


# ---- C: pyarrow.flight ----------------------------------------------------------

def cmd_flight_server(args: argparse.Namespace) -> None:
    """C server: do_get returns the in-memory table in batches of `batch_size` rows."""
    import pyarrow as pa
    import pyarrow.flight as flight

    table = pa.ipc.open_stream(pa.memory_map(args.arrow_file)).read_all().combine_chunks()
    batches = table.to_batches(max_chunksize=args.batch_size)
    table = pa.Table.from_batches(batches, schema=table.schema)

    class Server(flight.FlightServerBase):
        def do_get(self, context: Any, ticket: Any) -> Any:
            return flight.RecordBatchStream(table)

    server = Server("grpc://127.0.0.1:0")
    _ready(server.port)
    _wait_for_term()
    server.shutdown()


def cmd_flight_client(args: argparse.Namespace) -> None:
    """C client: do_get and count the Arrow buffer bytes received."""
    import pyarrow.flight as flight

    client = flight.connect(f"grpc://127.0.0.1:{args.port}")
    c0 = _cpu()
    t0 = time.perf_counter()
    reader = client.do_get(flight.Ticket(b"all"))
    nbytes = 0
    rows = 0
    for chunk in reader:
        nbytes += chunk.data.get_total_buffer_size()
        rows += chunk.data.num_rows
    seconds = time.perf_counter() - t0
    cpu = _cpu() - c0
    client.close()
    result(bytes=nbytes, rows=rows, seconds=seconds, cpu_seconds=round(cpu, 3))


# ---- D: rows as JSON over gRPC --------------------------------------------------

def cmd_json_server(args: argparse.Namespace) -> None:
    """D server: each batch's rows as one JSON array message (datasets -> to_pylist -> json.dumps)."""
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    files = _files(args.files)

    def read(request: bytes, context: Any) -> Iterator[bytes]:
        ds = datasets.load_dataset("parquet", data_files=files, split="train", streaming=True)
        if args.rows:
            ds = ds.take(args.rows)
        for table in ds.with_format("arrow").iter(batch_size=args.batch_size):
            yield json.dumps(table.to_pylist(), ensure_ascii=False).encode()

    _serve_generic(JSON_PATH, read)


# ---- export baseline -----------------------------------------------------------

def cmd_export(args: argparse.Namespace) -> None:
    """Export baseline: read every shard with pyarrow and write one zstd Parquet file with a page index."""
    import pyarrow.parquet as pq

    files = _files(args.files)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = 0
    in_bytes = sum(os.path.getsize(f) for f in files)
    first = pq.ParquetFile(files[0])
    path = out / "part-00000.parquet"
    with pq.ParquetWriter(path, first.schema_arrow, compression="zstd", write_page_index=True,
                          write_page_checksum=True) as writer:
        for f in files:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=args.batch_size):
                writer.write_batch(batch, row_group_size=args.row_group_rows)
                rows += batch.num_rows
    seconds = time.perf_counter() - t0
    result(rows=rows, in_bytes=in_bytes, out_bytes=path.stat().st_size, seconds=seconds)


# ---- rows / IPC reader baselines ---------------------------------------------------

def cmd_pylist(args: argparse.Namespace) -> None:
    """Rows baseline: pyarrow `RecordBatch.to_pylist()` over the first `rows` rows."""
    import pyarrow.parquet as pq

    files = _files(args.files)
    rows = values = 0
    t0 = time.perf_counter()
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=args.batch_size):
            for row in batch.to_pylist():
                values += len(row)
            rows += batch.num_rows
            if rows >= args.rows:
                break
        if rows >= args.rows:
            break
    seconds = time.perf_counter() - t0
    result(rows=rows, values=values, seconds=seconds)


def cmd_ipc_read(args: argparse.Namespace) -> None:
    """Arrow reader baseline: single-batch IPC streams from memory into Python column lists."""
    import pyarrow as pa

    blobs = [p.read_bytes() for p in sorted(Path(args.dir).glob("*.arrows"))]
    total = sum(len(b) for b in blobs)
    passes = max(1, int(args.min_bytes // max(total, 1)) + 1)
    rows = 0
    t0 = time.perf_counter()
    for _ in range(passes):
        for b in blobs:
            t = pa.ipc.open_stream(pa.py_buffer(b)).read_all()
            cols = t.to_pydict()
            rows += len(next(iter(cols.values()), []))
    seconds = time.perf_counter() - t0
    result(bytes=total * passes, rows=rows, seconds=seconds)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry of the baseline programs."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    p = argparse.ArgumentParser(prog="python -m bench.peer")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("a")
    a.add_argument("--files", required=True)
    a.add_argument("--batch-size", type=int, default=1024)
    a.add_argument("--first-only", action="store_true")
    a.add_argument("--max-rows", type=int, default=0)
    rs = sub.add_parser("raw-server")
    rs.add_argument("--arrow-file", required=True)
    rs.add_argument("--batch-size", type=int, default=1024)
    for name in ("raw-client", "flight-client"):
        c = sub.add_parser(name)
        c.add_argument("--port", type=int, required=True)
        c.add_argument("--timeout", type=float, default=600.0)
    fs = sub.add_parser("flight-server")
    fs.add_argument("--arrow-file", required=True)
    fs.add_argument("--batch-size", type=int, default=1024)
    js = sub.add_parser("json-server")
    js.add_argument("--files", required=True)
    js.add_argument("--rows", type=int, default=0)
    js.add_argument("--batch-size", type=int, default=1024)
    ex = sub.add_parser("export")
    ex.add_argument("--files", required=True)
    ex.add_argument("--out", required=True)
    ex.add_argument("--batch-size", type=int, default=1000)
    ex.add_argument("--row-group-rows", type=int, default=100_000)
    pl = sub.add_parser("pylist")
    pl.add_argument("--files", required=True)
    pl.add_argument("--rows", type=int, default=20_000)
    pl.add_argument("--batch-size", type=int, default=1024)
    ir = sub.add_parser("ipc-read")
    ir.add_argument("--dir", required=True)
    ir.add_argument("--min-bytes", type=int, default=200 * 1024 * 1024)
    args = p.parse_args(argv)
    commands = {
        "a": cmd_a, "raw-server": cmd_raw_server, "raw-client": cmd_raw_client,
        "flight-server": cmd_flight_server, "flight-client": cmd_flight_client,
        "json-server": cmd_json_server, "export": cmd_export, "pylist": cmd_pylist,
        "ipc-read": cmd_ipc_read,
    }
    code = 0
    try:
        commands[args.cmd](args)
    except Exception as exc:  # noqa: BLE001 - reported to the orchestrator
        sys.stderr.write(f"bench.peer {args.cmd}: {type(exc).__name__}: {exc}\n")
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # datasets + pyarrow may abort at interpreter shutdown after streaming.
    os._exit(code)


if __name__ == "__main__":
    main()
