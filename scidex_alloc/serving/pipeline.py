"""The pipeline the API and dashboard show: totals per artifact type and snapshot totals
over time, summed exactly in SQL.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Select, case, func, literal, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import Numeric

from scidex_alloc.budgets import balances
from scidex_alloc.budgets.queries import budget_select, tokens_from_micro
from scidex_alloc.formula import MICRO, ONE, Params
from scidex_alloc.history import snapshots
from scidex_alloc.serving.results import Pipeline, PipelinePoint, TypeTotals
from scidex_alloc.storage.schema import (
    Timestamp,
    artifact_balances,
    artifacts,
    claims,
    holds,
    utcnow,
)
from scidex_alloc.storage.sql import MICRO_PER_TOKEN, IsFinite, LaterThan, MicroTokens

PIPELINE_TOTALS = ("demand", "bounty", "budget", "spent", "remaining")
SNAPSHOT_TOTALS = ("budget", "spent", "remaining")


def pipeline(connection: Connection, params: Params, buckets: int) -> Pipeline:
    """Totals per artifact type, and the newest `buckets` snapshot totals over time."""
    types = [TypeTotals(r.type, r.artifacts, *(split_total(r, name) for name in PIPELINE_TOTALS),
                        r.invalid)
             for r in connection.execute(pipeline_by_type(params, utcnow()))]
    period = snapshots.finest(connection, None)
    points = [] if period is None else [
        PipelinePoint(r.bucket, *(split_total(r, name) for name in SNAPSHOT_TOTALS))
        for r in connection.execute(snapshot_totals(period, buckets))]
    return Pipeline(types, period, points)


class WholeTokens(FunctionElement):
    """The whole tokens of a micro-token amount, truncated toward zero."""

    type = Numeric()
    inherit_cache = True
    name = "whole_tokens"


@compiles(WholeTokens)
def _whole_default(element, compiler, **kw):
    # PostgreSQL's numeric SUM never overflows: the whole amount stays in the micro part.
    return "0"


@compiles(WholeTokens, "sqlite")
def _whole_sqlite(element, compiler, **kw):
    return f"(CAST({compiler.process(element.clauses, **kw)} AS INTEGER) / {MICRO_PER_TOKEN})"


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


def pipeline_by_type(params: Params, now: datetime) -> Select:
    """Capital to research per artifact type: committed demand, bounty, budget, spent over
    its valid artifacts, and how many are invalid."""
    b = _budgets(params, now)
    valid = b.c.problem.is_(None)
    return (select(b.c.type, func.count().label("artifacts"),
                   func.count(b.c.problem).label("invalid"),
                   *(column for name in PIPELINE_TOTALS
                     for column in split_sum(case((valid, b.c[name])), name)))
            .group_by(b.c.type).order_by(b.c.type))


def _budgets(params: Params, now: datetime):
    """Every artifact's type, terms, budget, remaining and whether it has a problem. With
    the default formula the maintained keys serve, and only the balances whose bounties
    expired since they were summed go through the budget SELECT."""
    terms = ("demand", "bounty", "spent", "budget", "remaining")
    if params != Params():
        full = budget_select(params, now).subquery()
        return select(full.c.type, *(full.c[name] for name in terms), full.c.problem).subquery()
    a = artifact_balances.c
    current = select(a.type, a.demand, a.bounty, a.spent, a.budget_key.label("budget"),
                     a.remaining_key.label("remaining"),
                     case((a.budget_key.is_(None), literal("invalid"))).label("problem")
                     ).where(balances.unexpired(a.next_expiry, now))
    expired = budget_select(params, now, where=[balances.expired(a.next_expiry, now)])
    columns = expired.selected_columns
    expired = expired.with_only_columns(columns.type, *(columns[name] for name in terms),
                                        columns.problem)
    return current.union_all(expired).subquery()


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
