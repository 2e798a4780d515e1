"""Indexes for the dashboard's reads of the spend log: by time (research activity over a
window) and by agent (what each agent spent, and when it last did).

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_resource_allocations_created_at", "resource_allocations",
                    ["created_at"])
    op.create_index("ix_resource_allocations_agent", "resource_allocations",
                    ["agent_id", "created_at", "tokens"])


def downgrade() -> None:
    op.drop_index("ix_resource_allocations_agent", "resource_allocations")
    op.drop_index("ix_resource_allocations_created_at", "resource_allocations")
