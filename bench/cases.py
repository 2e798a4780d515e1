"""Cases 0-8: generation, rank against its floor and as the database grows, the original
per-artifact code, single calls, spend files, loads, snapshots and a full export's memory.
(Cases 9-17, on the maintained balances, holds and the API, are in balances.py.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench import datasets, procs
from bench.capture import capture, write_spec
from bench.context import (
    CASES,
    NAIVE_SPEEDUP,
    Context,
    Row,
    duration,
    pair,
    rank_specs,
    size_label,
    top_remaining,
    verdict,
)
from bench.procs import Samples, alloc_argv, floor_argv, naive_argv


def _ids(payload: bytes) -> list[str]:
    return [r["artifact_id"] for r in json.loads(payload)]


# --------------------------------------------------------------------------- cases


def case_generation(ctx: Context, backend, dbs: dict) -> None:
    for size, db in sorted(dbs.items()):
        rec = db.record
        if "generate_s" not in rec:
            continue
        cached = f" (cached; built {rec['built']})" if rec.get("cached") else ""
        vac = f" + VACUUM ANALYZE {duration(rec['vacuum_s'])}" if "vacuum_s" in rec else ""
        ctx.rows.append(Row(
            0, CASES[0], backend.kind, size_label(size), duration(rec["generate_s"]), "", "",
            "measure and report", None,
            f"{size / rec['generate_s']:,.0f} artifacts/s{vac}; peak RSS "
            f"{rec['generate_rss_kb'] / 1024:.0f} MB; {rec['size_bytes'] / 2**20:,.0f} MB on disk; "
            f"{rec['counts']}{cached}", rec["generate_s"]))


RANK_ARGS = ["rank", "--type", "hypothesis", "--limit", "50", "--format", "json"]


def case_rank_and_scaling(ctx: Context, backend, dbs: dict) -> None:
    """Cases 1 and 8: the top-50 ranking at every size; case 1 is the largest."""
    fixed = None
    per_artifact = {}
    main = ctx.cfg.main_size
    for size in sorted(ctx.cfg.scale_sizes):
        db = dbs[size]
        spec_path, spec, _, _ = rank_specs(ctx, backend, db, size_label(size))
        ours_out, floor_out = ctx.tmp / "rank-ours.json", ctx.tmp / "rank-floor.json"
        ctx.log(f"case 1/8 {backend.kind} {size_label(size)}: rank top 50")
        a, b, last = pair(ctx, alloc_argv() + RANK_ARGS + ["--db", db.url],
                          floor_argv("sql", db.url, spec_path, "json"), ctx.repeat,
                          ours_out=ours_out, floor_out=floor_out)
        same = _ids(last["ours"].stdout) == _ids(last["floor"].stdout)
        if not same:
            ctx.notes.append(f"case 1 {backend.kind} {size_label(size)}: alloc and the floor "
                             "returned different artifacts!")
        if fixed is None:  # the same statement over no rows: startup + one query round trip
            f, g, _ = pair(ctx, alloc_argv() + ["rank", "--type", "none", "--limit", "50",
                                                "--format", "json", "--db", db.url],
                           floor_argv("sql", db.url, _empty_spec(ctx, spec, backend), "json"),
                           ctx.repeat)
            fixed = (f.median, g.median)
        per_artifact[size] = ((a.median - fixed[0]) / size * 1e6, (b.median - fixed[1]) / size * 1e6)
        if size == main:
            ratio = a.median / b.median
            applies = size == ctx.cfg.target_size
            ctx.rows.append(Row(1, CASES[1], backend.kind, size_label(size), duration(a.median),
                                duration(b.median), f"{ratio:.2f}x", "<= 1.3x at 1M",
                                verdict(ratio <= 1.3, applies),
                                f"runs {a.spread} / {b.spread} s; same 50 rows: "
                                f"{'yes' if same else 'NO'}", a.median, b.median))
            ctx.plans[backend.kind] = backend.explain(db, spec)
            ctx.plans[f"{backend.kind}-sql"] = spec["sql"]
        ctx.rows.append(Row(8, CASES[8], backend.kind, size_label(size), duration(a.median), duration(b.median),
                            f"{a.median / b.median:.2f}x", "linear growth", None,
                            f"{per_artifact[size][0]:.2f} us/artifact above the fixed "
                            f"{fixed[0]:.3f} s (floor {per_artifact[size][1]:.2f} us, fixed "
                            f"{fixed[1]:.3f} s)", a.median, b.median))
    judge_linearity(ctx.rows, backend.kind, ctx.cfg.name == "full")


def linear_fit(points: list[tuple[int, float]]) -> tuple[float, float, float]:
    """Least squares t = a + b n: (b in us per artifact, a in s, R squared)."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    b = sxy / sxx
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for _, y in points)
    ss_res = sum((y - a - b * x) ** 2 for x, y in points)
    return b * 1e6, a, 1 - ss_res / ss_tot if ss_tot else 1.0


