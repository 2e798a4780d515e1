"""Holds: budget reserved for an agent's work, counted against the artifact's available
budget until settled, voided or expired; the spend entry that settles one names it; the
balances keep each artifact's held total.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from scidex_alloc.budgets import ddl
from scidex_alloc.storage.schema import ArtifactId, Timestamp, Tokens

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None
# What a balance holds changes here: an upgrade across it sums every balance again.
CHANGES_BALANCES = True


def upgrade() -> None:
    row_id = sa.BigInteger().with_variant(sa.Integer, "sqlite")
    op.create_table(
        "holds",
        sa.Column("id", row_id, primary_key=True),
        sa.Column("artifact_id", ArtifactId(), sa.ForeignKey("artifacts.id"), nullable=False),
        sa.Column("tokens", Tokens(), nullable=False),
        sa.Column("unit", sa.String),
        sa.Column("units", sa.Numeric(30, 6)),
        sa.Column("rate", sa.Numeric(30, 6)),
        sa.Column("agent_id", sa.String),
        sa.Column("note", sa.Text),
        sa.Column("idempotency_key", sa.String, unique=True),
        sa.Column("status", sa.String, nullable=False, server_default="active"),
        sa.Column("claim_id", row_id, sa.ForeignKey("claims.id")),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp),
        sa.Column("budget_at_hold", Tokens()),
        sa.Column("available_at_settle", Tokens()),
        sa.CheckConstraint("status IN ('active', 'settled', 'voided')", name="status"),
    )
    op.create_index("ix_holds_artifact_status", "holds",
                    ["artifact_id", "status", "expires_at", "tokens"])
    op.create_index("ix_holds_agent_status", "holds", ["agent_id", "status"])
    op.create_index("ix_holds_claim_id", "holds", ["claim_id"])
    op.add_column("resource_allocations", sa.Column("hold_id", row_id))
    op.create_index("uq_resource_allocations_hold_id", "resource_allocations", ["hold_id"],
                    unique=True)
    # As revision 0005's columns: whole micro-tokens (INTEGER on SQLite, NUMERIC on
    # PostgreSQL), and an instant key (a Julian day number on SQLite).
    for column in (sa.Column("held", sa.Numeric(30, 0).with_variant(sa.Integer, "sqlite"),
                             nullable=False, server_default="0"),
                   sa.Column("held_invalid", sa.Integer, nullable=False, server_default="0"),
                   sa.Column("held_expiry", Timestamp().with_variant(sa.Float, "sqlite"))):
        op.add_column("artifact_balances", column)


def downgrade() -> None:
    connection = op.get_bind()
    ddl.drop_triggers(connection)
    connection.exec_driver_sql("DROP INDEX IF EXISTS ix_artifact_balances_held_expiry")
    for column in ("held_expiry", "held_invalid", "held"):  # SQLite 3.35+ drops columns too
        connection.exec_driver_sql(f"ALTER TABLE artifact_balances DROP COLUMN {column}")
    op.drop_index("uq_resource_allocations_hold_id", "resource_allocations")
    connection.exec_driver_sql("ALTER TABLE resource_allocations DROP COLUMN hold_id")
    op.drop_table("holds")
