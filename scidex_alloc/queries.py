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

from scidex_alloc.formula import HALF, MAX_TOTAL, MICRO, ONE, Params, plain, terms
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
MAX_TOTAL_MICRO = int(MAX_TOTAL) * MICRO_PER_TOKEN
FLOAT_MAX = "1.7976931348623157e308"
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


class finite(FunctionElement):
    """Whether a stored amount or price is a finite number. Other services can write NaN
    and +-Infinity on PostgreSQL, and infinity or any text on SQLite (NUMERIC affinity)."""

    type = Boolean()
    inherit_cache = True
    name = "finite"


@compiles(finite)
def _finite_default(element, compiler, **kw):
    # NaN sorts above Infinity on PostgreSQL.
    value = compiler.process(element.clauses, **kw)
    return f"({value} > '-Infinity' AND {value} < 'Infinity')"


@compiles(finite, "sqlite")
def _finite_sqlite(element, compiler, **kw):
    # Text and blobs sort above every number; infinity lies beyond the largest double.
    return f"({compiler.process(element.clauses, **kw)} BETWEEN -{FLOAT_MAX} AND {FLOAT_MAX})"


class clamp01(FunctionElement):
    """A value clamped into [0, 1], evaluated once."""

    type = Numeric()
    inherit_cache = True
    name = "clamp01"


@compiles(clamp01)
def _clamp_default(element, compiler, **kw):
    return f"greatest(0, least(1, {compiler.process(element.clauses, **kw)}))"


@compiles(clamp01, "sqlite")
def _clamp_sqlite(element, compiler, **kw):
    return f"max(0, min(1, {compiler.process(element.clauses, **kw)}))"


class summand(FunctionElement):
    """One row's part of a total: `amount` (micro-tokens), made infinite on SQLite when one
    of the row's `columns` is not a finite number, so that the total shows it. PostgreSQL
    needs nothing: NaN, the only non-finite value its token columns hold, propagates."""

    type = Numeric()
    inherit_cache = True
    name = "summand"


@compiles(summand)
def _summand_default(element, compiler, **kw):
    return compiler.process(element.clauses.clauses[0], **kw)


@compiles(summand, "sqlite")
def _summand_sqlite(element, compiler, **kw):
    amount, *columns = element.clauses.clauses
    ok = " AND ".join(compiler.process(finite(column), **kw) for column in columns)
    return f"(CASE WHEN {ok} THEN {compiler.process(amount, **kw)} ELSE 9e999 END)"


class amount_sum(FunctionElement):
    """The sum of summands, 0 for no rows. SQLite's TOTAL never fails: its integer SUM
    raises on overflow, and TOTAL of whole micro-tokens is exact below 2**53."""

    type = Numeric()
    inherit_cache = True
    name = "amount_sum"


@compiles(amount_sum)
def _amount_sum_default(element, compiler, **kw):
    return f"coalesce(sum({compiler.process(element.clauses, **kw)}), 0)"


@compiles(amount_sum, "sqlite")
def _amount_sum_sqlite(element, compiler, **kw):
    return f"total({compiler.process(element.clauses, **kw)})"


def _checked_total(amount, columns, table, where, artifact_id) -> ColumnElement:
    """Correlated total of an amount (micro-tokens) for `artifact_id`, or NULL when it is not
    finite or beyond MAX_TOTAL (both databases compute the repeated aggregate once)."""
    total = amount_sum(summand(amount, *columns))
    return (select(case((total.between(-MAX_TOTAL_MICRO, MAX_TOTAL_MICRO), total)))
            .where(table.c.artifact_id == artifact_id, *where).scalar_subquery())


def _why_invalid(name: str, amount, columns, table, where, artifact_id) -> ColumnElement:
    """Why a checked total is NULL; evaluated only for such artifacts."""
    total = amount_sum(summand(amount, *columns))
    return (select(case((finite(total), f"{name} exceeds {plain(MAX_TOTAL)} tokens"),
                        else_=f"{name} is not a finite number"))
            .where(table.c.artifact_id == artifact_id, *where).scalar_subquery())


def _totals(now: datetime) -> dict:
    """Each total's name: its amount in micro-tokens, the columns that must be finite,
    its table and its row filter."""
    offered, paid = token_bounties.c.tokens_offered, token_bounties.c.tokens_paid
    open_bounty = (
        token_bounties.c.status == "open",
        or_(
            token_bounties.c.expires_at.is_(None),
            later_than(token_bounties.c.expires_at, literal(now, Timestamp())),
        ),
    )
    return {
        "demand": (micro(positions.c.tokens), [positions.c.tokens], positions,
                   [positions.c.status == "open"]),
        "bounty": (micro(offered) - micro(paid), [offered, paid], token_bounties, open_bounty),
        "spent": (micro(resource_allocations.c.tokens), [resource_allocations.c.tokens],
                  resource_allocations, []),
    }


