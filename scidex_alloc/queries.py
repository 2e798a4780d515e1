"""The set-based budget SELECT, built once with SQLAlchemy Core.

One statement computes every artifact's demand, bounty, price and spent with
correlated aggregates over covering indexes; rank, budget and later commands
narrow, order and limit it. Amounts travel as micro-tokens: integers on SQLite
(exact sums), NUMERIC on PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Integer, Select, and_, case, func, literal, or_, select, type_coerce
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement
from sqlalchemy.types import Boolean, Numeric

from scidex_alloc.formula import HALF, MICRO, Params, terms
from scidex_alloc.results.budgets import BudgetRow
from scidex_alloc.schema import (
    Timestamp,
    artifacts,
    markets,
    positions,
    resource_allocations,
    token_bounties,
)

MICRO_PER_TOKEN = 1_000_000
SORT_KEYS = ("budget", "remaining", "demand")


class micro(FunctionElement):
    """A token amount in micro-tokens, exact on both databases."""

    type = Numeric()
    inherit_cache = True
    name = "micro"


@compiles(micro)
def _micro_default(element, compiler, **kw):
    return f"({compiler.process(element.clauses, **kw)} * {MICRO_PER_TOKEN})"


@compiles(micro, "sqlite")
def _micro_sqlite(element, compiler, **kw):
    return f"CAST(ROUND({compiler.process(element.clauses, **kw)} * {MICRO_PER_TOKEN}) AS INTEGER)"


class later_than(FunctionElement):
    """``a > b`` for timestamps; SQLite compares instants, not their text."""

    type = Boolean()
    inherit_cache = True
    name = "later_than"


@compiles(later_than)
def _later_default(element, compiler, **kw):
    a, b = element.clauses
    return f"({compiler.process(a, **kw)} > {compiler.process(b, **kw)})"


@compiles(later_than, "sqlite")
def _later_sqlite(element, compiler, **kw):
    a, b = element.clauses
    return f"(julianday({compiler.process(a, **kw)}) > julianday({compiler.process(b, **kw)}))"


def _total(column, table, *where) -> ColumnElement:
    """Correlated SUM of an amount for the current artifact, 0 when it has no rows."""
    return func.coalesce(
        select(func.sum(column))
        .where(table.c.artifact_id == artifacts.c.id, *where)
        .scalar_subquery(),
        0,
    )


def budget_select(params: Params, now: datetime, type_: str | None = None) -> Select:
    """Every artifact (of one type, if given) with its terms in micro-tokens, and
    budget/remaining sort keys."""
    demand = _total(micro(positions.c.tokens), positions, positions.c.status == "open")
    bounty = _total(
        micro(token_bounties.c.tokens_offered) - micro(token_bounties.c.tokens_paid),
        token_bounties,
        token_bounties.c.status == "open",
        or_(
            token_bounties.c.expires_at.is_(None),
            later_than(token_bounties.c.expires_at, literal(now, Timestamp())),
        ),
    )
    spent = _total(micro(resource_allocations.c.tokens), resource_allocations)
    raw_price = func.round(func.coalesce(markets.c.price, literal(params.default_price)), 6)
    price = case((raw_price < 0, 0), (raw_price > 1, 1), else_=raw_price)
    uncertainty = 1 - func.abs(price - literal(HALF)) * 2
    floor = literal(params.multiplier_floor)
    multiplier = floor + (1 - floor) * uncertainty
    budget = func.round((literal(params.research_share) * demand + bounty) * multiplier)
    stmt = (
        select(
            artifacts.c.id.label("artifact_id"),
            artifacts.c.type,
            artifacts.c.title,
            demand.label("demand"),
            bounty.label("bounty"),
            markets.c.price.label("price"),
            price.label("effective_price"),
            spent.label("spent"),
            budget.label("budget"),
            (budget - spent).label("remaining"),
        )
        .select_from(artifacts.outerjoin(markets, markets.c.artifact_id == artifacts.c.id))
    )
    return stmt if type_ is None else stmt.where(artifacts.c.type == type_)


def ranked(params: Params, now: datetime, type_: str | None, by: str, limit: int | None,
           offset: int = 0) -> Select:
    stmt = budget_select(params, now, type_)
    key = stmt.selected_columns[by]
    stmt = stmt.order_by(key.desc(), artifacts.c.id.asc())
    if limit is not None:
        stmt = stmt.limit(limit)
    return stmt.offset(offset) if offset else stmt


def one(params: Params, now: datetime, artifact_id: str) -> Select:
    return budget_select(params, now).where(artifacts.c.id == artifact_id)


def budget_terms(params: Params, now: datetime, ids: list[str]) -> Select:
    """What a spend decision needs of these artifacts, each aggregate evaluated once (the
    caller computes the budget): price, and demand, bounty and spent as the driver returns
    micro-tokens, whole numbers that need no conversion per row."""
    full = budget_select(params, now)
    columns = full.selected_columns
    return full.with_only_columns(
        columns.artifact_id, columns.price,
        *(type_coerce(columns[name], Integer).label(name) for name in ("demand", "bounty", "spent")),
    ).where(artifacts.c.id.in_(ids))


def tokens_from_micro(value) -> Decimal:
    """Micro-tokens from either database back to an exact token Decimal."""
    return Decimal(value).scaleb(-6).quantize(MICRO)


def budget_row(position: int, row, params: Params) -> BudgetRow:
    """A row of budget_select as the result object, every term recomputed exactly."""
    t = terms(
        tokens_from_micro(row.demand),
        tokens_from_micro(row.bounty),
        None if row.price is None else Decimal(row.price),
        tokens_from_micro(row.spent),
        params,
    )
    return BudgetRow(position, row.artifact_id, row.type, row.title, t.demand, t.bounty,
                     t.price, t.uncertainty, t.multiplier, t.budget, t.spent, t.remaining)


def artifact_exists(artifact_id: str) -> Select:
    return select(artifacts.c.id).where(artifacts.c.id == artifact_id)


def spend_log(artifact_id: str | None, since: datetime | None, limit: int | None) -> Select:
    log = resource_allocations
    stmt = select(
        log.c.id, log.c.created_at, log.c.artifact_id, log.c.tokens, log.c.unit, log.c.units,
        log.c.rate, log.c.kind, log.c.agent_id.label("agent"), log.c.note,
        log.c.idempotency_key.label("key"), log.c.overdraft, log.c.reverses_id.label("reverses"),
    ).order_by(log.c.id)
    if artifact_id is not None:
        stmt = stmt.where(log.c.artifact_id == artifact_id)
    if since is not None:
        stmt = stmt.where(~later_than(literal(since, Timestamp()), log.c.created_at))
    return stmt.limit(limit) if limit is not None else stmt


def queue_candidates(params: Params, now: datetime, type_: str | None, agent: str | None
                     ) -> Select:
    """Artifacts with budget left and no live claim by another agent, with their
    investigation counts and reward totals, and the asking agent's own live claim."""
    from scidex_alloc.schema import claims

    def live(*where):
        return and_(claims.c.artifact_id == artifacts.c.id, claims.c.status == "active",
                    later_than(claims.c.lease_expires_at, literal(now, Timestamp())), *where)

    done = and_(claims.c.artifact_id == artifacts.c.id, claims.c.status == "done")
    others = live() if agent is None else live(claims.c.agent_id != agent)
    own = live(claims.c.agent_id == agent) if agent is not None else None
    base = budget_select(params, now, type_)
    base = base.add_columns(
        select(func.count()).where(done).scalar_subquery().label("investigations"),
        func.coalesce(select(func.sum(claims.c.reward)).where(done).scalar_subquery(), 0)
        .label("reward_total"),
        (select(claims.c.id).where(own).scalar_subquery() if own is not None
         else literal(None)).label("claim_id"),
        (select(claims.c.lease_expires_at).where(own).scalar_subquery() if own is not None
         else literal(None, Timestamp())).label("lease_expires_at"),
    ).where(~select(claims.c.id).where(others).exists())
    inner = base.subquery()
    return select(inner).where(inner.c.remaining > 0)


