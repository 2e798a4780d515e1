"""The pipeline the API and dashboard show: totals per artifact type and snapshot totals
over time, summed exactly in SQL.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Select, func, literal, select, union_all
from sqlalchemy.engine import Connection

from scidex_alloc.budgets import balances, totals
from scidex_alloc.budgets.queries import budget_select, pending_balances, tokens_from_micro
from scidex_alloc.formula import MICRO, ONE, Params
from scidex_alloc.history import snapshots
from scidex_alloc.serving.results import Pipeline, PipelinePoint, TypeTotals
from scidex_alloc.storage.schema import (
    TOTALS,
    Timestamp,
    artifact_balances,
    artifacts,
    balance_totals,
    claims,
    holds,
    utcnow,
)
from scidex_alloc.storage.sql import (
    MICRO_PER_TOKEN,
    IsFinite,
    LaterThan,
    MicroTokens,
    WholeTokens,
)

SNAPSHOT_TOTALS = ("budget", "spent", "remaining")


def pipeline(connection: Connection, params: Params, buckets: int) -> Pipeline:
    """Totals per artifact type, and the newest `buckets` snapshot totals over time."""
    types = [TypeTotals(r.type, r.artifacts, *(split_total(r, name) for name in TOTALS),
                        r.invalid)
             for r in connection.execute(pipeline_by_type(params), {"now": utcnow()})]
    period = snapshots.finest(connection, None)
    points = [] if period is None else [
        PipelinePoint(r.bucket, *(split_total(r, name) for name in SNAPSHOT_TOTALS))
        for r in connection.execute(snapshot_totals(period, buckets))]
    return Pipeline(types, period, points)


def split_sum(amount, name: str) -> list:
    """SUM of micro-token amounts over many artifacts as two exact sums, whole tokens and
    the micro-tokens left: SQLite's integer SUM would overflow past about 9.2e12 tokens."""
    whole = WholeTokens(amount)
    return [func.sum(whole).label(name),
            func.sum(amount - whole * MICRO_PER_TOKEN).label(f"{name}_micro")]


def split_total(row, name: str) -> Decimal:
    """A split_sum back to exact tokens (0 for no rows)."""
    whole, rest = row._mapping[name], row._mapping[f"{name}_micro"]
    if whole is None:
        return Decimal(0).quantize(MICRO)
    return Decimal(whole).quantize(ONE) + tokens_from_micro(Decimal(rest).quantize(ONE))


def pipeline_by_type(params: Params) -> Select:
    """Capital to research per artifact type at `now`: committed demand, bounty, budget,
    spent over its valid artifacts, and how many are invalid. With the default formula
    the totals the database keeps serve, corrected for the balances whose bounties
    expired since they were summed or whose artifacts are pending; with another, every
    budget is summed."""
    if params != Params():
        rows = _contributions(budget_select(params).subquery())
        return totals.by_type(rows).order_by(rows.c.type)
    a = artifact_balances.c
    stale = a.artifact_id.in_(union_all(  # along the expiry index, and from the pending rows
        select(a.artifact_id).where(balances.expired(a.next_expiry)), pending_balances()))
    stored = select(a.type, *(v.label(k) for k, v in totals.contribution(a, -1).items())
                    ).where(stale)
    again = _contributions(budget_select(params, where=[stale]).subquery())
    kept = select(balance_totals.c.type, *(balance_totals.c[name] for name in totals.COLUMNS))
    rows = kept.union_all(stored, select(again)).subquery()
    return totals.by_type(rows).order_by(rows.c.type)


def _contributions(budgets):
    """What each row of a budget SELECT adds to its type's totals: valid when it has a
    budget and a remaining budget (whatever its holds), as a balance with a budget key."""
    c = budgets.c
    columns = {**{name: c[name] for name in ("type", "demand", "bounty", "spent")},
               "budget_key": c.budget, "remaining_key": c.remaining}
    added = totals.contribution(columns, valid=c.remaining.is_not(None))
    return select(c.type, *(v.label(k) for k, v in added.items())).subquery()


def snapshot_totals(period: str, buckets: int) -> Select:
    """Budget, spent and remaining summed over all artifacts, per bucket: the newest ones.
    A snapshot another service wrote with an amount that is not a finite number is left out."""
    from scidex_alloc.storage.schema import budget_snapshots as s

    newest = (select(s.c.bucket, *(column for name in SNAPSHOT_TOTALS
                                   for column in split_sum(MicroTokens(s.c[name]), name)))
              .where(s.c.period == period, *(IsFinite(s.c[name]) for name in SNAPSHOT_TOTALS))
              .group_by(s.c.bucket)
              .order_by(s.c.bucket.desc()).limit(buckets).subquery())
    return select(newest).order_by(newest.c.bucket)


def live_holds_and_claims(connection: Connection, now: datetime
                          ) -> tuple[dict[str, Decimal], int]:
    """Tokens of the live holds (active, unexpired, finite) per artifact type, and how many
    active claims' leases have not run out."""
    at = literal(now, Timestamp())
    held = (select(artifacts.c.type, *split_sum(MicroTokens(holds.c.tokens), "held"))
            .join(artifacts, artifacts.c.id == holds.c.artifact_id)
            .where(holds.c.status == "active", LaterThan(holds.c.expires_at, at),
                   IsFinite(holds.c.tokens))
            .group_by(artifacts.c.type))
    live = select(func.count()).where(claims.c.status == "active",
                                      LaterThan(claims.c.lease_expires_at, at))
    return ({r.type: split_total(r, "held") for r in connection.execute(held)},
            connection.execute(live).scalar_one())
