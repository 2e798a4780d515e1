"""Work queue: claims on artifacts and the investigations they become.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from scidex_alloc.storage.schema import ArtifactId, Timestamp

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ACTIVE = sa.text("status = 'active'")


def upgrade() -> None:
    op.create_table(
        "claims",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("artifact_id", ArtifactId(), sa.ForeignKey("artifacts.id"), nullable=False),
        sa.Column("agent_id", sa.String, nullable=False),
        sa.Column("status", sa.String, nullable=False, server_default="active"),
        sa.Column("claimed_at", Timestamp, nullable=False),
        sa.Column("lease_expires_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp),
        sa.Column("reward", sa.Numeric(12, 9)),
        sa.CheckConstraint(
            "status IN ('active', 'done', 'released', 'expired')", name="status"
        ),
        sa.CheckConstraint("reward IS NULL OR (reward >= 0 AND reward <= 1)", name="reward"),
    )
    op.create_index("ix_claims_artifact_status", "claims", ["artifact_id", "status", "reward"])
    op.create_index("ix_claims_agent_status", "claims", ["agent_id", "status"])
    op.create_index("uq_claims_one_active", "claims", ["artifact_id"], unique=True,
                    postgresql_where=ACTIVE, sqlite_where=ACTIVE)


def downgrade() -> None:
    op.drop_table("claims")
