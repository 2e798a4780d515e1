"""Holds' decisions: place, settle, void and list them, and the queue's holds on claims.

A hold counts against its artifact's available budget (remaining less active holds) from
the moment it is placed until it is settled, voided or past its `expires_at`; nothing
sweeps it. Each decision locks the artifact first, as a spend does
(spending.lock_and_read), so that spends, holds and settlements on one artifact are
decided one at a time: together they never take more than its available budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import case, literal, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.expression import ColumnElement

from scidex_alloc import errors
from scidex_alloc.budgets.rates import rate_of
from scidex_alloc.formula import Params, exact, plain, to_micro, to_tokens
from scidex_alloc.holds.results import HoldRecord
from scidex_alloc.ledger import spending
from scidex_alloc.ledger.results import SpendRecord
from scidex_alloc.storage.schema import (
    BASE_UNIT,
    Timestamp,
    holds,
    resource_allocations,
    utcnow,
)
from scidex_alloc.storage.sql import IsFinite, LaterThan

AMOUNTS = ("tokens", "units", "rate", "budget_at_hold", "available_at_settle")


def _shown(column: ColumnElement) -> ColumnElement:
    """An amount as read: NULL when not a finite number (another service may write any)."""
    return case((IsFinite(column), column)).label(column.name)


# Every column of a hold, its amounts as `_shown`: no hold a reader meets can crash it.
HOLD = tuple(_shown(c) if c.name in AMOUNTS else c for c in holds.c)


@dataclass(frozen=True, slots=True)
class Amount:
    """An amount in a unit, and what it is worth in tokens at the unit's current rate."""

    units: Decimal
    unit: str
    rate: Decimal
    tokens: Decimal


def amount_in(connection: Connection, units: Decimal, unit: str) -> Amount:
    rate = rate_of(connection, unit)
    return Amount(units, unit, rate, to_tokens(units, rate, unit))


def place(connection: Connection, params: Params, artifact_id: str, units: Decimal, unit: str,
          agent: str | None, ttl: timedelta, key: str | None, note: str | None,
          claim: tuple[int, datetime] | None = None,
          locked: spending.Balance | None = None) -> HoldRecord:
    """Reserve `units` of `unit` on the artifact until `ttl` from now (a claim's hold:
    `claim`, its id and the end of its lease), or replay the hold placed under `key`;
    refused (nothing written) beyond the available budget. `locked` is the artifact's
    balance when the caller holds its lock already."""
    balance = locked or _locked(connection, params, artifact_id)
    now = utcnow()  # once the lock is held: a wait for it must not age the decision
    if key is not None:
        first = connection.execute(select(*HOLD).where(holds.c.idempotency_key == key)).first()
        if first is not None:
            _check_replay(first, key, artifact_id, units, unit)
            return record(first, now, replayed=True, available=balance.available)
    amount = amount_in(connection, units, unit)
    shortfall = balance.shortfall(artifact_id, amount.tokens)
    if shortfall is not None:
        raise errors.InsufficientBudget(shortfall)
    values = {"artifact_id": artifact_id, "tokens": amount.tokens, "unit": unit,
              "units": units, "rate": amount.rate, "agent_id": agent, "note": note,
              "idempotency_key": key, "status": "active",
              "claim_id": None if claim is None else claim[0], "created_at": now,
              "expires_at": now + ttl if claim is None else claim[1],
              "budget_at_hold": balance.budget}
    row = connection.execute(holds.insert().returning(*HOLD), [values]).one()
    balance.held += amount.tokens
    return record(row, now, available=balance.available)


def _locked(connection: Connection, params: Params, artifact_id: str) -> spending.Balance:
    balance = spending.lock_and_read(connection, params, [artifact_id]).get(artifact_id)
    if balance is None:
        raise errors.UnknownArtifact(f"unknown artifact {artifact_id!r}")
    return balance


def _check_replay(first, key: str, artifact_id: str, units: Decimal, unit: str) -> None:
    """A key names one hold: the same request replays it, another is a conflict."""
    if (first.artifact_id, to_micro(first.units), first.unit) != (
            artifact_id, to_micro(units), unit):
        raise errors.IdempotencyConflict(
            f"idempotency key {key!r} was used for a different hold "
            f"({first.artifact_id}, {plain(exact(first.units))} {first.unit})")


