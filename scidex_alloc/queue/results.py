"""The agent work queue and its claims."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One artifact in the agent work queue, as `alloc next --format json` prints it."""

    rank: int
    artifact_id: str
    type: str
    title: str | None
    score: float
    ucb: float | None
    ucb_norm: float
    budget_norm: float
    remaining: Decimal
    investigations: int
    mean_reward: float | None
    claim_id: int | None
    lease_expires_at: datetime | None
    available: Decimal | None = None  # remaining less what holds keep: the budget term
    hold_id: int | None = None  # the hold a reserving claim placed


QUEUE_COLUMNS = tuple(f.name for f in fields(QueueEntry))


@dataclass(frozen=True, slots=True)
class ClaimInfo:
    id: int
    artifact_id: str
    agent: str
    status: str
    claimed_at: datetime
    lease_expires_at: datetime
    expired: bool
    finished_at: datetime | None
    reward: Decimal | None
    hold_id: int | None = None  # its hold, when it reserved budget
    spend_id: int | None = None  # the spend `done` recorded, if any


CLAIM_COLUMNS = tuple(f.name for f in fields(ClaimInfo))


@dataclass(frozen=True, slots=True)
class ClaimRow:
    """One claim as the API's claims list shows it."""

    id: int
    artifact_id: str
    type: str
    agent: str
    status: str
    claimed_at: datetime
    lease_expires_at: datetime
    seconds_left: float | None  # of the lease; negative once run out, None when closed
    stale: bool  # active with its lease run out
    hold_id: int | None
    held: Decimal | None
    reward: Decimal | None
    finished_at: datetime | None
