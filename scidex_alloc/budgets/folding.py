"""Folding: bringing stored balances up to date where readers sum a term again themselves,
so that they have few to sum: the bounties and holds that expired since they were summed,
and the demand of the pending artifacts (whose positions changed since; see
`balances.pending`)."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from sqlalchemy import Select, bindparam, select, text
from sqlalchemy.engine import Connection

from scidex_alloc.budgets.balances import EXPIRY, NOW, expired, recomputed
from scidex_alloc.storage.schema import artifact_balances, pending_demand

FOLD_BATCH = 1000  # pending rows folded per statement
# Pending rows each `next --claim` folds: a few milliseconds more, and with agents claiming
# many times a second far above the rate another service writes positions.
PER_WRITE = 100


def fold_expired(connection: Connection, now: datetime) -> int:
    """Sum again the bounties and holds of the balances where one of them expired by `now`
    (readers do so on every read until then); how many balances."""
    b = artifact_balances
    folded = 0
    for term, expiry in EXPIRY.items():
        values = recomputed(b.c.artifact_id, NOW, (term, f"{term}_invalid", expiry))
        folded += connection.execute(
            b.update().where(expired(b.c[expiry])).values(values), {"now": now}).rowcount
    return folded


def fold_pending(connection: Connection, now: datetime, limit: int | None = None,
                 wait: bool = False) -> int:
    """Sum again the demand of the pending artifacts (those of the first `limit` pending
    rows, or of all), and delete their rows, with those of artifacts that are gone; how
    many balances were summed. The rows are taken FOLD_BATCH at a time, in id order.

    On PostgreSQL a fold waits for no lock (unless `wait`): it takes the pending rows and
    the balances no other transaction holds (SKIP LOCKED), and leaves the others pending,
    so it can end any write transaction without making a deadlock. Every position whose
    row it takes committed before, so the sums see it; one committed meanwhile keeps its
    own row."""
    postgresql = connection.dialect.name == "postgresql"
    summed, taken, after = 0, 0, None
    while limit is None or limit > taken:
        size = FOLD_BATCH if limit is None else min(limit - taken, FOLD_BATCH)
        rows = connection.execute(_taken(postgresql, wait, after is None),
                                  {"size": size, "after": after}).all()
        if not rows:
            break
        summed += _fold_rows(connection, now, rows, postgresql, wait)
        taken, after = taken + len(rows), rows[-1].id
    if postgresql and taken >= FOLD_BATCH:
        # The planner's count of pending rows would stay that of before the fold until
        # autovacuum comes by, and the rankings would plan for that many.
        connection.execute(text("ANALYZE pending_demand"))
    return summed


@lru_cache(maxsize=8)
def _taken(postgresql: bool, wait: bool, first: bool) -> Select:
    """The next `size` (a parameter) pending rows in id order: the first ones, or those
    past the id `after`. Built once: every agent's claim runs it."""
    p = pending_demand.c
    stmt = select(p.id, p.artifact_id).order_by(p.id).limit(bindparam("size"))
    if not first:
        stmt = stmt.where(p.id > bindparam("after"))
    return _locked(stmt, postgresql, wait)


def _locked(stmt: Select, postgresql: bool, wait: bool) -> Select:
    return stmt.with_for_update(skip_locked=not wait) if postgresql else stmt


def _fold_rows(connection: Connection, now: datetime, rows, postgresql: bool, wait: bool
               ) -> int:
    """Fold the pending `rows` (id, artifact_id): sum the demand of the balances it can
    lock, and delete their rows and those whose artifact has no balance."""
    p, b = pending_demand.c, artifact_balances.c
    artifacts = sorted({row.artifact_id for row in rows})
    held = set(connection.scalars(_locked(select(b.artifact_id).where(
        b.artifact_id.in_(artifacts)).order_by(b.artifact_id), postgresql, wait)))
    if held:
        connection.execute(
            artifact_balances.update().where(b.artifact_id.in_(sorted(held)))
            .values(recomputed(b.artifact_id, NOW, ("demand", "demand_invalid"))),
            {"now": now})
    for ids, where in (([r.id for r in rows if r.artifact_id in held], []),
                       ([r.id for r in rows if r.artifact_id not in held],
                        [p.artifact_id.not_in(select(b.artifact_id))])):
        if ids:
            connection.execute(pending_demand.delete().where(p.id.in_(ids), *where))
    return len(held)
