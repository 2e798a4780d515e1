"""Budgets, rates and conversions: what rank, budget, rates and convert return."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class BudgetRow:
    """One artifact's budget, as `alloc rank --format json` prints it."""

    rank: int
    artifact_id: str
    type: str
    title: str | None
    demand: Decimal
    bounty: Decimal
    price: Decimal
    uncertainty: Decimal
    multiplier: Decimal
    budget: Decimal
    spent: Decimal
    remaining: Decimal


BUDGET_COLUMNS = tuple(f.name for f in fields(BudgetRow))


@dataclass(frozen=True)
class UnitValues:
    unit: str
    units_per_token: Decimal
    budget: Decimal
    spent: Decimal
    remaining: Decimal


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
