"""Case 17: every call the dashboard makes, against one `alloc serve` worker on the main
database, as case 12 measures it: one sequential keep-alive client, p50 and p99 per call.

The server keeps the results of its summing reads while they are exact (the pipeline,
activity, agents); a second row per summing call measures the first call after a write
(a commit that changes no budget, through the bare driver), which sums again.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sqlite3
import subprocess
import time
from urllib.parse import quote

from bench.api import _get, _quantile, _sequential, _wait_ready
from bench.context import CASES, Row, size_label, verdict
from bench.procs import alloc_argv
from tests.pgserver import free_port

TARGET_MS = 100  # p50 of every dashboard call at the main size, on SQLite (issue 16)
LOAD = {"full": (200, 5), "small": (30, 2)}  # (sequential requests per call, after writes)
SUMMING = ("/api/market/pipeline", "/api/market/activity", "/api/market/agents")
# A commit that changes no budget (a rate's time stamp; a write that changed nothing
# would not be committed by SQLite at all).
TOUCH = {"sqlite": "strftime('%Y-%m-%d %H:%M:%f', 'now')", "postgresql": "now()"}
TOUCHED = "UPDATE exchange_rates SET updated_at = {} WHERE unit = 'llm-tokens'"


def calls(artifact_id: str) -> list[str]:
    """What the dashboard asks for: its overview (also with a type filter) and one
    artifact's page."""
    one = quote(artifact_id, safe="")
    return [
        "/api/market/resource-budgets?limit=50", "/api/market/pipeline",
        "/api/market/holds", "/api/market/activity", "/api/market/activity?type=hypothesis",
        "/api/market/agents", "/api/market/agents?type=hypothesis", "/api/market/claims",
        f"/api/market/resource-budgets/{one}", f"/api/market/resource-budgets/{one}/history",
        f"/api/market/spends?artifact_id={one}", f"/api/market/holds?artifact_id={one}",
        f"/api/market/claims?status=all&artifact_id={one}",
    ]


def _write(db) -> None:
    """One commit that changes no budget: every kept result must be summed again."""
    if db.kind == "sqlite":
        with sqlite3.connect(db.url) as conn:
            conn.execute(TOUCHED.format(TOUCH[db.kind]))
        return
    import psycopg

    with psycopg.connect(db.driver_url, autocommit=True) as conn:
        conn.execute(TOUCHED.format(TOUCH[db.kind]))


def _after_writes(port: int, db, path: str, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    times = []
    try:
        for _ in range(n):
            _write(db)
            time.sleep(0.002)  # a later time stamp than the last write's
            start = time.perf_counter()
            _get(conn, path)
            times.append(time.perf_counter() - start)
    finally:
        conn.close()
    return times


def case_dashboard(ctx, backend, dbs: dict) -> None:
    main = ctx.cfg.main_size
    db = dbs[main]
    n, n_written = LOAD[ctx.cfg.name]
    applies = main == ctx.cfg.target_size and backend.kind == "sqlite"
    port = free_port()
    log = ctx.tmp / "serve-dashboard.log"
    ctx.log(f"case 17 {backend.kind}: the dashboard's calls, {n} sequential requests each")
    with open(log, "wb") as out:
        server = subprocess.Popen(alloc_argv() + ["serve", "--port", str(port), "--db", db.url],
                                  stdout=out, stderr=subprocess.STDOUT,
                                  env=dict(os.environ, NO_COLOR="1"))
    size = size_label(main)
    try:
        _wait_ready(port, server, log)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        top = json.loads(_get(conn, "/api/market/resource-budgets?limit=1"))[0]["artifact_id"]
        conn.close()
        for path in calls(top):
            times = _sequential(port, path, n)
            p50, p99 = _quantile(times, 0.5) * 1000, _quantile(times, 0.99) * 1000
            ctx.rows.append(Row(
                17, f"{CASES[17]}: {path}", backend.kind, size,
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms", "", "", f"p50 <= {TARGET_MS} ms",
                verdict(p50 <= TARGET_MS, applies),
                f"{n} sequential requests on one keep-alive connection after 20 unmeasured; "
                f"max {max(times) * 1000:.1f} ms", p50, p99))
        for path in SUMMING:
            times = _after_writes(port, db, path, n_written)
            p50 = _quantile(times, 0.5) * 1000
            ctx.rows.append(Row(
                17, f"{CASES[17]}: {path}, first call after a write", backend.kind, size,
                f"p50 {p50:.1f} ms, max {max(times) * 1000:.1f} ms", "", "", "", None,
                f"{n_written} calls, each after a commit through the bare driver: the "
                "server's kept result is no longer exact, so it sums again", p50, None))
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
