"""Cases 9, 11, 13, 14 and 15: the maintained balances (`artifact_balances`, revision 0005).

    9   `alloc next --claim` vs `alloc budget ID`, with 1 % and 10 % of artifacts investigated
    11  `alloc rank --limit 50` vs `alloc budget ID`
    13  `alloc rank -f csv` of every artifact vs the same statement through the driver
    14  single-row inserts of another service with the balance triggers vs without them
    15  `alloc db upgrade` from revision 0004 vs one `alloc snapshot`

Cases 9, 14 and 15 write, so they work on copies (bench/copies.py); 11 and 13 only read
the main database. Cases 10 and 16 are in bench/agents.py, 12 in bench/api.py.
"""

from __future__ import annotations

import json
import sys

from bench import copies, procs
from bench.context import CASES, Row, duration, pair, rank_specs, size_label, top_remaining, verdict
from bench.procs import Samples, alloc_argv, floor_argv

WRITER = str(procs.BENCH / "writer.py")
WRITER_ROWS = {"full": (100_000, 5), "small": (2_000, 2)}  # rows, chunks
BEFORE_BALANCES = "0004"


def _applies(ctx) -> bool:
    return ctx.cfg.main_size == ctx.cfg.target_size


def _budget_argv(artifact: str, url: str) -> list[str]:
    return alloc_argv() + ["budget", artifact, "-f", "json", "--db", url]


def _cpu(a: Samples, b: Samples) -> str:
    return (f"client CPU {a.cpu_median:.3f} / {b.cpu_median:.3f} s = "
            f"{a.cpu_median / b.cpu_median:.2f}x")


def case_next_claim(ctx, backend, dbs: dict) -> None:
    """Case 9: one `alloc next --claim` process against the per-call floor, `alloc budget`."""
    main = ctx.cfg.main_size
    db = dbs[main]
    artifact = top_remaining(db, 1)[0]
    copy = copies.make(backend, db, "next", ctx)
    try:
        clear = copies.close_claims(backend, copy)
        out = ctx.tmp / "next-claim.json"
        ours = alloc_argv() + ["next", "--claim", "--agent", "bench-a", "-f", "json",
                               "--db", copy.url]
        for label, every, unless in (("1%", 100, None), ("10%", 10, 100)):
            done = copies.seed_claims(backend, copy, every, unless)
            explored = backend.scalar(copy, "SELECT count(*) FROM artifact_balances "
                                            "WHERE investigations > 0 AND remaining_key > 0")
            ctx.log(f"case 9 {backend.kind}: next --claim with {label} investigated "
                    f"({done:,} done claims)")
            a, b, last = pair(ctx, ours, _budget_argv(artifact, copy.url), ctx.repeat,
                              between=clear, ours_out=out)
            entries = json.loads(last["ours"].stdout)
            if len(entries) != 1 or entries[0].get("claim_id") is None:
                ctx.notes.append(f"case 9 {backend.kind} {label}: `alloc next --claim` "
                                 f"claimed nothing: {last['ours'].stdout[:200]!r}")
            ratio, peak = a.median / b.median, a.peak_mb
            misses = [m for m, ok in (("time", ratio <= 1.3), ("memory", peak <= 100)) if not ok]
            ctx.rows.append(Row(
                9, CASES[9], backend.kind, f"{size_label(main)}, {label} investigated",
                duration(a.median), duration(b.median), f"{ratio:.2f}x", "<= 1.3x; <= 100 MB peak RSS",
                verdict(not misses, _applies(ctx)),
                f"peak RSS {peak:.0f} MB (budget {b.peak_mb:.0f} MB); {done:,} done claims, "
                f"{explored:,} explored candidates with budget left; runs {a.spread} / "
                f"{b.spread} s; {_cpu(a, b)}"
                + (f"; missed on {' and '.join(misses)}" if misses else ""),
                a.median, b.median))
        clear()
    finally:
        copies.drop(backend, copy)


def case_rank_top(ctx, backend, dbs: dict) -> None:
    """Case 11: the top-50 ranking (read from the balances' index) against the per-call
    floor, at the main size and at --large's."""
    sizes = [ctx.cfg.main_size] + ([ctx.large] if ctx.large else [])
    for size in sizes:
        db = dbs[size] if size in dbs else backend.database(size, ctx.seed, ctx.log)
        artifact = top_remaining(db, 1)[0]
        ctx.log(f"case 11 {backend.kind}: rank --limit 50 vs budget ID at {size_label(size)}")
        out = ctx.tmp / "rank-top50.json"
        a, b, last = pair(ctx, alloc_argv() + ["rank", "--limit", "50", "-f", "json",
                                               "--db", db.url],
                          _budget_argv(artifact, db.url), ctx.repeat, ours_out=out)
        rows = len(json.loads(last["ours"].stdout))
        if rows != min(50, size):
            ctx.notes.append(f"case 11 {backend.kind}: rank --limit 50 returned {rows} rows")
        ratio = a.median / b.median
        ctx.rows.append(Row(
            11, CASES[11], backend.kind, size_label(size), duration(a.median), duration(b.median),
            f"{ratio:.2f}x", "<= 1.3x", verdict(ratio <= 1.3, _applies(ctx)),
            f"{rows} rows; runs {a.spread} / {b.spread} s; {_cpu(a, b)}"
            + ("" if ctx.large else "; 10M not measured (`--large 10000000` measures it)"),
            a.median, b.median))


