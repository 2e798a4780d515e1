"""The tables, as SQLAlchemy Core metadata: the public contract other services write to.

Alembic revisions in ``migrations/versions`` create them; this module is what
queries are built from.
"""

from datetime import datetime, timezone

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    TypeDecorator,
    func,
)

from scidex_alloc.options import PERIODS

# Token amounts: exact to 1e-6 token. NUMERIC on PostgreSQL; SQLite sums them as
# integer micro-tokens (see sql.micro), exact up to 9e9 tokens per value.
TOKEN_SCALE = 6


def Tokens() -> Numeric:
    return Numeric(24, TOKEN_SCALE)


def ArtifactId() -> String:
    """Artifact ids sort bytewise on both databases, so ties break identically."""
    return String().with_variant(String(collation="C"), "postgresql")


class Timestamp(TypeDecorator):
    """Aware UTC datetimes in Python; timestamptz on PostgreSQL, naive UTC text on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and dialect.name == "sqlite" and value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

POSITION_STATUSES = ("open", "closed", "settled")
BOUNTY_STATUSES = ("open", "claimed", "expired", "cancelled")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


artifacts = Table(
    "artifacts",
    metadata,
    Column("id", ArtifactId(), primary_key=True),
    Column("type", String, nullable=False),
    Column("title", Text),
    Column("created_at", Timestamp, server_default=func.current_timestamp()),
    Index("ix_artifacts_type_id", "type", "id"),
)

markets = Table(
    "markets",
    metadata,
    Column("artifact_id", ArtifactId(), ForeignKey("artifacts.id"), primary_key=True),
    Column("price", Numeric),
    Column("updated_at", Timestamp, server_default=func.current_timestamp()),
)

positions = Table(
    "positions",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("artifact_id", ArtifactId(), ForeignKey("artifacts.id"), nullable=False),
    Column("agent_id", String),
    Column("tokens", Tokens(), nullable=False),
    Column("status", String, nullable=False, server_default="open"),
    Column("created_at", Timestamp, server_default=func.current_timestamp()),
    CheckConstraint(_in("status", POSITION_STATUSES), name="status"),
    # Covering index: demand is an index-only scan per artifact.
    Index("ix_positions_artifact_status_tokens", "artifact_id", "status", "tokens"),
)

token_bounties = Table(
    "token_bounties",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("artifact_id", ArtifactId(), ForeignKey("artifacts.id"), nullable=False),
    Column("tokens_offered", Tokens(), nullable=False),
    Column("tokens_paid", Tokens(), nullable=False, server_default="0"),
    Column("status", String, nullable=False, server_default="open"),
    Column("expires_at", Timestamp),
    Column("created_at", Timestamp, server_default=func.current_timestamp()),
    CheckConstraint(_in("status", BOUNTY_STATUSES), name="status"),
    Index(
        "ix_token_bounties_artifact_status",
        "artifact_id",
        "status",
        "expires_at",
        "tokens_offered",
        "tokens_paid",
    ),
)

resource_allocations = Table(
    "resource_allocations",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("artifact_id", ArtifactId(), ForeignKey("artifacts.id"), nullable=False),
    Column("tokens", Tokens(), nullable=False),
    Column("unit", String),
    Column("units", Numeric(30, TOKEN_SCALE)),
    Column("rate", Numeric(30, TOKEN_SCALE)),
    Column("kind", String),
    Column("agent_id", String),
    Column("note", Text),
    Column("idempotency_key", String, unique=True),
    Column("overdraft", Boolean, nullable=False, server_default="0"),
    Column("reverses_id", BigInteger().with_variant(Integer, "sqlite"),
           ForeignKey("resource_allocations.id"), unique=True),
    Column("created_at", Timestamp, server_default=func.current_timestamp()),
    # The artifact's budget when alloc recorded the entry: overdraft is judged against it,
    # since budgets shrink later (bounties expire). NULL from writers that do not know it.
    Column("budget_at_spend", Tokens()),
    # The hold this entry settles (revision 0006): at most one entry per hold.
    Column("hold_id", BigInteger().with_variant(Integer, "sqlite")),
    Index("ix_resource_allocations_artifact_tokens", "artifact_id", "tokens"),
    Index("uq_resource_allocations_hold_id", "hold_id", unique=True),
    # Revision 0007: the dashboard reads the log by time and by agent.
    Index("ix_resource_allocations_created_at", "created_at"),
    Index("ix_resource_allocations_agent", "agent_id", "created_at", "tokens"),
)

exchange_rates = Table(
    "exchange_rates",
    metadata,
    Column("unit", String, primary_key=True),
    Column("units_per_token", Numeric(30, TOKEN_SCALE), nullable=False),
    Column("updated_at", Timestamp, server_default=func.current_timestamp()),
)

CLAIM_STATUSES = ("active", "done", "released", "expired")

# The work queue: an agent's claim on an artifact, and once done, one investigation.
# At most one active claim per artifact: the partial unique index uq_claims_one_active
# (migration 0002; not declared here, since dialect options cost every start-up); a
# claim whose lease ran out is marked expired by whoever claims the artifact next.
claims = Table(
    "claims",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("artifact_id", ArtifactId(), ForeignKey("artifacts.id"), nullable=False),
    Column("agent_id", String, nullable=False),
    Column("status", String, nullable=False, server_default="active"),
    Column("claimed_at", Timestamp, nullable=False),
    Column("lease_expires_at", Timestamp, nullable=False),
    Column("finished_at", Timestamp),
    Column("reward", Numeric(12, 9)),
    CheckConstraint(_in("status", CLAIM_STATUSES), name="status"),
    CheckConstraint("reward IS NULL OR (reward >= 0 AND reward <= 1)", name="reward"),
    Index("ix_claims_artifact_status", "artifact_id", "status", "reward"),
    Index("ix_claims_agent_status", "agent_id", "status"),
)

HOLD_STATUSES = ("active", "settled", "voided")

# Reserved budget (revision 0006): an active hold counts against its artifact's available
# budget until `expires_at`, when it stops counting by itself; settling it writes the spend
# entry that names it (resource_allocations.hold_id), voiding releases it. A hold placed by
# `next --claim --reserve` names its claim and lives as long as the claim's lease.
holds = Table(
    "holds",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("artifact_id", ArtifactId(), ForeignKey("artifacts.id"), nullable=False),
    Column("tokens", Tokens(), nullable=False),
    Column("unit", String),
    Column("units", Numeric(30, TOKEN_SCALE)),
    Column("rate", Numeric(30, TOKEN_SCALE)),
    Column("agent_id", String),
    Column("note", Text),
    Column("idempotency_key", String, unique=True),
    Column("status", String, nullable=False, server_default="active"),
    Column("claim_id", BigInteger().with_variant(Integer, "sqlite"), ForeignKey("claims.id")),
    Column("created_at", Timestamp, nullable=False),
    Column("expires_at", Timestamp, nullable=False),
    Column("finished_at", Timestamp),
    # What the artifact's budget was when alloc placed the hold, and, when a settlement
    # exceeded the hold, the budget available to the excess then: audit judges by them.
    Column("budget_at_hold", Tokens()),
    Column("available_at_settle", Tokens()),
    CheckConstraint(_in("status", HOLD_STATUSES), name="status"),
    Index("ix_holds_artifact_status", "artifact_id", "status", "expires_at", "tokens"),
    Index("ix_holds_agent_status", "agent_id", "status"),
    Index("ix_holds_claim_id", "claim_id"),
)

# Budget history: one row per artifact per period bucket, written by `alloc snapshot`.
# The primary key makes a second snapshot of the same bucket a no-op.
budget_snapshots = Table(
    "budget_snapshots",
    metadata,
    Column("artifact_id", ArtifactId(), ForeignKey("artifacts.id"), primary_key=True),
    Column("period", String, primary_key=True),
    Column("bucket", Timestamp, primary_key=True),
    Column("taken_at", Timestamp, nullable=False),
    Column("demand", Tokens(), nullable=False),
    Column("bounty", Tokens(), nullable=False),
    Column("price", Numeric(12, 6), nullable=False),
    Column("budget", Tokens(), nullable=False),
    Column("spent", Tokens(), nullable=False),
    Column("remaining", Tokens(), nullable=False),
    CheckConstraint(_in("period", PERIODS), name="period"),
    Index("ix_budget_snapshots_period_bucket", "period", "bucket"),
)

# Every term of each artifact's budget, kept by triggers on the tables above (revision
# 0005; storage/balances.py): sums of micro-tokens over the rows whose amounts are finite,
# and how many rows are not. `bounty` counts the open bounties unexpired when it was last
# summed, and `next_expiry` (an instant key: a Julian day number on SQLite) is when the
# first of them expires: past it, readers sum the bounties again. `budget_key` and
# `remaining_key` are generated columns (the default formula; NULL when the artifact has
# no valid budget) that the ranking indexes order by. `held` (revision 0006) sums the
# active holds unexpired when it was last summed, and `held_expiry` is when the first of
# them expires: past it, readers sum the holds again.
artifact_balances = Table(
    "artifact_balances",
    metadata,
    Column("artifact_id", ArtifactId(), primary_key=True),
    Column("type", String, nullable=False),
    Column("demand", Numeric(30, 0), nullable=False, server_default="0"),
    Column("demand_invalid", Integer, nullable=False, server_default="0"),
    Column("bounty", Numeric(30, 0), nullable=False, server_default="0"),
    Column("bounty_invalid", Integer, nullable=False, server_default="0"),
    Column("next_expiry", Timestamp().with_variant(Numeric(), "sqlite")),
    Column("price", Numeric),
    Column("spent", Numeric(30, 0), nullable=False, server_default="0"),
    Column("spent_invalid", Integer, nullable=False, server_default="0"),
    Column("investigations", Integer, nullable=False, server_default="0"),
    Column("reward_total", Numeric(30, 0), nullable=False, server_default="0"),  # 1e-9 units
    Column("held", Numeric(30, 0), nullable=False, server_default="0"),
    Column("held_invalid", Integer, nullable=False, server_default="0"),
    Column("held_expiry", Timestamp().with_variant(Numeric(), "sqlite")),
    Column("budget_key", Numeric),
    Column("remaining_key", Numeric),
)

# The artifacts whose positions changed since their balance summed its demand (revision
# 0010): a trigger on positions appends a row per change, which costs another service's
# insert one row at the end of a small table where updating the balance would move its
# entries in every ranking index. Readers sum such an artifact's demand again, as they do
# an expired bounty, until `folding.fold_pending` sums it into the balance and deletes
# its rows.
pending_demand = Table(
    "pending_demand",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("artifact_id", ArtifactId(), nullable=False),
)

# The balances' totals per artifact type (revision 0008; budgets/totals.py), kept by
# triggers on artifact_balances: each change appends its differences as a row, and every
# so many rows are folded into one per type. A type's totals are the sums of its rows:
# how many artifacts and how many without a valid budget, and over the valid ones
# demand, bounty, budget, spent and remaining, each as whole tokens plus micro-tokens
# (SQLite's integers cannot hold every sum of micro-tokens).
TOTALS = ("demand", "bounty", "budget", "spent", "remaining")
balance_totals = Table(
    "balance_totals",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("type", String, nullable=False),
    Column("artifacts", BigInteger, nullable=False),
    Column("invalid", BigInteger, nullable=False),
    *(Column(f"{name}{part}", Numeric(30, 0).with_variant(Integer, "sqlite"), nullable=False)
      for name in TOTALS for part in ("", "_micro")),
)

BASE_UNIT = "tokens"
DEFAULT_RATES = {"llm-tokens": 1000}
