"""The spend ledger's decisions: check, lock, and record spending exactly once.

Requests are applied in chunks, set-based: one statement locks the chunk's artifacts
(PostgreSQL row locks FOR NO KEY UPDATE taken in id order, which the KEY SHARE locks of
concurrent inserts of positions do not block; SQLite holds its write lock from BEGIN
IMMEDIATE), one reads their budgets, one finds known idempotency keys, one inserts.
Lines are then decided in order in memory, so a chunk never overspends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from operator import attrgetter
from types import SimpleNamespace
from typing import Iterator

from sqlalchemy import Select, and_, case, func, literal, select
from sqlalchemy.engine import Connection

from scidex_alloc import errors, limits
from scidex_alloc.budgets import queries
from scidex_alloc.formula import (
    MAX_TOTAL,
    Params,
    clamp_price,
    exact,
    parse_amount,
    plain,
    to_micro,
    to_tokens,
)
from scidex_alloc.formula import budget as formula_budget
from scidex_alloc.ledger.results import LogEntry, SpendOutcome, SpendRecord
from scidex_alloc.storage import sql
from scidex_alloc.storage.schema import (
    BASE_UNIT,
    Timestamp,
    artifacts,
    exchange_rates,
    resource_allocations,
    utcnow,
)
from scidex_alloc.storage.sql import IsFinite, LaterThan

# The columns a new spend log entry writes (the database numbers it), and their values.
ENTRY_COLUMNS = ("artifact_id", "tokens", "unit", "units", "rate", "kind", "agent_id", "note",
                 "idempotency_key", "overdraft", "created_at", "budget_at_spend")
entry_values = attrgetter(*ENTRY_COLUMNS)
FIELDS = ("artifact_id", "amount", "unit", "kind", "agent", "note", "key", "allow_overdraft")
LIMITS = {"artifact_id": limits.ARTIFACT_ID, "unit": limits.UNIT, "kind": limits.KIND,
          "agent": limits.AGENT_ID, "note": limits.NOTE, "key": limits.KEY}
TRUE, FALSE = ("1", "true", "yes", "y"), ("", "0", "false", "no", "n")
REFUSALS = {"refused": errors.InsufficientBudget, "unknown": errors.UnknownArtifact,
            "conflict": errors.IdempotencyConflict, "invalid": errors.UsageError}


@dataclass(frozen=True, slots=True)
class SpendRequest:
    line: int
    artifact_id: str
    amount: Decimal
    unit: str = BASE_UNIT
    kind: str | None = None
    agent: str | None = None
    note: str | None = None
    key: str | None = None
    allow_overdraft: bool = False


def text_field(fields: dict, name: str, required: bool = False) -> str | None:
    """A text field: valid UTF-8, no NUL, within its length limit."""
    value = fields.get(name)
    if value is None or value == "":
        if required:
            raise errors.UsageError(f"{name} is required")
        return None
    return limits.check_text(value, name, LIMITS[name])


def request(line: int, fields: dict) -> SpendRequest:
    """Check one spend's fields (from arguments or a file line); raises UsageError."""
    unknown = [name for name in fields if name not in FIELDS]
    if unknown:
        raise errors.UsageError(f"unknown field {unknown[0]!r}")
    unit = text_field(fields, "unit") or BASE_UNIT
    amount = fields.get("amount")
    if amount is None or not limits.is_number(amount):
        raise errors.UsageError("amount is required" if amount is None else "amount must be a number")
    flag = fields.get("allow_overdraft", False)
    if not isinstance(flag, bool):
        if str(flag).strip().lower() not in TRUE + FALSE:
            raise errors.UsageError("allow_overdraft must be true or false")
        flag = str(flag).strip().lower() in TRUE
    return SpendRequest(
        line=line,
        artifact_id=text_field(fields, "artifact_id", required=True),
        amount=parse_amount(str(amount)),
        unit=unit,
        kind=text_field(fields, "kind"),
        agent=text_field(fields, "agent"),
        note=text_field(fields, "note"),
        key=text_field(fields, "key"),
        allow_overdraft=flag,
    )


