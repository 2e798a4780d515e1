"""Exchange rates between tokens and other units, and what amounts are worth in each:
`alloc rates`, `rates set`, `convert`, and a budget in every unit (`alloc budget`)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.engine import Connection

from scidex_alloc import limits
from scidex_alloc.budgets import queries
from scidex_alloc.budgets.results import BudgetDetail, Conversion, Rate, UnitValues
from scidex_alloc.errors import UnknownArtifact, UsageError
from scidex_alloc.formula import Params, exact, parse_amount, to_tokens
from scidex_alloc.storage.schema import BASE_UNIT, exchange_rates, utcnow


def listing(connection: Connection) -> list[Rate]:
    """Tokens first (one per token), then every unit by name."""
    return [Rate(BASE_UNIT, Decimal(1), None)] + [
        Rate(r.unit, exact(r.units_per_token), r.updated_at) for r in _rows(connection)]


def checked_unit(unit: str) -> str:
    """A unit name that `rates set` may create or change: never the tokens themselves."""
    unit = limits.check_text(unit.strip(), "unit", limits.UNIT)
    if not unit or unit == BASE_UNIT:
        raise UsageError(f"unit must be a name of 1 to {limits.UNIT} characters other than "
                         f"{BASE_UNIT!r}")
    return unit


def set_rate(connection: Connection, unit: str, units_per_token: Decimal, now: datetime) -> Rate:
    """Change the unit's rate, or create the unit."""
    updated = connection.execute(
        exchange_rates.update()
        .where(exchange_rates.c.unit == unit)
        .values(units_per_token=units_per_token, updated_at=now)
    ).rowcount
    if not updated:
        connection.execute(exchange_rates.insert().values(
            unit=unit, units_per_token=units_per_token, updated_at=now))
    return Rate(unit, units_per_token, now)


def rate_of(connection: Connection, unit: str) -> Decimal:
    """Units per token; an unknown unit is a usage error."""
    if unit == BASE_UNIT:
        return Decimal(1)
    rate = connection.execute(
        select(exchange_rates.c.units_per_token).where(exchange_rates.c.unit == unit)
    ).scalar()
    if rate is None:
        raise UsageError(f"unknown unit {unit!r}: see `alloc rates`")
    return exact(rate)


def convert(connection: Connection, amount: str, from_unit: str, to_unit: str) -> Conversion:
    source = rate_of(connection, from_unit)
    dest = rate_of(connection, to_unit)
    value = parse_amount(amount, "amount", allow_zero=True)
    to_tokens(value, source, from_unit)  # within what the ledger could hold
    rate = dest / source
    return Conversion(value, from_unit, to_unit, rate.normalize(), exact(value * rate))


def budget_detail(connection: Connection, params: Params, artifact_id: str) -> BudgetDetail:
    """One artifact's budget row, and its budget, spent and remaining in every unit."""
    row = connection.execute(queries.one(params),
                             {"now": utcnow(), "artifact_id": artifact_id}).first()
    if row is None:
        raise UnknownArtifact(f"unknown artifact {artifact_id!r}")
    budget_row = queries.budget_row(1, row, params)
    return BudgetDetail(budget_row, [
        UnitValues(r.unit, exact(r.units_per_token),
                   *(None if value is None else exact(value * r.units_per_token)
                     for value in (budget_row.budget, budget_row.spent, budget_row.remaining)))
        for r in _rows(connection)])


def _rows(connection: Connection):
    return connection.execute(select(exchange_rates).order_by(exchange_rates.c.unit)).all()