def case_rank_csv(ctx, backend, dbs: dict) -> None:
    """Case 13: every artifact as CSV, against the very statement alloc sends (it reads
    artifact_balances joined to artifacts) run through the bare driver by bench/floor.py."""
    main = ctx.cfg.main_size
    db = dbs[main]
    _, _, every_path, spec = rank_specs(ctx, backend, db, "csv13")
    if "artifact_balances" not in spec["sql"]:
        ctx.notes.append(f"case 13 {backend.kind}: the rank statement does not read "
                         "artifact_balances")
    ctx.log(f"case 13 {backend.kind}: rank -f csv over every artifact vs the driver")
    out, floor_out = ctx.tmp / "rank13.csv", ctx.tmp / "rank13-floor.csv"
    a, b, _ = pair(ctx, alloc_argv() + ["rank", "-f", "csv", "--db", db.url],
                   floor_argv("sql", db.url, every_path, "csv"), ctx.heavy_repeat,
                   ours_out=out, floor_out=floor_out, warmup=False)
    lines = [_count_lines(p) - 1 for p in (out, floor_out)]
    out.unlink(missing_ok=True)
    floor_out.unlink(missing_ok=True)
    if lines[0] != lines[1]:
        ctx.notes.append(f"case 13 {backend.kind}: alloc wrote {lines[0]} rows, the floor "
                         f"{lines[1]}")
    ratio, peak = a.median / b.median, a.peak_mb
    misses = [m for m, ok in (("time", ratio <= 1.5), ("memory", peak <= 150)) if not ok]
    ctx.rows.append(Row(
        13, CASES[13], backend.kind, size_label(main), duration(a.median), duration(b.median), f"{ratio:.2f}x",
        "<= 1.5x; <= 150 MB peak RSS", verdict(not misses, _applies(ctx)),
        f"{lines[0]:,} rows, {lines[0] / a.median:,.0f} rows/s (floor "
        f"{lines[1] / b.median:,.0f}); peak RSS {peak:.0f} MB (floor {b.peak_mb:.0f} MB); "
        f"{_cpu(a, b)}" + (f"; missed on {' and '.join(misses)}" if misses else ""),
        a.median, b.median))


