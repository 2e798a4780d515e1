"""Holds: hold, settle, void, holds."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from scidex_alloc.cli.app import DEFAULT_FORMAT, Db, Fmt, Format, open_allocator
from scidex_alloc.options import HOLD_TTL_MINUTES

app = typer.Typer()
Unit = Annotated[Optional[str], typer.Option("--unit", help="tokens or any unit in `alloc rates`.")]
OneFormat = Annotated[Format, typer.Option("--format", "-f", help="table or json.")]


@app.command()
def hold(
    ctx: typer.Context,
    artifact_id: Annotated[str, typer.Argument(help="Artifact whose budget to reserve.")],
    amount: Annotated[str, typer.Argument(help="Amount, in --unit.")],
    unit: Unit = None,
    agent: Annotated[Optional[str], typer.Option("--agent", help="Who holds it.")] = None,
    ttl: Annotated[str, typer.Option(
        "--ttl", help="How long it lives unless settled or voided, e.g. 90s, 30m, 2h.")
    ] = f"{HOLD_TTL_MINUTES}m",
    key: Annotated[Optional[str], typer.Option(
        "--key", help="Idempotency key: a retry with the same key places nothing new.")] = None,
    note: Annotated[Optional[str], typer.Option("--note", help="Free text.")] = None,
    fmt: OneFormat = DEFAULT_FORMAT,
    db: Db = None,
):
    """Reserve budget for work whose cost is known only afterwards (exit 3 beyond what is available)."""
    from scidex_alloc.holds import views
    from scidex_alloc.timeparse import parse_duration

    record = open_allocator(ctx, db).hold(artifact_id, amount, unit=unit, agent=agent,
                                          ttl=parse_duration(ttl, "--ttl"), key=key, note=note)
    views.hold_record(record, fmt.value, "Replayed (already held)" if record.replayed else "Held")


@app.command()
def settle(
    ctx: typer.Context,
    hold_id: Annotated[int, typer.Argument(help="The hold to settle.")],
    amount: Annotated[Optional[str], typer.Argument(
        help="What the work cost, in --unit (default: the held amount).")] = None,
    unit: Unit = None,
    kind: Annotated[Optional[str], typer.Option(
        "--kind", help="debate, analysis, extraction, validation or free text.")] = None,
    note: Annotated[Optional[str], typer.Option("--note", help="Free text.")] = None,
    fmt: OneFormat = DEFAULT_FORMAT,
    db: Db = None,
):
    """Record what held work cost as one spend entry, and end the hold."""
    from scidex_alloc.ledger import views

    record = open_allocator(ctx, db).settle(hold_id, amount, unit=unit, kind=kind, note=note)
    views.spend_record(record, fmt.value)


@app.command()
def void(
    ctx: typer.Context,
    hold_id: Annotated[int, typer.Argument(help="The hold to release.")],
    fmt: OneFormat = DEFAULT_FORMAT,
    db: Db = None,
):
    """Release a hold without spending."""
    from scidex_alloc.holds import views

    record = open_allocator(ctx, db).void(hold_id)
    views.hold_record(record, fmt.value, "Already voided" if record.replayed else "Voided")


@app.command("holds")
def holds_(
    ctx: typer.Context,
    artifact_id: Annotated[Optional[str], typer.Argument(help="Only this artifact's.")] = None,
    agent: Annotated[Optional[str], typer.Option("--agent", help="Only this agent's.")] = None,
    every: Annotated[bool, typer.Option(
        "--all", help="Every hold and its outcome, not only the live ones.")] = False,
    fmt: Fmt = DEFAULT_FORMAT,
    db: Db = None,
):
    """Live holds (active and unexpired), oldest first."""
    from scidex_alloc import rendering
    from scidex_alloc.holds.results import HOLD_LIST_COLUMNS

    rows = open_allocator(ctx, db).holds(artifact_id, agent=agent, every=every)
    rendering.emit_rows(rows, fmt.value, HOLD_LIST_COLUMNS,
                        title="Holds" if every else "Live holds")
