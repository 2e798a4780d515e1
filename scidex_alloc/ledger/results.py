"""The spend ledger: one spend, a batch, the log and the audit."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal


@dataclass(slots=True)
class SpendRecord:
    """One entry of the spend log, as `alloc spend --format json` prints it."""

    id: int | None
    artifact_id: str
    tokens: Decimal
    unit: str
    units: Decimal
    rate: Decimal
    kind: str | None
    agent: str | None
    replayed: bool
    spent: Decimal | None
    remaining: Decimal | None
    overdraft: bool = False
    reverses: int | None = None
    created_at: datetime | None = None
    hold_id: int | None = None  # the hold this entry settles
    available: Decimal | None = None  # remaining less what active holds keep


SPEND_JSON_FIELDS = ("id", "artifact_id", "tokens", "unit", "units", "rate", "kind", "agent",
                     "replayed", "spent", "remaining", "hold_id", "available")


@dataclass(slots=True)
class SpendOutcome:
    """What happened to one spend request (a command or a line of a batch file)."""

    line: int
    status: str  # recorded, replayed, refused, invalid, unknown, conflict
    code: int
    message: str = ""
    record: SpendRecord | None = None

    @property
    def ok(self) -> bool:
        return self.code == 0


@dataclass
class BatchSummary:
    recorded: int = 0
    replayed: int = 0
    refused: int = 0
    invalid: int = 0
    atomic: bool = False
    failures: list[SpendOutcome] = field(default_factory=list)

    def count(self, outcome: SpendOutcome) -> None:
        if outcome.status in ("recorded", "replayed"):
            setattr(self, outcome.status, getattr(self, outcome.status) + 1)
            return
        if outcome.status == "refused":
            self.refused += 1
        else:
            self.invalid += 1
        self.failures.append(outcome)

    @property
    def exit_code(self) -> int:
        return self.failures[0].code if self.failures else 0


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One row of the spend log, as `alloc log` lists it."""

    id: int
    created_at: datetime | None
    artifact_id: str
    tokens: Decimal
    unit: str | None
    units: Decimal | None
    rate: Decimal | None
    kind: str | None
    agent: str | None
    note: str | None
    key: str | None
    overdraft: bool
    reverses: int | None


LOG_COLUMNS = tuple(f.name for f in fields(LogEntry))


@dataclass(frozen=True)
class AuditCheck:
    """One invariant: what it checks and the rows that break it."""

    name: str
    description: str
    rows: list[dict]

    @property
    def ok(self) -> bool:
        return not self.rows
