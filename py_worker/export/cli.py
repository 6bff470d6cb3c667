"""`hf-bridge export`: write a dataset to Parquet from the command line, no server needed.

    hf-bridge export SPEC DEST [dataset flags] [--max-file-bytes N] [--row-group-rows N]
                     [--compression zstd] [--overwrite | --resume] [--cdc] [--batch-size N]
                     [--export-root DIR] [--s3-endpoint URL] [--job-id ID]
    hf-bridge export --merge DEST

DEST is a local directory or `s3://bucket/prefix`. With `--num-shards N
--shard-index I` several processes export disjoint shards into one DEST; the
last one to finish publishes the merged `_manifest.json` (`--merge` does it
by hand). Progress goes to stderr; the exit code is 0 on success, 1 on a
clear error (message on stderr), 130 when interrupted (resume with `--resume`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from py_worker.errors import BridgeError, InvalidArgument


def _size(text: str) -> int:
    """Parse a byte count such as 1000000, 64MiB, 512MB, 2G."""
    t = text.strip().lower().replace("_", "")
    units = {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
             "k": 1024, "m": 1024**2, "g": 1024**3, "b": 1}
    for suffix, mult in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if t.endswith(suffix):
            try:
                return int(float(t[: -len(suffix)]) * mult)
            except ValueError:
                break
    try:
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a byte count: {text!r} (e.g. 268435456, 256MiB, 1G)") from None


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """Add SPEC, DEST, the dataset flags and the export flags to `parser`."""
    from py_worker.cli import add_spec_arguments
    from py_worker.export import options as o

    add_spec_arguments(parser)
    dest = parser.add_argument("dest", metavar="DEST",
                               help="local directory (under --export-root when given) or s3://bucket/prefix")
    for action in parser._actions:
        if action is dest or (action.dest == "spec" and not action.option_strings):
            # SPEC and DEST may be left out with --merge. They keep nargs=None (exactly one
            # value each) so that flags may sit between them; the handler checks presence.
            action.required = False
            action.default = None
    g = parser.add_argument_group("export")
    g.add_argument("--max-file-bytes", type=_size, metavar="BYTES", default=o.DEFAULT_MAX_FILE_BYTES,
                   help="roll to a new file past this size (default: 256MiB)")
    g.add_argument("--row-group-rows", type=int, metavar="ROWS", default=o.DEFAULT_ROW_GROUP_ROWS,
                   help=f"rows per row group (default: {o.DEFAULT_ROW_GROUP_ROWS:,})")
    g.add_argument("--row-group-bytes", type=_size, metavar="BYTES", default=o.DEFAULT_ROW_GROUP_BYTES,
                   help="uncompressed bytes per row group (default: 128MiB)")
    g.add_argument("--compression", default=o.DEFAULT_COMPRESSION, choices=o.COMPRESSIONS,
                   help="Parquet codec (default: zstd)")
    g.add_argument("--compression-level", type=int, default=None, metavar="N", help="codec level (default: the codec's)")
    g.add_argument("--cdc", action="store_true", help="content-defined chunking of data pages (dedup-friendly)")
    g.add_argument("--batch-size", type=int, metavar="ROWS", default=o.DEFAULT_BATCH_SIZE,
                   help=f"rows per read batch (default: {o.DEFAULT_BATCH_SIZE:,})")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="replace an existing export at DEST")
    mode.add_argument("--resume", action="store_true", help="continue an interrupted export from its checkpoint")
    mode.add_argument("--merge", metavar="DEST", default=None,
                      help="only publish the merged manifest of a sharded export at DEST")
    g.add_argument("--job-id", default="", metavar="ID", help="identifier recorded in the manifest and checkpoint")
    g.add_argument("--export-root", action="append", metavar="DIR",
                   help="refuse local destinations outside these directories; repeatable (default: no restriction)")
    g.add_argument("--data-root", action="append", metavar="DIR",
                   help="directories local datasets may be read from; repeatable "
                        "(default: the current directory, then the whole file system)")
    g.add_argument("--s3-endpoint", default="", metavar="URL", help="S3 endpoint URL (default: $AWS_ENDPOINT_URL)")
    g.add_argument("--s3-region", default="", metavar="REGION", help="S3 region (default: $AWS_REGION or us-east-1)")
    g.add_argument("--quiet", action="store_true", help="no progress bar, only the summary")


def add_export_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register `export` on an argparse subparsers object; its handler returns an exit code."""
    parser = subparsers.add_parser(
        "export",
        help="write a dataset to Parquet (local directory or s3://) with a manifest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_export_arguments(parser)
    parser.set_defaults(func=run_export_command)
    return parser


def _summary(result: Any, seconds: float, merged: bool = False) -> str:
    from py_worker.export.progress import human_bytes, human_duration

    what = "merged" if merged else "exported"
    extra = f" (resumed after {result.resumed_from_file} file(s))" if result.resumed_from_file and not merged else ""
    return (
        f"{what} {result.rows:,} rows in {result.files} file{'s' if result.files != 1 else ''} "
        f"({human_bytes(result.bytes)}) in {human_duration(seconds)}{extra}\nmanifest: {result.manifest_uri}"
    )


def run_export_command(args: argparse.Namespace, return_result: bool = False) -> Any:
    """Handler of `hf-bridge export`: run the export in this process; returns the exit code.

    With `return_result` it returns the `ExportResult` instead. Raises
    BridgeError for bad input and failed exports (the caller prints it).
    """
    from py_worker.config import ServerConfig
    from py_worker.export.destination import S3Settings, resolve_destination
    from py_worker.export.engine import run_export, try_merge
    from py_worker.export.options import ExportOptions
    from py_worker.export.progress import ProgressPrinter

    started = time.monotonic()
    s3 = S3Settings.from_env(endpoint=args.s3_endpoint, region=args.s3_region)
    export_roots = [Path(p) for p in args.export_root] if args.export_root else None
    if args.merge:
        if args.spec is not None:
            raise InvalidArgument("--merge takes only DEST (give it as --merge DEST, without SPEC)")
        dest = resolve_destination(args.merge, export_roots, s3)
        result = try_merge(dest, None)
        assert result is not None
        sys.stderr.write(_summary(result, time.monotonic() - started, merged=True) + "\n")
        return result if return_result else 0
    if args.spec is None or args.dest is None:
        raise InvalidArgument("export needs SPEC and DEST (or --merge DEST); see hf-bridge export --help")

    from py_worker.cli import spec_from_args

    spec = spec_from_args(args)
    options = ExportOptions(
        max_file_bytes=args.max_file_bytes,
        row_group_rows=args.row_group_rows,
        row_group_bytes=args.row_group_bytes,
        compression=args.compression,
        compression_level=args.compression_level,
        content_defined_chunking=args.cdc,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        resume=args.resume,
        job_id=args.job_id,
    )
    data_roots = [Path(p) for p in args.data_root] if args.data_root else [Path.cwd(), Path("/")]
    config = ServerConfig(data_roots=data_roots, export_roots=export_roots or [Path.cwd()])
    dest = resolve_destination(args.dest, export_roots, s3)
    printer = ProgressPrinter(sys.stderr)
    result = run_export(spec, dest, options, config, progress=None if args.quiet else printer)
    printer.finish(_summary(result, time.monotonic() - started))
    return result if return_result else 0


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m py_worker.export`: the export command alone; leaves with `os._exit`."""
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    parser = argparse.ArgumentParser(
        prog="hf-bridge export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_export_arguments(parser)
    args = parser.parse_args(argv)
    try:
        code = run_export_command(args)
    except BridgeError as exc:
        sys.stderr.write(f"\nhf-bridge: error [{exc.code.name}]: {exc.message}\n")
        code = 1
    except KeyboardInterrupt:
        sys.stderr.write("\nhf-bridge: interrupted; run again with --resume to continue\n")
        code = 130
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
