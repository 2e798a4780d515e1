"""The artifacts whose positions changed since their balance summed its demand: the
triggers on positions append to `pending_demand` instead of updating the balance, and
readers sum a pending artifact's demand again until it is folded (budgets/folding.py).
The triggers are made by `balances.install` once the upgrade reaches the newest revision
(storage/migrate.py).

The downgrade folds every pending artifact into its balance, makes the position triggers
that add to the balance again (as revision 0009 had them), and drops the table.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

from scidex_alloc.storage.schema import ArtifactId

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pending_demand",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("artifact_id", ArtifactId(), nullable=False),
    )


def downgrade() -> None:
    from scidex_alloc.budgets import ddl, folding
    from scidex_alloc.storage.schema import utcnow

    connection = op.get_bind()
    folding.fold_pending(connection, utcnow(), wait=True)
    ddl.create_triggers(connection, pending=False)
    op.drop_table("pending_demand")