def _count_lines(path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def case_writer(ctx, backend, dbs: dict) -> None:
    """Case 14: what the balance triggers cost another service's single-row inserts. The
    rows go in chunks, alternately into the copy with the triggers and the one without,
    so both meet the same load of the machine."""
    main = ctx.cfg.main_size
    rows, chunks = WRITER_ROWS[ctx.cfg.name]
    kept = copies.make(backend, dbs[main], "writer-triggers", ctx)
    bare = None
    try:
        bare = copies.make(backend, dbs[main], "writer-bare", ctx)
        copies.drop_balance_triggers(bare)
        ctx.log(f"case 14 {backend.kind}: {rows:,} single-row inserts with and {rows:,} "
                f"without the balance triggers, in {chunks} chunks each")
        a, b = Samples(), Samples()
        for i in range(chunks):
            for target, samples in ((kept, a), (bare, b)):
                result = procs.run([sys.executable, WRITER, target.url, str(rows // chunks),
                                    str(i)], stdout_path=ctx.tmp / "writer.json")
                samples.add(json.loads(result.stdout)["seconds"])
        added = backend.scalar(kept, "SELECT count(*) FROM positions WHERE agent_id LIKE ?",
                               ("writer-%",))
        if added != rows // chunks * chunks:
            ctx.notes.append(f"case 14 {backend.kind}: {added} rows written, expected {rows}")
        readers = _pending_cost(ctx, backend, kept)
    finally:
        copies.drop(backend, kept)
        if bare is not None:
            copies.drop(backend, bare)
    ours, floor = sum(a.values), sum(b.values)
    ratio = ours / floor
    chunk_ratios = sorted(x / y for x, y in zip(a.values, b.values))
    commit = ("each its own transaction, its commit waiting for the WAL flush "
              "(synchronous_commit on)" if backend.kind == "postgresql" else
              "each its own transaction (autocommit; WAL, synchronous NORMAL as alloc sets)")
    ctx.rows.append(Row(
        14, CASES[14], backend.kind, f"{size_label(main)}, {size_label(rows)} inserts", duration(ours),
        duration(floor), f"{ratio:.2f}x", "<= 1.5x", verdict(ratio <= 1.5, _applies(ctx)),
        f"{rows / ours:,.0f} inserts/s with the triggers, {rows / floor:,.0f} without; "
        f"{commit}; the insert loops' time, in {chunks} alternating chunks (chunk ratios "
        f"{chunk_ratios[0]:.2f}-{chunk_ratios[-1]:.2f}x). {readers}. One `alloc spend` process "
        "vs its floor is case 3 (the floor's insert fires the same triggers)", ours, floor))


def _pending_cost(ctx, backend, db) -> str:
    """What the inserts' pending rows cost the readers until they are folded: `rank
    --limit 50` with them, one `alloc next --claim` (which folds some), `alloc snapshot`
    (which folds the rest), and `rank --limit 50` again."""
    pending = backend.scalar(db, "SELECT count(*) FROM pending_demand")
    rank = alloc_argv() + ["rank", "--limit", "50", "-f", "json", "--db", db.url]
    steps = [("rank --limit 50", rank),
             ("one next --claim folding some", alloc_argv() + [
                 "next", "--claim", "--agent", "bench-writer", "--db", db.url]),
             ("snapshot folding the rest", alloc_argv() + ["snapshot", "--db", db.url]),
             ("rank --limit 50 after", rank)]
    timed = [f"{label} {procs.run(argv).seconds:.2f} s" for label, argv in steps]
    left = backend.scalar(db, "SELECT count(*) FROM pending_demand")
    ctx.log(f"case 14 {backend.kind}: {pending:,} pending rows; {', '.join(timed)}")
    return f"with the {pending:,} pending rows left: {', '.join(timed)} ({left} left)"


def case_migration(ctx, backend, dbs: dict) -> None:
    """Case 15: upgrading a database of the previous revision, and one from before the
    balances (which sums every balance once, set-based), each against one snapshot of the
    same database (one INSERT ... SELECT of every budget)."""
    copy = copies.make(backend, dbs[ctx.cfg.main_size], "migration", ctx)
    try:
        for start in (_previous_revision(), BEFORE_BALANCES):
            _time_upgrade(ctx, backend, copy, start)
    finally:
        copies.drop(backend, copy)


def _previous_revision() -> str:
    from alembic.script import ScriptDirectory

    from scidex_alloc.storage import migrate

    return ScriptDirectory.from_config(migrate._config()).get_revision(migrate.head()).down_revision


def _time_upgrade(ctx, backend, copy, start: str) -> None:
    """One row of case 15: `alloc db upgrade` from `start` against one snapshot."""
    from scidex_alloc.storage import migrate

    main = ctx.cfg.main_size
    a, b = Samples(), Samples()
    for _ in range(ctx.heavy_repeat):
        before = copies.downgrade(copy, start)
        if before != start:
            raise RuntimeError(f"case 15: downgrade left revision {before}")
        ctx.log(f"case 15 {backend.kind}: db upgrade from {before}")
        up = procs.run(alloc_argv() + ["db", "upgrade", "--db", copy.url])
        a.add(up.seconds)
        a.rss_kb.append(up.max_rss_kb)
        if backend.kind == "postgresql":  # autovacuum analyzes a new table soon after
            copies.vacuum(copy, "artifact_balances")
        snap = procs.run(alloc_argv() + ["snapshot", "-f", "json", "--db", copy.url],
                         stdout_path=ctx.tmp / "snapshot15.json")
        b.add(snap.seconds)
        recorded = json.loads(snap.stdout)["recorded"]
        backend.execute(copy, "DELETE FROM budget_snapshots")
    balances = backend.scalar(copy, "SELECT count(*) FROM artifact_balances")
    engine = copies.engine(copy)
    try:
        with engine.connect() as conn:
            revision = migrate.current(conn)
    finally:
        engine.dispose()
    if balances != main or revision != migrate.head():
        ctx.notes.append(f"case 15 {backend.kind}: after the upgrade {balances} balances, "
                         f"revision {revision}")
    ratio = a.median / b.median
    ctx.rows.append(Row(
        15, CASES[15], backend.kind, f"{size_label(main)}, from {start}", duration(a.median),
        duration(b.median), f"{ratio:.2f}x", "<= 2x", verdict(ratio <= 2, _applies(ctx)),
        f"{start} -> {revision}: {balances:,} balances, {balances / a.median:,.0f} "
        f"artifacts/s; upgrade peak RSS {a.peak_mb:.0f} MB; the snapshot recorded "
        f"{recorded:,} rows; runs {a.spread} / {b.spread} s", a.median, b.median))


def run(ctx, backend, dbs: dict) -> None:
    want = ctx.cases
    if 11 in want:
        case_rank_top(ctx, backend, dbs)
    if 9 in want:
        case_next_claim(ctx, backend, dbs)
    if 13 in want:
        case_rank_csv(ctx, backend, dbs)
    if want & {10, 16}:
        from bench import agents
        agents.case_agents(ctx, backend, dbs)
    if 12 in want:
        from bench import api
        api.case_api(ctx, backend, dbs)
    if 17 in want:
        from bench import dashboard
        dashboard.case_dashboard(ctx, backend, dbs)
    if 14 in want:
        case_writer(ctx, backend, dbs)
    if 15 in want:
        case_migration(ctx, backend, dbs)
