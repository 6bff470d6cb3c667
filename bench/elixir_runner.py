"""Running the bench/elixir/*.exs scripts with `mix run` from elixir_client/ and parsing their `BENCH` line."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from bench.procs import MAIN_DIR, BenchError, base_env, run_tagged

ELIXIR_DIR = MAIN_DIR / "elixir_client"
SCRIPTS = Path(__file__).resolve().parent / "elixir"
# Elixir scripts run with the VM's default flags, as users' VMs do; `HF_BRIDGE_BENCH_ERL_FLAGS`
# sets others. Figure 9d measures the allocator flag HFBridge.Runtime describes, 9e schedulers
# that sleep as soon as they run out of work instead of spinning first (the VM's busy wait takes
# CPU from the Python processes when they share the cores with it).
DEFAULT_ERL_FLAGS = ""
SBCT_ERL_FLAGS = "+MBsbct 8192"
NO_BUSY_WAIT_ERL_FLAGS = "+sbwt none +sbwtdcpu none +sbwtdio none"


class Elixir:
    """Compiles the client once (its own build dir, MIX_ENV=prod), then runs scripts without recompiling."""

    def __init__(self, build_path: str | None = None, erl_flags: str | None = None) -> None:
        self.build_path = build_path or os.environ.get("HF_BRIDGE_BENCH_BUILD", "/tmp/hb_build_bench")
        self.erl_flags = erl_flags if erl_flags is not None else os.environ.get(
            "HF_BRIDGE_BENCH_ERL_FLAGS", DEFAULT_ERL_FLAGS)
        self.error: str | None = None
        self.compiled = False

    def env(self) -> dict[str, str]:
        """The environment of mix: prod build in its own build dir, warnings not fatal."""
        env = base_env()
        env["MIX_ENV"] = "prod"
        env["MIX_BUILD_PATH"] = self.build_path
        env["ELIXIR_ERL_OPTIONS"] = self.erl_flags
        env.pop("CI", None)
        return env

    def compile(self, timeout: float = 900.0) -> bool:
        """Compile once; on failure `error` says why and every Elixir figure becomes n/a."""
        if self.compiled or self.error:
            return self.compiled
        if shutil.which("mix") is None:
            self.error = "mix not found"
            return False
        if not (ELIXIR_DIR / "mix.exs").exists():
            self.error = "no elixir_client/mix.exs"
            return False
        try:
            proc = subprocess.run(["mix", "compile"], cwd=ELIXIR_DIR, env=self.env(), capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.error = f"mix compile timed out after {timeout:.0f} s"
            return False
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
            self.error = "elixir_client does not compile: " + " | ".join(lines[-3:])[-300:]
            return False
        self.compiled = True
        return True

    def version(self) -> str:
        """`elixir --version`, one line."""
        try:
            out = subprocess.run(["elixir", "--version"], capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        return " / ".join(ln.strip() for ln in out.splitlines() if ln.strip())

    def run(self, script: str, args: Sequence[str], timeout: float, erl_flags: str | None = None) -> dict:
        """Run bench/elixir/`script` and return its BENCH fields (BenchError on any failure).

        `erl_flags` replaces the VM flags for this run ("" for the VM's defaults).
        """
        if not self.compile():
            raise BenchError(self.error or "elixir unavailable")
        env = self.env()
        if erl_flags is not None:
            env["ELIXIR_ERL_OPTIONS"] = erl_flags
        res = run_tagged(["mix", "run", "--no-compile", str(SCRIPTS / script), *args], "BENCH", timeout,
                         cwd=ELIXIR_DIR, env=env)
        if "error" in res:
            raise BenchError(f"{script}: {res['error']}"[:400])
        return res