def beyond_limit(now: datetime, name: str) -> Select:
    """The first artifact whose finite total `name` (demand or bounty) exceeds MAX_TOTAL."""
    amount, columns, table, where = _totals(now)[name]
    total = amount_sum(summand(amount, *columns))
    return (select(table.c.artifact_id).where(*where).group_by(table.c.artifact_id)
            .having(and_(finite(total), ~total.between(-MAX_TOTAL_MICRO, MAX_TOTAL_MICRO)))
            .order_by(table.c.artifact_id).limit(1))


def budget_select(params: Params, now: datetime, type_: str | None = None, where=(),
                  extra=()) -> Select:
    """Every artifact (of one type, and meeting `where`, if given) with its terms in
    micro-tokens, budget/remaining sort keys, any `extra` columns, and `problem`.

    The totals are computed once per artifact in a derived table (OFFSET 0 keeps both
    databases from inlining, and so repeating, its correlated aggregates). An artifact
    whose price is not finite, or whose total is not finite or beyond MAX_TOTAL, is
    invalid: `problem` says why, and the terms that depend on it, always including
    `remaining`, are NULL.
    """
    totals = _totals(now)
    inner = (
        select(
            artifacts.c.id.label("artifact_id"), artifacts.c.type, artifacts.c.title,
            markets.c.price,
            *(_checked_total(*spec, artifacts.c.id).label(name) for name, spec in totals.items()),
            *extra,
        )
        .select_from(artifacts.outerjoin(markets, markets.c.artifact_id == artifacts.c.id))
        .where(*where, *([] if type_ is None else [artifacts.c.type == type_]))
        .offset(0)
        .subquery("totals")
    )
    t = inner.c
    price_ok = or_(t.price.is_(None), finite(t.price))
    price = case((price_ok, clamp01(func.round(func.coalesce(t.price,
                                                             literal(params.default_price)), 6))))
    uncertainty = 1 - func.abs(price - literal(HALF)) * 2
    floor = literal(params.multiplier_floor)
    multiplier = floor + (1 - floor) * uncertainty
    budget = func.round((literal(params.research_share) * t.demand + t.bounty) * multiplier)
    problem = case(
        (~price_ok, "price is not a finite number"),
        *((t[name].is_(None), _why_invalid(name, *spec, t.artifact_id))
          for name, spec in totals.items()),
    )
    return select(
        t.artifact_id, t.type, t.title, t.demand, t.bounty,
        case((price_ok, t.price)).label("price"),
        price.label("effective_price"),
        t.spent,
        budget.label("budget"),
        (budget - t.spent).label("remaining"),
        problem.label("problem"),
        *(t[column.name] for column in extra),
    )


def ranked(params: Params, now: datetime, type_: str | None, by: str, limit: int | None,
           offset: int = 0) -> Select:
    """Valid artifacts by `by`, descending, then invalid ones (those whose key is unknown
    last, on both databases); ties by id."""
    stmt = budget_select(params, now, type_)
    columns = stmt.selected_columns
    stmt = stmt.order_by(columns.problem.is_not(None), columns[by].desc().nulls_last(),
                         columns.artifact_id.asc())
    if limit is not None:
        stmt = stmt.limit(limit)
    return stmt.offset(offset) if offset else stmt


def one(params: Params, now: datetime, artifact_id: str) -> Select:
    return budget_select(params, now, where=[artifacts.c.id == artifact_id])


def budget_terms(params: Params, now: datetime, ids: list[str]) -> Select:
    """What a spend decision needs of these artifacts (the caller computes the budget):
    price, `problem`, and demand, bounty and spent as the driver returns micro-tokens,
    whole numbers that need no conversion per row."""
    full = budget_select(params, now, where=[artifacts.c.id.in_(ids)])
    columns = full.selected_columns
    return full.with_only_columns(
        columns.artifact_id, columns.price,
        *(type_coerce(columns[name], Integer).label(name) for name in ("demand", "bounty", "spent")),
        columns.problem,
    )


def tokens_from_micro(value) -> Decimal | None:
    """Micro-tokens from either database back to an exact token Decimal (None stays None:
    an invalid total)."""
    return None if value is None else Decimal(value).scaleb(-6).quantize(MICRO)


def budget_row(position: int, row, params: Params) -> BudgetRow:
    """A row of budget_select as the result object, every term recomputed exactly."""
    t = terms(
        tokens_from_micro(row.demand),
        tokens_from_micro(row.bounty),
        None if row.price is None else Decimal(row.price),
        tokens_from_micro(row.spent),
        params,
        price_known=row.effective_price is not None,
    )
    return BudgetRow(position, row.artifact_id, row.type, row.title, t.demand, t.bounty,
                     t.price, t.uncertainty, t.multiplier, t.budget, t.spent, t.remaining,
                     row.problem)