def tokens(micro_amount) -> ColumnElement:
    """Micro-tokens back to tokens inside SQL (exact NUMERIC on PostgreSQL)."""
    return micro_amount / literal(Decimal("1000000.0"))


def snapshot_insert(dialect: str, params: Params, now: datetime, type_: str | None,
                    period: str, bucket: datetime):
    """INSERT ... SELECT of every artifact's budget into its bucket; an existing row for the
    same artifact, period and bucket is left alone (ON CONFLICT DO NOTHING)."""
    from sqlalchemy import true

    from scidex_alloc.schema import budget_snapshots

    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    source = budget_select(params, now, type_)
    b = source.subquery()
    rows = select(
        b.c.artifact_id, literal(period), literal(bucket, Timestamp()), literal(now, Timestamp()),
        tokens(b.c.demand), tokens(b.c.bounty), b.c.effective_price, tokens(b.c.budget),
        tokens(b.c.spent), tokens(b.c.remaining),
    ).where(true())  # SQLite needs a WHERE before ON CONFLICT in INSERT ... SELECT
    columns = ["artifact_id", "period", "bucket", "taken_at", "demand", "bounty", "price",
               "budget", "spent", "remaining"]
    return insert(budget_snapshots).from_select(columns, rows).on_conflict_do_nothing()


