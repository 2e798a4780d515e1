"""The API's response models: they describe the JSON answers in the OpenAPI document (the
answers themselves are written by the CLI's exact encoder)."""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel

from scidex_alloc.options import PERIODS

Period = Enum("Period", {period: period for period in PERIODS}, type=str)  # also a parameter


class BudgetOut(BaseModel):
    rank: int
    artifact_id: str
    type: str
    title: str | None
    demand: float | None
    bounty: float | None
    price: float | None
    uncertainty: float | None
    multiplier: float | None
    budget: float | None
    spent: float | None
    remaining: float | None
    problem: str | None
    held: float | None
    available: float | None


class HoldOut(BaseModel):
    id: int
    artifact_id: str
    tokens: float | None
    unit: str
    units: float | None
    agent: str | None
    status: str
    created_at: str | None
    expires_at: str
    claim_id: int | None
    spend_id: int | None
    note: str | None


class TypeTotalsOut(BaseModel):
    type: str
    artifacts: int
    demand: float
    bounty: float
    budget: float
    spent: float
    remaining: float
    invalid: int


class PointOut(BaseModel):
    bucket: str
    budget: float
    spent: float
    remaining: float


class PipelineOut(BaseModel):
    types: list[TypeTotalsOut]
    totals: TypeTotalsOut
    period: str | None
    history: list[PointOut]


class HistoryPointOut(BaseModel):
    bucket: str
    taken_at: str
    demand: float
    bounty: float
    price: float
    budget: float
    spent: float
    remaining: float


class HistoryOut(BaseModel):
    artifact_id: str
    every: Period | None
    points: list[HistoryPointOut]


class KindAmounts(BaseModel):
    debate: float
    analysis: float
    extraction: float
    validation: float
    other: float
    total: float


class TypeActivityOut(KindAmounts):
    type: str


class BucketActivityOut(KindAmounts):
    bucket: str


class ActivityOut(BaseModel):
    every: Period
    kinds: list[str]
    by_type: list[TypeActivityOut]
    over_time: list[BucketActivityOut]


class AgentOut(BaseModel):
    agent: str
    live_claims: int
    stale_claims: int
    holds: int
    held: float
    investigations: int
    mean_reward: float | None
    spent: float
    last_active: str | None


class ClaimOut(BaseModel):
    id: int
    artifact_id: str
    type: str
    agent: str
    status: str
    claimed_at: str
    lease_expires_at: str
    seconds_left: float | None
    stale: bool
    hold_id: int | None
    held: float | None
    reward: float | None
    finished_at: str | None


class SpendOut(BaseModel):
    id: int
    created_at: str | None
    artifact_id: str
    tokens: float | None
    unit: str | None
    units: float | None
    rate: float | None
    kind: str | None
    agent: str | None
    note: str | None
    key: str | None
    overdraft: bool
    reverses: int | None


class HealthOut(BaseModel):
    status: str
    version: str


class ErrorOut(BaseModel):
    error: str


ERRORS = {404: {"model": ErrorOut}, 422: {"model": ErrorOut}, 503: {"model": ErrorOut}}
