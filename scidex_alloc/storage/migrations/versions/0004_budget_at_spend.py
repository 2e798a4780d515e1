"""The spend log keeps the artifact's budget at the moment each entry was recorded.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from scidex_alloc.storage.schema import Tokens

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("resource_allocations", sa.Column("budget_at_spend", Tokens()))


def downgrade() -> None:
    with op.batch_alter_table("resource_allocations") as batch:
        batch.drop_column("budget_at_spend")
