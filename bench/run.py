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
from dataclasses import dataclass, field
from pathlib import Path

from bench import datasets, procs, report
from bench.capture import capture, write_spec
from bench.procs import Samples, alloc_argv, floor_argv, naive_argv


@dataclass(frozen=True)
class Config:
    name: str
    scale_sizes: tuple[int, ...]   # case 8; the largest is the main database
    naive_size: int                # case 2
    load_rows: int                 # case 5
    spend_lines: int               # case 4
    spend_targets: int             # how many artifacts the spend file charges
    repeat: int                    # default repetitions of the quick cases
    heavy_repeat: int              # default repetitions of the long cases
    warmup: bool
    target_size: int               # the size the targets are stated for
    naive_target_size: int

    @property
    def main_size(self) -> int:
        return max(self.scale_sizes)


CONFIGS = {
    "full": Config("full", (100_000, 300_000, 1_000_000), 100_000, 5_000_000, 100_000, 20_000,
                   repeat=5, heavy_repeat=3, warmup=True, target_size=1_000_000,
                   naive_target_size=100_000),
    "small": Config("small", (500, 1_000, 2_000), 2_000, 20_000, 2_000, 200,
                    repeat=1, heavy_repeat=1, warmup=False, target_size=1_000_000,
                    naive_target_size=100_000),
}

NAIVE_SPEEDUP = 100  # case 2: how many times faster than the original code rank must be
CASES = {
    1: "rank top 50 (JSON) vs the same SQL through the driver",
    2: "rank vs per-artifact queries (the original exchange code)",
    3: "one spend / one budget call vs driver + sqlalchemy.orm + typer imports",
    4: "spend --file throughput vs executemany",
    5: "load positions throughput vs COPY / executemany",
    6: "snapshot vs the bare INSERT ... SELECT",
    7: "rank --format csv over every artifact: peak memory",
    8: "rank time as the database grows",
    # Cases 9-17: the maintained balances, holds and the API (bench/balances.py, agents.py,
    # api.py, dashboard.py).
    9: "next --claim (JSON) vs one budget call, with investigated artifacts",
    10: "16 agents claiming, spending and closing in parallel",
    11: "rank --limit 50 (JSON) vs one budget call",
    12: "the API under one uvicorn worker",
    13: "rank --format csv over every artifact vs the same SQL through the driver",
    14: "another service's single-row inserts with the balance triggers vs without",
    15: "db upgrade from the previous revision, and from 0004 (before the balances), vs one snapshot",
    16: "16 agents reserving with each claim and settling as they close it, vs without holds",
    17: "the dashboard's API calls under one uvicorn worker",
    0: "database generation (alloc generate)",
}
LAST_CASE = 17


@dataclass
class Row:
    case: int
    name: str
    db: str
    size: str
    ours: str
    floor: str
    ratio: str
    target: str
    met: bool | None
    detail: str = ""
    ours_value: float | None = None
    floor_value: float | None = None


