"""`python -m bench [--size-mb 500] [--quick] [--only name,...]`: hf_bridge against its baselines.

Builds (or reuses) the data under bench/data/, measures every figure and its
baseline in the same run, prints one table and writes it as JSON to
bench/results/latest.json. A figure whose side is not available becomes
"n/a (reason)"; servers are always stopped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import data as bench_data
from bench.elixir_runner import Elixir
from bench.figures import FIGURES, Options, Run, measure, resolve
from bench.procs import MAIN_DIR
from bench.report import Row, table, write_json

RESULTS = Path(__file__).resolve().parent / "results"


def _log(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _versions(elixir: Elixir) -> dict:
    import datasets
    import grpc
    import pyarrow

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=MAIN_DIR, capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return {"python": platform.python_version(), "datasets": datasets.__version__, "pyarrow": pyarrow.__version__,
            "grpcio": grpc.__version__, "elixir": elixir.version(), "cpus": os.cpu_count(), "commit": commit}


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags."""
    p = argparse.ArgumentParser(prog="python -m bench", description="hf_bridge benchmarks: ours against baselines measured in the same run, on the same data")
    p.add_argument("--size-mb", type=int, default=None,
                   help="Parquet size of the data set in MiB (default 500; 50 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="small data and short runs (RSS figure over 0.5 GB, fewer JSON and rows/2 rows)")
    p.add_argument("--only", default="", help=f"comma-separated figures: {', '.join(FIGURES)} (or 1-9)")
    p.add_argument("--repeat", type=int, default=None,
                   help="runs per rate measurement, the fastest kept (default 2; 1 with --quick)")
    p.add_argument("--workers", type=int, default=2, help="workers of our server (default 2)")
    p.add_argument("--out", default=str(RESULTS / "latest.json"), help="JSON result file")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        names = resolve(args.only.split(",")) if args.only else list(FIGURES)
    except ValueError as exc:
        _log(f"bench: {exc}")
        return 2
    size = args.size_mb or (50 if args.quick else 500)
    opts = Options(size_mb=size, quick=args.quick, workers=args.workers,
                   repeat=args.repeat or (1 if args.quick else 2))
    if args.quick:
        opts.rss_bytes = 500_000_000
        opts.json_rows = 5_000
        opts.rows_api_rows = 20_000
        opts.ttfb_reps = 3
    # SIGTERM ends the run through `finally` (servers stopped) like Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)

    started = time.time()
    load_start = os.getloadavg()
    _log(f"bench: data set of {size} MiB Parquet")
    data = bench_data.ensure(size, log=_log)
    saved = sorted(Path(data.saved_dir).rglob("*.arrow")) if getattr(data, "saved_dir", None) else []
    bench_data.warm(data.parquet_files + [data.arrow_file] + saved)
    elixir = Elixir()
    _log("bench: compiling the Elixir client")
    if not elixir.compile():
        _log(f"bench: {elixir.error}")
    run = Run(opts, data, elixir, _log)
    rows: list[Row] = []
    out = Path(args.out)

    versions = _versions(elixir)

    def meta(done: bool) -> dict:
        return {
            "complete": done,
            "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.time() - started, 1),
            "quick": args.quick,
            "size_mb": size,
            "parquet_bytes": data.parquet_bytes,
            "arrow_bytes": data.arrow_bytes,
            "rows": data.rows,
            "batch_rows": bench_data.BATCH_ROWS,
            "workers": opts.workers,
            "repeat": opts.repeat,
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "figures": names,
            "versions": versions,
            "elixir_vm_flags": elixir.erl_flags,
        }

    try:
        for name in names:
            _log(f"bench: figure {name}")
            t0 = time.perf_counter()
            rows.extend(measure(run, name))
            _log(f"bench: figure {name} took {time.perf_counter() - t0:.1f} s")
            write_json(out, meta(False), rows)  # partial results survive an interrupted run
    except KeyboardInterrupt:
        _log("bench: interrupted")
        return 130
    finally:
        run.close()

    text = table(rows)
    print(f"hf_bridge bench: {data.rows} rows, {data.parquet_bytes / 1e6:.0f} MB Parquet / "
          f"{data.arrow_bytes / 1e6:.0f} MB Arrow, batches of {bench_data.BATCH_ROWS} rows, "
          f"{opts.workers} workers, {os.cpu_count()} CPUs{' (quick)' if args.quick else ''}; "
          f"load average {load_start[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    print(text)
    print(f"Elixir VM flags: {elixir.erl_flags or '(VM defaults)'} (HF_BRIDGE_BENCH_ERL_FLAGS)")
    notes = sorted({r.details.get("note", "") for r in rows if r.details.get("note")})
    for n in notes:
        print(f"note: {n}")
    for r in rows:
        for unit, label in (("s_per_gb", "GB"), ("s_per_100k_rows", "100k rows")):
            ours, base = r.details.get(f"ours_cpu_{unit}"), r.details.get(f"baseline_cpu_{unit}")
            if ours is not None and base is not None:
                print(f"cpu ({r.key}): ours {ours} CPU-s, {r.baseline_name} {base} CPU-s per {label} "
                      "(all processes of each side; less sensitive to other load than wall time)")
    for r in rows:
        ratios = sorted(r.details.get("round_ratios") or [])
        if len(ratios) > 1:
            print(f"rounds ({r.key}): ours / {r.baseline_name} in each alternated round: median "
                  f"{statistics.median(ratios):.2f}x, {ratios[0]:.2f}x-{ratios[-1]:.2f}x (the table compares "
                  "each side's fastest run)")
    for r in rows:
        if r.details.get("warning"):
            print(f"warning ({r.key}): {r.details['warning']}")
    write_json(out, meta(True), rows)
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
