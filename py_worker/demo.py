"""`make run`: stream the bundled demo dataset into Elixir and show rows and throughput.

Steps: make sure the demo dataset folder exists (generated on first use), then
run `mix hf.stream` in `elixir_client/`, which starts a local Python server
pool on a free loopback port, streams every row of the train split into
Elixir (decoded to Arrow columns), prints the first rows, and ends with
rows/s. Extra arguments are passed to `mix hf.stream`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from py_worker import demo_data

REPO = Path(__file__).resolve().parent.parent
ELIXIR_CLIENT = REPO / "elixir_client"


def main(argv: list[str]) -> int:
    """Build the demo dataset if needed and stream it through `mix hf.stream`."""
    cache = demo_data.default_cache_dir()
    print(f"==> demo dataset: {cache / demo_data.DEMO_NAME}", flush=True)
    folder = demo_data.build(cache)
    mix = shutil.which("mix")
    if mix is None:
        print("error: `mix` (Elixir) is not installed; run `make install` first", file=sys.stderr)
        return 1
    env = dict(os.environ)
    env.setdefault("HF_BRIDGE_PYTHON", sys.executable)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("MIX_ENV", "dev")
    subprocess.run([mix, "compile"], cwd=ELIXIR_CLIENT, env=env, check=True, stdout=subprocess.DEVNULL)
    cmd = [
        mix,
        "hf.stream",
        str(folder),
        "--split",
        "train",
        "--show",
        "10",
        "--max-width",
        "28",
        "--data-root",
        str(folder),
        "--workers",
        "2",
        *argv,
    ]
    print("==> " + " ".join(cmd[1:]), flush=True)
    return subprocess.run(cmd, cwd=ELIXIR_CLIENT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
