"""Alembic, driven from code: the revisions ship inside the package."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", "scidex_alloc.storage:migrations")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection) -> str:
    """Create or upgrade the schema to the newest revision; a no-op when already there.
    Any upgrade ends by installing the maintained balances as this version defines them
    (their rows summed afresh, indexes, triggers): revisions hold only the tables."""
    newest = head()
    if current(connection) == newest:
        return newest
    command.upgrade(_config(connection), "head")
    from scidex_alloc.budgets import balances
    from scidex_alloc.storage.schema import utcnow

    balances.install(connection, utcnow())
    return newest
