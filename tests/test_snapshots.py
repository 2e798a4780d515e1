"""Snapshots from cron, history and movers, and `alloc plan`, on SQLite and PostgreSQL."""

import csv
import io
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from scidex_alloc.allocator import Allocator
from scidex_alloc.storage.schema import budget_snapshots

TERMS = ("demand", "bounty", "price", "budget", "spent", "remaining")


@pytest.fixture
def sample(db_url, cli):
    assert cli("generate", "--artifacts", "40", "--seed", "9", "--db", db_url).exit_code == 0
    return db_url


@pytest.fixture
def three(sample, cli):
    """Three artifacts of three different types."""
    by_type = {}
    for row in cli("rank", "-f", "json", "--db", sample).json():
        by_type.setdefault(row["type"], row["artifact_id"])
    return [(by_type[t], t) for t in sorted(by_type)[:3]]


def snapshot_rows(db_url, **where):
    allocator = Allocator.open(db_url)
    try:
        with allocator.engine.connect() as conn:
            stmt = select(func.count()).select_from(budget_snapshots)
            for column, value in where.items():
                stmt = stmt.where(budget_snapshots.c[column] == value)
            return conn.execute(stmt).scalar()
    finally:
        allocator.engine.dispose()


def test_two_snapshots_at_the_same_moment_make_one_bucket(sample, alloc_proc):
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: alloc_proc("snapshot", "--every", "day", "-f", "json",
                                                     "--db", sample), range(2)))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    recorded = sorted(json.loads(r.stdout)["recorded"] for r in results)
    assert sum(recorded) == 40 and snapshot_rows(sample, period="day") == 40


def test_snapshot_equals_rank_at_that_time(sample, cli):
    top = cli("rank", "--limit", "1", "-f", "json", "--db", sample).json()[0]["artifact_id"]
    assert cli("spend", top, "0.5", "--db", sample).exit_code == 0
    first = cli("snapshot", "--db", sample)
    assert first.exit_code == 0 and "recorded 40 artifacts" in first.stdout
    again = cli("snapshot", "--db", sample)
    assert "already recorded" in again.stdout and snapshot_rows(sample) == 40
    ranked = cli("rank", "-f", "json", "--db", sample).json()
    for row in ranked:
        points = cli("history", row["artifact_id"], "-f", "json", "--db", sample).json()
        assert len(points) == 1
        assert {t: points[0][t] for t in TERMS} == {t: row[t] for t in TERMS}


def test_snapshot_of_one_type(sample, cli):
    result = cli("snapshot", "--type", "hypothesis", "--every", "week", "-f", "json",
                 "--db", sample).json()
    hypotheses = cli("rank", "--type", "hypothesis", "-f", "json", "--db", sample).json()
    assert result["recorded"] == len(hypotheses) > 0
    assert datetime.fromisoformat(result["bucket"]).weekday() == 0


def backfill(db_url, artifact_id, budgets):
    """Snapshots an hourly cron would have left over the past hours (oldest first)."""
    allocator = Allocator.open(db_url)
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    rows = [{"artifact_id": artifact_id, "period": "hour",
             "bucket": now - timedelta(hours=len(budgets) - i), "taken_at": now,
             "demand": Decimal(0), "bounty": Decimal(0), "price": Decimal("0.5"),
             "budget": Decimal(b), "spent": Decimal(0), "remaining": Decimal(b)}
            for i, b in enumerate(budgets)]
    try:
        with allocator.engine.begin() as conn:
            conn.execute(budget_snapshots.insert(), rows)
    finally:
        allocator.engine.dispose()


def test_history_chart_and_movers(sample, three, cli):
    (rising, _), (falling, _), (flat, flat_type) = three
    backfill(sample, rising, [10, 20, 30, 40, 50, 60, 70, 80])
    backfill(sample, falling, [100, 90, 10, 5, 5, 5, 5, 1])
    backfill(sample, flat, [5, 5, 5, 5, 5, 5, 5, 6])
    chart = cli("history", rising, "--db", sample)
    assert chart.exit_code == 0
    assert "▁▂▃▄▅▆▇█" in chart.stdout.replace(" ", "")
    assert all(len(line) <= 80 for line in chart.stdout.splitlines()[:4])
    points = cli("history", rising, "-f", "csv", "--db", sample).stdout
    assert [r["budget"] for r in csv.DictReader(io.StringIO(points))] == \
        ["10", "20", "30", "40", "50", "60", "70", "80"]
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    since = (hour - timedelta(hours=3)).isoformat()
    window = cli("history", rising, "--since", since, "-f", "json", "--db", sample).json()
    assert [p["budget"] for p in window] == [60, 70, 80]
    movers = cli("history", "--top", "2", "-f", "json", "--db", sample).json()
    assert [(m["artifact_id"], m["change"]) for m in movers] == [(falling, -99), (rising, 70)]
    typed = cli("history", "--top", "5", "--type", flat_type, "-f", "json", "--db", sample).json()
    assert [m["artifact_id"] for m in typed] == [flat]


