"""Snapshots, history and plans: what snapshot, history, history --top and plan return."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class SnapshotResult:
    period: str
    bucket: datetime
    taken_at: datetime
    recorded: int


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """One snapshot of one artifact, as `alloc history ID` lists it."""

    bucket: datetime
    taken_at: datetime
    demand: Decimal
    bounty: Decimal
    price: Decimal
    budget: Decimal
    spent: Decimal
    remaining: Decimal


HISTORY_COLUMNS = tuple(f.name for f in fields(HistoryPoint))


@dataclass(frozen=True, slots=True)
class Mover:
    """How one artifact's budget moved between its first and last snapshot in a window."""

    artifact_id: str
    type: str
    first: datetime
    last: datetime
    budget_from: Decimal
    budget_to: Decimal
    change: Decimal
    remaining_from: Decimal
    remaining_to: Decimal


MOVER_COLUMNS = tuple(f.name for f in fields(Mover))


@dataclass(frozen=True, slots=True)
class PlanPart:
    """One artifact's whole-unit share of a pool, as `alloc plan --format json` prints it."""

    artifact_id: str
    type: str
    remaining: Decimal
    share: int
    fraction: Decimal


PLAN_COLUMNS = tuple(f.name for f in fields(PlanPart))
