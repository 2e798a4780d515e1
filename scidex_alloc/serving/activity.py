"""Research activity for the dashboard: what the spend log bought, per kind, per artifact
type and over time, and what each agent is doing and has done. Summed exactly in SQL.

A reversal counts under the kind of the entry it reverses, at its own time, so that a
correction nets out of its kind.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import Select, and_, case, func, literal, select, union_all
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from scidex_alloc import timeparse
from scidex_alloc.budgets.balances import REWARD_SCALE, billionths
from scidex_alloc.options import ACTIVITY_BUCKETS, OTHER_KIND, SPEND_KINDS
from scidex_alloc.serving.pipeline import split_sum, split_total
from scidex_alloc.serving.results import Activity, AgentSummary
from scidex_alloc.storage.schema import (
    Timestamp,
    artifacts,
    claims,
    holds,
    resource_allocations,
)
from scidex_alloc.storage.sql import IsFinite, LaterThan, MicroTokens

KINDS = (*SPEND_KINDS, OTHER_KIND)
PERIOD_LENGTH = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}
# SQLite's window test first compares the stored text with these dates, widened by more
# than any time zone offset, so that the index on created_at can narrow the rows down.
TEXT_MARGIN = timedelta(days=2)


def default_since(now: datetime, every: str) -> datetime:
    """The start of the window when none is given: ACTIVITY_BUCKETS buckets, the current
    one included."""
    return timeparse.bucket_start(now, every) - PERIOD_LENGTH[every] * (ACTIVITY_BUCKETS - 1)


def default_until(now: datetime, every: str) -> datetime:
    """The end of the window when none is given: the end of the current bucket."""
    return timeparse.bucket_start(now, every) + PERIOD_LENGTH[every]


def activity(connection: Connection, every: str, type_: str | None, since: datetime,
             until: datetime) -> Activity:
    """Spend log tokens by kind, per artifact type and per bucket of `every`, in [since, until)."""
    kind, base = _entries(type_, since, until, connection.dialect.name)
    by_type = _pivot(connection, base, base.c.type, kind)
    bucket = BucketStart(base.c.created_at, every)
    over_time = _pivot(connection, base, bucket, kind)
    return Activity(every, since, until,
                    [{"type": key, **amounts} for key, amounts in by_type],
                    [{"bucket": key, **amounts} for key, amounts in over_time])


def _entries(type_: str | None, since: datetime, until: datetime, dialect: str):
    """The spend log entries in the window (finite amounts), with their artifact's type and
    the kind they count under."""
    log, original = resource_allocations, resource_allocations.alias("original")
    kind = func.coalesce(original.c.kind, log.c.kind)
    shown = case(*((kind == name, literal(name)) for name in SPEND_KINDS), else_=literal(OTHER_KIND))
    stmt = (select(artifacts.c.type, log.c.created_at, shown.label("kind"),
                   MicroTokens(log.c.tokens).label("micro"))
            .join(artifacts, artifacts.c.id == log.c.artifact_id)
            .outerjoin(original, original.c.id == log.c.reverses_id)
            .where(IsFinite(log.c.tokens), within(log.c.created_at, since, until, dialect)))
    if type_ is not None:
        # On SQLite `type || ''` keeps the planner from walking every artifact of the type
        # by its index: the window's entries, by the index on created_at, are far fewer.
        typed = artifacts.c.type.op("||")(literal("")) if dialect == "sqlite" else artifacts.c.type
        stmt = stmt.where(typed == type_)
    base = stmt.subquery()
    return base.c.kind, base


def _pivot(connection: Connection, base, key, kind) -> list[tuple]:
    """(key, {kind: tokens, ..., "total": tokens}) per value of `key`, in its order."""
    stmt = (select(key.label("key"), kind.label("kind"), *split_sum(base.c.micro, "tokens"))
            .group_by(key, kind).order_by(key))
    found: dict = {}
    for row in connection.execute(stmt):
        amounts = found.setdefault(row.key, dict.fromkeys((*KINDS, "total"), Decimal(0)))
        tokens = split_total(row, "tokens")
        amounts[row.kind] = tokens
        amounts["total"] += tokens
    return list(found.items())


def agents(connection: Connection, type_: str | None, now: datetime, limit: int,
           offset: int) -> list[AgentSummary]:
    """Per agent id in claims, holds or the spend log: its live and stale claims, live holds,
    investigations and mean reward, tokens spent, and when it last acted; most recent first.
    Each source is summed per agent (the spend log through its index by agent). Of all
    types, the page's agents are found first from their latest activity alone, which the
    index gives without reading an amount, and only their rows are summed."""
    dialect = connection.dialect.name
    page = None if type_ is not None else _page(connection, limit, offset)
    if page == []:
        return []
    every = union_all(*_agent_parts(literal(now, Timestamp()), type_, page)).subquery()
    names = ("live_claims", "stale_claims", "holds", "investigations", "rewarded", "reward_sum")
    amounts = ("held", "held_micro", "spent", "spent_micro")
    stmt = (select(every.c.agent, *(func.sum(every.c[n]).label(n) for n in names + amounts),
                   func.max(every.c.last_active).label("last_active"))
            .group_by(every.c.agent)
            .order_by(*_by_recency(func.max(every.c.last_active), every.c.agent, dialect)))
    if page is None:
        stmt = stmt.limit(limit).offset(offset or None)
    return [AgentSummary(
        row.agent, row.live_claims, row.stale_claims, row.holds, split_total(row, "held"),
        row.investigations, _mean(row.reward_sum, row.rewarded), split_total(row, "spent"),
        row.last_active) for row in connection.execute(stmt)]


def _page(connection: Connection, limit: int, offset: int) -> list[str]:
    """The agents of a page, most recently active first, from each source's latest
    activity per agent."""
    recent = union_all(*(
        select(table.c.agent_id.label("agent"), func.max(_latest(table)).label("last_active"))
        .where(table.c.agent_id.is_not(None)).group_by(table.c.agent_id)
        for table in (claims, holds, resource_allocations))).subquery()
    return connection.scalars(
        select(recent.c.agent).group_by(recent.c.agent)
        .order_by(*_by_recency(func.max(recent.c.last_active), recent.c.agent,
                               connection.dialect.name))
        .limit(limit).offset(offset or None)).all()


def _by_recency(last_active, agent, dialect: str) -> list:
    """Most recently active first; ties (and agents never active) by id."""
    return [last_active.desc().nulls_last(), _bytewise(agent, dialect)]


def _latest(table):
    """When an agent last acted in `table`'s rows."""
    if table is claims:
        return func.coalesce(claims.c.finished_at, claims.c.claimed_at)
    if table is holds:
        return func.coalesce(holds.c.finished_at, holds.c.created_at)
    return resource_allocations.c.created_at


