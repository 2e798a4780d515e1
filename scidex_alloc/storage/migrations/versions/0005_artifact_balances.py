"""Balances the database keeps: every term of each artifact's budget in one row, summed by
triggers on the source tables, with generated ranking keys and their indexes. The
rows, indexes and triggers are made by `balances.install` once the upgrade reaches the
newest revision (storage/migrate.py), as that version defines them.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

from scidex_alloc.budgets import ddl
from scidex_alloc.budgets.queries import budget_expression

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None
# What a balance holds changes here: an upgrade across it sums every balance again.
CHANGES_BALANCES = True


def upgrade() -> None:
    connection = op.get_bind()
    postgresql = connection.dialect.name == "postgresql"
    amount = "NUMERIC" if postgresql else "INTEGER"
    keys = ddl.key_columns(connection, budget_expression)
    connection.exec_driver_sql(f"""
        CREATE TABLE artifact_balances (
            artifact_id {'VARCHAR COLLATE "C"' if postgresql else 'VARCHAR'} NOT NULL,
            type VARCHAR NOT NULL,
            demand {amount} NOT NULL DEFAULT 0,
            demand_invalid INTEGER NOT NULL DEFAULT 0,
            bounty {amount} NOT NULL DEFAULT 0,
            bounty_invalid INTEGER NOT NULL DEFAULT 0,
            next_expiry {'TIMESTAMP WITH TIME ZONE' if postgresql else 'REAL'},
            price NUMERIC,
            spent {amount} NOT NULL DEFAULT 0,
            spent_invalid INTEGER NOT NULL DEFAULT 0,
            investigations INTEGER NOT NULL DEFAULT 0,
            reward_total {amount} NOT NULL DEFAULT 0,
            budget_key NUMERIC GENERATED ALWAYS AS ({keys['budget_key']}) STORED,
            remaining_key NUMERIC GENERATED ALWAYS AS ({keys['remaining_key']}) STORED,
            CONSTRAINT pk_artifact_balances PRIMARY KEY (artifact_id)
        )""")


def downgrade() -> None:
    ddl.drop_triggers(op.get_bind())
    op.drop_table("artifact_balances")
