"""Balances the database keeps: every term of each artifact's budget in one row, summed by
triggers on the source tables, with generated ranking keys and their indexes. The
existing rows are summed once, set-based.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

from scidex_alloc.budgets import balances
from scidex_alloc.budgets.queries import budget_expression
from scidex_alloc.storage.schema import utcnow

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    connection = op.get_bind()
    postgresql = connection.dialect.name == "postgresql"
    amount = "NUMERIC" if postgresql else "INTEGER"
    generated = "STORED" if postgresql else "VIRTUAL"
    keys = balances.key_columns(connection, budget_expression)
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
            budget_key NUMERIC GENERATED ALWAYS AS ({keys['budget_key']}) {generated},
            remaining_key NUMERIC GENERATED ALWAYS AS ({keys['remaining_key']}) {generated},
            CONSTRAINT pk_artifact_balances PRIMARY KEY (artifact_id)
        )""")
    last = " NULLS LAST" if postgresql else ""
    for key in ("budget_key", "remaining_key"):
        name = key.removesuffix("_key")
        op.execute(f"CREATE INDEX ix_artifact_balances_{name} ON artifact_balances "
                   f"({key} DESC{last}, artifact_id)")
        op.execute(f"CREATE INDEX ix_artifact_balances_type_{name} ON artifact_balances "
                   f"(type, {key} DESC{last}, artifact_id)")
    op.execute("CREATE INDEX ix_artifact_balances_next_expiry ON artifact_balances "
               "(next_expiry) WHERE next_expiry IS NOT NULL")
    op.execute("CREATE INDEX ix_artifact_balances_explored ON artifact_balances "
               "(artifact_id) WHERE investigations > 0")
    balances.create_triggers(connection)
    balances.rebuild(connection, utcnow())


def downgrade() -> None:
    balances.drop_triggers(op.get_bind())
    op.drop_table("artifact_balances")
