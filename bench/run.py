"""Run the scidex-alloc benchmark suite (issue 8) and write docs/benchmarks.md.

    python -m bench [--sizes small|full] [--pg-url URL] [--repeat N] [--db both|sqlite|postgresql]

Every case times whole `alloc` processes against a floor process that does the same work
through the bare driver, both measured in the same run, interleaved, and reports medians
and their ratio. Databases are made by `alloc generate` and cached in bench/.data/.
Without --pg-url a private PostgreSQL server is started from the system's binaries
(cluster in bench/.data/pg, kept for the cache) and stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from bench import datasets, procs, report
from bench.cases import (
    case_generation,
    case_load,
    case_memory,
    case_naive,
    case_rank_and_scaling,
    case_single_calls,
    case_snapshot,
    case_spend_file,
    case_startup,
    judge_linearity,
)
from bench.context import CONFIGS, LAST_CASE, Context, Row, top_remaining

# --------------------------------------------------------------------------- driver


def run_backend(ctx: Context, backend, sqlite_main=None):
    cfg = ctx.cfg
    sizes = sorted(set(cfg.scale_sizes) | {cfg.naive_size})
    dbs = {n: backend.database(n, ctx.seed, ctx.log) for n in sizes}
    ctx.databases[backend.kind] = dbs
    if sqlite_main is None:  # the input files are made from a SQLite copy of the data
        sqlite_main = (dbs[cfg.main_size] if backend.kind == "sqlite" else
                       datasets.SqliteBackend().database(cfg.main_size, ctx.seed, ctx.log))
    if ctx.build_only:
        backend.load_target(dbs[cfg.main_size], ctx.log)
        datasets.positions_csv(sqlite_main, cfg.load_rows)
        datasets.spends_csv(sqlite_main, cfg.spend_lines,
                            top_remaining(sqlite_main, cfg.spend_targets))
        return dbs
    case_generation(ctx, backend, dbs)
    want = ctx.cases
    if want & {1, 8}:
        case_rank_and_scaling(ctx, backend, dbs)
    if 2 in want:
        case_naive(ctx, backend, dbs)
    if 7 in want:
        case_memory(ctx, backend, dbs)
    if 6 in want:
        case_snapshot(ctx, backend, dbs)
    if 3 in want:
        case_single_calls(ctx, backend, dbs)
    if 4 in want:
        case_spend_file(ctx, backend, dbs, sqlite_main)
    if 5 in want:
        case_load(ctx, backend, dbs, sqlite_main)
    if want & set(range(9, LAST_CASE + 1)):
        from bench import balances
        balances.run(ctx, backend, dbs)
    ctx.save()
    return dbs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", choices=sorted(CONFIGS), default="full")
    parser.add_argument("--pg-url", help="admin URL of an existing PostgreSQL server that may "
                        "create databases (default: start a private one)")
    parser.add_argument("--db", choices=("both", "sqlite", "postgresql"), default="both")
    parser.add_argument("--repeat", type=int, help="repetitions of the quick cases "
                        "(default 5 full, 1 small); the long ones use at most 3")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--agent-seconds", type=float,
                        help="how long case 10's agents work (default 60 full, 5 small)")
    parser.add_argument("--large", type=int, metavar="N",
                        help="also measure case 11 at N artifacts (the issue's 10M: 10000000); "
                        "its database is generated on first use and cached (on SQLite about "
                        "25 min and 10 GB)")
    parser.add_argument("--cases", help="comma-separated case numbers to run (default all); "
                        "the other cases keep their stored results in the report")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the report from the stored results, measuring nothing")
    parser.add_argument("--build-only", action="store_true",
                        help="only build (or check) the cached databases, then stop")
    parser.add_argument("--code", metavar="REV", help="measure scidex_alloc as of this git "
                        "revision (e.g. HEAD) instead of the working tree")
    parser.add_argument("--out", help="Markdown report (default docs/benchmarks.md for full, "
                        "bench/.data/benchmarks-small.md for small)")
    args = parser.parse_args(argv)
    from bench import code

    code_description = code.use(args.code)
    cfg = CONFIGS[args.sizes]
    repeat = args.repeat or cfg.repeat
    ctx = Context(cfg, repeat, max(1, min(repeat, cfg.heavy_repeat if args.repeat is None else 3)),
                  datasets.DATA / "tmp" / str(os.getpid()))
    ctx.seed = args.seed
    ctx.agent_seconds = args.agent_seconds
    ctx.code = code_description
    ctx.build_only = args.build_only
    ctx.large = args.large
    if args.cases:
        ctx.cases = {int(c) for c in args.cases.split(",")}
    ctx.results_path = datasets.DATA / f"results-{cfg.name}.json"
    if (args.cases or args.report_only) and ctx.results_path.exists():
        ctx.previous = json.loads(ctx.results_path.read_text())
    load_before = os.getloadavg()
    ctx.startup = {}
    ctx.tmp.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else (
        procs.BENCH.parent / "docs" / "benchmarks.md" if cfg.name == "full"
        else datasets.DATA / "benchmarks-small.md")
    if args.report_only:
        ctx.previous = ctx.merged = json.loads(ctx.results_path.read_text())
        rows = [Row(**r) for r in ctx.merged["rows"]]
        for kind in ("sqlite", "postgresql"):
            judge_linearity(rows, kind, cfg.name == "full")
        ctx.merged["rows"] = [vars(r) for r in rows]
        out.write_text(report.markdown(ctx, ctx.merged.get("machine", {}), 0, args),
                       encoding="utf-8")
        print(f"wrote {out} from {ctx.results_path}")
        return
    started = time.perf_counter()
    server = None
    backends = []
    if args.db in ("both", "sqlite"):
        backends.append(datasets.SqliteBackend())
        ctx.kinds.add("sqlite")
    try:
        if args.db in ("both", "postgresql"):
            if args.pg_url:
                backends.append(datasets.PostgresBackend(args.pg_url, private=False))
                ctx.kinds.add("postgresql")
            else:
                from tests.pgserver import PgUnavailable, PrivateServer

                try:
                    server = PrivateServer(datasets.DATA / "pg", datasets.PG_SETTINGS)
                    ctx.log("starting a private PostgreSQL server")
                    backends.append(datasets.PostgresBackend(server.start(), private=True))
                    ctx.kinds.add("postgresql")
                except PgUnavailable as error:
                    if args.db == "postgresql":
                        raise SystemExit(f"bench: PostgreSQL unavailable: {error}") from None
                    ctx.notes.append(f"PostgreSQL skipped: {error}")
                    ctx.log(f"PostgreSQL unavailable, skipped: {error}")
        if not ctx.build_only and 3 in ctx.cases:
            case_startup(ctx)
        sqlite_main = None
        for backend in backends:
            dbs = run_backend(ctx, backend, sqlite_main)
            if backend.kind == "sqlite":
                sqlite_main = dbs[cfg.main_size]
        if ctx.build_only:
            ctx.log("databases ready")
            return
        elapsed = time.perf_counter() - started
        load_after = os.getloadavg()
        ctx.previous = ctx.merged
        ctx.merged["runs"].append({
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cases": sorted(ctx.cases), "databases": sorted(ctx.kinds),
            "minutes": round(elapsed / 60, 1), "argv": sys.argv[1:], "code": ctx.code,
            "load": f"{load_before[1]:.1f} at start, {load_after[1]:.1f} at end (5-min averages)"})
        machine = report.machine(backends)
        ctx.merged["machine"] = machine
        ctx.results_path.write_text(json.dumps(ctx.merged, indent=1))
        text = report.markdown(ctx, machine, elapsed, args)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        print(report.table(ctx.all_rows()))
        for note in ctx.notes:
            print(f"NOTE: {note}")
        print(f"\nwrote {out} ({elapsed / 60:.1f} min)")
    finally:
        shutil.rmtree(ctx.tmp, ignore_errors=True)
        if server is not None:
            ctx.log("stopping the private PostgreSQL server")
            server.stop()
