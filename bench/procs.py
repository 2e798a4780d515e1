"""Timing whole processes: wall time from spawn to exit, and the child's own peak RSS."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
FLOOR = str(BENCH / "floor.py")
NAIVE = str(BENCH / "naive.py")


def alloc_argv() -> list[str]:
    """The installed console script next to this interpreter (what a user runs), else -m."""
    script = Path(sys.executable).with_name("alloc")
    return [str(script)] if script.exists() else [sys.executable, "-m", "scidex_alloc"]


def floor_argv(*args) -> list[str]:
    return [sys.executable, FLOOR, *map(str, args)]


def naive_argv(*args) -> list[str]:
    return [sys.executable, NAIVE, *map(str, args)]


class ProcessFailed(RuntimeError):
    pass


@dataclass
class Run:
    seconds: float
    cpu_seconds: float  # the child's user + system time (not the database server's)
    max_rss_kb: int
    stdout: bytes
    stderr: bytes


def run(argv: list[str], stdout_path: Path | None = None, input_path: Path | None = None,
        env: dict | None = None, check: bool = True, keep_stdout: bool = True,
        timeout: float | None = None) -> Run:
    """Run argv to completion; stdout goes to a file (or /dev/null), never to a pipe that the
    parent must drain while timing."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("NO_COLOR", "1")
    out = open(stdout_path, "wb") if stdout_path is not None else open(os.devnull, "wb")
    inp = open(input_path, "rb") if input_path is not None else subprocess.DEVNULL
    err_path = BENCH / ".data" / "tmp" / f"stderr-{os.getpid()}.txt"
    err_path.parent.mkdir(parents=True, exist_ok=True)
    err = open(err_path, "wb")
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=inp, env=full_env)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        out.close()
        err.close()
        if input_path is not None:
            inp.close()
    stderr = err_path.read_bytes()
    stdout = b""
    if stdout_path is not None and keep_stdout:
        stdout = Path(stdout_path).read_bytes()
    if check and proc.returncode != 0:
        raise ProcessFailed(f"{' '.join(map(str, argv))} exited {proc.returncode}:\n"
                            f"{stderr.decode(errors='replace')[-3000:]}")
    return Run(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, stdout, stderr)


@dataclass
class Samples:
    values: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu) if self.cpu else float("nan")

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def spread(self) -> str:
        if not self.values:
            return ""
        return f"{min(self.values):.3f}-{max(self.values):.3f}"
