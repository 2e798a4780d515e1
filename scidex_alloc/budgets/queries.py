"""The set-based budget SELECT every area builds on, and its rows as exact BudgetRows.

Totals are summed in micro-tokens (exact on both databases); the formula is applied
in SQL to sort and filter, and again exactly in Python for the values shown.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Iterator

from sqlalchemy import (
    BigInteger,
    Select,
    String,
    and_,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from scidex_alloc.budgets import balances
from scidex_alloc.budgets.balances import MAX_TOTAL_MICRO, SUMMED
from scidex_alloc.budgets.results import BudgetRow
from scidex_alloc.errors import UnknownArtifact, UsageError
from scidex_alloc.formula import DECIMALS, HALF, MAX_TOTAL, MICRO, Params, plain, terms
from scidex_alloc.options import SORT_KEYS
from scidex_alloc.storage.schema import (
    artifact_balances,
    artifacts,
    pending_demand,
    utcnow,
)
from scidex_alloc.storage.sql import Clamp01, IsFinite, WholeNumber

# Sort keys the balances' indexes serve: available by way of remaining (see top_ids).
KEYED = {"budget": "budget", "remaining": "remaining", "available": "remaining"}
READ = (*SUMMED, "held")  # the totals the budget SELECT reads from the balances
STREAM_BATCH = 2000  # rows fetched at a time by a streamed read


def batched(stmt: Select, limit: int | None) -> Select:
    """`stmt` to be fetched STREAM_BATCH rows at a time when it may return more, so that
    any size fits in memory; a page of at most one batch is read at once. (On PostgreSQL
    a batched read is a server-side cursor: its DECLARE, FETCH and CLOSE cost round trips,
    and a DECLARE is planned afresh every time.)"""
    if limit is not None and limit <= STREAM_BATCH:
        return stmt
    return stmt.execution_options(yield_per=STREAM_BATCH)


def check_sort_key(by: str) -> None:
    if by not in SORT_KEYS:
        raise UsageError(f"{{by}} must be one of {', '.join(SORT_KEYS)}", "by")


def budget_expression(params: Params, demand, bounty, price):
    """The formula in SQL over micro-token totals: (price is usable, effective price,
    budget). The maintained ranking keys are this same expression with the defaults."""
    price_ok = or_(price.is_(None), IsFinite(price))
    effective = case((price_ok, Clamp01(func.round(func.coalesce(price,
                                                                 literal(params.default_price)),
                                                   DECIMALS))))
    uncertainty = 1 - func.abs(effective - literal(HALF)) * 2
    floor = literal(params.multiplier_floor)
    multiplier = floor + (1 - floor) * uncertainty
    return price_ok, effective, func.round((literal(params.research_share) * demand + bounty)
                                           * multiplier)


def beyond_limit(name: str) -> Select:
    """The artifacts whose stored finite total `name` (demand or bounty) exceeds MAX_TOTAL."""
    b = artifact_balances.c
    return select(b.artifact_id).where(_beyond(b[name], b[f"{name}_invalid"]))


def pending_beyond_limit() -> Select:
    """The pending artifacts (see balances.pending) whose demand, summed again from their
    positions, exceeds MAX_TOTAL: their stored demand does not show it yet."""
    ids = select(pending_demand.c.artifact_id).distinct().subquery()
    summed = balances.recomputed(ids.c.artifact_id, balances.NOW, ("demand", "demand_invalid"))
    return select(ids.c.artifact_id).where(_beyond(summed["demand"], summed["demand_invalid"]))


def _beyond(total: ColumnElement, invalid: ColumnElement) -> ColumnElement:
    """Whether a total whose every row counted is past MAX_TOTAL (or not a whole number of
    micro-tokens, as a sum past 64 bits can be on SQLite)."""
    return and_(invalid == 0, or_(~WholeNumber(total),
                                  ~total.between(-MAX_TOTAL_MICRO, MAX_TOTAL_MICRO)))


def budget_select(params: Params, type_: str | None = None, where=(), extra=(), within=None,
                  titled: bool = True) -> Select:
    """Every artifact of one type and meeting `where` (or, when given, with an id from the
    subquery `within`, which applies those itself) with its terms in micro-tokens,
    budget/remaining/available sort keys, any `extra` columns, and `problem`, read from the
    maintained balances; its title too, unless not `titled`.

    An artifact whose price is not finite, or whose total is not finite or beyond
    MAX_TOTAL, is invalid: `problem` says why, and the terms that depend on it, always
    including `remaining` and `available`, are NULL. The columns come in the order
    budget_row reads them, extra ones last. (OFFSET 0 keeps both databases from inlining,
    and so repeating, the derived table's expressions.)
    """
    terms = balances.stored_terms()
    b = artifact_balances
    source = b.join(artifacts, artifacts.c.id == b.c.artifact_id) if titled else b
    if within is not None:
        source = within.join(source, b.c.artifact_id == within.c.artifact_id)
    title = artifacts.c.title if titled else literal(None, String).label("title")
    inner = (
        select(b.c.artifact_id, b.c.type, title, b.c.price,
               *(terms[name].label(name) for name in READ),
               *(terms[f"{name}_invalid"].label(f"{name}_invalid")
                 for name in READ),
               *extra)
        .select_from(source)
        .where(*where, *([] if type_ is None or within is not None else [b.c.type == type_]))
        .offset(0)
        .subquery("totals")
    )
    t = inner.c
    price_ok, price, budget = budget_expression(params, t.demand, t.bounty, t.price)
    problem = case(
        (~price_ok, "price is not a finite number"),
        *((t[name].is_(None), case((t[f"{name}_invalid"] > 0, f"{name} is not a finite number"),
                                   else_=f"{name} exceeds {plain(MAX_TOTAL)} tokens"))
          for name in READ),
    )
    return select(
        t.artifact_id, t.type, t.title, micro(t.demand, "demand"), micro(t.bounty, "bounty"),
        case((price_ok, t.price)).label("price"),
        price.label("effective_price"),
        micro(t.spent, "spent"),
        micro(budget, "budget"),
        micro(budget - t.spent, "remaining"),
        problem.label("problem"),
        micro(t.held, "held"),
        micro(case((problem.is_(None), budget - t.spent - t.held)), "available"),
        *(t[column.name] for column in extra),
    )


def micro(amount: ColumnElement, name: str) -> ColumnElement:
    """A column of whole micro-tokens, read as the driver returns it (an int, or a float
    or Decimal with no fraction): converted once where it is used, not for every row read.
    64-bit, as a value compared with it is bound: 2**31 micro-tokens are 2,147 tokens."""
    return type_coerce(amount, BigInteger).label(name)


def of_type_unindexed(type_: str | None) -> list:
    """The condition "of type `type_`" as an expression that no index serves: for the few
    rows a partial index finds (expired bounties, explored artifacts), which SQLite, having
    no statistics, would otherwise find by walking every artifact of the type."""
    return [] if type_ is None else [artifact_balances.c.type.concat("") == type_]


def top_ids(params: Params, type_: str | None, by: str, where=()):
    """A subquery of the ids that can be among the first `count` (a parameter) by `by`
    (budget, remaining or available): the first `count` by their maintained key, in index
    order, and every one whose stored bounty has expired since it was summed (its key is
    out of date), or whose artifact is pending (see balances.pending). None when the
    formula's parameters are not the defaults the keys were computed with.

    Available is remaining less held, and held is 0 but where an artifact has holds: the
    first `count` by available are among the first `count` without holds by remaining and
    the (few) artifacts with holds, which are all taken."""
    if params != Params() or by not in KEYED:
        return None
    b = artifact_balances.c
    key = b[f"{KEYED[by]}_key"]
    of_type = [] if type_ is None else [b.type == type_]
    unheld = [b.held_expiry.is_(None)] if by == "available" else []
    top = (select(b.artifact_id)
           .where(balances.unexpired(b.next_expiry), ~balances.pending(b.artifact_id), *unheld,
                  *of_type, *where)
           .order_by(key.desc().nulls_last(), b.artifact_id).limit(bindparam("count"))
           .subquery())
    stale = select(b.artifact_id).where(balances.expired(b.next_expiry), *unheld,
                                        *of_type_unindexed(type_), *where)
    held = ([select(b.artifact_id).where(b.held_expiry.is_not(None), *of_type_unindexed(type_),
                                         *where)] if unheld else [])
    pending = pending_balances(balances.unexpired(b.next_expiry), *unheld,
                               *of_type_unindexed(type_), *where)  # none of the others
    return union_all(select(top.c.artifact_id), stale, *held, pending).subquery("top_ids")


def pending_balances(*where) -> Select:
    """The ids of the pending artifacts' balances (see balances.pending) that meet
    `where`, found from the pending rows, each once."""
    b, p = artifact_balances.c, pending_demand.c
    return (select(b.artifact_id).select_from(pending_demand.join(
        artifact_balances, b.artifact_id == p.artifact_id)).where(*where).distinct())


@lru_cache(maxsize=256)
def ranked(params: Params, type_: str | None, by: str, limited: bool) -> Select:
    """Valid artifacts by `by`, descending, then invalid ones (those whose key is unknown
    last, on both databases); ties by id: a page of `limit` (if `limited`) from `offset`.
    Executed with `ranked_params`."""
    within = top_ids(params, type_, by) if limited else None
    stmt = budget_select(params, type_, within=within)
    columns = stmt.selected_columns
    stmt = stmt.order_by(columns.problem.is_not(None), columns[by].desc().nulls_last(),
                         columns.artifact_id.asc())
    if limited:
        stmt = stmt.limit(bindparam("limit"))
    return stmt.offset(bindparam("offset"))


def ranked_params(now: datetime, limit: int | None, offset: int) -> dict:
    return {"now": now, "limit": limit, "offset": offset, "count": (limit or 0) + offset}


@lru_cache
def one(params: Params) -> Select:
    """One artifact's budget: executed with {"now", "artifact_id"}."""
    return budget_select(params, where=[artifact_balances.c.artifact_id
                                        == bindparam("artifact_id")])


@lru_cache
def budget_terms(params: Params) -> Select:
    """What a spend decision needs of the artifacts `ids` (a parameter; the caller computes
    the budget): price, `problem`, and demand, bounty, spent and held in micro-tokens."""
    full = budget_select(params, where=[artifact_balances.c.artifact_id.in_(
        bindparam("ids", expanding=True))])
    columns = full.selected_columns
    return full.with_only_columns(
        columns.artifact_id, columns.price,
        *(columns[name] for name in ("demand", "bounty", "spent", "held")),
        columns.problem,
    )


def tokens_from_micro(value) -> Decimal | None:
    """Micro-tokens from either database back to an exact token Decimal (None stays None:
    an invalid total). An int needs no quantize: it has no fraction to round."""
    if type(value) is int:
        return Decimal(value).scaleb(-DECIMALS)
    return None if value is None else Decimal(value).scaleb(-DECIMALS).quantize(MICRO)


def budget_row(position: int, row, params: Params) -> BudgetRow:
    """A row of budget_select as the result object, every term recomputed exactly. Read by
    position (budget_select's first twelve columns, in its order): a million rows of an
    export spend a quarter of this function's time reading columns by name."""
    (artifact_id, type_, title, demand, bounty, price, effective_price, spent, _, _, problem,
     held) = row[:12]
    t = terms(tokens_from_micro(demand), tokens_from_micro(bounty),
              None if price is None else Decimal(price), tokens_from_micro(spent), params,
              price_known=effective_price is not None)
    held = tokens_from_micro(held)
    available = None if problem is not None else t.remaining - held
    return BudgetRow(position, artifact_id, type_, title, t.demand, t.bounty, t.price,
                     t.uncertainty, t.multiplier, t.budget, t.spent, t.remaining, problem, held,
                     available)


def require_artifact(connection: Connection, artifact_id: str) -> None:
    """Raise UnknownArtifact unless the artifact exists."""
    exists = select(artifacts.c.id).where(artifacts.c.id == artifact_id)
    if connection.execute(exists).first() is None:
        raise UnknownArtifact(f"unknown artifact {artifact_id!r}")


def ranked_rows(connection: Connection, params: Params, type_: str | None, by: str,
                limit: int | None, offset: int) -> Iterator[BudgetRow]:
    """`ranked` as result objects, fetched in batches: any size fits in memory."""
    stmt = batched(ranked(params, type_, by, limit is not None), limit)
    result = connection.execute(stmt, ranked_params(utcnow(), limit, offset))
    for position, row in enumerate(result, start=offset + 1):
        yield budget_row(position, row, params)