def judge_linearity(rows, kind: str, applies: bool) -> None:
    """Case 8's verdict, on the largest size's row: alloc's medians fit t = a + b n with
    R squared >= 0.98 (the floor's fit is shown for comparison)."""
    mine = [r for r in rows if r.case == 8 and r.db == kind and r.ours_value]
    if len(mine) < 3:
        return
    counts = {r.size: size_of(r.size) for r in mine}
    ours = linear_fit([(counts[r.size], r.ours_value) for r in mine])
    floor = linear_fit([(counts[r.size], r.floor_value) for r in mine])
    last = max(mine, key=lambda r: counts[r.size])
    last.detail = last.detail.split("; fit")[0].split("; per-artifact cost varies")[0] + (
        f"; fit over {len(mine)} sizes: {ours[0]:.2f} us/artifact + {ours[1]:.3f} s, "
        f"R2 = {ours[2]:.3f} (floor {floor[0]:.2f} us/artifact, R2 = {floor[2]:.3f})")
    last.target = "linear: R2 >= 0.98"
    last.met = (ours[2] >= 0.98) if applies else None


def size_of(size: str) -> int:
    return int(float(size[:-1]) * (1_000_000 if size.endswith("M") else 1000)) \
        if size[-1] in "Mk" else int(size)


def _empty_spec(ctx: Context, spec: dict, backend) -> Path:
    params = spec["params"]
    if isinstance(params, dict):
        params = {k: ("none" if v == "hypothesis" else v) for k, v in params.items()}
    else:
        params = ["none" if v == "hypothesis" else v for v in params]
    return write_spec({"sql": spec["sql"], "params": params}, ctx.tmp / f"rank-none-{backend.kind}.json")


def case_naive(ctx: Context, backend, dbs: dict) -> None:
    size = ctx.cfg.naive_size
    db = dbs[size]
    spec_path, _, _, _ = rank_specs(ctx, backend, db, f"naive{size_label(size)}")
    ctx.log(f"case 2 {backend.kind} {size_label(size)}: per-artifact queries")
    ours_out, naive_out = ctx.tmp / "naive-ours.json", ctx.tmp / "naive.json"
    n = ctx.heavy_repeat
    a, b, last = pair(ctx, alloc_argv() + RANK_ARGS + ["--db", db.url],
                      naive_argv(db.url, "hypothesis", 50), n, ours_out=ours_out,
                      floor_out=naive_out, warmup=False)
    floor = Samples()
    for _ in range(n):
        floor.add(procs.run(floor_argv("sql", db.url, spec_path, "json")).seconds)
    same = _ids(last["ours"].stdout) == _ids(last["floor"].stdout)
    speedup = b.median / a.median
    applies = size == ctx.cfg.naive_target_size
    target = (f">= {NAIVE_SPEEDUP}x at 100k on postgresql" if backend.kind == "postgresql"
              else "(reported)")
    ctx.rows.append(Row(
        2, CASES[2], backend.kind, size_label(size), duration(a.median), duration(b.median) + " (naive)",
        f"{speedup:.1f}x faster", target,
        verdict(speedup >= NAIVE_SPEEDUP, applies and backend.kind == "postgresql"),
        f"the set-based SQL alone through the driver: {duration(floor.median)}, "
        f"{b.median / floor.median:.1f}x faster than the naive code; same 50 rows: "
        f"{'yes' if same else 'NO'}", a.median, b.median))
    if not same:
        ctx.notes.append(f"case 2 {backend.kind}: the naive code and alloc disagree!")


def _delete_bench_spends(backend, db):
    return lambda: backend.execute(db, "DELETE FROM resource_allocations WHERE kind = 'bench'")


