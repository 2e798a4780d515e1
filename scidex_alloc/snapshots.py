"""Reading budget history: which period to show, one artifact's snapshots, the movers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Connection

from scidex_alloc import queries
from scidex_alloc.errors import UnknownArtifact, UsageError
from scidex_alloc.formula import exact
from scidex_alloc.results.history import HistoryPoint, Mover
from scidex_alloc.schema import PERIODS


def check_period(period: str) -> None:
    if period not in PERIODS:
        raise UsageError(f"--every must be one of {', '.join(PERIODS)}")


def check_window(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since > until:
        raise UsageError("--since is after --until")


def finest(connection: Connection, artifact_id: str | None) -> str | None:
    """The finest period that has snapshots (of one artifact, or of any): hour, day, week."""
    present = set(connection.scalars(queries.snapshot_periods(artifact_id)))
    return next((p for p in PERIODS if p in present), None)


def history(connection: Connection, artifact_id: str, since: datetime | None,
            until: datetime | None, every: str | None) -> list[HistoryPoint]:
    if not connection.execute(queries.artifact_exists(artifact_id)).first():
        raise UnknownArtifact(f"unknown artifact {artifact_id!r}")
    period = every or finest(connection, artifact_id)
    if period is None:
        return []
    check_period(period)
    rows = connection.execute(queries.snapshot_history(artifact_id, period, since, until))
    return [HistoryPoint(r.bucket, r.taken_at, *(exact(v) for v in (
        r.demand, r.bounty, r.price, r.budget, r.spent, r.remaining))) for r in rows]


def movers(connection: Connection, type_: str | None, top: int, since: datetime | None,
           until: datetime | None, every: str | None) -> list[Mover]:
    period = every or finest(connection, None)
    if period is None:
        return []
    check_period(period)
    rows = connection.execute(queries.movers(type_, period, since, until, top))
    return [Mover(r.artifact_id, r.type, r.first, r.last, exact(r.budget_from),
                  exact(r.budget_to), exact(r.budget_to) - exact(r.budget_from),
                  exact(r.remaining_from), exact(r.remaining_to)) for r in rows]
