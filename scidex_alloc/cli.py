"""The `alloc` command: parse arguments, call the allocator service, hand results to render.

No SQL and no business rules live here.
"""

from __future__ import annotations

import sys
from enum import Enum
from typing import Annotated, Optional

import typer

from scidex_alloc.errors import AUDIT_FAILED, DATABASE, USAGE, AllocError

app = typer.Typer(
    name="alloc",
    help="Turn capital committed to SciDEX artifacts into ranked research budgets.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
db_app = typer.Typer(help="Create, upgrade and inspect the database schema.", no_args_is_help=True)
rates_app = typer.Typer(help="Exchange rates between tokens and other units.",
                        invoke_without_command=True)
snapshots_app = typer.Typer(help="Manage recorded budget snapshots.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(rates_app, name="rates")
app.add_typer(snapshots_app, name="snapshots")


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


class By(str, Enum):
    budget = "budget"
    remaining = "remaining"
    demand = "demand"


class Period(str, Enum):
    hour = "hour"
    day = "day"
    week = "week"


class LoadTable(str, Enum):
    artifacts = "artifacts"
    markets = "markets"
    positions = "positions"
    bounties = "bounties"


class FileFormat(str, Enum):
    csv = "csv"
    jsonl = "jsonl"


Db = Annotated[
    Optional[str],
    typer.Option("--db", help="Database URL or SQLite path (default: $SCIDEX_DB, then a "
                 "file in the user data directory).", show_default=False),
]
Fmt = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]

_current_target = None
_opened: list = []


def _allocator(db: str | None):
    global _current_target
    from scidex_alloc import database
    from scidex_alloc.service import Allocator

    _current_target = database.resolve(db)
    allocator = Allocator.open(db)
    _opened.append(allocator)
    return allocator


def _creating_allocator(db: str | None):
    """Like _allocator, but a SQLite file that does not exist yet is created."""
    from scidex_alloc import database

    target = database.resolve(db)
    if target.sqlite_path is not None and not target.sqlite_path.exists():
        target.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        target.sqlite_path.touch()
    return _allocator(db)


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
    from scidex_alloc.results import BUDGET_COLUMNS

    rows = _allocator(db).rank(type_=type_, limit=limit, by=by.value)
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

    allocator = _allocator(db)
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

    c = _allocator(db).convert(amount, from_unit, to_unit)
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

    render.emit_rows(_allocator(db).rates(), fmt.value, ("unit", "units_per_token", "updated_at"),
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

    rate = _allocator(db).set_rate(unit, units_per_token)
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
    allocator = _allocator(db)
    with _open_input(file) as stream, render.progress(stream, file) as advance:
        report = allocator.load(what.value, stream, fmt, progress=advance)
    render.load_report(report)
    if not report.ok:
        raise typer.Exit(USAGE)


@app.command()
def generate(
    artifacts: Annotated[int, typer.Option("--artifacts", help="How many artifacts.")] = 300,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same data.")] = 7,
    db: Db = None,
):
    """Fill a database with realistic synthetic data (how sample.db is made)."""
    from scidex_alloc import render, sample

    allocator = _creating_allocator(db)
    allocator.upgrade()
    counts = sample.generate(allocator, artifacts, seed)
    render.message(", ".join(f"{n} {name}" for name, n in counts.items()))


@app.command()
def spend(
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
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table or json.")] = Format.table,
    db: Db = None,
):
    """Record research spending against an artifact's budget, exactly once."""
    from scidex_alloc import render

    modes = sum(x is not None for x in (file, reverse)) + (artifact_id is not None)
    if modes != 1:
        raise _usage("give ARTIFACT_ID AMOUNT, or --file FILE, or --reverse ID")
    if file is not None:
        from scidex_alloc import loader

        fmt_in = loader.detect_format(file, file_format.value if file_format else None)
        allocator = _allocator(db)
        with _open_input(file) as stream, render.progress(stream, file) as advance:
            summary = allocator.spend_file(stream, fmt_in, atomic=atomic, progress=advance)
        render.batch_summary(summary, fmt.value)
        raise typer.Exit(summary.exit_code)
    if reverse is not None:
        record = _allocator(db).reverse(reverse, agent=agent, note=note)
    else:
        if amount is None:
            raise _usage("missing AMOUNT: alloc spend ARTIFACT_ID AMOUNT")
        record = _allocator(db).spend(artifact_id, amount, unit=unit, kind=kind, agent=agent,
                                      note=note, key=key, allow_overdraft=allow_overdraft)
    render.spend_record(record, fmt.value)


@app.command("log")
def log_(
    artifact_id: Annotated[Optional[str], typer.Argument(help="Only this artifact.")] = None,
    since: Annotated[Optional[str], typer.Option(
        "--since", help="Only entries at or after this ISO 8601 date or time (UTC).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", help="At most N rows.")] = None,
    fmt: Fmt = Format.table,
    db: Db = None,
):
    """The spend log, oldest first (reversals are entries of their own)."""
    from scidex_alloc import render
    from scidex_alloc.results import LOG_COLUMNS

    rows = _allocator(db).log(artifact_id, _moment(since, "--since"), limit)
    render.emit_rows(rows, fmt.value, LOG_COLUMNS, title="Spend log")


@app.command()
def audit(fmt: Fmt = Format.table, db: Db = None):
    """Check the ledger's invariants and the data; exit 6 if anything is breached."""
    from scidex_alloc import render

    checks = _allocator(db).audit()
    render.audit_report(checks, fmt.value)
    if not all(check.ok for check in checks):
        raise typer.Exit(AUDIT_FAILED)


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
    from scidex_alloc import render
    from scidex_alloc.timeparse import parse_duration

    entries = _allocator(db).next(
        type_=type_, limit=limit if limit is not None else (1 if claim else 10), agent=agent,
        claim=claim, lease=parse_duration(lease, "--lease"), ucb_weight=ucb_weight,
        exploration=exploration)
    render.queue(entries, fmt.value, ucb_weight, claimed=claim)


@app.command()
def done(
    claim_id: Annotated[int, typer.Argument(help="The claim to close.")],
    reward: Annotated[Optional[float], typer.Option(
        "--reward", help="The investigation's outcome, from 0 to 1.")] = None,
    fmt: Fmt = Format.table,
    db: Db = None,
):
    """Close a claim as a completed investigation, recording its reward."""
    from scidex_alloc import render

    render.emit_object(_allocator(db).done(claim_id, reward), fmt.value, title="Done")


@app.command()
def release(
    claim_id: Annotated[int, typer.Argument(help="The claim to give back.")],
    fmt: Fmt = Format.table,
    db: Db = None,
):
    """Give a claim back without an outcome; the artifact is free again at once."""
    from scidex_alloc import render

    render.emit_object(_allocator(db).release(claim_id), fmt.value, title="Released")


@app.command("claims")
def claims_(
    agent: Annotated[Optional[str], typer.Option("--agent", help="Only this agent's.")] = None,
    expired: Annotated[bool, typer.Option(
        "--expired", help="Active claims whose lease has run out, instead of live ones.")] = False,
    fmt: Fmt = Format.table,
    db: Db = None,
):
    """Active claims and their leases."""
    from scidex_alloc import render
    from scidex_alloc.results import CLAIM_COLUMNS

    rows = _allocator(db).claims(agent=agent, expired=expired)
    render.emit_rows(rows, fmt.value, CLAIM_COLUMNS,
                     title="Expired leases" if expired else "Live claims")


@app.command()
def snapshot(
    type_: Annotated[Optional[str], typer.Option("--type", "-t", help="Only this artifact type.")] = None,
    every: Annotated[Period, typer.Option("--every", help="The bucket this snapshot fills.")] = Period.hour,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table or json.")] = Format.table,
    db: Db = None,
):
    """Record every artifact's budget for the current hour, day or week, once (for cron)."""
    from scidex_alloc import render

    allocator = _allocator(db)
    with render.status(f"taking the {every.value} snapshot"):
        result = allocator.snapshot(type_=type_, every=every.value)
    render.snapshot_result(result, fmt.value)


@app.command()
def history(
    artifact_id: Annotated[Optional[str], typer.Argument(help="The artifact to chart.")] = None,
    since: Annotated[Optional[str], typer.Option("--since", help="From this date or time.")] = None,
    until: Annotated[Optional[str], typer.Option("--until", help="Up to this date or time.")] = None,
    every: Annotated[Optional[Period], typer.Option(
        "--every", help="Which snapshots (default: the finest there are).")] = None,
    type_: Annotated[Optional[str], typer.Option(
        "--type", "-t", help="Movers: only this artifact type.")] = None,
    top: Annotated[Optional[int], typer.Option(
        "--top", help="Movers: the N artifacts whose budget moved most.")] = None,
    fmt: Fmt = Format.table,
    db: Db = None,
):
    """An artifact's budget history with a chart, or with --top the biggest movers."""
    from scidex_alloc import render
    from scidex_alloc.results import HISTORY_COLUMNS, MOVER_COLUMNS

    window = (_moment(since, "--since"), _moment(until, "--until"))
    period = every.value if every else None
    if (artifact_id is None) == (top is None):
        raise _usage("give ARTIFACT_ID, or --top N (with --type T) for the biggest movers")
    if artifact_id is None:
        rows = _allocator(db).movers(type_, top, *window, every=period)
        render.emit_rows(rows, fmt.value, MOVER_COLUMNS, title="Budget movers")
        return
    if type_ is not None:
        raise _usage("--type goes with --top, not with ARTIFACT_ID")
    points = _allocator(db).history(artifact_id, *window, every=period)
    if not points:
        render.message(f"no snapshots of {artifact_id} yet: take them with `alloc snapshot`")
    render.history(artifact_id, points, fmt.value, HISTORY_COLUMNS)


@snapshots_app.command("prune")
def snapshots_prune(
    keep: Annotated[str, typer.Option("--keep", help="Keep this much history, e.g. 7d, 12w.")],
    every: Annotated[Optional[Period], typer.Option(
        "--every", help="Prune only this period's snapshots.")] = None,
    db: Db = None,
):
    """Delete snapshots older than --keep (for example hourly ones after 7 days)."""
    from scidex_alloc import render
    from scidex_alloc.timeparse import parse_duration

    removed = _allocator(db).prune(parse_duration(keep, "--keep"),
                                   every.value if every else None)
    render.message(f"removed {removed} snapshot rows older than {keep}")


@app.command()
def plan(
    pool: Annotated[str, typer.Option("--pool", help="Whole units to split.")],
    unit: Annotated[str, typer.Option("--unit", help="The pool's unit.")] = "tokens",
    type_: Annotated[Optional[str], typer.Option("--type", "-t", help="Only this artifact type.")] = None,
    cap: Annotated[Optional[str], typer.Option("--cap", help="At most this much per artifact.")] = None,
    minimum: Annotated[Optional[str], typer.Option(
        "--min", help="Drop shares below this and redistribute them.")] = None,
    fmt: Fmt = Format.table,
    db: Db = None,
):
    """Split a fixed pool (say tonight's LLM tokens) by remaining budget, to the last unit."""
    from scidex_alloc import render
    from scidex_alloc.results import PLAN_COLUMNS

    parts = _allocator(db).plan(pool, unit=unit, type_=type_, cap=cap, minimum=minimum)
    render.emit_rows(parts, fmt.value, PLAN_COLUMNS, title=f"Plan: {pool} {unit}")


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.", min=1, max=65535)] = 8000,
    db: Db = None,
):
    """Serve the read-only JSON API and the dashboard (http://HOST:PORT/)."""
    from scidex_alloc import render, web

    allocator = _allocator(db)
    render.message(f"serving {allocator.target.masked()} on http://{host}:{port}/ "
                   "(API under /api/market, docs at /docs; Ctrl-C stops)")
    web.serve(allocator, host, port)


@app.command()
def report(
    html: Annotated[str, typer.Option("--html", help="Write the dashboard to this file.")],
    db: Db = None,
):
    """Write the dashboard as one self-contained HTML file (for cron to publish)."""
    from pathlib import Path

    from scidex_alloc import dashboard, render

    page = dashboard.report(_allocator(db))
    try:
        Path(html).write_text(page, encoding="utf-8")
    except OSError as error:
        raise _usage(f"cannot write {html}: {error.strerror}") from None
    render.message(f"wrote {html}")


def _moment(text: str | None, option: str):
    if text is None:
        return None
    from scidex_alloc.timeparse import parse_moment

    return parse_moment(text, option)


def _open_input(path: str):
    """A binary stream of a file or stdin; a missing file is a usage error."""
    from contextlib import nullcontext

    if path == "-":
        return nullcontext(sys.stdin.buffer)
    try:
        return open(path, "rb")
    except OSError as error:
        raise _usage(f"cannot read {path}: {error.strerror}") from None


@db_app.command("upgrade")
def db_upgrade(db: Db = None):
    """Create the schema or upgrade it to the newest revision (safe to repeat)."""
    from scidex_alloc import render

    allocator = _creating_allocator(db)
    revision = allocator.upgrade()
    render.message(f"{allocator.target.masked()} is at revision {revision}")


@db_app.command("current")
def db_current(db: Db = None):
    """Show the database's schema revision and the newest one this version knows."""
    current, head = _allocator(db).current()
    state = "up to date" if current == head else f"behind {head}: run alloc db upgrade"
    print(f"{current or 'none'} ({state})")


def _usage(text: str) -> AllocError:
    from scidex_alloc.errors import UsageError

    return UsageError(text)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: every failure is one line on stderr and a documented exit code."""
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    command = typer.main.get_command(app)
    try:
        return _run(command, argv)
    finally:
        while _opened:
            _opened.pop().engine.dispose()


def _run(command, argv: list[str] | None) -> int:
    from typer._click import exceptions as click_exceptions

    try:
        result = command.main(args=argv, prog_name="alloc", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except AllocError as error:
        return _fail(str(error), error.exit_code)
    except click_exceptions.NoArgsIsHelpError as error:
        print(error.ctx.get_help() if error.ctx else "", file=sys.stderr)
        return USAGE
    except click_exceptions.UsageError as error:
        return _fail(error.format_message().replace("\n", " "), USAGE)
    except typer.Abort:
        return _fail("aborted", DATABASE)
    except typer.Exit as error:
        return error.exit_code
    except KeyboardInterrupt:
        return _fail("interrupted", DATABASE)
    except Exception as error:  # database and other runtime failures: one line, no traceback
        from sqlalchemy.exc import SQLAlchemyError

        from scidex_alloc import database

        if isinstance(error, SQLAlchemyError):
            return _fail(database.explain(error, _current_target), DATABASE)
        if isinstance(error, OSError):
            return _fail(f"error: {error.strerror or error}", DATABASE)
        return _fail(f"error: {type(error).__name__}: {error}", DATABASE)


def _fail(text: str, code: int) -> int:
    sys.stderr.write(f"alloc: {text}\n")
    return code