def test_prune_keeps_recent_buckets(sample, three, cli):
    artifact = three[0][0]
    backfill(sample, artifact, [1, 2, 3, 4, 5, 6])
    result = cli("snapshots", "prune", "--every", "hour", "--keep", "3h", "--db", sample)
    assert result.exit_code == 0 and "removed 3" in result.stderr
    assert len(cli("history", artifact, "-f", "json", "--db", sample).json()) == 3
    assert cli("snapshots", "prune", "--keep", "forever", "--db", sample).exit_code == 2


def test_history_errors(sample, three, cli):
    artifact = three[0][0]
    empty = cli("history", artifact, "--db", sample)
    assert empty.exit_code == 0 and f"no snapshots of {artifact}" in empty.stderr
    assert cli("history", artifact, "-f", "json", "--db", sample).json() == []
    unknown = cli("history", "nope", "--db", sample)
    assert unknown.exit_code == 4 and unknown.stderr == "alloc: unknown artifact 'nope'\n"
    for args in ([artifact, "--since", "last tuesday"],
                 [artifact, "--since", "2026-02-01", "--until", "2026-01-01"],
                 [artifact, "--top", "3"], [], ["--top", "0"],
                 [artifact, "--every", "minute"]):
        result = cli("history", *args, "--db", sample)
        assert result.exit_code == 2, args
        assert result.stderr.startswith("alloc: ") and result.stderr.count("\n") == 1


def test_plan_csv_sums_exactly_to_the_pool_and_writes_nothing(sample, cli):
    before = cli("log", "-f", "csv", "--db", sample).stdout
    out = cli("plan", "--pool", "20000000", "--unit", "llm-tokens", "-f", "csv", "--db", sample)
    assert out.exit_code == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert list(rows[0]) == ["artifact_id", "type", "remaining", "share", "fraction"]
    assert sum(int(r["share"]) for r in rows) == 20_000_000
    ranked = {r["artifact_id"]: Decimal(str(r["remaining"]))
              for r in cli("rank", "-f", "json", "--db", sample).json() if r["remaining"] > 0}
    assert {r["artifact_id"] for r in rows} == set(ranked)
    total = sum(ranked.values())
    for r in rows:
        assert abs(int(r["share"]) - 20_000_000 * ranked[r["artifact_id"]] / total) < 1
    assert cli("log", "-f", "csv", "--db", sample).stdout == before
    assert snapshot_rows(sample) == 0


def test_plan_caps_minimums_and_errors(sample, cli):
    capped = cli("plan", "--pool", "1000", "--cap", "40", "-f", "json", "--db", sample).json()
    assert sum(p["share"] for p in capped) == 1000 and max(p["share"] for p in capped) <= 40
    floored = cli("plan", "--pool", "1000", "--min", "30", "-f", "json", "--db", sample).json()
    assert sum(p["share"] for p in floored) == 1000 and min(p["share"] for p in floored) >= 30
    too_small = cli("plan", "--pool", "1000", "--cap", "1", "--db", sample)
    assert too_small.exit_code == 2 and "cannot absorb" in too_small.stderr
    for args in (["--pool", "12.5"], ["--pool", "-3"], ["--pool", "abc"],
                 ["--pool", "10", "--unit", "furlongs"], ["--pool", "10", "--cap", "0"]):
        assert cli("plan", *args, "--db", sample).exit_code == 2, args
    typed = cli("plan", "--pool", "7", "--type", "analysis", "-f", "json", "--db", sample).json()
    assert {p["type"] for p in typed} == {"analysis"} and sum(p["share"] for p in typed) == 7
