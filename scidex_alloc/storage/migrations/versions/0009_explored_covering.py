"""The explored artifacts' index covers what the work queue's scans of them read
(`balances.EXPLORED_COLUMNS`), so `next` reads that index alone instead of one table page
per explored candidate. The upgrade drops the narrow index; `balances.install` makes the
covering one once the upgrade reaches the newest revision (storage/migrate.py).

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

EXPLORED = "ix_artifact_balances_explored"


def upgrade() -> None:
    op.execute(f"DROP INDEX IF EXISTS {EXPLORED}")


def downgrade() -> None:
    op.execute(f"DROP INDEX IF EXISTS {EXPLORED}")
    op.execute(f"CREATE INDEX {EXPLORED} ON artifact_balances (artifact_id) "
               "WHERE investigations > 0")
