"""The agent work queue: next, done, release, claims."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from scidex_alloc.cli.app import (
    DEFAULT_FORMAT,
    Db,
    Fmt,
    open_allocator,
)
from scidex_alloc.options import CLAIM_LIMIT, EXPLORATION, LEASE_MINUTES, NEXT_LIMIT, UCB_WEIGHT

app = typer.Typer()


@app.command("next")
def next_(
    ctx: typer.Context,
    type_: Annotated[Optional[str], typer.Option("--type", "-t", help="Only this artifact type.")] = None,
    limit: Annotated[Optional[int], typer.Option(
        "--limit", "-n", help=f"How many (default {NEXT_LIMIT}; with --claim, {CLAIM_LIMIT}).")] = None,
    agent: Annotated[Optional[str], typer.Option(
        "--agent", help="Who asks: others' live claims are skipped, yours are shown.")] = None,
    claim: Annotated[bool, typer.Option("--claim", help="Lease the top N to --agent.")] = False,
    lease: Annotated[str, typer.Option("--lease", help="Lease length, e.g. 90s, 30m, 2h.")] = f"{LEASE_MINUTES}m",
    reserve: Annotated[Optional[str], typer.Option(
        "--reserve", help="Only artifacts with this much available, in --unit; with --claim, "
        "each lease holds it.")] = None,
    unit: Annotated[Optional[str], typer.Option(
        "--unit", help="The unit of --reserve: tokens or any unit in `alloc rates`.")] = None,
    ucb_weight: Annotated[float, typer.Option("--ucb-weight", help="W: weight of the UCB term.")] = UCB_WEIGHT,
    exploration: Annotated[float, typer.Option(
        "--exploration", help="C: the UCB exploration constant.")] = EXPLORATION,
    fmt: Fmt = DEFAULT_FORMAT,
    db: Db = None,
):
    """The most valuable next investigations: UCB exploration blended with remaining budget."""
    from scidex_alloc.queue import views
    from scidex_alloc.timeparse import parse_duration

    entries = open_allocator(ctx, db).next(
        type_=type_, limit=limit if limit is not None else (CLAIM_LIMIT if claim else NEXT_LIMIT), agent=agent,
        claim=claim, lease=parse_duration(lease, "--lease"), ucb_weight=ucb_weight,
        exploration=exploration, reserve=reserve, unit=unit)
    views.queue(entries, fmt.value, ucb_weight, claimed=claim)


@app.command()
def done(
    ctx: typer.Context,
    claim_id: Annotated[int, typer.Argument(help="The claim to close.")],
    reward: Annotated[Optional[float], typer.Option(
        "--reward", help="The investigation's outcome, from 0 to 1.")] = None,
    spend: Annotated[Optional[str], typer.Option(
        "--spend", help="What the work cost, in --unit: settles the claim's hold (default: "
        "the held amount), or without a hold records a spend.")] = None,
    unit: Annotated[Optional[str], typer.Option(
        "--unit", help="The unit of --spend (default: the hold's, else tokens).")] = None,
    kind: Annotated[Optional[str], typer.Option(
        "--kind", help="The spend's kind: debate, analysis, extraction, validation or free "
        "text.")] = None,
    fmt: Fmt = DEFAULT_FORMAT,
    db: Db = None,
):
    """Close a claim as a completed investigation, recording its reward and settling its hold."""
    from scidex_alloc import rendering

    info = open_allocator(ctx, db).done(claim_id, reward, spend=spend, unit=unit, kind=kind)
    rendering.emit_object(info, fmt.value, title="Done")


@app.command()
def release(
    ctx: typer.Context,
    claim_id: Annotated[int, typer.Argument(help="The claim to give back.")],
    fmt: Fmt = DEFAULT_FORMAT,
    db: Db = None,
):
    """Give a claim back without an outcome and void its hold; the artifact is free again at once."""
    from scidex_alloc import rendering

    rendering.emit_object(open_allocator(ctx, db).release(claim_id), fmt.value, title="Released")


@app.command("claims")
def claims_(
    ctx: typer.Context,
    agent: Annotated[Optional[str], typer.Option("--agent", help="Only this agent's.")] = None,
    expired: Annotated[bool, typer.Option(
        "--expired", help="Active claims whose lease has run out, instead of live ones.")] = False,
    fmt: Fmt = DEFAULT_FORMAT,
    db: Db = None,
):
    """Active claims and their leases."""
    from scidex_alloc import rendering
    from scidex_alloc.queue.results import CLAIM_COLUMNS

    rows = open_allocator(ctx, db).claims(agent=agent, expired=expired)
    rendering.emit_rows(rows, fmt.value, CLAIM_COLUMNS,
                     title="Expired leases" if expired else "Live claims")
