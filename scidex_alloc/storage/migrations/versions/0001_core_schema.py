"""Core schema: artifacts, markets, positions, bounties, spend log, exchange rates.

Revision ID: 0001
Revises:
"""

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

from scidex_alloc.storage.schema import ArtifactId, Timestamp, Tokens

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

NOW = sa.func.current_timestamp()
ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def _artifact_fk():
    return sa.Column("artifact_id", ArtifactId(), sa.ForeignKey("artifacts.id"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "artifacts",
        sa.Column("id", ArtifactId(), primary_key=True),
        sa.Column("type", sa.String, nullable=False),
        sa.Column("title", sa.Text),
        sa.Column("created_at", Timestamp, server_default=NOW),
    )
    op.create_index("ix_artifacts_type_id", "artifacts", ["type", "id"])
    op.create_table(
        "markets",
        sa.Column("artifact_id", ArtifactId(), sa.ForeignKey("artifacts.id"), primary_key=True),
        sa.Column("price", sa.Numeric),
        sa.Column("updated_at", Timestamp, server_default=NOW),
    )
    op.create_table(
        "positions",
        sa.Column("id", ID, primary_key=True),
        _artifact_fk(),
        sa.Column("agent_id", sa.String),
        sa.Column("tokens", Tokens(), nullable=False),
        sa.Column("status", sa.String, nullable=False, server_default="open"),
        sa.Column("created_at", Timestamp, server_default=NOW),
        sa.CheckConstraint("status IN ('open', 'closed', 'settled')", name="status"),
    )
    op.create_index(
        "ix_positions_artifact_status_tokens", "positions", ["artifact_id", "status", "tokens"]
    )
    op.create_table(
        "token_bounties",
        sa.Column("id", ID, primary_key=True),
        _artifact_fk(),
        sa.Column("tokens_offered", Tokens(), nullable=False),
        sa.Column("tokens_paid", Tokens(), nullable=False, server_default="0"),
        sa.Column("status", sa.String, nullable=False, server_default="open"),
        sa.Column("expires_at", Timestamp),
        sa.Column("created_at", Timestamp, server_default=NOW),
        sa.CheckConstraint(
            "status IN ('open', 'claimed', 'expired', 'cancelled')", name="status"
        ),
    )
    op.create_index(
        "ix_token_bounties_artifact_status",
        "token_bounties",
        ["artifact_id", "status", "expires_at", "tokens_offered", "tokens_paid"],
    )
    op.create_table(
        "resource_allocations",
        sa.Column("id", ID, primary_key=True),
        _artifact_fk(),
        sa.Column("tokens", Tokens(), nullable=False),
        sa.Column("unit", sa.String),
        sa.Column("units", sa.Numeric(30, 6)),
        sa.Column("rate", sa.Numeric(30, 6)),
        sa.Column("kind", sa.String),
        sa.Column("agent_id", sa.String),
        sa.Column("note", sa.Text),
        sa.Column("idempotency_key", sa.String, unique=True),
        sa.Column("overdraft", sa.Boolean, nullable=False, server_default="0"),
        sa.Column("reverses_id", ID, sa.ForeignKey("resource_allocations.id"), unique=True),
        sa.Column("created_at", Timestamp, server_default=NOW),
    )
    op.create_index(
        "ix_resource_allocations_artifact_tokens", "resource_allocations", ["artifact_id", "tokens"]
    )
    rates = op.create_table(
        "exchange_rates",
        sa.Column("unit", sa.String, primary_key=True),
        sa.Column("units_per_token", sa.Numeric(30, 6), nullable=False),
        sa.Column("updated_at", Timestamp, server_default=NOW),
    )
    op.bulk_insert(
        rates,
        [{"unit": "llm-tokens", "units_per_token": 1000, "updated_at": datetime.now(timezone.utc)}],
    )


def downgrade() -> None:
    for table in (
        "exchange_rates",
        "resource_allocations",
        "token_bounties",
        "positions",
        "markets",
        "artifacts",
    ):
        op.drop_table(table)
