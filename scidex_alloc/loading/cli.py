"""Filling the database from the command line: load (a file) and generate (synthetic data)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from scidex_alloc.cli.app import (
    Db,
    FileFormat,
    LoadTable,
    creating_allocator,
    open_allocator,
    open_input,
)
from scidex_alloc.errors import USAGE

app = typer.Typer()


@app.command()
def load(
    ctx: typer.Context,
    what: Annotated[LoadTable, typer.Argument(help="Which table to fill.")],
    file: Annotated[str, typer.Argument(help="CSV or JSON Lines file, or - for stdin.")],
    file_format: Annotated[
        Optional[FileFormat],
        typer.Option("--format", help="csv or jsonl (default: from the file's extension)."),
    ] = None,
    db: Db = None,
):
    """Import rows from CSV or JSON Lines; a file with any bad row loads nothing."""
    from scidex_alloc import rendering
    from scidex_alloc.loading import reader, views

    fmt = reader.detect_format(file, file_format.value if file_format else None)
    allocator = open_allocator(ctx, db)
    with open_input(file) as stream, rendering.progress(stream, file) as advance:
        report = allocator.load(what.value, stream, fmt, progress=advance)
    views.load_report(report)
    if not report.ok:
        raise typer.Exit(USAGE)


@app.command()
def generate(
    ctx: typer.Context,
    artifacts: Annotated[int, typer.Option("--artifacts", help="How many artifacts.")] = 300,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same data.")] = 7,
    snapshot_days: Annotated[int, typer.Option(
        "--snapshot-days", help="Daily budget snapshots per artifact, up to 2026-11-01.")] = 0,
    db: Db = None,
):
    """Fill a database with realistic synthetic data (how sample.db is made)."""
    from scidex_alloc import rendering
    from scidex_alloc.loading import sample

    sample.check(artifacts, seed, snapshot_days)
    allocator = creating_allocator(ctx, db)
    allocator.upgrade()
    counts = sample.generate(allocator, artifacts, seed, snapshot_days)
    rendering.message(", ".join(f"{n} {name}" for name, n in counts.items()))
