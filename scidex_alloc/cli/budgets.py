"""Budgets, rates, loading and the schema: rank, budget, convert, rates, load, generate, db."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from scidex_alloc.cli.app import (
    By,
    Db,
    FileFormat,
    Fmt,
    Format,
    LoadTable,
    app,
    creating_allocator,
    db_app,
    open_allocator,
    open_input,
    rates_app,
)
from scidex_alloc.errors import USAGE


@app.command()
def rank(
    type_: Annotated[Optional[str], typer.Option("--type", "-t", help="Only this artifact type.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", help="At most N rows.")] = None,
    by: Annotated[By, typer.Option("--by", help="Sort key, descending.")] = By.budget,
    fmt: Fmt = Format.table,
    db: Db = None,
):
    """Artifacts ranked by research budget (ties by artifact id)."""
    from scidex_alloc import render
    from scidex_alloc.results.budgets import BUDGET_COLUMNS

    rows = open_allocator(db).rank(type_=type_, limit=limit, by=by.value)
    title = f"Research budgets{f' ({type_})' if type_ else ''} by {by.value}"
    render.emit_rows(rows, fmt.value, BUDGET_COLUMNS, title=title)


@app.command()
def budget(
    artifact_id: Annotated[str, typer.Argument(help="Artifact id.")],
    fmt: Fmt = Format.table,
    db: Db = None,
):
    """One artifact's budget, how each term was computed, and its value in every unit."""
    from scidex_alloc import render

    allocator = open_allocator(db)
    render.budget_detail(allocator.budget(artifact_id), fmt.value, allocator.params)


@app.command()
def convert(
    amount: Annotated[str, typer.Argument(help="The amount to convert.")],
    from_unit: Annotated[str, typer.Option("--from", help="Unit of AMOUNT.")] = "tokens",
    to_unit: Annotated[str, typer.Option("--to", help="Unit to convert into.")] = "llm-tokens",
    fmt: Fmt = Format.table,
    db: Db = None,
):
    """Convert between tokens and other units (such as llm-tokens) at the current rate."""
    from scidex_alloc import render

    c = open_allocator(db).convert(amount, from_unit, to_unit)
    render.emit_object(
        {"amount": c.amount, "from": c.from_unit, "to": c.to_unit, "rate": c.rate,
         "result": c.result},
        fmt.value,
    )


@rates_app.callback()
def rates(ctx: typer.Context, fmt: Fmt = Format.table, db: Db = None):
    """List exchange rates (units per token); `alloc rates set` changes one."""
    if ctx.invoked_subcommand is not None:
        return
    from scidex_alloc import render

    render.emit_rows(open_allocator(db).rates(), fmt.value, ("unit", "units_per_token", "updated_at"),
                     title="Exchange rates (units per token)")


@rates_app.command("set")
def rates_set(
    unit: Annotated[str, typer.Argument(help="Unit name, e.g. llm-tokens.")],
    units_per_token: Annotated[str, typer.Argument(help="How many UNITs one token buys.")],
    fmt: Fmt = Format.table,
    db: Db = None,
):
    """Set the rate of UNIT (creating the unit if new)."""
    from scidex_alloc import render

    rate = open_allocator(db).set_rate(unit, units_per_token)
    render.emit_object(rate, fmt.value)


@app.command()
def load(
    what: Annotated[LoadTable, typer.Argument(help="Which table to fill.")],
    file: Annotated[str, typer.Argument(help="CSV or JSON Lines file, or - for stdin.")],
    file_format: Annotated[
        Optional[FileFormat],
        typer.Option("--format", help="csv or jsonl (default: from the file's extension)."),
    ] = None,
    db: Db = None,
):
    """Import rows from CSV or JSON Lines; a file with any bad row loads nothing."""
    from scidex_alloc import loader, render

    fmt = loader.detect_format(file, file_format.value if file_format else None)
    allocator = open_allocator(db)
    with open_input(file) as stream, render.progress(stream, file) as advance:
        report = allocator.load(what.value, stream, fmt, progress=advance)
    render.load_report(report)
    if not report.ok:
        raise typer.Exit(USAGE)


@app.command()
def generate(
    artifacts: Annotated[int, typer.Option("--artifacts", help="How many artifacts.")] = 300,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same data.")] = 7,
    snapshot_days: Annotated[int, typer.Option(
        "--snapshot-days", help="Daily budget snapshots per artifact, up to 2026-11-01.")] = 0,
    db: Db = None,
):
    """Fill a database with realistic synthetic data (how sample.db is made)."""
    from scidex_alloc import render, sample

    sample.check(artifacts, seed, snapshot_days)
    allocator = creating_allocator(db)
    allocator.upgrade()
    counts = sample.generate(allocator, artifacts, seed, snapshot_days)
    render.message(", ".join(f"{n} {name}" for name, n in counts.items()))

@db_app.command("upgrade")
def db_upgrade(db: Db = None):
    """Create the schema or upgrade it to the newest revision (safe to repeat)."""
    from scidex_alloc import render

    allocator = creating_allocator(db)
    revision = allocator.upgrade()
    render.message(f"{allocator.target.masked()} is at revision {revision}")


@db_app.command("current")
def db_current(db: Db = None):
    """Show the database's schema revision and the newest one this version knows."""
    current, head = open_allocator(db).current()
    state = "up to date" if current == head else f"behind {head}: run alloc db upgrade"
    print(f"{current or 'none'} ({state})")
