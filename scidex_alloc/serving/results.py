"""The pipeline: what the API's pipeline endpoint and the dashboard read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class TypeTotals:
    """One artifact type's capital-to-research pipeline: amounts over its valid artifacts;
    `invalid` counts those without a valid budget."""

    type: str
    artifacts: int
    demand: Decimal
    bounty: Decimal
    budget: Decimal
    spent: Decimal
    remaining: Decimal
    invalid: int


@dataclass(frozen=True, slots=True)
class PipelinePoint:
    bucket: datetime
    budget: Decimal
    spent: Decimal
    remaining: Decimal


@dataclass(frozen=True)
class Pipeline:
    types: list[TypeTotals]
    period: str | None
    history: list[PipelinePoint]


@dataclass(frozen=True)
class Activity:
    """Spend log tokens by kind (one amount per kind, and their total), per artifact type
    and per bucket of `every`, over [since, until)."""

    every: str
    since: datetime
    until: datetime
    by_type: list[dict]
    over_time: list[dict]


@dataclass(frozen=True, slots=True)
class AgentSummary:
    """What one agent is doing (live and stale claims, live holds) and has done."""

    agent: str
    live_claims: int
    stale_claims: int
    holds: int
    held: Decimal
    investigations: int
    mean_reward: Decimal | None
    spent: Decimal
    last_active: datetime | None


@dataclass(frozen=True)
class Gauges:
    """What `/metrics` reports of the pipeline: its totals per type, the tokens live holds
    keep per type, and the active claims whose lease has not run out."""

    types: list[TypeTotals]
    held: dict[str, Decimal]
    live_claims: int