def case_single_calls(ctx: Context, backend, dbs: dict) -> None:
    from scidex_alloc.allocator import Allocator

    db = dbs[ctx.cfg.main_size]
    artifact = top_remaining(db, 1)[0]
    allocator = Allocator.open(db.url)
    try:
        spec = capture(allocator, lambda a: a.budget(artifact), "SELECT")
    finally:
        allocator.engine.dispose()
    spec_path = write_spec(spec, ctx.tmp / f"budget-{backend.kind}.json")
    clean = _delete_bench_spends(backend, db)
    amount = "0.000001"
    variants = [
        ("spend", [], floor_argv("spend-one", db.url, artifact, amount)),
        ("spend --format json", ["--format", "json"], floor_argv("spend-one", db.url, artifact, amount)),
    ]
    for label, extra, floor in variants:
        ctx.log(f"case 3 {backend.kind}: alloc {label}")
        a, b, _ = pair(ctx, alloc_argv() + ["spend", artifact, amount, "--kind", "bench",
                                             "--db", db.url, *extra], floor, ctx.repeat)
        _single_row(ctx, backend, label, a, b)
    clean()
    for label, extra in (("budget ID", []), ("budget ID --format json", ["--format", "json"])):
        ctx.log(f"case 3 {backend.kind}: alloc {label}")
        a, b, _ = pair(ctx, alloc_argv() + ["budget", artifact, "--db", db.url, *extra],
                       floor_argv("budget-one", db.url, spec_path), ctx.repeat)
        _single_row(ctx, backend, label, a, b)
    backend.after_writes(db)


def _single_row(ctx, backend, label, a: Samples, b: Samples) -> None:
    ratio = a.median / b.median
    ctx.rows.append(Row(3, f"{CASES[3]}: `alloc {label}`", backend.kind, size_label(ctx.cfg.main_size),
                        duration(a.median), duration(b.median), f"{ratio:.2f}x", "<= 1.25x",
                        ratio <= 1.25, f"runs {a.spread} / {b.spread} s; client CPU "
                        f"{a.cpu_median:.3f} / {b.cpu_median:.3f} s = "
                        f"{a.cpu_median / b.cpu_median:.2f}x", a.median, b.median))


def case_spend_file(ctx: Context, backend, dbs: dict, sqlite_main) -> None:
    db = dbs[ctx.cfg.main_size]
    targets = top_remaining(sqlite_main, ctx.cfg.spend_targets)
    path = datasets.spends_csv(sqlite_main, ctx.cfg.spend_lines, targets)
    clean = _delete_bench_spends(backend, db)
    ctx.log(f"case 4 {backend.kind}: spend --file with {ctx.cfg.spend_lines:,} lines")
    out = ctx.tmp / "spend-file.json"
    a, b, last = pair(ctx, alloc_argv() + ["spend", "--file", str(path), "--format", "json",
                                           "--db", db.url],
                      floor_argv("spend-many", db.url, path), ctx.heavy_repeat, between=clean,
                      ours_out=out, warmup=False)
    clean()
    backend.after_writes(db)
    summary = json.loads(last["ours"].stdout)
    lines = ctx.cfg.spend_lines
    rate, floor_rate = lines / a.median, lines / b.median
    need = 20_000 if backend.kind == "sqlite" else 5_000
    ctx.rows.append(Row(
        4, CASES[4], backend.kind, f"{lines // 1000}k lines", duration(a.median), duration(b.median),
        f"{a.median / b.median:.2f}x", f">= {need:,} lines/s", rate >= need,
        f"{rate:,.0f} lines/s (floor {floor_rate:,.0f}); recorded {summary['recorded']:,}, "
        f"refused {summary['refused']}, invalid {summary['invalid']}", a.median, b.median))
    if summary["recorded"] != lines:
        ctx.notes.append(f"case 4 {backend.kind}: only {summary['recorded']} of {lines} recorded")


def case_load(ctx: Context, backend, dbs: dict, sqlite_main) -> None:
    rows = ctx.cfg.load_rows
    path = datasets.positions_csv(sqlite_main, rows)
    target = backend.load_target(dbs[ctx.cfg.main_size], ctx.log)
    ctx.log(f"case 5 {backend.kind}: load {rows:,} positions")
    a, b, last = pair(ctx, alloc_argv() + ["load", "positions", str(path), "--db", target.url],
                      floor_argv("load-positions", target.url, path), min(ctx.heavy_repeat, 2),
                      between=lambda: backend.empty_positions(target), warmup=False)
    backend.empty_positions(target)
    ratio = a.median / b.median
    floor_name = "COPY" if backend.kind == "postgresql" else "executemany"
    ctx.rows.append(Row(
        5, CASES[5], backend.kind, f"{size_label(rows)} rows", duration(a.median), duration(b.median),
        f"{ratio:.2f}x", f"<= 1.5x {floor_name}", ratio <= 1.5,
        f"{rows / a.median:,.0f} rows/s (floor {rows / b.median:,.0f}); "
        f"{last['ours'].stderr.decode().strip()}", a.median, b.median))


