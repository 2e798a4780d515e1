"""Holds as `alloc hold`, `settle`, `void` and `holds` show them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class HoldRecord:
    """One hold. `status` is active, settled, voided, or expired (active, past its TTL:
    it no longer counts). `available` is its artifact's available budget after the
    command, when the command read it."""

    id: int
    artifact_id: str
    tokens: Decimal | None
    unit: str
    units: Decimal | None
    rate: Decimal | None
    agent: str | None
    status: str
    expires_at: datetime
    replayed: bool = False
    available: Decimal | None = None
    created_at: datetime | None = None
    claim_id: int | None = None
    spend_id: int | None = None  # the spend entry that settled it
    note: str | None = None


HOLD_JSON_FIELDS = ("id", "artifact_id", "tokens", "unit", "units", "rate", "agent", "status",
                    "expires_at", "replayed", "available", "claim_id")
HOLD_LIST_COLUMNS = ("id", "artifact_id", "tokens", "unit", "units", "agent", "status",
                     "created_at", "expires_at", "claim_id", "spend_id", "note")
