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
    (indexes, triggers, totals; and their rows summed afresh when a revision crossed
    changes what a balance holds): revisions hold only the tables."""
    newest = head()
    before = current(connection)
    if before == newest:
        return newest
    command.upgrade(_config(connection), "head")
    from scidex_alloc.budgets import balances
    from scidex_alloc.storage.schema import utcnow

    balances.install(connection, utcnow(), summed=_changes_balances(before, newest))
    return newest


def _changes_balances(before: str | None, newest: str) -> bool:
    """Whether a revision after `before` up to `newest` says CHANGES_BALANCES."""
    script = ScriptDirectory.from_config(_config())
    return any(getattr(revision.module, "CHANGES_BALANCES", False)
               for revision in script.iterate_revisions(newest, before))
