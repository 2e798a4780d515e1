"""The schema on the command line: db upgrade and db current."""

from __future__ import annotations

from scidex_alloc.cli.app import (
    Db,
    creating_allocator,
    db_app,
    open_allocator,
)


@db_app.command("upgrade")
def db_upgrade(db: Db = None):
    """Create the schema or upgrade it to the newest revision (safe to repeat)."""
    from scidex_alloc import rendering

    allocator = creating_allocator(db)
    revision = allocator.upgrade()
    rendering.message(f"{allocator.target.masked()} is at revision {revision}")


@db_app.command("current")
def db_current(db: Db = None):
    """Show the database's schema revision and the newest one this version knows."""
    current, head = open_allocator(db).current()
    state = "up to date" if current == head else f"behind {head}: run alloc db upgrade"
    print(f"{current or 'none'} ({state})")
