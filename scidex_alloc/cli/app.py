"""The options every command shares, and the helpers each area's command module uses.

Choices and defaults come from `scidex_alloc.options`, so the CLI, the API and the
allocator cannot disagree about them.
"""

from __future__ import annotations

import sys
from enum import Enum
from typing import Annotated, Optional

import typer

from scidex_alloc.errors import USAGE, AllocError
from scidex_alloc.options import FILE_FORMATS, LOAD_TABLES, OUTPUT_FORMATS, PERIODS, SORT_KEYS


def choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    """An Enum of allowed values, the form in which Typer offers a choice."""
    return Enum(name, {value: value for value in values}, type=str)


Format = choices("Format", OUTPUT_FORMATS)
By = choices("By", SORT_KEYS)
Period = choices("Period", PERIODS)
LoadTable = choices("LoadTable", LOAD_TABLES)
FileFormat = choices("FileFormat", FILE_FORMATS)
DEFAULT_FORMAT = Format(OUTPUT_FORMATS[0])
DEFAULT_SORT_KEY = By(SORT_KEYS[0])

Db = Annotated[
    Optional[str],
    typer.Option("--db", help="Database URL or SQLite path (default: $SCIDEX_DB, then a "
                 "file in the user data directory).", show_default=False),
]
Fmt = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]


class Invocation:
    """One run of `alloc`, shared by its commands through the Click context (`ctx.obj`):
    the database it opened, which its error messages name."""

    def __init__(self):
        self.target = None


def group_help(ctx: typer.Context) -> None:
    """A command group run without a command prints its help on stderr and exits 2."""
    if ctx.invoked_subcommand is None:
        print(ctx.get_help(), file=sys.stderr)
        raise typer.Exit(USAGE)


def open_allocator(ctx: typer.Context, db: str | None):
    """The allocator of --db, closed when the command ends."""
    from scidex_alloc.allocator import Allocator

    allocator = Allocator.open(db)
    ctx.obj.target = allocator.target
    ctx.call_on_close(allocator.close)
    return allocator


def creating_allocator(ctx: typer.Context, db: str | None):
    """Like open_allocator, but a SQLite file that does not exist yet is created."""
    from scidex_alloc.storage import database

    target = database.resolve(db)
    if target.sqlite_path is not None and not target.sqlite_path.exists():
        target.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        target.sqlite_path.touch()
    return open_allocator(ctx, db)


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
