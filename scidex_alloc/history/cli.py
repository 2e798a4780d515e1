"""Snapshots, history and plans: snapshot, history, snapshots prune, plan."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from scidex_alloc.cli.app import (
    DEFAULT_FORMAT,
    Db,
    Fmt,
    Format,
    Period,
    group_help,
    moment,
    open_allocator,
    usage,
)
from scidex_alloc.options import PERIODS

app = typer.Typer()
snapshots_app = typer.Typer(help="Manage recorded budget snapshots.", callback=group_help,
                            invoke_without_command=True)
app.add_typer(snapshots_app, name="snapshots")


@app.command()
def snapshot(
    ctx: typer.Context,
    type_: Annotated[Optional[str], typer.Option("--type", "-t", help="Only this artifact type.")] = None,
    every: Annotated[Period, typer.Option("--every", help="The bucket this snapshot fills.")] = Period(PERIODS[0]),
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table or json.")] = DEFAULT_FORMAT,
    db: Db = None,
):
    """Record every artifact's budget for the current hour, day or week, once (for cron)."""
    from scidex_alloc import rendering
    from scidex_alloc.history import views

    allocator = open_allocator(ctx, db)
    with rendering.spinner(f"taking the {every.value} snapshot"):
        result = allocator.snapshot(type_=type_, every=every.value)
    views.snapshot_result(result, fmt.value)


@app.command()
def history(
    ctx: typer.Context,
    artifact_id: Annotated[Optional[str], typer.Argument(help="The artifact to chart.")] = None,
    since: Annotated[Optional[str], typer.Option("--since", help="From this date or time.")] = None,
    until: Annotated[Optional[str], typer.Option("--until", help="Up to this date or time.")] = None,
    every: Annotated[Optional[Period], typer.Option(
        "--every", help="Which snapshots (default: the finest there are).")] = None,
    type_: Annotated[Optional[str], typer.Option(
        "--type", "-t", help="Movers: only this artifact type.")] = None,
    top: Annotated[Optional[int], typer.Option(
        "--top", help="Movers: the N artifacts whose budget moved most.")] = None,
    fmt: Fmt = DEFAULT_FORMAT,
    db: Db = None,
):
    """An artifact's budget history with a chart, or with --top the biggest movers."""
    from scidex_alloc import rendering
    from scidex_alloc.history import views
    from scidex_alloc.history.results import MOVER_COLUMNS

    window = (moment(since, "--since"), moment(until, "--until"))
    period = every.value if every else None
    if (artifact_id is None) == (top is None):
        raise usage("give ARTIFACT_ID, or --top N (with --type T) for the biggest movers")
    if artifact_id is None:
        rows = open_allocator(ctx, db).movers(type_, top, *window, every=period)
        rendering.emit_rows(rows, fmt.value, MOVER_COLUMNS, title="Budget movers")
        return
    if type_ is not None:
        raise usage("--type goes with --top, not with ARTIFACT_ID")
    points = open_allocator(ctx, db).history(artifact_id, *window, every=period)
    if not points:
        rendering.message(f"no snapshots of {artifact_id} yet: take them with `alloc snapshot`")
    views.history(artifact_id, points, fmt.value)


@snapshots_app.command("prune")
def snapshots_prune(
    ctx: typer.Context,
    keep: Annotated[str, typer.Option("--keep", help="Keep this much history, e.g. 7d, 12w.")],
    every: Annotated[Optional[Period], typer.Option(
        "--every", help="Prune only this period's snapshots.")] = None,
    db: Db = None,
):
    """Delete snapshots older than --keep (for example hourly ones after 7 days)."""
    from scidex_alloc import rendering
    from scidex_alloc.timeparse import parse_duration

    removed = open_allocator(ctx, db).prune(parse_duration(keep, "--keep"),
                                   every.value if every else None)
    rendering.message(f"removed {removed} snapshot rows older than {keep}")


@app.command()
def plan(
    ctx: typer.Context,
    pool: Annotated[str, typer.Option("--pool", help="Whole units to split.")],
    unit: Annotated[str, typer.Option("--unit", help="The pool's unit.")] = "tokens",
    type_: Annotated[Optional[str], typer.Option("--type", "-t", help="Only this artifact type.")] = None,
    cap: Annotated[Optional[str], typer.Option("--cap", help="At most this much per artifact.")] = None,
    minimum: Annotated[Optional[str], typer.Option(
        "--min", help="Drop shares below this and redistribute them.")] = None,
    fmt: Fmt = DEFAULT_FORMAT,
    db: Db = None,
):
    """Split a fixed pool (say tonight's LLM tokens) by remaining budget, to the last unit."""
    from scidex_alloc import rendering
    from scidex_alloc.history.results import PLAN_COLUMNS

    parts = open_allocator(ctx, db).plan(pool, unit=unit, type_=type_, cap=cap, minimum=minimum)
    rendering.emit_rows(parts, fmt.value, PLAN_COLUMNS, title=f"Plan: {pool} {unit}")
