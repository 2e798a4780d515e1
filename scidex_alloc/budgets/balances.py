"""The balances the database keeps: every term of each artifact's budget in one row of
`artifact_balances`, summed by triggers (ddl.py) on the source tables, so that no reader
sums them.

One definition of each term (`_terms`) yields the per-artifact recomputation the
triggers use, and the set-based one that backfills, rebuilds and audits the balances;
readers take the stored terms (`stored_terms`), summing a bounty again only past the
instant one of its bounties expired, and a demand again only while its artifact is
pending (its positions changed since the balance summed them: see folding.py).
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime
from functools import cache
from typing import Iterator

from sqlalchemy import (
    Integer,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql.expression import ColumnElement

from scidex_alloc.formula import MAX_TOTAL
from scidex_alloc.storage.schema import (
    Timestamp,
    artifact_balances,
    artifacts,
    claims,
    holds,
    markets,
    pending_demand,
    positions,
    resource_allocations,
    token_bounties,
)
from scidex_alloc.storage.sql import (
    MICRO_PER_TOKEN,
    ExactSum,
    InstantKey,
    IsFinite,
    LaterThan,
    MicroTokens,
    WholeNumber,
)

MAX_TOTAL_MICRO = int(MAX_TOTAL) * MICRO_PER_TOKEN
# The instant a statement is about: statements are built once, with this parameter, and
# executed with {"now": ...}, so that every statement of one decision sees one instant.
NOW = bindparam("now", type_=Timestamp())
REWARD_SCALE = 1_000_000_000  # reward_total counts billionths: exact sums on both databases
SUMMED = ("demand", "bounty", "spent")
BOUNTY = ("bounty", "bounty_invalid", "next_expiry")  # the columns a bounty's change moves
HELD = ("held", "held_invalid", "held_expiry")  # the columns a hold's change moves
RESUM_BATCH = 1000  # artifact ids per statement when summing some balances again
RESUM_FRACTION = 10  # resum: at most one balance in this many (rebuild is ~5x cheaper each)
COLUMNS = ("demand", "demand_invalid", "bounty", "bounty_invalid", "next_expiry", "price",
           "spent", "spent_invalid", "investigations", "reward_total", *HELD)
# The terms that expire with time, and the column keeping when the first of them does.
EXPIRY = {"bounty": "next_expiry", "held": "held_expiry"}


def _terms(now: ColumnElement) -> dict:
    """Each summed term: its table, a row's amount in micro-tokens, the row's columns that
    must be finite numbers for it to count, and which rows count (at instant `now`)."""
    offered, paid = token_bounties.c.tokens_offered, token_bounties.c.tokens_paid
    return {
        "demand": (positions, MicroTokens(positions.c.tokens), [positions.c.tokens],
                   [_is(positions.c.status, "open")]),
        "bounty": (token_bounties, MicroTokens(offered) - MicroTokens(paid), [offered, paid],
                   [_is(token_bounties.c.status, "open"),
                    or_(token_bounties.c.expires_at.is_(None),
                        LaterThan(token_bounties.c.expires_at, now))]),
        "spent": (resource_allocations, MicroTokens(resource_allocations.c.tokens),
                  [resource_allocations.c.tokens], []),
        "held": (holds, MicroTokens(holds.c.tokens), [holds.c.tokens],
                 [_is(holds.c.status, "active"), LaterThan(holds.c.expires_at, now)]),
    }


def _is(column: ColumnElement, status: str) -> ColumnElement:
    """A status test with the status written into the SQL, not bound: the planner then
    plans a statement once for every execution (a bound one looks selective enough to
    be planned again each time)."""
    return column == literal_column(f"'{status}'")


def finite(columns) -> ColumnElement:
    return and_(*(IsFinite(column) for column in columns))


def _aggregates(now: ColumnElement, names=COLUMNS) -> dict:
    """Balance columns (those of `names` but price) as aggregates over their source rows:
    (table, expression, filter). Only those asked for are built: readers want two."""
    terms = _terms(now)
    found = {}
    for name, (table, amount, columns, where) in terms.items():
        counted = finite(columns)
        if name in names:
            found[name] = (table, ExactSum(case((counted, amount), else_=0)), where)
        if f"{name}_invalid" in names:
            found[f"{name}_invalid"] = (table, func.count(case((~counted, 1))), where)
    for term, expiry in EXPIRY.items():
        if expiry in names:
            table, _, _, where = terms[term]
            found[expiry] = (table, func.min(InstantKey(table.c.expires_at)), where)
    done = [_is(claims.c.status, "done")]
    if "investigations" in names:
        found["investigations"] = (claims, func.count(), done)
    if "reward_total" in names:
        found["reward_total"] = (claims, func.coalesce(func.sum(billionths(claims.c.reward)), 0),
                                 done)
    return found


def billionths(reward: ColumnElement) -> ColumnElement:
    return cast(func.round(func.coalesce(reward, 0) * REWARD_SCALE), Integer)


def recomputed(artifact_id: ColumnElement, now: ColumnElement, names=COLUMNS
               ) -> dict[str, ColumnElement]:
    """Balance columns (all, or those of `names`) of one artifact, summed again from the
    source tables."""
    columns = {name: select(aggregate).where(table.c.artifact_id == artifact_id, *where)
               .scalar_subquery()
               for name, (table, aggregate, where) in _aggregates(now, names).items()}
    if "price" in names:
        columns["price"] = (select(markets.c.price).where(markets.c.artifact_id == artifact_id)
                            .scalar_subquery())
    return {name: columns[name] for name in COLUMNS if name in names}


def recomputed_all():
    """Every artifact with its balance columns summed again at NOW, set-based: one grouped
    pass over each source table."""
    grouped = {}
    for name, (table, aggregate, where) in _aggregates(NOW).items():
        grouped.setdefault((table.name, len(where)), (table, where, {}))[2][name] = aggregate
    stmt_columns = {}
    joins = artifacts.outerjoin(markets, markets.c.artifact_id == artifacts.c.id)
    for index, (table, where, aggregates) in enumerate(grouped.values()):
        sub = (select(table.c.artifact_id, *(a.label(n) for n, a in aggregates.items()))
               .where(*where).group_by(table.c.artifact_id).subquery(f"source{index}"))
        joins = joins.outerjoin(sub, sub.c.artifact_id == artifacts.c.id)
        for name in aggregates:
            zero = None if name in EXPIRY.values() else 0
            stmt_columns[name] = sub.c[name] if zero is None else func.coalesce(sub.c[name], zero)
    stmt_columns["price"] = markets.c.price
    return select(artifacts.c.id.label("artifact_id"), artifacts.c.type,
                  *(stmt_columns[name].label(name) for name in COLUMNS)).select_from(joins)


def rebuild(connection: Connection, now: datetime) -> int:
    """Sum every balance, and their totals, again from the source tables, in the caller's
    transaction; how many artifacts there are. On SQLite, whose writers wait anyway, the
    indexes are made afresh after the rows. On PostgreSQL, where readers go on, the rows
    go in in the order of the budget ranking key: the ranking indexes then take each at
    their end (or, within a type, at one of a few places), not all over (30 s -> 23 s at 1M)."""
    sqlite = connection.dialect.name == "sqlite"
    rows = recomputed_all()
    if not sqlite:
        from scidex_alloc.budgets import ddl, queries

        rows = rows.subquery()
        key = ddl.key_columns(connection, queries.budget_expression)["budget_key"]
        rows = select(*rows.c).order_by(text(f"{key} DESC NULLS LAST"))
    with _summing(connection):
        connection.execute(pending_demand.delete())  # before the sums: see folding.fold_pending
        if sqlite:
            for name in indexes(connection):
                connection.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
        connection.execute(artifact_balances.delete())
        count = connection.execute(
            artifact_balances.insert().from_select(["artifact_id", "type", *COLUMNS], rows)
            .execution_options(preserve_rowcount=True), {"now": now}
        ).rowcount
        if sqlite:
            create_indexes(connection)
        else:  # a table filled at once has no statistics
            connection.execute(text("ANALYZE artifact_balances"))
    return count


@contextmanager
def _summing(connection: Connection) -> Iterator[None]:
    """While balances are summed again: the totals left alone, then summed again from
    them (see `_locked` for concurrent writers)."""
    from scidex_alloc.budgets import totals

    _locked(connection)
    totals.pause(connection)
    yield
    totals.resume(connection)


def _locked(connection: Connection) -> None:
    """Before balances are summed again: on PostgreSQL concurrent writers' triggers wait
    until the caller commits (and then add their rows to what was summed)."""
    if connection.dialect.name != "sqlite":
        connection.execute(text("LOCK TABLE artifact_balances IN EXCLUSIVE MODE"))


# What the queue's scans of every explored candidate read (queue/candidates.py), so that
# they read only the explored artifacts' index, in order of investigation count (as they
# group them), and never visit the table's pages.
EXPLORED_COLUMNS = ("investigations", "artifact_id", "reward_total", "remaining_key", "held",
                    "held_invalid", "next_expiry", "held_expiry", "type")


def indexes(connection: Connection) -> dict[str, str]:
    """The balances' secondary indexes: the ranking keys (also within a type), the balances
    whose bounties or holds expire, and the explored artifacts (covering their scans)."""
    last = " NULLS LAST" if connection.dialect.name == "postgresql" else ""
    found = {}
    for key in ("budget", "remaining"):
        found[f"ix_artifact_balances_{key}"] = f"({key}_key DESC{last}, artifact_id)"
        found[f"ix_artifact_balances_type_{key}"] = f"(type, {key}_key DESC{last}, artifact_id)"
    for expiry in EXPIRY.values():
        found[f"ix_artifact_balances_{expiry}"] = f"({expiry}) WHERE {expiry} IS NOT NULL"
    found["ix_artifact_balances_explored"] = (f"({', '.join(EXPLORED_COLUMNS)}) "
                                              "WHERE investigations > 0")
    return found


def create_indexes(connection: Connection) -> None:
    for name, columns in indexes(connection).items():
        connection.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {name} ON artifact_balances "
                                   f"{columns}")


def resum(connection: Connection, now: datetime, ids: set[str]) -> int:
    """Sum again the balances of the artifacts `ids` (those a load wrote rows of) in the
    caller's transaction, whose totals' triggers must be running: they add what each
    balance moves, so that nothing else is read; how many balances. Cheaper than `rebuild`
    when they are few of all (see `few`): about 50 us a balance where `rebuild` takes
    about 9 us an artifact."""
    b = artifact_balances
    stmt = (b.update().where(b.c.artifact_id.in_(bindparam("ids", expanding=True)))
            .values(recomputed(b.c.artifact_id, NOW)))
    ordered, count = sorted(ids), 0
    _locked(connection)
    for start in range(0, len(ordered), RESUM_BATCH):
        batch = ordered[start:start + RESUM_BATCH]
        _unpend(connection, batch)
        count += connection.execute(stmt, {"now": now, "ids": batch}).rowcount
    return count


def _unpend(connection: Connection, ids: list[str]) -> None:
    """Delete the pending rows of the artifacts `ids`, before their balances are summed
    again (see folding.fold_pending)."""
    p = pending_demand.c
    connection.execute(pending_demand.delete().where(p.artifact_id.in_(ids)))


def few(connection: Connection, count: int) -> bool:
    """Whether `count` balances are few enough of all (as the totals count them) that
    summing only them beats summing every one."""
    from scidex_alloc.budgets import totals

    return count * RESUM_FRACTION <= totals.artifacts(connection)


def install(connection: Connection, now: datetime, summed: bool = True) -> int | None:
    """Make the indexes and (re)create the triggers as this version defines them, after
    a schema upgrade, in its transaction; with `summed`, sum every balance again first
    (how many artifacts), else only their totals (None)."""
    from scidex_alloc.budgets import ddl, totals

    if summed:
        count = rebuild(connection, now)  # the totals with the balances
    else:
        count = None
        totals.rebuild(connection)
    create_indexes(connection)
    ddl.create_triggers(connection)
    return count


def mend(connection: Connection, now: datetime, wrong: list[str]) -> int:
    """Make the balances exact again after manual surgery or a restore, with their totals,
    indexes and triggers as this version defines them, in the caller's transaction; how
    many artifacts there are. `wrong` are the artifacts `mismatches` found: while they are
    few of all (see `few`), only their balances are made again from the source tables (one
    whose artifact is gone is dropped), else every one is."""
    from scidex_alloc.budgets import ddl, totals

    if not few(connection, len(wrong)):
        return install(connection, now)
    b, a = artifact_balances, artifacts
    ids = bindparam("ids", expanding=True)
    made = select(a.c.id, a.c.type, *(column.label(name) for name, column
                                       in recomputed(a.c.id, NOW).items())).where(a.c.id.in_(ids))
    with _summing(connection):
        for start in range(0, len(wrong), RESUM_BATCH):
            batch = wrong[start:start + RESUM_BATCH]
            _unpend(connection, batch)
            connection.execute(b.delete().where(b.c.artifact_id.in_(ids)), {"ids": batch})
            connection.execute(b.insert().from_select(["artifact_id", "type", *COLUMNS], made),
                               {"now": now, "ids": batch})
    create_indexes(connection)
    ddl.create_triggers(connection)
    return totals.artifacts(connection)


def pending(artifact_id: ColumnElement) -> ColumnElement:
    """Whether an artifact's positions changed since its balance summed them: its stored
    demand and ranking keys are out of date, and readers sum its demand again. (The
    pending artifacts are few and read once, not looked up per balance.)"""
    return artifact_id.in_(select(pending_demand.c.artifact_id))


def mismatches():
    """Artifacts whose balance differs from its recomputation at NOW (or that lack one, or
    whose balance has no artifact). A term that expires is compared only while the stored
    one is current: past its stored expiry, readers sum it again themselves; so is demand,
    only while its artifact is not pending."""
    b = artifact_balances.c
    current = {column: unexpired(b[expiry]) for term, expiry in EXPIRY.items()
               for column in (term, f"{term}_invalid", expiry)}
    current.update(dict.fromkeys(("demand", "demand_invalid"), ~pending(b.artifact_id)))

    def compared(columns):
        return [case((current[name], columns[name])) if name in current
                else columns[name] for name in COLUMNS]

    stored = select(b.artifact_id, b.type, *compared(b))
    source = recomputed_all().subquery()
    expected = (select(source.c.artifact_id, source.c.type, *compared(source.c))
                .select_from(source.outerjoin(artifact_balances,
                                              b.artifact_id == source.c.artifact_id)))
    extra = stored.except_(expected).subquery("extra")
    missing = expected.except_(stored).subquery("missing")
    ids = select(extra.c.artifact_id).union(select(missing.c.artifact_id)).subquery()
    return select(ids.c.artifact_id).order_by(ids.c.artifact_id)


def unexpired(expiry: ColumnElement) -> ColumnElement:
    """Whether a stored term that expires (bounty, held) still holds at NOW: none of the
    rows it counts has expired since it was summed."""
    return or_(expiry.is_(None), ~expired(expiry))


def expired(expiry: ColumnElement) -> ColumnElement:
    """Whether one of the rows a stored term counts has expired by NOW (an indexed
    comparison of instant keys)."""
    return expiry <= InstantKey(NOW)


def valid_total(column: ColumnElement, invalid: ColumnElement) -> ColumnElement:
    """A stored total when every row counted and it lies within MAX_TOTAL; else NULL."""
    return case((and_(invalid == 0, WholeNumber(column),
                      column.between(-MAX_TOTAL_MICRO, MAX_TOTAL_MICRO)), column))


@cache
def stored_terms() -> dict[str, ColumnElement]:
    """The balance columns as the budget SELECT reads them at NOW: each total NULL when
    invalid, a bounty or held total summed again from the source where one of its rows
    expired since it was summed, and a demand where its artifact is pending. Built once:
    every budget SELECT shares them."""
    b = artifact_balances.c
    found = {"spent": valid_total(b.spent, b.spent_invalid), "spent_invalid": b.spent_invalid}
    current = {"demand": ~pending(b.artifact_id),
               **{term: unexpired(b[expiry]) for term, expiry in EXPIRY.items()}}
    for term, fresh in current.items():
        total, invalid = _summed_again(term)
        found[term] = case((fresh, valid_total(b[term], b[f"{term}_invalid"])), else_=total)
        found[f"{term}_invalid"] = case((fresh, b[f"{term}_invalid"]), else_=invalid)
    return found


def _summed_again(term: str) -> tuple[ColumnElement, ColumnElement]:
    """A balance's `term` summed again from its source rows at NOW: the valid total (NULL
    when invalid) and the count of invalid rows, one correlated subquery each. The total's
    sum appears thrice in its CASE but is one aggregate to both databases, where a
    subquery per appearance made five subqueries per term to plan and run."""
    aggregates = _aggregates(NOW, (term, f"{term}_invalid"))
    table, total, where = aggregates[term]
    invalid = aggregates[f"{term}_invalid"][1]
    rows = [table.c.artifact_id == artifact_balances.c.artifact_id, *where]
    return (select(valid_total(total, invalid)).where(*rows).scalar_subquery(),
            select(invalid).where(*rows).scalar_subquery())
