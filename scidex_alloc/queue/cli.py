"""The agent work queue: next, done, release, claims."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from scidex_alloc.cli.app import (
    Db,
    Fmt,
    Format,
    app,
    open_allocator,
)


@app.command("next")
def next_(
    type_: Annotated[Optional[str], typer.Option("--type", "-t", help="Only this artifact type.")] = None,
    limit: Annotated[Optional[int], typer.Option(
        "--limit", "-n", help="How many (default 10; with --claim, 1).")] = None,
    agent: Annotated[Optional[str], typer.Option(
        "--agent", help="Who asks: others' live claims are skipped, yours are shown.")] = None,
    claim: Annotated[bool, typer.Option("--claim", help="Lease the top N to --agent.")] = False,
    lease: Annotated[str, typer.Option("--lease", help="Lease length, e.g. 90s, 30m, 2h.")] = "30m",
    ucb_weight: Annotated[float, typer.Option("--ucb-weight", help="W: weight of the UCB term.")] = 0.7,
    exploration: Annotated[float, typer.Option(
        "--exploration", help="C: the UCB exploration constant.")] = 1.4142135623730951,
    fmt: Fmt = Format.table,
    db: Db = None,
):
    """The most valuable next investigations: UCB exploration blended with remaining budget."""
    from scidex_alloc.queue import views
    from scidex_alloc.timeparse import parse_duration

    entries = open_allocator(db).next(
        type_=type_, limit=limit if limit is not None else (1 if claim else 10), agent=agent,
        claim=claim, lease=parse_duration(lease, "--lease"), ucb_weight=ucb_weight,
        exploration=exploration)
    views.queue(entries, fmt.value, ucb_weight, claimed=claim)


@app.command()
def done(
    claim_id: Annotated[int, typer.Argument(help="The claim to close.")],
    reward: Annotated[Optional[float], typer.Option(
        "--reward", help="The investigation's outcome, from 0 to 1.")] = None,
    fmt: Fmt = Format.table,
    db: Db = None,
):
    """Close a claim as a completed investigation, recording its reward."""
    from scidex_alloc import rendering

    rendering.emit_object(open_allocator(db).done(claim_id, reward), fmt.value, title="Done")


@app.command()
def release(
    claim_id: Annotated[int, typer.Argument(help="The claim to give back.")],
    fmt: Fmt = Format.table,
    db: Db = None,
):
    """Give a claim back without an outcome; the artifact is free again at once."""
    from scidex_alloc import rendering

    rendering.emit_object(open_allocator(db).release(claim_id), fmt.value, title="Released")


@app.command("claims")
def claims_(
    agent: Annotated[Optional[str], typer.Option("--agent", help="Only this agent's.")] = None,
    expired: Annotated[bool, typer.Option(
        "--expired", help="Active claims whose lease has run out, instead of live ones.")] = False,
    fmt: Fmt = Format.table,
    db: Db = None,
):
    """Active claims and their leases."""
    from scidex_alloc import rendering
    from scidex_alloc.queue.results import CLAIM_COLUMNS

    rows = open_allocator(db).claims(agent=agent, expired=expired)
    rendering.emit_rows(rows, fmt.value, CLAIM_COLUMNS,
                     title="Expired leases" if expired else "Live claims")
