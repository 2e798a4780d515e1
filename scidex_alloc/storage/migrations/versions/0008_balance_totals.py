"""The balances' totals per artifact type, so that the pipeline reads a few rows instead
of summing every balance: rows of differences appended by triggers on
artifact_balances, folded every so many rows. The rows and triggers are made by
`balances.install` once the upgrade reaches the newest revision (storage/migrate.py).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # As revision 0005's amounts: INTEGER on SQLite, NUMERIC on PostgreSQL.
    amount = sa.Numeric(30, 0).with_variant(sa.Integer, "sqlite")
    op.create_table(
        "balance_totals",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("type", sa.String, nullable=False),
        sa.Column("artifacts", sa.BigInteger, nullable=False),
        sa.Column("invalid", sa.BigInteger, nullable=False),
        *(sa.Column(f"{name}{part}", amount, nullable=False)
          for name in ("demand", "bounty", "budget", "spent", "remaining")
          for part in ("", "_micro")),
    )


def downgrade() -> None:
    from scidex_alloc.budgets import totals

    totals.drop_triggers(op.get_bind())
    op.drop_table("balance_totals")
