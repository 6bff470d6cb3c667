"""grpc.testing.TestService on grpcio, for the Elixir client's interop tests.

Generates its stubs from ../proto/test_service.proto with grpc_tools.protoc
into a temporary directory, binds 127.0.0.1 on a free port, prints
``READY <port>`` and serves until stdin closes (the test runner exits).
With ``INTEROP_TLS_CERT`` and ``INTEROP_TLS_KEY`` (PEM files) it serves TLS.

Behaviour follows the gRPC interop test description: ``response_size`` /
``response_parameters`` give payload sizes (zero bytes), ``interval_us``
sleeps between stream messages, ``response_status`` ends the call with that
status, and the ``x-grpc-test-echo-initial`` header and
``x-grpc-test-echo-trailing-bin`` trailer are echoed back.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any, Iterator

import grpc
from grpc_tools import protoc

PROTO_DIR = Path(__file__).resolve().parent.parent / "proto"
ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"


def load_stubs() -> tuple[Any, Any]:
    """Compile the proto into a temp dir and import the generated modules."""
    out = tempfile.mkdtemp(prefix="hf_interop_py_")
    include = Path(protoc.__file__).resolve().parent / "_proto"
    rc = protoc.main(
        [
            "protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO_DIR / "test_service.proto"),
        ]
    )
    if rc != 0:
        raise SystemExit(f"protoc failed with {rc}")
    sys.path.insert(0, out)
    return importlib.import_module("test_service_pb2"), importlib.import_module("test_service_pb2_grpc")


pb, pb_grpc = load_stubs()


def echo_metadata(context: grpc.ServicerContext) -> None:
    md = dict(context.invocation_metadata())
    if ECHO_INITIAL in md:
        context.send_initial_metadata(((ECHO_INITIAL, md[ECHO_INITIAL]),))
    if ECHO_TRAILING in md:
        context.set_trailing_metadata(((ECHO_TRAILING, md[ECHO_TRAILING]),))


def maybe_abort(status: Any, context: grpc.ServicerContext) -> None:
    if status is not None and status.code != 0:
        context.abort(grpc.StatusCode(_code(status.code)), status.message)


def _code(number: int) -> tuple[int, str]:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code.value
    return grpc.StatusCode.UNKNOWN.value


class TestService(pb_grpc.TestServiceServicer):
    def EmptyCall(self, request: Any, context: grpc.ServicerContext) -> Any:
        echo_metadata(context)
        return pb.Empty()

    def UnaryCall(self, request: Any, context: grpc.ServicerContext) -> Any:
        echo_metadata(context)
        if request.HasField("response_status"):
            maybe_abort(request.response_status, context)
        return pb.SimpleResponse(payload=pb.Payload(body=b"\0" * request.response_size))

    def StreamingOutputCall(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        echo_metadata(context)
        for params in request.response_parameters:
            if not context.is_active():
                return
            if params.interval_us:
                time.sleep(params.interval_us / 1e6)
            yield pb.StreamingOutputCallResponse(payload=pb.Payload(body=b"\0" * params.size))
        if request.HasField("response_status"):
            maybe_abort(request.response_status, context)


def main() -> None:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=int(os.environ.get("INTEROP_WORKERS", "32"))),
        options=[
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ],
    )
    pb_grpc.add_TestServiceServicer_to_server(TestService(), server)
    cert, key = os.environ.get("INTEROP_TLS_CERT"), os.environ.get("INTEROP_TLS_KEY")
    if cert and key:
        creds = grpc.ssl_server_credentials([(Path(key).read_bytes(), Path(cert).read_bytes())])
        port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"READY {port}", flush=True)

    def watch_stdin() -> None:
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
