"""The schema on the command line: db upgrade and db current."""

from __future__ import annotations

import typer

from scidex_alloc.cli.app import (
    Db,
    creating_allocator,
    group_help,
    open_allocator,
)

app = typer.Typer()
db_app = typer.Typer(help="Create, upgrade and inspect the database schema.", callback=group_help,
                     invoke_without_command=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, db: Db = None):
    """Create the schema or upgrade it to the newest revision (safe to repeat)."""
    from scidex_alloc import rendering

    allocator = creating_allocator(ctx, db)
    revision = allocator.upgrade()
    rendering.message(f"{allocator.target.masked()} is at revision {revision}")


@db_app.command("current")
def db_current(ctx: typer.Context, db: Db = None):
    """Show the database's schema revision and the newest one this version knows."""
    current, head = open_allocator(ctx, db).current()
    state = "up to date" if current == head else f"behind {head}: run alloc db upgrade"
    print(f"{current or 'none'} ({state})")


@db_app.command("rebuild-balances")
def db_rebuild_balances(ctx: typer.Context, db: Db = None):
    """Sum every artifact's maintained balance again from the source tables (after manual
    surgery or a restore; alloc audit's balances-exact tells when)."""
    from scidex_alloc import rendering

    artifacts, wrong = open_allocator(ctx, db).rebuild_balances()
    rendering.message(f"rebuilt the balances of {artifacts} artifacts; {wrong} differed")
