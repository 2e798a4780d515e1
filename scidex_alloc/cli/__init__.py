"""The `alloc` command: parse arguments, call the allocator service, hand results to render.

No SQL and no business rules live here: each area's module registers its commands on
the one Typer app. Only the invoked command's module is imported (start-up is paid on
every shell call); help and unknown commands load them all.
"""

from __future__ import annotations

import copy
import importlib
import sys

import typer

from scidex_alloc.cli.app import app, state
from scidex_alloc.errors import DATABASE, USAGE, AllocError

# In `alloc --help` order.
AREAS = {
    "budgets": ("rank", "budget", "convert", "rates"),
    "loading": ("load", "generate"),
    "storage": ("db",),
    "ledger": ("spend", "log", "audit"),
    "queue": ("next", "done", "release", "claims"),
    "history": ("snapshot", "history", "snapshots", "plan"),
    "serving": ("serve", "report"),
}


def register(argv: list[str]) -> str | None:
    """Import the module of the command named in argv, or every module; returns the
    command's name if it is one of ours."""
    name = next((arg for arg in argv if not arg.startswith("-")), None)
    areas = [area for area, commands in AREAS.items() if name in commands]
    for area in areas or AREAS:
        importlib.import_module(f"scidex_alloc.{area}.cli")
    return name if areas else None


def command_group(name: str | None):
    """The click group, with only the named command in it when it is known: Typer builds
    every registered command's parameters, a few milliseconds per area."""
    if name is None:
        return typer.main.get_command(app)
    only = copy.copy(app)
    only.registered_commands = [
        info for info in app.registered_commands
        if (info.name or typer.main.get_command_name(info.callback.__name__)) == name]
    only.registered_groups = [info for info in app.registered_groups if info.name == name]
    return typer.main.get_group(only)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: every failure is one line on stderr and a documented exit code."""
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    command = command_group(register(sys.argv[1:] if argv is None else argv))
    try:
        return _run(command, argv)
    finally:
        while state.opened:
            state.opened.pop().engine.dispose()


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

        from scidex_alloc.storage import database

        if isinstance(error, (SQLAlchemyError, *database.driver_errors())):
            return _fail(database.explain(error, state.target), DATABASE)
        if isinstance(error, OSError):
            return _fail(f"error: {error.strerror or error}", DATABASE)
        return _fail(f"error: {type(error).__name__}: {error}", DATABASE)


def _fail(text: str, code: int) -> int:
    sys.stderr.write(f"alloc: {text}\n")
    return code
