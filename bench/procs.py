"""Processes of a benchmark run: bounded measurements, servers stopped in `finally`, RSS from /proc."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

MAIN_DIR = Path(__file__).resolve().parent.parent


class BenchError(Exception):
    """A measurement that could not be taken; the message becomes the row's "n/a (...)"."""


def base_env() -> dict[str, str]:
    """The environment of every child: offline Hub, no progress bars, the repo on PYTHONPATH."""
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    env["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    env["PYTHONPATH"] = str(MAIN_DIR) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _tail(text: str, n: int = 6) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[-600:]


def run_tagged(cmd: Sequence[str], tag: str, timeout: float, cwd: Path | None = None,
               env: dict[str, str] | None = None) -> dict:
    """Run `cmd` to completion (killing its process group after `timeout` s) and parse its `TAG {json}` line."""
    proc = subprocess.Popen(list(cmd), cwd=cwd, env=env or base_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        raise BenchError(f"timed out after {timeout:.0f} s: {_tail(err or out, 2)}") from None
    finally:
        if proc.poll() is None:
            _kill_group(proc)
    for line in reversed(out.splitlines()):
        if line.startswith(tag + " "):
            try:
                return json.loads(line[len(tag) + 1:])
            except json.JSONDecodeError as exc:
                raise BenchError(f"unparsable {tag} line: {line[:200]}") from exc
    raise BenchError(f"exit {proc.returncode}, no {tag} line: {_tail(err + chr(10) + out)}")


def peer(args: Sequence[str], timeout: float) -> dict:
    """Run one `python -m bench.peer` measurement."""
    return run_tagged([sys.executable, "-m", "bench.peer", *args], "RESULT", timeout, cwd=MAIN_DIR)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


class Server:
    """A server child process in its own process group; `start()` waits for its ready line."""

    def __init__(self, cmd: Sequence[str], ready_prefix: str, name: str, log_path: Path | None = None) -> None:
        self.cmd = list(cmd)
        self.ready_prefix = ready_prefix
        self.name = name
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.address = ""
        self._log_file: Any = None

    def start(self, timeout: float = 90.0) -> "Server":
        """Start the process and wait up to `timeout` s for its ready line (BenchError otherwise)."""
        stderr: Any = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "w")
            stderr = self._log_file
        self.proc = subprocess.Popen(self.cmd, cwd=MAIN_DIR, env=base_env(), stdout=subprocess.PIPE,
                                     stderr=stderr, text=True, start_new_session=True)
        found: list[str] = []

        def scan() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                if not found and line.startswith(self.ready_prefix):
                    found.append(line[len(self.ready_prefix):].strip())
            # keep draining so the child never blocks on a full pipe

        threading.Thread(target=scan, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode} before it was ready"
                                 + self._log_hint())
            if time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"{self.name} not ready after {timeout:.0f} s" + self._log_hint())
            time.sleep(0.05)
        self.address = found[0]
        return self

    def _log_hint(self) -> str:
        if self.log_path is not None and self.log_path.exists():
            return ": " + _tail(self.log_path.read_text(errors="replace"), 3)
        return ""

    @property
    def port(self) -> int:
        """The port of the ready line's address."""
        return int(self.address.rsplit(":", 1)[-1])

    @property
    def pid(self) -> int:
        """The server's process id (the leader of its process group)."""
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the whole group after a grace period. Idempotent."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        # Workers or other children left behind die with the group.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.proc = None

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def peer_server(args: Sequence[str], name: str, log_path: Path | None = None) -> Server:
    """A `python -m bench.peer ...-server` process (ready line `READY <port>`)."""
    return Server([sys.executable, "-m", "bench.peer", *args], "READY ", name, log_path)


# ---- /proc -------------------------------------------------------------------

def children(pid: int) -> list[int]:
    """Every descendant of `pid` (scanning /proc/*/stat for parent ids)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2:].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        for c in parents.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` in bytes (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


_CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by `pid` (0.0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _CLK


def cpu_tree(pid: int) -> dict[int, float]:
    """CPU seconds of `pid` and each of its descendants."""
    return {p: cpu_seconds(p) for p in [pid, *children(pid)]}


def cmdline(pid: int) -> str:
    """The command line of `pid` ("" when it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class RssSampler:
    """Samples the RSS of given pids every `interval` s in a thread; keeps the peak per pid."""

    def __init__(self, pids: list[int], interval: float = 0.25) -> None:
        self.pids = pids
        self.interval = interval
        self.start_rss = {p: rss_bytes(p) for p in pids}
        self.peak = dict(self.start_rss)
        self.last = dict(self.start_rss)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for p in self.pids:
                r = rss_bytes(p)
                self.last[p] = r
                if r > self.peak[p]:
                    self.peak[p] = r

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)

    def growth(self) -> dict[int, int]:
        """Peak minus start RSS per pid."""
        return {p: self.peak[p] - self.start_rss[p] for p in self.pids}
