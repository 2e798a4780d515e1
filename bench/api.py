"""Case 12: the JSON API, one uvicorn worker (`alloc serve`) on the main database.

Latency is measured by one sequential keep-alive client (http.client), after a warm-up;
throughput by `wrk` with 8 keep-alive connections on 2 threads. wrk is Debian's package:
when it is missing, the full run installs it (as root); otherwise that row is skipped,
with the reason.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import time

from bench.context import CASES, Row, size_label, verdict
from bench.procs import alloc_argv
from tests.pgserver import free_port

TOP = "/api/market/resource-budgets?limit=50"
PIPELINE = "/api/market/pipeline"
# (top-50 requests, pipeline requests, wrk seconds)
LOAD = {"full": (2000, 100, 30), "small": (200, 10, 3)}
WARMUP = 20
CONNECTIONS = 8


def _get(conn: http.client.HTTPConnection, path: str) -> bytes:
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"case 12: GET {path} answered {response.status}: {body[:300]!r}")
    return body


def _wait_ready(port: int, server: subprocess.Popen, log, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"case 12: alloc serve exited {server.returncode}: "
                               f"{log.read_text(errors='replace')[-1000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            _get(conn, "/healthz")
            conn.close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("case 12: alloc serve did not answer /healthz")


def _sequential(port: int, path: str, n: int) -> list[float]:
    """Seconds of each of n GETs on one keep-alive connection, after a warm-up."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for _ in range(min(WARMUP, n)):
            _get(conn, path)
        times = []
        for _ in range(n):
            start = time.perf_counter()
            _get(conn, path)
            times.append(time.perf_counter() - start)
        return times
    finally:
        conn.close()


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wrk_binary(install: bool) -> tuple[str | None, str]:
    """wrk's path, or None and why not."""
    path = shutil.which("wrk")
    if path:
        return path, ""
    if not install:
        return None, "wrk is not installed (only the full run installs it)"
    if os.geteuid() != 0:
        return None, "wrk is not installed, and installing it needs root"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    tail = ""
    for steps in ([["apt-get", "install", "-y", "wrk"]],
                  [["apt-get", "update"], ["apt-get", "install", "-y", "wrk"]]):
        for argv in steps:
            done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
            tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or [""]
        if shutil.which("wrk"):
            return shutil.which("wrk"), ""
    return None, f"wrk is not installed and apt-get install wrk failed: {tail[0][:200]}"


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(text: str) -> dict:
    """Requests/s, the latency quantiles (ms), and the failures from wrk --latency's output."""
    found = {"rate": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))}
    for q in ("50", "99"):
        m = re.search(rf"^\s*{q}(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        found[f"p{q}"] = float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    found["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    found["socket_errors"] = sum(map(int, m.groups())) if m else 0
    m = re.search(r"(\d+) requests in", text)
    found["requests"] = int(m.group(1)) if m else 0
    return found


def _vm_hwm_mb(pid: int) -> float:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def case_api(ctx, backend, dbs: dict) -> None:
    main = ctx.cfg.main_size
    db = dbs[main]
    n_top, n_pipeline, wrk_seconds = LOAD[ctx.cfg.name]
    applies = main == ctx.cfg.target_size
    wrk, skipped = wrk_binary(install=ctx.cfg.name == "full")
    port = free_port()
    log = ctx.tmp / "serve.log"
    ctx.log(f"case 12 {backend.kind}: alloc serve, {n_top} + {n_pipeline} sequential "
            f"requests" + (f", wrk for {wrk_seconds} s" if wrk else f" ({skipped})"))
    with open(log, "wb") as out:
        server = subprocess.Popen(alloc_argv() + ["serve", "--port", str(port), "--db", db.url],
                                  stdout=out, stderr=subprocess.STDOUT,
                                  env=dict(os.environ, NO_COLOR="1"))
    try:
        _wait_ready(port, server, log)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        rows = len(json.loads(_get(conn, TOP)))
        conn.close()
        top = _sequential(port, TOP, n_top)
        pipeline = _sequential(port, PIPELINE, n_pipeline)
        loaded = None
        if wrk:
            done = subprocess.run(
                [wrk, "-t2", f"-c{CONNECTIONS}", f"-d{wrk_seconds}s", "--latency",
                 f"http://127.0.0.1:{port}{TOP}"],
                capture_output=True, text=True, timeout=wrk_seconds + 120)
            if done.returncode != 0:
                raise RuntimeError(f"case 12: wrk exited {done.returncode}: {done.stderr[-500:]}")
            loaded = parse_wrk(done.stdout)
        rss = _vm_hwm_mb(server.pid)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)  # Ctrl-C: uvicorn's graceful stop
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    if rows != min(50, main):
        ctx.notes.append(f"case 12 {backend.kind}: the top-50 endpoint returned {rows} rows")
    p50, p99 = _quantile(top, 0.5) * 1000, _quantile(top, 0.99) * 1000
    size = size_label(main)
    ctx.rows.append(Row(
        12, f"{CASES[12]}: top 50 latency", backend.kind, size,
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms", "", "", "p50 <= 10 ms; p99 <= 50 ms",
        verdict(p50 <= 10 and p99 <= 50, applies),
        f"GET {TOP}: {n_top} sequential requests on one keep-alive connection (http.client) "
        f"after {WARMUP} unmeasured; max {max(top) * 1000:.1f} ms; server peak RSS "
        f"{rss:.0f} MB", p50, p99))
    pipe50 = _quantile(pipeline, 0.5) * 1000
    ctx.rows.append(Row(
        12, f"{CASES[12]}: pipeline latency", backend.kind, size, f"p50 {pipe50:.1f} ms", "",
        "", "p50 <= 100 ms", verdict(pipe50 <= 100, applies),
        f"GET {PIPELINE}: {n_pipeline} sequential requests; p99 "
        f"{_quantile(pipeline, 0.99) * 1000:.1f} ms", pipe50, None))
    if loaded is None:
        ctx.rows.append(Row(12, f"{CASES[12]}: top 50 throughput", backend.kind, size,
                            "skipped", "", "", f">= 300 req/s, {CONNECTIONS} clients", None,
                            skipped))
        return
    failures = loaded["non2xx"] + loaded["socket_errors"]
    if failures:
        ctx.notes.append(f"case 12 {backend.kind}: wrk saw {loaded['non2xx']} non-2xx "
                         f"responses and {loaded['socket_errors']} socket errors")
    ctx.rows.append(Row(
        12, f"{CASES[12]}: top 50 throughput", backend.kind, size,
        f"{loaded['rate']:,.0f} req/s", "", "", f">= 300 req/s, {CONNECTIONS} clients",
        verdict(loaded["rate"] >= 300 and not failures, applies),
        f"wrk -t2 -c{CONNECTIONS} -d{wrk_seconds}s: {loaded['requests']:,} requests, latency "
        f"p50 {loaded['p50']:.1f} ms, p99 {loaded['p99']:.1f} ms; {failures} failed; one "
        "uvicorn worker (one process, its thread pool) and wrk share the 2 cores",
        loaded["rate"], None))
