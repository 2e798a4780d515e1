"""What-if measurements behind the recommendations in docs/benchmarks.md (not part of the
suite): alternative shapes of the rank statement, timed through the bare driver.

    [BENCH_CODE=REV] python -m bench.experiments rank-variants DB_URL_OR_PATH [TYPE] [REPEAT]
    [BENCH_CODE=REV] python -m bench.experiments spend-file-variants DB FILE.csv [REPEAT]
    [BENCH_CODE=REV] python -m bench.experiments profile '["alloc", "args"]' [TOP]
    [BENCH_CODE=REV] python -m bench.experiments startup SQLITE_DB ARTIFACT_ID [N]

V0 is the statement alloc sends today (correlated scalar subqueries; the demand, bounty
and spent subqueries are repeated inside `budget` and `remaining`, so each is evaluated
up to three times per artifact). V1 computes each aggregate once per artifact (LATERAL
on PostgreSQL, a MATERIALIZED CTE on SQLite). V2 joins pre-aggregated GROUP BY tables.
"""

from __future__ import annotations

import statistics
import sys
import time

from bench.capture import capture
from bench.procs import BENCH  # noqa: F401  (bench on the path)

PRICE = ("CASE WHEN round(coalesce(m.price, 0.5), 6) < 0 THEN 0 "
         "WHEN round(coalesce(m.price, 0.5), 6) > 1 THEN 1 ELSE round(coalesce(m.price, 0.5), 6) END")


def _parts(pg: bool, now: str):
    if pg:
        micro = "({} * 1000000)"
        later = f"expires_at > '{now}'::timestamptz"
    else:
        micro = "CAST(ROUND({} * 1000000) AS INTEGER)"
        later = f"julianday(expires_at) > julianday('{now}')"
    demand = f"sum({micro.format('tokens')})"
    bounty = f"sum({micro.format('tokens_offered')} - {micro.format('tokens_paid')})"
    spent = f"sum({micro.format('tokens')})"
    return demand, bounty, spent, later


def _outer(source: str, limit_where: str = "") -> str:
    mult = "(0.5 + 0.5 * (1 - abs(effective_price - 0.5) * 2))"
    budget = f"round((0.1 * demand + bounty) * {mult})"
    return (f"SELECT artifact_id, type, title, demand, bounty, price, effective_price, spent, "
            f"{budget} AS budget, {budget} - spent AS remaining FROM {source} "
            f"ORDER BY budget DESC, artifact_id LIMIT 50")


def variant_v1(pg: bool, type_: str, now: str) -> str:
    demand, bounty, spent, later = _parts(pg, now)
    if pg:
        return _outer(f"""(SELECT a.id AS artifact_id, a.type, a.title, d.demand, b.bounty, m.price,
  {PRICE} AS effective_price, s.spent
FROM artifacts a LEFT JOIN markets m ON m.artifact_id = a.id
CROSS JOIN LATERAL (SELECT coalesce({demand}, 0) AS demand FROM positions
                    WHERE artifact_id = a.id AND status = 'open') d
CROSS JOIN LATERAL (SELECT coalesce({bounty}, 0) AS bounty FROM token_bounties
                    WHERE artifact_id = a.id AND status = 'open'
                      AND (expires_at IS NULL OR {later})) b
CROSS JOIN LATERAL (SELECT coalesce({spent}, 0) AS spent FROM resource_allocations
                    WHERE artifact_id = a.id) s
WHERE a.type = '{type_}') t""")
    return "WITH t AS MATERIALIZED (" + f"""SELECT a.id AS artifact_id, a.type, a.title,
  coalesce((SELECT {demand} FROM positions WHERE artifact_id = a.id AND status = 'open'), 0) AS demand,
  coalesce((SELECT {bounty} FROM token_bounties WHERE artifact_id = a.id AND status = 'open'
            AND (expires_at IS NULL OR {later})), 0) AS bounty,
  m.price, {PRICE} AS effective_price,
  coalesce((SELECT {spent} FROM resource_allocations WHERE artifact_id = a.id), 0) AS spent
FROM artifacts a LEFT JOIN markets m ON m.artifact_id = a.id WHERE a.type = '{type_}') """ + _outer("t")