def units_of(row) -> tuple[Decimal, str]:
    """A log entry's amount and unit; entries other services wrote may leave both out."""
    return (row.tokens if row.units is None else row.units), row.unit or BASE_UNIT


def record_of(row, replayed: bool, balance: "Balance") -> SpendRecord:
    """A log entry as the result object, with its artifact's balance after it."""
    units, unit = units_of(row)
    return SpendRecord(
        id=row.id, artifact_id=row.artifact_id, tokens=exact(row.tokens),
        unit=unit, units=exact(units),
        rate=exact(row.rate if row.rate is not None else Decimal(1)), kind=row.kind, agent=row.agent_id,
        replayed=replayed, spent=balance.spent, remaining=balance.remaining,
        overdraft=bool(row.overdraft), reverses=row.reverses_id, created_at=row.created_at,
        hold_id=row.hold_id, available=balance.available,
    )


class Balance:
    """One artifact's budget, spent and held while a decision is made; an artifact with
    invalid data has a `problem` instead, and None for what cannot be computed."""

    def __init__(self, budget: Decimal | None, spent: Decimal | None, held: Decimal | None,
                 problem: str | None = None):
        self.budget, self.spent, self.held, self.problem = budget, spent, held, problem

    @property
    def remaining(self) -> Decimal | None:
        return None if self.budget is None or self.spent is None else self.budget - self.spent

    @property
    def available(self) -> Decimal | None:
        """What neither spending nor holds have taken: what a new spend or hold may use."""
        remaining = self.remaining
        return None if remaining is None or self.held is None else remaining - self.held

    def shortfall(self, artifact_id: str, tokens: Decimal) -> str | None:
        """Why `tokens` more cannot be taken from this balance, or None when they can."""
        if self.problem is not None:
            return f"{artifact_id} has no valid budget: {self.problem}; see alloc audit"
        if tokens <= self.available:
            return None
        if not self.held:
            return (f"insufficient budget: {artifact_id} has {plain(self.remaining)} tokens "
                    f"remaining, {plain(tokens)} asked")
        return (f"insufficient budget: {artifact_id} has {plain(self.available)} tokens "
                f"available ({plain(self.held)} held), {plain(tokens)} asked")


def lock(connection: Connection, ids: list[str]) -> None:
    """Lock the artifacts (in id order, so lockers never deadlock; FOR NO KEY UPDATE, so
    loads of positions, holding KEY SHARE locks, neither block nor deadlock with us). On
    SQLite the write transaction, begun IMMEDIATE, holds the one lock already."""
    if connection.dialect.name == "postgresql":
        connection.execute(
            select(artifacts.c.id).where(artifacts.c.id.in_(ids)).order_by(artifacts.c.id)
            .with_for_update(key_share=True)
        )


def lock_and_read(connection: Connection, params: Params, ids: list[str]) -> dict[str, Balance]:
    """Lock the artifacts (see `lock`) and read their balances."""
    lock(connection, ids)
    return read(connection, params, ids)


def read(connection: Connection, params: Params, ids: list[str]) -> dict[str, Balance]:
    """The artifacts' balances, for a caller that holds their locks already."""
    tokens = queries.tokens_from_micro
    balances = {}
    for artifact_id, price, demand, bounty, spent, held, problem in connection.execute(
            queries.budget_terms(params), {"now": utcnow(), "ids": ids}):
        if problem is not None:
            balances[artifact_id] = Balance(None, tokens(spent), tokens(held), problem)
            continue
        price = clamp_price(None if price is None else Decimal(price), params)
        budget = formula_budget(tokens(demand), tokens(bounty), price, params)
        balances[artifact_id] = Balance(budget, tokens(spent), tokens(held))
    return balances


def record_one(connection: Connection, params: Params, request: SpendRequest) -> SpendRecord:
    """Record one spend, or replay the one recorded under its key; a refusal raises the
    error of its exit code (and writes nothing)."""
    (outcome,) = apply(connection, params, [request])
    if not outcome.ok:
        raise REFUSALS[outcome.status](outcome.message)
    return outcome.record


