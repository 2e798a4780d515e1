"""Budget snapshots: one row per artifact per hour, day or week bucket.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from scidex_alloc.storage.schema import ArtifactId, Timestamp, Tokens

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budget_snapshots",
        sa.Column("artifact_id", ArtifactId(), sa.ForeignKey("artifacts.id"), primary_key=True),
        sa.Column("period", sa.String, primary_key=True),
        sa.Column("bucket", Timestamp, primary_key=True),
        sa.Column("taken_at", Timestamp, nullable=False),
        sa.Column("demand", Tokens(), nullable=False),
        sa.Column("bounty", Tokens(), nullable=False),
        sa.Column("price", sa.Numeric(12, 6), nullable=False),
        sa.Column("budget", Tokens(), nullable=False),
        sa.Column("spent", Tokens(), nullable=False),
        sa.Column("remaining", Tokens(), nullable=False),
        sa.CheckConstraint("period IN ('hour', 'day', 'week')", name="period"),
    )
    op.create_index(
        "ix_budget_snapshots_period_bucket", "budget_snapshots", ["period", "bucket"]
    )


def downgrade() -> None:
    op.drop_table("budget_snapshots")
