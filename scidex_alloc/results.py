"""Result objects the service returns and the renderer formats."""

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


@dataclass(frozen=True, slots=True)
class RowProblem:
    line: int
    message: str


@dataclass
class LoadReport:
    table: str
    loaded: int = 0
    problems: list[RowProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


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
    spent: Decimal
    remaining: Decimal
    overdraft: bool = False
    reverses: int | None = None
    created_at: datetime | None = None


SPEND_JSON_FIELDS = ("id", "artifact_id", "tokens", "unit", "units", "rate", "kind", "agent",
                     "replayed", "spent", "remaining")


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


CLAIM_COLUMNS = tuple(f.name for f in fields(ClaimInfo))


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


@dataclass(frozen=True, slots=True)
class TypeTotals:
    """One artifact type's capital-to-research pipeline."""

    type: str
    artifacts: int
    demand: Decimal
    bounty: Decimal
    budget: Decimal
    spent: Decimal
    remaining: Decimal


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