def case_snapshot(ctx: Context, backend, dbs: dict) -> None:
    from scidex_alloc.allocator import Allocator

    db = dbs[ctx.cfg.main_size]
    allocator = Allocator.open(db.url)
    try:
        spec = capture(allocator, lambda a: a.snapshot(), "INSERT")
    finally:
        allocator.engine.dispose()
    spec_path = write_spec(spec, ctx.tmp / f"snapshot-{backend.kind}.json")
    clean = lambda: backend.execute(db, "DELETE FROM budget_snapshots")  # noqa: E731
    ctx.log(f"case 6 {backend.kind}: snapshot")
    out = ctx.tmp / "snapshot.json"
    a, b, last = pair(ctx, alloc_argv() + ["snapshot", "--format", "json", "--db", db.url],
                      floor_argv("exec", db.url, spec_path), ctx.heavy_repeat, between=clean,
                      ours_out=out, floor_out=ctx.tmp / "snapshot-floor.txt", warmup=False)
    clean()
    backend.after_writes(db)
    recorded = json.loads(last["ours"].stdout)["recorded"]
    ratio = a.median / b.median
    applies = ctx.cfg.main_size == ctx.cfg.target_size
    ctx.rows.append(Row(6, CASES[6], backend.kind, size_label(ctx.cfg.main_size), duration(a.median),
                        duration(b.median), f"{ratio:.2f}x", "<= 1.3x at 1M",
                        verdict(ratio <= 1.3, applies),
                        f"recorded {recorded:,} rows (floor {last['floor'].stdout.decode().strip()})",
                        a.median, b.median))


def case_memory(ctx: Context, backend, dbs: dict) -> None:
    db = dbs[ctx.cfg.main_size]
    _, _, every_path, _ = rank_specs(ctx, backend, db, "all")
    ctx.log(f"case 7 {backend.kind}: rank --format csv over every artifact")
    out, floor_out = ctx.tmp / "rank-all.csv", ctx.tmp / "rank-all-floor.csv"
    runs, floor_runs = [], []
    for _ in range(max(1, min(ctx.heavy_repeat, 2))):
        runs.append(procs.run(alloc_argv() + ["rank", "--format", "csv", "--db", db.url],
                              stdout_path=out, keep_stdout=False))
        floor_runs.append(procs.run(floor_argv("sql", db.url, every_path, "csv"),
                                    stdout_path=floor_out, keep_stdout=False))
    with open(out, "rb") as f:
        lines = sum(1 for _ in f) - 1
    out.unlink(missing_ok=True)
    floor_out.unlink(missing_ok=True)
    peak = max(r.max_rss_kb for r in runs) / 1024
    floor_peak = max(r.max_rss_kb for r in floor_runs) / 1024
    secs = Samples([r.seconds for r in runs]).median
    floor_secs = Samples([r.seconds for r in floor_runs]).median
    applies = ctx.cfg.main_size == ctx.cfg.target_size
    ctx.rows.append(Row(7, CASES[7], backend.kind, size_label(ctx.cfg.main_size), f"{peak:.0f} MB",
                        f"{floor_peak:.0f} MB", f"{peak / floor_peak:.2f}x", "<= 150 MB peak RSS",
                        verdict(peak <= 150, applies),
                        f"{lines:,} rows in {duration(secs)} (floor {duration(floor_secs)}, "
                        f"{secs / floor_secs:.2f}x)", peak, floor_peak))
    if lines != ctx.cfg.main_size:
        ctx.notes.append(f"case 7 {backend.kind}: {lines} rows written, expected {ctx.cfg.main_size}")


def case_startup(ctx: Context) -> None:
    """Context for case 3: what a process costs before it touches a database."""
    py = Samples()
    imports = Samples()
    helps = Samples()
    for _ in range(ctx.repeat):
        py.add(procs.run([sys.executable, "-c", "pass"]).seconds)
        imports.add(procs.run([sys.executable, "-c", "import sqlalchemy.orm, typer"]).seconds)
        helps.add(procs.run(alloc_argv() + ["--help"]).seconds)
    ctx.startup = {"python -c pass": py.median, "import sqlalchemy.orm, typer": imports.median,
                   "alloc --help": helps.median}