def _agent_parts(now, type_: str | None, page: list[str] | None) -> list[Select]:
    """One select per source of an agent's activity (claims, holds, the spend log), each
    grouped by agent, in the same columns; over the agents of `page` when given."""
    zero = literal(0)
    active, done = claims.c.status == "active", claims.c.status == "done"
    live = LaterThan(claims.c.lease_expires_at, now)

    def count(condition):
        return func.count(case((condition, 1)))
    claimed = select(
        claims.c.agent_id.label("agent"), count(and_(active, live)).label("live_claims"),
        count(and_(active, ~live)).label("stale_claims"), zero.label("holds"),
        zero.label("held"), zero.label("held_micro"), count(done).label("investigations"),
        count(and_(done, claims.c.reward.is_not(None))).label("rewarded"),
        func.coalesce(func.sum(case((done, billionths(claims.c.reward)))), 0).label("reward_sum"),
        zero.label("spent"), zero.label("spent_micro"),
        func.max(_latest(claims)).label("last_active"))
    live_hold = and_(holds.c.status == "active", LaterThan(holds.c.expires_at, now),
                     IsFinite(holds.c.tokens))
    held = select(
        holds.c.agent_id, zero, zero, count(live_hold),
        *split_sum(case((live_hold, MicroTokens(holds.c.tokens))), "held"), zero, zero, zero,
        zero, zero, func.max(_latest(holds))).where(holds.c.agent_id.is_not(None))
    log = resource_allocations
    spent = select(
        log.c.agent_id, zero, zero, zero, zero, zero, zero, zero, zero,
        *split_sum(case((IsFinite(log.c.tokens), MicroTokens(log.c.tokens))), "spent"),
        func.max(_latest(log))).where(log.c.agent_id.is_not(None))
    parts = []
    for part, table in ((claimed, claims), (held, holds), (spent, log)):
        if type_ is not None:
            part = part.join(artifacts, artifacts.c.id == table.c.artifact_id).where(
                artifacts.c.type == type_)
        if page is not None:
            part = part.where(table.c.agent_id.in_(page))
        parts.append(part.group_by(table.c.agent_id))
    return parts


def _bytewise(column, dialect: str):
    """Text ordered by its bytes on both databases, so ties sort alike."""
    return column.collate("C") if dialect == "postgresql" else column


def _mean(reward_sum, rewarded) -> Decimal | None:
    """The mean of `rewarded` rewards summed in billionths, exact to 1e-9."""
    if not rewarded:
        return None
    return (Decimal(int(reward_sum)) / REWARD_SCALE / rewarded).quantize(Decimal("1e-9"))


class BucketStart(FunctionElement):
    """The start (UTC) of the hour, day or ISO week a timestamp falls in, as `alloc
    snapshot` buckets it."""

    type = Timestamp()
    inherit_cache = False  # the period is not a bind parameter: no cached SQL across periods
    name = "bucket_start"

    def __init__(self, column, period: str):
        self.period = period
        super().__init__(column)


@compiles(BucketStart)
def _bucket_default(element, compiler, **kw):
    return f"date_trunc('{element.period}', {compiler.process(element.clauses, **kw)}, 'UTC')"


SQLITE_BUCKETS = {"hour": "'%Y-%m-%d %H:00:00', {}", "day": "'%Y-%m-%d 00:00:00', {}",
                  "week": "'%Y-%m-%d 00:00:00', {}, '-6 days', 'weekday 1'"}


@compiles(BucketStart, "sqlite")
def _bucket_sqlite(element, compiler, **kw):
    column = compiler.process(element.clauses, **kw)
    return f"strftime({SQLITE_BUCKETS[element.period].format(column)})"


def within(column, since: datetime, until: datetime, dialect: str):
    """``since <= column < until`` for a timestamp column. On SQLite the instants are
    compared (julianday), after a comparison of the stored text with the dates
    TEXT_MARGIN outside the window, which the index on the column serves and which no
    ISO 8601 text of an instant inside the window fails."""
    start, end = literal(since, Timestamp()), literal(until, Timestamp())
    if dialect != "sqlite":
        return and_(column >= start, column < end)
    return and_(column >= literal(_date_text(since, -TEXT_MARGIN, "")),
                column < literal(_date_text(until, TEXT_MARGIN, "A")),
                func.julianday(column) >= func.julianday(start),
                func.julianday(column) < func.julianday(end))


def _date_text(moment: datetime, shift: timedelta, beyond: str) -> str:
    """The date of `moment + shift` as ISO 8601 text; past the years 1 to 9999, `beyond`,
    text that sorts beyond them all."""
    try:
        return (moment + shift).date().isoformat()
    except OverflowError:
        return beyond
