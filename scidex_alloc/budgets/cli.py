"""Budgets on the command line: rank, budget, convert, rates and rates set."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from scidex_alloc.cli.app import (
    DEFAULT_FORMAT,
    DEFAULT_SORT_KEY,
    By,
    Db,
    Fmt,
    open_allocator,
)

app = typer.Typer()
rates_app = typer.Typer(help="Exchange rates between tokens and other units.",
                        invoke_without_command=True)
app.add_typer(rates_app, name="rates")


@app.command()
def rank(
    ctx: typer.Context,
    type_: Annotated[Optional[str], typer.Option("--type", "-t", help="Only this artifact type.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", help="At most N rows.")] = None,
    by: Annotated[By, typer.Option("--by", help="Sort key, descending.")] = DEFAULT_SORT_KEY,
    fmt: Fmt = DEFAULT_FORMAT,
    db: Db = None,
):
    """Artifacts ranked by research budget (ties by artifact id)."""
    from scidex_alloc import rendering
    from scidex_alloc.budgets.results import BUDGET_COLUMNS

    rows = open_allocator(ctx, db).rank(type_=type_, limit=limit, by=by.value)
    title = f"Research budgets{f' ({type_})' if type_ else ''} by {by.value}"
    rendering.emit_rows(rows, fmt.value, BUDGET_COLUMNS, title=title)


@app.command()
def budget(
    ctx: typer.Context,
    artifact_id: Annotated[str, typer.Argument(help="Artifact id.")],
    fmt: Fmt = DEFAULT_FORMAT,
    db: Db = None,
):
    """One artifact's budget, how each term was computed, and its value in every unit."""
    from scidex_alloc.budgets import views

    allocator = open_allocator(ctx, db)
    views.budget_detail(allocator.budget(artifact_id), fmt.value, allocator.params)


@app.command()
def convert(
    ctx: typer.Context,
    amount: Annotated[str, typer.Argument(help="The amount to convert.")],
    from_unit: Annotated[str, typer.Option("--from", help="Unit of AMOUNT.")] = "tokens",
    to_unit: Annotated[str, typer.Option("--to", help="Unit to convert into.")] = "llm-tokens",
    fmt: Fmt = DEFAULT_FORMAT,
    db: Db = None,
):
    """Convert between tokens and other units (such as llm-tokens) at the current rate."""
    from scidex_alloc import rendering

    c = open_allocator(ctx, db).convert(amount, from_unit, to_unit)
    rendering.emit_object(
        {"amount": c.amount, "from": c.from_unit, "to": c.to_unit, "rate": c.rate,
         "result": c.result},
        fmt.value,
    )


@rates_app.callback()
def rates(ctx: typer.Context, fmt: Fmt = DEFAULT_FORMAT, db: Db = None):
    """List exchange rates (units per token); `alloc rates set` changes one."""
    if ctx.invoked_subcommand is not None:
        return
    from scidex_alloc import rendering

    rendering.emit_rows(open_allocator(ctx, db).rates(), fmt.value, ("unit", "units_per_token", "updated_at"),
                     title="Exchange rates (units per token)")


@rates_app.command("set")
def rates_set(
    ctx: typer.Context,
    unit: Annotated[str, typer.Argument(help="Unit name, e.g. llm-tokens.")],
    units_per_token: Annotated[str, typer.Argument(help="How many UNITs one token buys.")],
    fmt: Fmt = DEFAULT_FORMAT,
    db: Db = None,
):
    """Set the rate of UNIT (creating the unit if new)."""
    from scidex_alloc import rendering

    rate = open_allocator(ctx, db).set_rate(unit, units_per_token)
    rendering.emit_object(rate, fmt.value)