def variant_v2(pg: bool, type_: str, now: str) -> str:
    demand, bounty, spent, later = _parts(pg, now)
    return _outer(f"""(SELECT a.id AS artifact_id, a.type, a.title, coalesce(d.v, 0) AS demand,
  coalesce(b.v, 0) AS bounty, m.price, {PRICE} AS effective_price, coalesce(s.v, 0) AS spent
FROM artifacts a LEFT JOIN markets m ON m.artifact_id = a.id
LEFT JOIN (SELECT artifact_id, {demand} AS v FROM positions WHERE status = 'open'
           GROUP BY artifact_id) d ON d.artifact_id = a.id
LEFT JOIN (SELECT artifact_id, {bounty} AS v FROM token_bounties WHERE status = 'open'
           AND (expires_at IS NULL OR {later}) GROUP BY artifact_id) b ON b.artifact_id = a.id
LEFT JOIN (SELECT artifact_id, {spent} AS v FROM resource_allocations
           GROUP BY artifact_id) s ON s.artifact_id = a.id
WHERE a.type = '{type_}') t""")


def _time(conn, sql, params, repeat):
    times, rows = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        cursor = conn.cursor()
        cursor.execute(sql, params) if params is not None else cursor.execute(sql)
        rows = cursor.fetchall()
        times.append(time.perf_counter() - start)
    return statistics.median(times), [r[0] for r in rows]


def rank_variants(url: str, type_: str = "hypothesis", repeat: str = "3") -> None:
    from datetime import datetime, timezone

    from scidex_alloc.allocator import Allocator

    pg = url.startswith("postgresql://")
    allocator = Allocator.open(url)
    spec = capture(allocator, lambda a: a.rank(type_=type_, limit=50), "SELECT")
    allocator.engine.dispose()
    from bench.floor import _decode

    params = _decode(spec["params"])
    params = tuple(params) if isinstance(params, list) else params
    now = datetime.now(timezone.utc)
    now = now.isoformat() if pg else now.replace(tzinfo=None).isoformat(" ")
    if pg:
        import psycopg
        conn = psycopg.connect(url)
    else:
        import sqlite3
        conn = sqlite3.connect(url)
    n = int(repeat)
    base, ids = _time(conn, spec["sql"], params, n)
    print(f"V0 alloc's statement: {base:.3f} s")
    for name, sql in (("V1 each aggregate once", variant_v1(pg, type_, now)),
                      ("V2 GROUP BY joins", variant_v2(pg, type_, now))):
        t, other = _time(conn, sql, None, n)
        print(f"{name}: {t:.3f} s ({base / t:.2f}x faster), same 50 ids: {other == ids}")




def spend_file_variants(url: str, path: str, repeat: str = "1") -> None:
    """In-process `Allocator.spend_file` as it is, and with the log insert batched (no
    `sort_by_parameter_order`, which makes SQLAlchemy insert one row per statement on
    SQLite); the rows are deleted after each run."""
    import statistics as st

    from sqlalchemy import text

    from scidex_alloc.allocator import Allocator

    allocator = Allocator.open(url)

    def clean():
        with allocator.engine.begin() as conn:
            conn.execute(text("DELETE FROM resource_allocations WHERE kind = 'bench'"))

    def timed():
        times = []
        for _ in range(int(repeat)):
            clean()
            with open(path, "rb") as f:
                start = time.perf_counter()
                summary = allocator.spend_file(f, "csv")
                times.append(time.perf_counter() - start)
        clean()
        return st.median(times), summary.recorded

    t0, n0 = timed()
    print(f"as is: {t0:.2f} s, {n0 / t0:,.0f} lines/s")
    from sqlalchemy.sql.dml import Insert

    original = Insert.returning

    def returning(self, *cols, sort_by_parameter_order=False, **kw):
        return original(self, *cols, **kw)

    Insert.returning = returning
    try:
        t1, n1 = timed()
    finally:
        Insert.returning = original
    print(f"log insert batched: {t1:.2f} s, {n1 / t1:,.0f} lines/s ({t0 / t1:.2f}x)")


