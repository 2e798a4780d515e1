"""Budgets, rates and conversions: what rank, budget, rates and convert return."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal


@dataclass(slots=True)
class BudgetRow:
    """One artifact's budget, as `alloc rank --format json` prints it. An artifact with
    invalid data has a `problem`, and None for the terms that depend on it. (Not frozen:
    an export builds one per artifact, and a frozen dataclass's fields cost seven times
    more to set.)"""

    rank: int
    artifact_id: str
    type: str
    title: str | None
    demand: Decimal | None
    bounty: Decimal | None
    price: Decimal | None
    uncertainty: Decimal | None
    multiplier: Decimal | None
    budget: Decimal | None
    spent: Decimal | None
    remaining: Decimal | None
    problem: str | None = None
    held: Decimal | None = None  # the active holds' total; available = remaining - held
    available: Decimal | None = None


BUDGET_COLUMNS = tuple(f.name for f in fields(BudgetRow))


@dataclass(frozen=True)
class UnitValues:
    unit: str
    units_per_token: Decimal
    budget: Decimal | None
    spent: Decimal | None
    remaining: Decimal | None


@dataclass(frozen=True)
class BudgetDetail:
    row: BudgetRow
    in_units: list[UnitValues] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Rate:
    unit: str
    units_per_token: Decimal
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class Conversion:
    amount: Decimal
    from_unit: str
    to_unit: str
    rate: Decimal
    result: Decimal