def apply(connection: Connection, params: Params, requests: list[SpendRequest]) -> list[SpendOutcome]:
    """Decide and record a chunk of requests inside the caller's write transaction."""
    balances = lock_and_read(connection, params, sorted({r.artifact_id for r in requests}))
    keys = {r.key for r in requests if r.key}
    known = {}
    if keys:
        rows = connection.execute(
            select(resource_allocations).where(resource_allocations.c.idempotency_key.in_(keys))
        )
        known = {row.idempotency_key: row for row in rows}
    rates = {BASE_UNIT: Decimal(1)}
    rates.update({r.unit: exact(r.units_per_token) for r in connection.execute(select(exchange_rates))})
    now = utcnow()
    decided = [_decide(r, balances, known, rates, now) for r in requests]
    new_rows = [row for outcome, row in decided if outcome.status == "recorded"]
    if len(requests) > 1:
        from scidex_alloc.budgets import bulkwrites  # batches only: one spend needs no bulk path
        from scidex_alloc.storage import bulk

        # A batch reports counts, not records: bulk-insert without id round trips, adding
        # to each artifact's balance once.
        if new_rows:
            with bulkwrites.added_per_statement(connection, resource_allocations.name):
                bulk.insert_rows(connection, resource_allocations, ENTRY_COLUMNS,
                                 map(entry_values, new_rows))
        return [outcome for outcome, _ in decided]
    ((outcome, row),) = decided
    if new_rows:
        row.id = connection.execute(
            resource_allocations.insert().returning(resource_allocations.c.id),
            [dict(zip(ENTRY_COLUMNS, entry_values(row)))],
        ).scalar_one()
    if row is not None:
        outcome.record = record_of(row, outcome.status == "replayed", balances[row.artifact_id])
    return [outcome]


def _decide(r: SpendRequest, balances, known, rates, now):
    """One line's outcome, and the log row it stands for (new, or the one it replays)."""
    balance = balances.get(r.artifact_id)
    if balance is None:
        return SpendOutcome(r.line, "unknown", errors.NOT_FOUND,
                            f"unknown artifact {r.artifact_id!r}"), None
    rate = rates.get(r.unit)
    if rate is None:
        return SpendOutcome(r.line, "invalid", errors.USAGE, f"unknown unit {r.unit!r}"), None
    if r.key is not None and r.key in known:
        first = known[r.key]
        units, unit = units_of(first)
        if (first.artifact_id, to_micro(units), unit) != (
                r.artifact_id, to_micro(r.amount), r.unit):
            return SpendOutcome(
                r.line, "conflict", errors.CONFLICT,
                f"idempotency key {r.key!r} was used for a different spend "
                f"({first.artifact_id}, {plain(exact(units))} {unit})"), None
        return SpendOutcome(r.line, "replayed", errors.OK), first
    try:
        tokens = to_tokens(r.amount, rate, r.unit)
    except errors.UsageError as error:
        return SpendOutcome(r.line, "invalid", errors.USAGE, str(error)), None
    if balance.spent is not None and balance.spent + tokens > MAX_TOTAL:
        return SpendOutcome(
            r.line, "invalid", errors.USAGE,
            f"{r.artifact_id}'s spent would exceed the maximum {plain(MAX_TOTAL)} tokens"), None
    shortfall = balance.shortfall(r.artifact_id, tokens)
    overdraft = shortfall is not None  # beyond the available budget: only when allowed
    if overdraft and not r.allow_overdraft:
        return SpendOutcome(r.line, "refused", errors.INSUFFICIENT, shortfall), None
    if balance.spent is not None:
        balance.spent += tokens
    row = SimpleNamespace(
        id=None, artifact_id=r.artifact_id, tokens=tokens, unit=r.unit, units=r.amount,
        rate=rate, kind=r.kind, agent_id=r.agent, note=r.note, idempotency_key=r.key,
        overdraft=overdraft, reverses_id=None, created_at=now, budget_at_spend=balance.budget,
        hold_id=None)
    if r.key is not None:
        known[r.key] = row
    return SpendOutcome(r.line, "recorded", errors.OK), row