def settle(connection: Connection, params: Params, hold_id: int, units: Decimal | None,
           unit: str | None, kind: str | None, note: str | None,
           locked: tuple | None = None) -> SpendRecord:
    """Record what the held work cost as one spend entry naming the hold, and end the hold.
    `units` defaults to the held amount, `unit` to the hold's. Up to the held amount it
    always succeeds; an excess must fit in the available budget. Settling a settled hold
    again replays its entry when the amount is the same. `locked`: the hold and balance
    `lock_hold` read, when the caller has locked its artifact already."""
    hold, balance = locked or _locked_hold(connection, params, hold_id)
    now = utcnow()  # once the lock is held: a hold may expire while the lock is awaited
    held = record(hold, now)
    unit = unit or held.unit
    if hold.status == "settled":
        entry = connection.execute(select(resource_allocations)
                                   .where(resource_allocations.c.hold_id == hold_id)).first()
        if entry is None:  # written by hand: audit's holds-settled check names it
            raise errors.UsageError(f"hold {hold_id} is settled but has no spend entry; "
                                    "see alloc audit")
        asked = (held.units, held.unit) if units is None else (units, unit)
        entry_units, entry_unit = spending.units_of(entry)
        if (asked[0] is None or entry_units is None
                or (to_micro(asked[0]), asked[1]) != (to_micro(entry_units), entry_unit)):
            raise errors.IdempotencyConflict(
                f"hold {hold_id} was settled for {plain(exact(entry_units))} {entry_unit}")
        return spending.record_of(entry, True, balance)
    _require_live(hold, now, "settled")
    if None in (held.tokens, held.units, held.rate):
        raise errors.UsageError(f"hold {hold_id} has an amount that is not a finite number; "
                                "see alloc audit")
    amount = (Amount(held.units, held.unit, held.rate, held.tokens) if units is None
              else amount_in(connection, units, unit))
    excess = amount.tokens - held.tokens
    if excess > 0:
        shortfall = balance.shortfall(hold.artifact_id, excess)
        if shortfall is not None:
            raise errors.InsufficientBudget(
                f"settling hold {hold_id} for {plain(amount.tokens)} tokens exceeds its "
                f"{plain(held.tokens)} held by {plain(excess)}: {shortfall}")
    # Within the hold the work was granted; past a budget that shrank since, it is
    # flagged as an overdraft, as audit expects.
    overdraft = balance.problem is not None or balance.spent + amount.tokens > balance.budget
    values = {"artifact_id": hold.artifact_id, "tokens": amount.tokens, "unit": amount.unit,
              "units": amount.units, "rate": amount.rate, "kind": kind,
              "agent_id": hold.agent_id, "note": note, "idempotency_key": None,
              "overdraft": overdraft, "created_at": now, "budget_at_spend": balance.budget,
              "hold_id": hold_id}
    entry = connection.execute(
        resource_allocations.insert().returning(resource_allocations), [values]).one()
    connection.execute(holds.update().where(holds.c.id == hold_id).values(
        status="settled", finished_at=now,
        available_at_settle=balance.available if excess > 0 else None))
    balance.spent += amount.tokens
    balance.held -= held.tokens
    return spending.record_of(entry, False, balance)


def void(connection: Connection, params: Params, hold_id: int,
         locked: tuple | None = None) -> HoldRecord:
    """Release a hold without spending; voiding it again changes nothing. `locked` as for
    `settle`."""
    hold, balance = locked or _locked_hold(connection, params, hold_id)
    now = utcnow()
    if hold.status == "settled":
        raise errors.UsageError(f"hold {hold_id} is settled; to undo its spend: "
                                f"alloc spend --reverse {_spend_of(connection, hold_id)}")
    if hold.status == "voided":
        return record(hold, now, replayed=True, available=balance.available)
    row = connection.execute(holds.update().where(holds.c.id == hold_id)
                             .values(status="voided", finished_at=now).returning(*HOLD)).one()
    if _live(hold, now) and balance.held is not None and hold.tokens is not None:
        balance.held -= hold.tokens
    return record(row, now, available=balance.available)