def profile(argv_json: str, top: str = "25") -> None:
    """cProfile one in-process `alloc` command (JSON list of arguments), by own time."""
    import cProfile
    import io
    import json
    import os
    import pstats

    from scidex_alloc.cli import run

    profiler = cProfile.Profile()
    saved = sys.stdout
    sys.stdout = open(os.devnull, "w")
    try:
        profiler.enable()
        run(json.loads(argv_json))
        profiler.disable()
    finally:
        sys.stdout.close()
        sys.stdout = saved
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(int(top))
    stats.sort_stats("cumtime").print_stats(int(top))
    print(out.getvalue())


def startup(db: str, artifact: str, n: str = "15") -> None:
    """Median wall and CPU time of processes that do less and less of what `alloc budget`
    does, to see where its fixed cost goes."""
    from bench import procs

    py = sys.executable
    alloc = procs.alloc_argv()
    spec_dir = procs.BENCH / ".data" / "tmp"
    spec_dir.mkdir(parents=True, exist_ok=True)
    from scidex_alloc.allocator import Allocator

    allocator = Allocator.open(db)
    from bench.capture import write_spec
    spec = write_spec(capture(allocator, lambda a: a.budget(artifact), "SELECT"),
                      spec_dir / "startup-budget.json")
    allocator.engine.dispose()
    commands = [
        ("python -c pass", [py, "-c", "pass"]),
        ("import sqlite3, psycopg", [py, "-c", "import sqlite3, psycopg"]),
        ("import sqlalchemy", [py, "-c", "import sqlalchemy"]),
        ("import sqlalchemy.orm, typer (the floor's imports)", [py, "-c", "import sqlalchemy.orm, typer"]),
        ("import scidex_alloc.cli", [py, "-c", "import scidex_alloc.cli"]),
        ("import scidex_alloc.cli, .allocator, .rendering",
         [py, "-c", "import scidex_alloc.cli, scidex_alloc.allocator, scidex_alloc.rendering"]),
        ("import ... + create_engine + connect",
         [py, "-c", "import scidex_alloc.cli, scidex_alloc.allocator, scidex_alloc.rendering\n"
                    "from scidex_alloc.allocator import Allocator\n"
                    f"a = Allocator.open({db!r})\nc = a.engine.connect()\nc.close()"]),
        ("Allocator.open(...).budget(ID) in Python",
         [py, "-c", "from scidex_alloc.allocator import Allocator\n"
                    f"Allocator.open({db!r}).budget({artifact!r})"]),
        ("alloc --help", alloc + ["--help"]),
        ("alloc budget ID --format json", alloc + ["budget", artifact, "--format", "json", "--db", db]),
        ("alloc budget ID (table)", alloc + ["budget", artifact, "--db", db]),
        ("floor budget-one", procs.floor_argv("budget-one", db, spec)),
    ]
    results = {name: ([], []) for name, _ in commands}
    for _ in range(int(n)):
        for name, argv in commands:
            run = procs.run(argv, check=False)
            results[name][0].append(run.seconds)
            results[name][1].append(run.cpu_seconds)
    print("| process | wall (median) | CPU (median) |\n|---|---|---|")
    for name, (wall, cpu) in results.items():
        print(f"| {name} | {statistics.median(wall):.3f} s | {statistics.median(cpu):.3f} s |")


if __name__ == "__main__":
    import os

    from bench import code

    print(f"code: {code.use(os.environ.get('BENCH_CODE'))}", file=sys.stderr)
    {"rank-variants": rank_variants, "spend-file-variants": spend_file_variants,
     "profile": profile, "startup": startup}[sys.argv[1]](*sys.argv[2:])
