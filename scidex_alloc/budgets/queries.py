"""The set-based budget SELECT every area builds on, and its rows as exact BudgetRows.

Totals are summed in micro-tokens (exact on both databases); the formula is applied
in SQL to sort and filter, and again exactly in Python for the values shown.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Iterator

from sqlalchemy import Integer, Select, and_, case, func, literal, or_, select, type_coerce
from sqlalchemy.engine import Connection
from sqlalchemy.sql.expression import ColumnElement

from scidex_alloc.budgets.results import BudgetRow
from scidex_alloc.errors import UnknownArtifact, UsageError
from scidex_alloc.formula import DECIMALS, HALF, MAX_TOTAL, MICRO, Params, plain, terms
from scidex_alloc.options import SORT_KEYS
from scidex_alloc.storage.schema import (
    Timestamp,
    artifacts,
    markets,
    positions,
    resource_allocations,
    token_bounties,
    utcnow,
)
from scidex_alloc.storage.sql import (
    MICRO_PER_TOKEN,
    AmountSum,
    Clamp01,
    IsFinite,
    LaterThan,
    MicroTokens,
    Summand,
)

MAX_TOTAL_MICRO = int(MAX_TOTAL) * MICRO_PER_TOKEN
STREAM_BATCH = 2000  # rows fetched at a time by a streamed read


def check_sort_key(by: str) -> None:
    if by not in SORT_KEYS:
        raise UsageError(f"{{by}} must be one of {', '.join(SORT_KEYS)}", "by")


def _checked_total(amount, columns, table, where, artifact_id) -> ColumnElement:
    """Correlated total of an amount (micro-tokens) for `artifact_id`, or NULL when it is not
    finite or beyond MAX_TOTAL (both databases compute the repeated aggregate once)."""
    total = AmountSum(Summand(amount, *columns))
    return (select(case((total.between(-MAX_TOTAL_MICRO, MAX_TOTAL_MICRO), total)))
            .where(table.c.artifact_id == artifact_id, *where).scalar_subquery())


def _why_invalid(name: str, amount, columns, table, where, artifact_id) -> ColumnElement:
    """Why a checked total is NULL; evaluated only for such artifacts."""
    total = AmountSum(Summand(amount, *columns))
    return (select(case((IsFinite(total), f"{name} exceeds {plain(MAX_TOTAL)} tokens"),
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
            LaterThan(token_bounties.c.expires_at, literal(now, Timestamp())),
        ),
    )
    return {
        "demand": (MicroTokens(positions.c.tokens), [positions.c.tokens], positions,
                   [positions.c.status == "open"]),
        "bounty": (MicroTokens(offered) - MicroTokens(paid), [offered, paid], token_bounties, open_bounty),
        "spent": (MicroTokens(resource_allocations.c.tokens), [resource_allocations.c.tokens],
                  resource_allocations, []),
    }


def beyond_limit(now: datetime, name: str) -> Select:
    """The first artifact whose finite total `name` (demand or bounty) exceeds MAX_TOTAL."""
    amount, columns, table, where = _totals(now)[name]
    total = AmountSum(Summand(amount, *columns))
    return (select(table.c.artifact_id).where(*where).group_by(table.c.artifact_id)
            .having(and_(IsFinite(total), ~total.between(-MAX_TOTAL_MICRO, MAX_TOTAL_MICRO)))
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
    price_ok = or_(t.price.is_(None), IsFinite(t.price))
    price = case((price_ok, Clamp01(func.round(func.coalesce(t.price,
                                                             literal(params.default_price)), DECIMALS))))
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
    return None if value is None else Decimal(value).scaleb(-DECIMALS).quantize(MICRO)


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


def require_artifact(connection: Connection, artifact_id: str) -> None:
    """Raise UnknownArtifact unless the artifact exists."""
    exists = select(artifacts.c.id).where(artifacts.c.id == artifact_id)
    if connection.execute(exists).first() is None:
        raise UnknownArtifact(f"unknown artifact {artifact_id!r}")


def ranked_rows(connection: Connection, params: Params, type_: str | None, by: str,
                limit: int | None, offset: int) -> Iterator[BudgetRow]:
    """`ranked` as result objects, fetched in batches: any size fits in memory."""
    stmt = ranked(params, utcnow(), type_, by, limit, offset)
    result = connection.execute(stmt.execution_options(yield_per=STREAM_BATCH))
    for position, row in enumerate(result, start=offset + 1):
        yield budget_row(position, row, params)