def reverse(connection: Connection, params: Params, spend_id: int, agent: str | None, note: str | None
            ) -> SpendRecord:
    """Append the entry that cancels spend `spend_id`; each spend is reversed at most once."""
    log = resource_allocations
    amount_is_finite = connection.execute(
        select(and_(*(sql.IsFinite(func.coalesce(column, 0))
                      for column in (log.c.tokens, log.c.units, log.c.rate))))
        .where(log.c.id == spend_id)
    ).scalar()
    if amount_is_finite is None:
        raise errors.UnknownId(f"no spend with id {spend_id}")
    if not amount_is_finite:  # written by another service: its negation would be invalid too
        raise errors.UsageError(f"spend {spend_id} has an amount that is not a finite number; "
                                "see alloc audit")
    original = connection.execute(select(log).where(log.c.id == spend_id)).first()
    balances = lock_and_read(connection, params, [original.artifact_id])
    if original.reverses_id is not None:
        raise errors.UsageError(f"spend {spend_id} is itself a reversal and cannot be reversed")
    already = connection.execute(
        select(resource_allocations.c.id).where(resource_allocations.c.reverses_id == spend_id)
    ).scalar()
    if already is not None:
        raise errors.IdempotencyConflict(f"spend {spend_id} was already reversed by spend {already}")
    units, unit = units_of(original)
    balance = balances[original.artifact_id]
    values = {
        "artifact_id": original.artifact_id, "tokens": -exact(original.tokens),
        "unit": unit, "units": -exact(units),
        "rate": original.rate if original.rate is not None else Decimal(1), "kind": "reversal",
        "agent_id": agent, "note": note or f"reverses spend {spend_id}", "idempotency_key": None,
        "overdraft": False, "reverses_id": spend_id, "created_at": utcnow(),
        "budget_at_spend": balance.budget,
    }
    row = connection.execute(
        resource_allocations.insert().returning(resource_allocations), [values]
    ).one()
    if balance.spent is not None:
        balance.spent += values["tokens"]
    return record_of(row, False, balance)


def log_entries(connection: Connection, artifact_id: str | None, since: datetime | None,
                limit: int | None) -> Iterator[LogEntry]:
    """The spend log, oldest first, fetched in batches."""
    for row in connection.execute(queries.batched(spend_log(artifact_id, since, limit), limit)):
        yield LogEntry(**row._mapping)


def spend_log(artifact_id: str | None, since: datetime | None, limit: int | None) -> Select:
    log = resource_allocations

    def shown(column):  # a value that is not a finite number (invalid data) shows as NULL
        return case((IsFinite(column), column)).label(column.name)

    stmt = select(
        log.c.id, log.c.created_at, log.c.artifact_id, shown(log.c.tokens), log.c.unit,
        shown(log.c.units), shown(log.c.rate), log.c.kind, log.c.agent_id.label("agent"), log.c.note,
        log.c.idempotency_key.label("key"), log.c.overdraft, log.c.reverses_id.label("reverses"),
    ).order_by(log.c.id)
    if artifact_id is not None:
        stmt = stmt.where(log.c.artifact_id == artifact_id)
    if since is not None:
        stmt = stmt.where(~LaterThan(literal(since, Timestamp()), log.c.created_at))
    return stmt.limit(limit) if limit is not None else stmt


def log_page(connection: Connection, artifact_id: str | None, agent: str | None,
             kind: str | None, limit: int, offset: int) -> list[LogEntry]:
    """A page of the spend log, newest first, as `alloc log` shows its rows."""
    log = resource_allocations
    stmt = spend_log(artifact_id, None, None).order_by(None).order_by(log.c.id.desc())
    if agent is not None:
        stmt = stmt.where(log.c.agent_id == agent)
    if kind is not None:
        stmt = stmt.where(log.c.kind == kind)
    stmt = stmt.limit(limit).offset(offset or None)
    return [LogEntry(**row._mapping) for row in connection.execute(stmt)]