def artifact_exists(artifact_id: str) -> Select:
    return select(artifacts.c.id).where(artifacts.c.id == artifact_id)


def spend_log(artifact_id: str | None, since: datetime | None, limit: int | None) -> Select:
    log = resource_allocations

    def shown(column):  # a value that is not a finite number (invalid data) shows as NULL
        return case((finite(column), column)).label(column.name)

    stmt = select(
        log.c.id, log.c.created_at, log.c.artifact_id, shown(log.c.tokens), log.c.unit,
        shown(log.c.units), shown(log.c.rate), log.c.kind, log.c.agent_id.label("agent"), log.c.note,
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
    base = budget_select(params, now, type_, where=[~select(claims.c.id).where(others).exists()],
                         extra=[
        select(func.count()).where(done).scalar_subquery().label("investigations"),
        func.coalesce(select(func.sum(claims.c.reward)).where(done).scalar_subquery(), 0)
        .label("reward_total"),
        (select(claims.c.id).where(own).scalar_subquery() if own is not None
         else literal(None)).label("claim_id"),
        (select(claims.c.lease_expires_at).where(own).scalar_subquery() if own is not None
         else literal(None, Timestamp())).label("lease_expires_at"),
    ])
    inner = base.subquery()
    return select(inner).where(inner.c.remaining > 0)


def tokens(micro_amount) -> ColumnElement:
    """Micro-tokens back to tokens inside SQL (exact NUMERIC on PostgreSQL)."""
    return micro_amount / literal(Decimal("1000000.0"))


def snapshot_insert(dialect: str, params: Params, now: datetime, type_: str | None,
                    period: str, bucket: datetime):
    """INSERT ... SELECT of every artifact's budget into its bucket; an existing row for the
    same artifact, period and bucket is left alone (ON CONFLICT DO NOTHING)."""
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
    ).where(b.c.problem.is_(None))  # invalid artifacts have no budget to record
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
    """Artifacts with budget left (an invalid one has no `remaining`)."""
    inner = budget_select(params, now, type_)
    b = inner.subquery()
    return select(b).where(b.c.remaining > 0)


PIPELINE_TOTALS = ("demand", "bounty", "budget", "spent", "remaining")
SNAPSHOT_TOTALS = ("budget", "spent", "remaining")


class whole_tokens(FunctionElement):
    """The whole tokens of a micro-token amount, truncated toward zero."""

    type = Numeric()
    inherit_cache = True
    name = "whole_tokens"


@compiles(whole_tokens)
def _whole_default(element, compiler, **kw):
    return f"trunc({compiler.process(element.clauses, **kw)} / {MICRO_PER_TOKEN})"


@compiles(whole_tokens, "sqlite")
def _whole_sqlite(element, compiler, **kw):
    return f"(CAST({compiler.process(element.clauses, **kw)} AS INTEGER) / {MICRO_PER_TOKEN})"


def _split_sum(amount, name: str) -> list:
    """SUM of micro-token amounts over many artifacts as two exact sums, whole tokens and
    the micro-tokens left: SQLite's integer SUM would overflow past about 9.2e12 tokens."""
    whole = whole_tokens(amount)
    return [func.sum(whole).label(name),
            func.sum(amount - whole * MICRO_PER_TOKEN).label(f"{name}_micro")]


def split_total(row, name: str) -> Decimal:
    """A _split_sum back to exact tokens (0 for no rows)."""
    whole, rest = row._mapping[name], row._mapping[f"{name}_micro"]
    if whole is None:
        return Decimal(0).quantize(MICRO)
    return Decimal(whole).quantize(ONE) + tokens_from_micro(Decimal(rest).quantize(ONE))


def pipeline_by_type(params: Params, now: datetime) -> Select:
    """Capital to research per artifact type: committed demand, bounty, budget, spent over
    its valid artifacts, and how many are invalid."""
    b = budget_select(params, now).subquery()
    valid = b.c.problem.is_(None)
    return (select(b.c.type, func.count().label("artifacts"),
                   func.count(b.c.problem).label("invalid"),
                   *(column for name in PIPELINE_TOTALS
                     for column in _split_sum(case((valid, b.c[name])), name)))
            .group_by(b.c.type).order_by(b.c.type))


def snapshot_totals(period: str, buckets: int) -> Select:
    """Budget, spent and remaining summed over all artifacts, per bucket: the newest ones.
    A snapshot another service wrote with an amount that is not a finite number is left out."""
    from scidex_alloc.schema import budget_snapshots as s

    newest = (select(s.c.bucket, *(column for name in SNAPSHOT_TOTALS
                                   for column in _split_sum(micro(s.c[name]), name)))
              .where(s.c.period == period, *(finite(s.c[name]) for name in SNAPSHOT_TOTALS))
              .group_by(s.c.bucket)
              .order_by(s.c.bucket.desc()).limit(buckets).subquery())
    return select(newest).order_by(newest.c.bucket)