def _locked_hold(connection: Connection, params: Params, hold_id: int) -> tuple:
    artifact_id = connection.execute(
        select(holds.c.artifact_id).where(holds.c.id == hold_id)).scalar()
    if artifact_id is None:
        raise errors.UnknownId(f"no hold with id {hold_id}")
    return lock_hold(connection, params, hold_id, artifact_id)


def lock_hold(connection: Connection, params: Params, hold_id: int, artifact_id: str) -> tuple:
    """Lock the hold's artifact: the hold, read again now (a concurrent settle or void has
    committed by then), and the artifact's balance."""
    balance = _locked(connection, params, artifact_id)
    hold = connection.execute(select(*HOLD).where(holds.c.id == hold_id)).first()
    if hold is None:  # deleted by another service meanwhile
        raise errors.UnknownId(f"no hold with id {hold_id}")
    return hold, balance


def _live(hold, now: datetime) -> bool:
    return hold.status == "active" and hold.expires_at > now


def _require_live(hold, now: datetime, what: str) -> None:
    if hold.status == "voided":
        raise errors.UsageError(f"hold {hold.id} was voided; nothing can be {what}")
    if not _live(hold, now):
        raise errors.UsageError(f"hold {hold.id} expired at {hold.expires_at.isoformat()}; "
                                f"nothing can be {what}")


def _spend_of(connection: Connection, hold_id: int) -> int | None:
    return connection.execute(select(resource_allocations.c.id)
                              .where(resource_allocations.c.hold_id == hold_id)).scalar()


def status_of(row, now: datetime) -> str:
    return "expired" if row.status == "active" and row.expires_at <= now else row.status


def record(row, now: datetime, replayed: bool = False, available: Decimal | None = None,
           spend_id: int | None = None) -> HoldRecord:
    """A row of HOLD columns as the result object."""
    def amount(value):
        return None if value is None else exact(value)

    return HoldRecord(
        id=row.id, artifact_id=row.artifact_id, tokens=amount(row.tokens),
        unit=row.unit or BASE_UNIT, units=amount(row.units if row.units is not None
                                                 else row.tokens),
        rate=amount(row.rate if row.rate is not None else Decimal(1)), agent=row.agent_id,
        status=status_of(row, now), expires_at=row.expires_at, replayed=replayed,
        available=available, created_at=row.created_at, claim_id=row.claim_id,
        spend_id=spend_id, note=row.note)


def listing(connection: Connection, artifact_id: str | None, agent: str | None,
            every: bool, now: datetime, limit: int | None = None, offset: int = 0
            ) -> list[HoldRecord]:
    """Live holds (active, unexpired), oldest first; with `every`, every hold. A page of
    them, with `limit` and `offset`."""
    stmt = (select(*HOLD, resource_allocations.c.id.label("spend_id"))
            .outerjoin(resource_allocations, resource_allocations.c.hold_id == holds.c.id)
            .order_by(holds.c.id))
    if not every:
        stmt = stmt.where(holds.c.status == "active",
                          LaterThan(holds.c.expires_at, literal(now, Timestamp())))
    if artifact_id is not None:
        stmt = stmt.where(holds.c.artifact_id == artifact_id)
    if agent is not None:
        stmt = stmt.where(holds.c.agent_id == agent)
    stmt = stmt.limit(limit).offset(offset or None)
    return [record(row, now, spend_id=row.spend_id) for row in connection.execute(stmt)]


# --------------------------------------------------------------- the queue's holds on claims


def of_claim(connection: Connection, claim_id: int):
    """The claim's active hold (live or expired), if it has one."""
    return connection.execute(select(*HOLD).where(holds.c.claim_id == claim_id,
                                                  holds.c.status == "active")).first()


def renew(connection: Connection, claim_id: int, expires: datetime, now: datetime,
          available: Decimal | None) -> HoldRecord | None:
    """Extend the claim's active hold with its lease: the hold, or None when it has none."""
    hold = of_claim(connection, claim_id)
    if hold is None:
        return None
    row = connection.execute(holds.update().where(holds.c.id == hold.id)
                             .values(expires_at=expires).returning(*HOLD)).one()
    return record(row, now, available=available)

