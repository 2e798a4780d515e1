"""Timing whole processes: wall time from spawn to exit, the CPU time of the process and
what it waited for, and the command's own peak RSS."""

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
# GNU time forks the command from its own small process and reports that child's peak RSS.
# Without it, wait4's ru_maxrss of a child forked from this process counts this process's
# RSS at the fork (Linux keeps the larger of the old and the new image's high-water mark
# across exec), so nothing measured would show less than the bench's own ~60 MB.
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


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
    returncode: int = 0


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
    # In the run's own scratch directory (datasets.DATA / "tmp" / pid), which it removes.
    err_path = BENCH / ".data" / "tmp" / str(os.getpid()) / "stderr.txt"
    err_path.parent.mkdir(parents=True, exist_ok=True)
    err = open(err_path, "wb")
    rss_path = err_path.with_name("rss.txt")
    spawn = [GNU_TIME, "-f", "%M", "-o", str(rss_path), *argv] if GNU_TIME else argv
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(spawn, stdout=out, stderr=err, stdin=inp, env=full_env)
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
    return Run(seconds, usage.ru_utime + usage.ru_stime, _peak_kb(rss_path, usage), stdout,
               stderr, proc.returncode)


def _peak_kb(rss_path: Path, usage) -> int:
    """The command's own peak RSS in KB (GNU time's %M, its last line), else wait4's."""
    if GNU_TIME:
        try:
            return int(rss_path.read_text().split()[-1])
        except (OSError, ValueError, IndexError):
            pass
    return usage.ru_maxrss


@dataclass
class Samples:
    values: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)  # each run's peak RSS

    @property
    def peak_mb(self) -> float:
        return max(self.rss_kb) / 1024 if self.rss_kb else float("nan")

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