def snapshot_history(artifact_id: str, period: str, since: datetime | None,
                     until: datetime | None) -> Select:
    from scidex_alloc.schema import budget_snapshots as s

    stmt = select(s).where(s.c.artifact_id == artifact_id, s.c.period == period)
    return _window(stmt, s, since, until).order_by(s.c.bucket)


def _window(stmt, s, since, until):
    if since is not None:
        stmt = stmt.where(~later_than(literal(since, Timestamp()), s.c.bucket))
    if until is not None:
        stmt = stmt.where(~later_than(s.c.bucket, literal(until, Timestamp())))
    return stmt


def snapshot_periods(artifact_id: str | None) -> Select:
    from scidex_alloc.schema import budget_snapshots as s

    stmt = select(s.c.period).distinct()
    return stmt if artifact_id is None else stmt.where(s.c.artifact_id == artifact_id)


def movers(type_: str | None, period: str, since: datetime | None, until: datetime | None,
           top: int) -> Select:
    """Per artifact, its first and last snapshot in the window; biggest budget moves first."""
    from scidex_alloc.schema import budget_snapshots as s

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
    from scidex_alloc.schema import budget_snapshots as s

    stmt = s.delete().where(later_than(literal(before, Timestamp()), s.c.bucket))
    return stmt if period is None else stmt.where(s.c.period == period)


def plan_candidates(params: Params, now: datetime, type_: str | None) -> Select:
    inner = budget_select(params, now, type_)
    b = inner.subquery()
    return select(b).where(b.c.remaining > 0)


def pipeline_by_type(params: Params, now: datetime) -> Select:
    """Capital to research per artifact type: committed demand, bounty, budget, spent."""
    b = budget_select(params, now).subquery()
    return (select(b.c.type, func.count().label("artifacts"),
                   *(func.sum(b.c[name]).label(name)
                     for name in ("demand", "bounty", "budget", "spent", "remaining")))
            .group_by(b.c.type).order_by(b.c.type))


def snapshot_totals(period: str, buckets: int) -> Select:
    """Budget, spent and remaining summed over all artifacts, per bucket: the newest ones."""
    from scidex_alloc.schema import budget_snapshots as s

    newest = (select(s.c.bucket, *(func.sum(micro(s.c[name])).label(name)
                                   for name in ("budget", "spent", "remaining")))
              .where(s.c.period == period).group_by(s.c.bucket)
              .order_by(s.c.bucket.desc()).limit(buckets).subquery())
    return select(newest).order_by(newest.c.bucket)
