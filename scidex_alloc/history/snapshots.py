"""Budget history: recording snapshots, pruning them, and reading them back (which period
to show, one artifact's snapshots, the movers)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Select, and_, func, literal, select
from sqlalchemy.engine import Connection

from scidex_alloc import timeparse
from scidex_alloc.budgets import folding, queries
from scidex_alloc.budgets.queries import budget_select
from scidex_alloc.errors import UsageError
from scidex_alloc.formula import Params, exact
from scidex_alloc.history.results import HistoryPoint, Mover, SnapshotResult
from scidex_alloc.options import PERIODS
from scidex_alloc.storage.schema import (
    Timestamp,
    artifacts,
)
from scidex_alloc.storage.sql import LaterThan, tokens


def check_period(every: str) -> None:
    if every not in PERIODS:
        raise UsageError(f"{{every}} must be one of {', '.join(PERIODS)}", "every")


def check_window(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since > until:
        raise UsageError("{since} is after {until}", "since", "until")


def finest(connection: Connection, artifact_id: str | None) -> str | None:
    """The finest period that has snapshots (of one artifact, or of any): hour, day, week."""
    present = set(connection.scalars(snapshot_periods(artifact_id)))
    return next((p for p in PERIODS if p in present), None)


def history(connection: Connection, artifact_id: str, since: datetime | None,
            until: datetime | None, every: str | None) -> list[HistoryPoint]:
    return series(connection, artifact_id, since, until, every)[1]


def series(connection: Connection, artifact_id: str, since: datetime | None,
           until: datetime | None, every: str | None) -> tuple[str | None, list[HistoryPoint]]:
    """The period shown (`every`, or the artifact's finest; None without snapshots) and
    the artifact's snapshots of it."""
    queries.require_artifact(connection, artifact_id)
    period = every or finest(connection, artifact_id)
    if period is None:
        return None, []
    check_period(period)
    rows = connection.execute(snapshot_history(artifact_id, period, since, until))
    return period, [HistoryPoint(r.bucket, r.taken_at, *(exact(v) for v in (
        r.demand, r.bounty, r.price, r.budget, r.spent, r.remaining))) for r in rows]


def movers(connection: Connection, type_: str | None, top: int, since: datetime | None,
           until: datetime | None, every: str | None) -> list[Mover]:
    period = every or finest(connection, None)
    if period is None:
        return []
    check_period(period)
    rows = connection.execute(movers_select(type_, period, since, until, top))
    return [Mover(r.artifact_id, r.type, r.first, r.last, exact(r.budget_from),
                  exact(r.budget_to), exact(r.budget_to) - exact(r.budget_from),
                  exact(r.remaining_from), exact(r.remaining_to)) for r in rows]


def record(connection: Connection, params: Params, type_: str | None, every: str,
           now: datetime) -> SnapshotResult:
    """Every artifact's budget in the bucket of `every` that `now` falls in; a bucket
    already recorded, even by a concurrent snapshot, gains no rows."""
    bucket = timeparse.bucket_start(now, every)
    folding.fold_expired(connection, now)
    folding.fold_pending(connection, now)
    stmt = snapshot_insert(connection.dialect.name, params, now, type_, every, bucket)
    added = connection.execute(stmt.execution_options(preserve_rowcount=True),
                               {"now": now}).rowcount
    return SnapshotResult(every, bucket, now, added)


def prune(connection: Connection, every: str | None, keep: timedelta, now: datetime) -> int:
    """Delete the snapshots (of one period, or all) whose bucket began more than `keep`
    before the current hour; how many rows went."""
    cutoff = timeparse.bucket_start(now, "hour") - keep
    return connection.execute(prune_snapshots(every, cutoff)).rowcount


def snapshot_insert(dialect: str, params: Params, now: datetime, type_: str | None,
                    period: str, bucket: datetime):
    """INSERT ... SELECT of every artifact's budget into its bucket; an existing row for the
    same artifact, period and bucket is left alone (ON CONFLICT DO NOTHING)."""
    from scidex_alloc.storage.schema import budget_snapshots

    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    source = budget_select(params, type_)
    b = source.subquery()
    rows = select(
        b.c.artifact_id, literal(period), literal(bucket, Timestamp()), literal(now, Timestamp()),
        tokens(b.c.demand), tokens(b.c.bounty), b.c.effective_price, tokens(b.c.budget),
        tokens(b.c.spent), tokens(b.c.remaining),
    ).where(b.c.problem.is_(None))  # invalid artifacts have no budget to record
    columns = ["artifact_id", "period", "bucket", "taken_at", "demand", "bounty", "price",
               "budget", "spent", "remaining"]
    return insert(budget_snapshots).from_select(columns, rows).on_conflict_do_nothing()


def snapshot_history(artifact_id: str, period: str, since: datetime | None,
                     until: datetime | None) -> Select:
    from scidex_alloc.storage.schema import budget_snapshots as s

    stmt = select(s).where(s.c.artifact_id == artifact_id, s.c.period == period)
    return _window(stmt, s, since, until).order_by(s.c.bucket)


def _window(stmt, s, since, until):
    if since is not None:
        stmt = stmt.where(~LaterThan(literal(since, Timestamp()), s.c.bucket))
    if until is not None:
        stmt = stmt.where(~LaterThan(s.c.bucket, literal(until, Timestamp())))
    return stmt


def snapshot_periods(artifact_id: str | None) -> Select:
    from scidex_alloc.storage.schema import budget_snapshots as s

    stmt = select(s.c.period).distinct()
    return stmt if artifact_id is None else stmt.where(s.c.artifact_id == artifact_id)


def movers_select(type_: str | None, period: str, since: datetime | None,
                  until: datetime | None, top: int) -> Select:
    """Per artifact, its first and last snapshot in the window; biggest budget moves first."""
    from scidex_alloc.storage.schema import budget_snapshots as s

    span = _window(
        select(s.c.artifact_id, func.min(s.c.bucket).label("first"),
               func.max(s.c.bucket).label("last"))
        .where(s.c.period == period), s, since, until,
    ).group_by(s.c.artifact_id).subquery()
    first, last = s.alias("first_snapshot"), s.alias("last_snapshot")
    change = last.c.budget - first.c.budget
    stmt = (
        select(span.c.artifact_id, artifacts.c.type, span.c.first, span.c.last,
               first.c.budget.label("budget_from"), last.c.budget.label("budget_to"),
               first.c.remaining.label("remaining_from"),
               last.c.remaining.label("remaining_to"))
        .join(artifacts, artifacts.c.id == span.c.artifact_id)
        .join(first, and_(first.c.artifact_id == span.c.artifact_id, first.c.period == period,
                          first.c.bucket == span.c.first))
        .join(last, and_(last.c.artifact_id == span.c.artifact_id, last.c.period == period,
                         last.c.bucket == span.c.last))
        .order_by(func.abs(change).desc(), span.c.artifact_id)
        .limit(top)
    )
    return stmt if type_ is None else stmt.where(artifacts.c.type == type_)


def prune_snapshots(period: str | None, before: datetime):
    from scidex_alloc.storage.schema import budget_snapshots as s

    stmt = s.delete().where(LaterThan(literal(before, Timestamp()), s.c.bucket))
    return stmt if period is None else stmt.where(s.c.period == period)
