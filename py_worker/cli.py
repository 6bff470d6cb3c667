"""The `hf-bridge` command line: `serve`, `info`, and `export` when installed.

A dataset SPEC on the command line is a path or Hub id plus flags; other
subcommands reuse `add_spec_arguments` and `spec_from_args`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from py_worker.errors import BridgeError, InvalidArgument
from py_worker.limits import add_limit_arguments, limits_from_args
from py_worker.spec import FILTER_OPS, DatasetSpec, FilterTerm

_TERM_RE = re.compile(r"^\s*([^\s=!<>]+)\s*(==|!=|<=|>=|<|>|not\s+in|in)\s*(.+?)\s*$", re.IGNORECASE)


def _scalar(text: str) -> Any:
    t = text.strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        return t


def parse_filter(text: str) -> tuple[FilterTerm, ...]:
    """Parse one conjunction such as `"label == 1 and score >= 0.5"` or `"lang in (en, fr)"`.

    Values: quoted strings, true/false, integers, floats, else bare strings.
    Raises InvalidArgument on malformed input.
    """
    terms = []
    for part in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
        m = _TERM_RE.match(part)
        if not m:
            raise InvalidArgument(f"malformed filter {part!r}: expected 'column op value' with op one of "
                                  f"{', '.join(FILTER_OPS)}")
        column, op, raw = m.group(1), re.sub(r"\s+", " ", m.group(2).lower()), m.group(3)
        if op in ("in", "not in"):
            if not (raw.startswith(("(", "[")) and raw.endswith((")", "]"))):
                raise InvalidArgument(f"filter {part!r}: '{op}' needs a list such as (a, b)")
            value: Any = tuple(_scalar(v) for v in raw[1:-1].split(",") if v.strip())
        else:
            value = _scalar(raw)
        terms.append(FilterTerm(column, op, value))
    return tuple(terms)


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """Add SPEC (positional) and the dataset flags shared by every subcommand."""
    parser.add_argument("spec", metavar="SPEC",
                        help="Hub id (user/name), packaged builder (parquet/json/csv/arrow/text) or local folder/file")
    g = parser.add_argument_group("dataset")
    g.add_argument("--config", default="", help="dataset configuration name")
    g.add_argument("--split", default="", help="split to read (default: train)")
    g.add_argument("--revision", default="", help="Hub revision (branch, tag or commit)")
    g.add_argument("--data-files", action="append", default=[], metavar="[SPLIT=]PATTERN",
                   help="data files (globs allowed); repeatable; prefix with SPLIT= for other splits")
    g.add_argument("--columns", default="", help="comma-separated columns to keep, in order")
    g.add_argument("--filter", action="append", default=[], metavar="EXPR",
                   help="Parquet row filter, e.g. \"label == 1 and lang in (en, fr)\"; repeat for OR")
    g.add_argument("--shuffle", action="store_true", help="shuffle with a seeded buffer")
    g.add_argument("--seed", type=int, default=0, help="shuffle seed (default: 0)")
    g.add_argument("--shuffle-buffer", type=int, default=0, help="shuffle buffer size (default: 1000)")
    g.add_argument("--num-shards", type=int, default=0, help="split the source into this many shards")
    g.add_argument("--shard-index", type=int, default=0, help="which shard to read (default: 0)")
    g.add_argument("--skip", type=int, default=0, help="skip this many rows first")
    g.add_argument("--take", type=int, default=None, help="read at most this many rows")


def spec_from_args(args: argparse.Namespace) -> DatasetSpec:
    """Build a DatasetSpec from flags added by `add_spec_arguments` (raises InvalidArgument)."""
    by_split: dict[str, list[str]] = {}
    for item in args.data_files:
        split, sep, pattern = item.partition("=")
        if not sep or "/" in split or "*" in split:
            split, pattern = "", item
        by_split.setdefault(split, []).append(pattern)
    columns = tuple(c.strip() for c in args.columns.split(",") if c.strip()) if args.columns else ()
    return DatasetSpec(
        path=args.spec,
        config=args.config,
        split=args.split,
        revision=args.revision,
        data_files=tuple((s, tuple(p)) for s, p in by_split.items()),
        columns=columns,
        filters=tuple(parse_filter(f) for f in args.filter),
        shuffle=args.shuffle,
        seed=args.seed,
        shuffle_buffer=args.shuffle_buffer,
        num_shards=args.num_shards,
        shard_index=args.shard_index,
        skip=args.skip,
        take=args.take,
    )


def _roots(values: Sequence[str] | None) -> list[Path]:
    return [Path(v) for v in values] if values else [Path.cwd()]


def _cmd_info(args: argparse.Namespace) -> int:
    from py_worker.arrow_ipc import ipc_to_schema
    from py_worker.config import ServerConfig
    from py_worker.spec import describe

    config = ServerConfig(data_roots=_roots(args.data_root))
    info = describe(spec_from_args(args), config)
    if args.json:
        from google.protobuf import json_format

        out = json_format.MessageToDict(info)
        out.pop("arrowSchema", None)
        out["features"] = json.loads(info.features_json)
        out.pop("featuresJson", None)
        print(json.dumps(out, indent=2))
        return 0
    print(f"builder:    {info.builder}")
    if info.configs:
        print(f"configs:    {', '.join(info.configs)}")
    print(f"num_shards: {info.num_shards}")
    print("splits:")
    for s in info.splits:
        rows = f"{s.num_rows} rows" if s.HasField("num_rows") else "rows unknown"
        print(f"  {s.name}: {rows}")
    print("features:")
    print("  " + json.dumps(json.loads(info.features_json), indent=2).replace("\n", "\n  "))
    if info.arrow_schema:
        print("arrow schema:")
        print("  " + str(ipc_to_schema(info.arrow_schema).remove_metadata()).replace("\n", "\n  "))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from py_worker.config import ServerConfig, default_state_dir
    from py_worker.server import ServeOptions, run

    try:
        limits = limits_from_args(args)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from exc
    if args.workers < 1:
        raise InvalidArgument("--workers must be at least 1")
    config = ServerConfig(
        data_roots=_roots(args.data_root),
        export_roots=_roots(args.export_root),
        state_dir=Path(args.state_dir) if args.state_dir else default_state_dir(),
        limits=limits,
    )
    from py_worker.auth import load_token

    if bool(args.tls_cert) != bool(args.tls_key):
        raise InvalidArgument("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        raise InvalidArgument("--tls-client-ca needs --tls-cert and --tls-key")
    for flag, value in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key),
                        ("--tls-client-ca", args.tls_client_ca)):
        if value and not Path(value).is_file():
            raise InvalidArgument(f"{flag} {value}: no such file")
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        raise InvalidArgument("--metrics-port must be between 0 and 65535")
    if args.drain_seconds < 0:
        raise InvalidArgument("--drain-seconds must not be negative")
    if args.client_keepalive < 0:
        raise InvalidArgument("--client-keepalive must not be negative (0 turns it off)")
    try:
        token = load_token(args.auth_token_file)
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"cannot read the auth token: {exc}") from exc
    return run(config, ServeOptions(
        host=args.host, port=args.port, workers=args.workers, auth_token=token, tls_cert=args.tls_cert,
        tls_key=args.tls_key, tls_client_ca=args.tls_client_ca, metrics_port=args.metrics_port,
        drain_seconds=args.drain_seconds, client_keepalive_seconds=args.client_keepalive,
    ))


def build_parser() -> argparse.ArgumentParser:
    """The full `hf-bridge` argument parser."""
    parser = argparse.ArgumentParser(prog="hf-bridge", description="HuggingFace datasets over gRPC for Elixir")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server with a worker pool")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=50051, help="port; 0 picks a free one (default: 50051)")
    serve.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    serve.add_argument("--data-root", action="append", metavar="DIR",
                       help="directory local datasets may be read from; repeatable (default: current directory)")
    serve.add_argument("--export-root", action="append", metavar="DIR",
                       help="directory exports may write to; repeatable (default: current directory)")
    serve.add_argument("--state-dir", metavar="DIR", default=None,
                       help="sqlite checkpoints (default: $HF_BRIDGE_STATE_DIR or ~/.cache/hf_bridge)")
    serve.add_argument("--auth-token-file", metavar="FILE", default=None,
                       help="require 'authorization: Bearer <token>' with the token in FILE "
                            "(default: $HF_BRIDGE_AUTH_TOKEN when set, else no token)")
    serve.add_argument("--tls-cert", metavar="PEM", default=None, help="serve TLS with this certificate chain")
    serve.add_argument("--tls-key", metavar="PEM", default=None, help="private key for --tls-cert")
    serve.add_argument("--tls-client-ca", metavar="PEM", default=None,
                       help="require client certificates signed by this CA (mutual TLS; needs --tls-cert)")
    serve.add_argument("--metrics-port", type=int, default=None, metavar="P",
                       help="serve Prometheus text metrics at http://127.0.0.1:P/metrics (0 picks a free port, "
                            "printed as 'HF_BRIDGE_METRICS host:port'; default: off)")
    serve.add_argument("--drain-seconds", type=float, default=5.0, metavar="S",
                       help="on SIGTERM, let in-flight calls finish for up to S seconds (default: 5)")
    serve.add_argument("--client-keepalive", type=float, default=60.0, metavar="S",
                       help="PING a client connection after S seconds with nothing received and close it, "
                            "ending its calls, when S more pass without an answer: frees what a client "
                            "that vanished without closing its connection held (default: 60; 0: off)")
    add_limit_arguments(serve)
    serve.set_defaults(func=_cmd_serve)

    info = sub.add_parser("info", help="print a dataset's features, schema and splits")
    add_spec_arguments(info)
    info.add_argument("--data-root", action="append", metavar="DIR",
                      help="directory local datasets may be read from; repeatable (default: current directory)")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_cmd_info)

    try:
        from py_worker.export.cli import add_export_command
    except ImportError:
        pass
    else:
        add_export_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; leaves with os._exit after iterating datasets (see ARCHITECTURE traps)."""
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "export":
        from py_worker.memory import tune_export_allocator

        tune_export_allocator()  # before anything imports pyarrow
    try:
        code = args.func(args)
    except BridgeError as exc:
        sys.stderr.write(f"hf-bridge: error [{exc.code.name}]: {exc.message}\n")
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    sys.stderr.flush()
    if args.command != "serve":
        os._exit(int(code or 0))
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
