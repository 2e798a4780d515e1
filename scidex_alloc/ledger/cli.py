"""The spend ledger: spend (one, a file, a reversal), log, audit."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from scidex_alloc.cli.app import (
    DEFAULT_FORMAT,
    Db,
    FileFormat,
    Fmt,
    Format,
    moment,
    open_allocator,
    open_input,
    usage,
)
from scidex_alloc.errors import AUDIT_FAILED

app = typer.Typer()


@app.command()
def spend(
    ctx: typer.Context,
    artifact_id: Annotated[Optional[str], typer.Argument(help="Artifact to charge.")] = None,
    amount: Annotated[Optional[str], typer.Argument(help="Amount, in --unit.")] = None,
    unit: Annotated[str, typer.Option("--unit", help="tokens or any unit in `alloc rates`.")] = "tokens",
    kind: Annotated[Optional[str], typer.Option(
        "--kind", help="debate, analysis, extraction, validation or free text.")] = None,
    agent: Annotated[Optional[str], typer.Option("--agent", help="Who spent it.")] = None,
    note: Annotated[Optional[str], typer.Option("--note", help="Free text.")] = None,
    key: Annotated[Optional[str], typer.Option(
        "--key", help="Idempotency key: a retry with the same key records nothing new.")] = None,
    allow_overdraft: Annotated[bool, typer.Option(
        "--allow-overdraft", help="Record even beyond the remaining budget (flagged).")] = False,
    file: Annotated[Optional[str], typer.Option(
        "--file", help="Apply a CSV or JSON Lines file of spends (- for stdin).")] = None,
    file_format: Annotated[Optional[FileFormat], typer.Option(
        "--file-format", help="csv or jsonl (default: from --file's extension).")] = None,
    atomic: Annotated[bool, typer.Option(
        "--atomic", help="With --file: all lines or none.")] = False,
    reverse: Annotated[Optional[int], typer.Option(
        "--reverse", help="Append the entry that cancels spend ID.", metavar="ID")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table or json.")] = DEFAULT_FORMAT,
    db: Db = None,
):
    """Record research spending against an artifact's budget, exactly once."""
    from scidex_alloc import rendering
    from scidex_alloc.ledger import views

    modes = sum(x is not None for x in (file, reverse)) + (artifact_id is not None)
    if modes != 1:
        raise usage("give ARTIFACT_ID AMOUNT, or --file FILE, or --reverse ID")
    if file is not None:
        from scidex_alloc.loading import reader

        fmt_in = reader.detect_format(file, file_format.value if file_format else None)
        allocator = open_allocator(ctx, db)
        with open_input(file) as stream, rendering.progress(stream, file) as advance:
            summary = allocator.spend_file(stream, fmt_in, atomic=atomic, progress=advance)
        views.batch_summary(summary, fmt.value)
        raise typer.Exit(summary.exit_code)
    if reverse is not None:
        record = open_allocator(ctx, db).reverse(reverse, agent=agent, note=note)
    else:
        if amount is None:
            raise usage("missing AMOUNT: alloc spend ARTIFACT_ID AMOUNT")
        record = open_allocator(ctx, db).spend(artifact_id, amount, unit=unit, kind=kind, agent=agent,
                                      note=note, key=key, allow_overdraft=allow_overdraft)
    views.spend_record(record, fmt.value)


@app.command("log")
def log_(
    ctx: typer.Context,
    artifact_id: Annotated[Optional[str], typer.Argument(help="Only this artifact.")] = None,
    since: Annotated[Optional[str], typer.Option(
        "--since", help="Only entries at or after this ISO 8601 date or time (UTC).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", help="At most N rows.")] = None,
    fmt: Fmt = DEFAULT_FORMAT,
    db: Db = None,
):
    """The spend log, oldest first (reversals are entries of their own)."""
    from scidex_alloc import rendering
    from scidex_alloc.ledger.results import LOG_COLUMNS

    rows = open_allocator(ctx, db).log(artifact_id, moment(since, "--since"), limit)
    rendering.emit_rows(rows, fmt.value, LOG_COLUMNS, title="Spend log")


@app.command()
def audit(ctx: typer.Context, fmt: Fmt = DEFAULT_FORMAT, db: Db = None):
    """Check the ledger's invariants and the data; exit 6 if anything is breached."""
    from scidex_alloc.ledger import views

    checks = open_allocator(ctx, db).audit()
    views.audit_report(checks, fmt.value)
    if not all(check.ok for check in checks):
        raise typer.Exit(AUDIT_FAILED)