@dataclass
class Context:
    cfg: Config
    repeat: int
    heavy_repeat: int
    tmp: Path
    rows: list[Row] = field(default_factory=list)
    plans: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    databases: dict = field(default_factory=dict)

    cases: set = field(default_factory=lambda: set(range(1, LAST_CASE + 1)))
    results_path: Path | None = None
    previous: dict = field(default_factory=dict)
    kinds: set = field(default_factory=set)
    large: int | None = None  # case 11 also at this many artifacts (--large)

    def save(self) -> None:
        """Merge this run's rows into the stored results (a rerun of some cases replaces
        only their rows), so the report can be written from everything measured."""
        rows = [r for r in self.previous.get("rows", [])
                if not (r["db"] in self.kinds and (r["case"] in self.cases or r["case"] == 0))]
        rows += [vars(r) for r in self.rows]
        prefixes = tuple(f"case {c} " for c in self.cases)
        notes = [n for n in self.previous.get("notes", []) if not n.startswith(prefixes)]
        data = {"rows": rows, "plans": {**self.previous.get("plans", {}), **self.plans},
                "notes": notes + [n for n in self.notes if n not in notes],
                "startup": self.startup or self.previous.get("startup", {}),
                "runs": self.previous.get("runs", [])}
        self.merged = data
        self.results_path.write_text(json.dumps(data, indent=1))

    def all_rows(self) -> list:
        return [Row(**r) for r in getattr(self, "merged", {}).get("rows", [])] or self.rows

    def log(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _s(value: float) -> str:
    return f"{value:.3f} s" if value < 100 else f"{value:.1f} s"


def _size(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else \
        f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def _met(ok: bool, applies: bool) -> bool | None:
    return ok if applies else None


def pair(ctx: Context, ours: list[str], floor: list[str], n: int, between=None,
         ours_out: Path | None = None, floor_out: Path | None = None, warmup: bool | None = None):
    """Run ours and the floor n times each, interleaved; (ours samples, floor samples, last runs)."""
    if warmup if warmup is not None else ctx.cfg.warmup:
        for argv, out in ((ours, ours_out), (floor, floor_out)):
            if between:
                between()
            procs.run(argv, stdout_path=out, keep_stdout=False)
    a, b = Samples(), Samples()
    last = {}
    for _ in range(n):
        for argv, samples, out, key in ((ours, a, ours_out, "ours"), (floor, b, floor_out, "floor")):
            if between:
                between()
            result = procs.run(argv, stdout_path=out)
            samples.add(result.seconds)
            samples.cpu.append(result.cpu_seconds)
            samples.rss_kb.append(result.max_rss_kb)
            last[key] = result
    return a, b, last


def _ids(payload: bytes) -> list[str]:
    return [r["artifact_id"] for r in json.loads(payload)]


# --------------------------------------------------------------------------- cases


def case_generation(ctx: Context, backend, dbs: dict) -> None:
    for size, db in sorted(dbs.items()):
        rec = db.record
        if "generate_s" not in rec:
            continue
        cached = f" (cached; built {rec['built']})" if rec.get("cached") else ""
        vac = f" + VACUUM ANALYZE {_s(rec['vacuum_s'])}" if "vacuum_s" in rec else ""
        ctx.rows.append(Row(
            0, CASES[0], backend.kind, _size(size), _s(rec["generate_s"]), "", "",
            "measure and report", None,
            f"{size / rec['generate_s']:,.0f} artifacts/s{vac}; peak RSS "
            f"{rec['generate_rss_kb'] / 1024:.0f} MB; {rec['size_bytes'] / 2**20:,.0f} MB on disk; "
            f"{rec['counts']}{cached}", rec["generate_s"]))


def _rank_specs(ctx: Context, backend, db, tag: str):
    from scidex_alloc.allocator import Allocator

    allocator = Allocator.open(db.url)
    try:
        top = capture(allocator, lambda a: a.rank(type_="hypothesis", limit=50), "SELECT")
        every = capture(allocator, lambda a: a.rank(), "SELECT")
    finally:
        allocator.engine.dispose()
    return (write_spec(top, ctx.tmp / f"rank50-{backend.kind}-{tag}.json"), top,
            write_spec(every, ctx.tmp / f"rankall-{backend.kind}-{tag}.json"), every)


RANK_ARGS = ["rank", "--type", "hypothesis", "--limit", "50", "--format", "json"]


def case_rank_and_scaling(ctx: Context, backend, dbs: dict) -> None:
    """Cases 1 and 8: the top-50 ranking at every size; case 1 is the largest."""
    fixed = None
    per_artifact = {}
    main = ctx.cfg.main_size
    for size in sorted(ctx.cfg.scale_sizes):
        db = dbs[size]
        spec_path, spec, _, _ = _rank_specs(ctx, backend, db, _size(size))
        ours_out, floor_out = ctx.tmp / "rank-ours.json", ctx.tmp / "rank-floor.json"
        ctx.log(f"case 1/8 {backend.kind} {_size(size)}: rank top 50")
        a, b, last = pair(ctx, alloc_argv() + RANK_ARGS + ["--db", db.url],
                          floor_argv("sql", db.url, spec_path, "json"), ctx.repeat,
                          ours_out=ours_out, floor_out=floor_out)
        same = _ids(last["ours"].stdout) == _ids(last["floor"].stdout)
        if not same:
            ctx.notes.append(f"case 1 {backend.kind} {_size(size)}: alloc and the floor "
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
            ctx.rows.append(Row(1, CASES[1], backend.kind, _size(size), _s(a.median),
                                _s(b.median), f"{ratio:.2f}x", "<= 1.3x at 1M",
                                _met(ratio <= 1.3, applies),
                                f"runs {a.spread} / {b.spread} s; same 50 rows: "
                                f"{'yes' if same else 'NO'}", a.median, b.median))
            ctx.plans[backend.kind] = backend.explain(db, spec)
            ctx.plans[f"{backend.kind}-sql"] = spec["sql"]
        ctx.rows.append(Row(8, CASES[8], backend.kind, _size(size), _s(a.median), _s(b.median),
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
    counts = {r.size: _count(r.size) for r in mine}
    ours = linear_fit([(counts[r.size], r.ours_value) for r in mine])
    floor = linear_fit([(counts[r.size], r.floor_value) for r in mine])
    last = max(mine, key=lambda r: counts[r.size])
    last.detail = last.detail.split("; fit")[0].split("; per-artifact cost varies")[0] + (
        f"; fit over {len(mine)} sizes: {ours[0]:.2f} us/artifact + {ours[1]:.3f} s, "
        f"R2 = {ours[2]:.3f} (floor {floor[0]:.2f} us/artifact, R2 = {floor[2]:.3f})")
    last.target = "linear: R2 >= 0.98"
    last.met = (ours[2] >= 0.98) if applies else None


def _count(size: str) -> int:
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
    spec_path, _, _, _ = _rank_specs(ctx, backend, db, f"naive{_size(size)}")
    ctx.log(f"case 2 {backend.kind} {_size(size)}: per-artifact queries")
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
        2, CASES[2], backend.kind, _size(size), _s(a.median), _s(b.median) + " (naive)",
        f"{speedup:.1f}x faster", target,
        _met(speedup >= NAIVE_SPEEDUP, applies and backend.kind == "postgresql"),
        f"the set-based SQL alone through the driver: {_s(floor.median)}, "
        f"{b.median / floor.median:.1f}x faster than the naive code; same 50 rows: "
        f"{'yes' if same else 'NO'}", a.median, b.median))
    if not same:
        ctx.notes.append(f"case 2 {backend.kind}: the naive code and alloc disagree!")


def _top_remaining(db, limit: int) -> list[str]:
    from scidex_alloc.allocator import Allocator

    allocator = Allocator.open(db.url)
    try:
        return [r.artifact_id for r in allocator.rank(by="remaining", limit=limit)]
    finally:
        allocator.engine.dispose()


def _delete_bench_spends(backend, db):
    return lambda: backend.execute(db, "DELETE FROM resource_allocations WHERE kind = 'bench'")


def case_single_calls(ctx: Context, backend, dbs: dict) -> None:
    from scidex_alloc.allocator import Allocator

    db = dbs[ctx.cfg.main_size]
    artifact = _top_remaining(db, 1)[0]
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
    ctx.rows.append(Row(3, f"{CASES[3]}: `alloc {label}`", backend.kind, _size(ctx.cfg.main_size),
                        _s(a.median), _s(b.median), f"{ratio:.2f}x", "<= 1.25x",
                        ratio <= 1.25, f"runs {a.spread} / {b.spread} s; client CPU "
                        f"{a.cpu_median:.3f} / {b.cpu_median:.3f} s = "
                        f"{a.cpu_median / b.cpu_median:.2f}x", a.median, b.median))


def case_spend_file(ctx: Context, backend, dbs: dict, sqlite_main) -> None:
    db = dbs[ctx.cfg.main_size]
    targets = _top_remaining(sqlite_main, ctx.cfg.spend_targets)
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
        4, CASES[4], backend.kind, f"{lines // 1000}k lines", _s(a.median), _s(b.median),
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
        5, CASES[5], backend.kind, f"{_size(rows)} rows", _s(a.median), _s(b.median),
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
    ctx.rows.append(Row(6, CASES[6], backend.kind, _size(ctx.cfg.main_size), _s(a.median),
                        _s(b.median), f"{ratio:.2f}x", "<= 1.3x at 1M",
                        _met(ratio <= 1.3, applies),
                        f"recorded {recorded:,} rows (floor {last['floor'].stdout.decode().strip()})",
                        a.median, b.median))


def case_memory(ctx: Context, backend, dbs: dict) -> None:
    db = dbs[ctx.cfg.main_size]
    _, _, every_path, _ = _rank_specs(ctx, backend, db, "all")
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
    ctx.rows.append(Row(7, CASES[7], backend.kind, _size(ctx.cfg.main_size), f"{peak:.0f} MB",
                        f"{floor_peak:.0f} MB", f"{peak / floor_peak:.2f}x", "<= 150 MB peak RSS",
                        _met(peak <= 150, applies),
                        f"{lines:,} rows in {_s(secs)} (floor {_s(floor_secs)}, "
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
                            _top_remaining(sqlite_main, cfg.spend_targets))
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
