"""The Typer application, its shared options, and helpers every command module uses."""

from __future__ import annotations

import sys
from enum import Enum
from typing import Annotated, Optional

import typer

from scidex_alloc.errors import AllocError

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

class State:
    """What the running command opened: its database (for error messages) and allocators
    (disposed when it ends)."""

    target = None
    opened: list = []


state = State()


def open_allocator(db: str | None):
    from scidex_alloc.allocator import Allocator

    allocator = Allocator.open(db)
    state.target = allocator.target
    state.opened.append(allocator)
    return allocator


def creating_allocator(db: str | None):
    """Like open_allocator, but a SQLite file that does not exist yet is created."""
    from scidex_alloc.storage import database

    target = database.resolve(db)
    if target.sqlite_path is not None and not target.sqlite_path.exists():
        target.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        target.sqlite_path.touch()
    return open_allocator(db)


def moment(text: str | None, option: str):
    if text is None:
        return None
    from scidex_alloc.timeparse import parse_moment

    return parse_moment(text, option)


def open_input(path: str):
    """A binary stream of a file or stdin; a missing file is a usage error."""
    from contextlib import nullcontext

    if path == "-":
        return nullcontext(sys.stdin.buffer)
    try:
        return open(path, "rb")
    except OSError as error:
        raise usage(f"cannot read {path}: {error.strerror}") from None


def usage(text: str) -> AllocError:
    from scidex_alloc.errors import UsageError

    return UsageError(text)
