"""The `alloc` command: combines each area's Typer app, runs it, and turns every failure
into one line on stderr and a documented exit code.

No SQL and no business rules live here, nor in the area modules, which only parse
arguments, call the allocator and hand its results to rendering. Typer converts every
registered command into Click's form before it runs one (about 11 ms for them all), so
only the invoked command is converted; `--help` and unknown commands convert them all.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated

import typer

from scidex_alloc.cli.app import Invocation, group_help
from scidex_alloc.errors import DATABASE, USAGE, AllocError, UsageError

AREAS = ("budgets", "loading", "storage", "ledger", "holds", "queue", "history", "serving")  # help order
INTERRUPTED = 130  # 128 + SIGINT, the shell's convention (and Typer's for Ctrl-C)


def options(ctx: typer.Context, version: Annotated[bool, typer.Option(
        "--version", help="Print the version and exit.")] = False) -> None:
    """The options of `alloc` itself, before any command."""
    if version:
        from scidex_alloc import __version__

        print(f"alloc {__version__}")
        raise typer.Exit()
    group_help(ctx)


def alloc(only: str | None = None) -> typer.Typer:
    """The `alloc` app: every area's commands, or with `only` just the command (or group)
    of that name when an area has it."""
    root = typer.Typer(
        name="alloc", help="Turn capital committed to SciDEX artifacts into ranked research budgets.",
        callback=options, invoke_without_command=True, add_completion=True,
        pretty_exceptions_enable=False, rich_markup_mode=None)
    areas = [importlib.import_module(f"scidex_alloc.{area}.cli").app for area in AREAS]
    for area in areas:
        for info in area.registered_commands:
            if _command_name(info) == only:
                root.registered_commands.append(info)
                return root
        for info in area.registered_groups:
            if info.name == only:
                root.registered_groups.append(info)
                return root
    for area in areas:
        root.add_typer(area)
    return root


def _command_name(info) -> str:
    return info.name or typer.main.get_command_name(info.callback.__name__)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: every failure is one line on stderr and a documented exit code."""
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    name = next((arg for arg in args if not arg.startswith("-")), None)
    command = typer.main.get_command(alloc(name))
    invocation = Invocation()
    try:
        result = command.main(args=args, prog_name="alloc", standalone_mode=False,
                              obj=invocation)
    except UsageError as error:
        return _fail(error.worded(lambda param: _flag(command, param)), USAGE)
    except AllocError as error:
        return _fail(str(error), error.exit_code)
    except typer.TyperException as error:  # Click's usage errors derive from it
        return _fail(error.format_message().replace("\n", " "), USAGE)
    except typer.Abort:
        return _fail("aborted", DATABASE)
    except KeyboardInterrupt:
        return _fail("interrupted", INTERRUPTED)
    except Exception as error:  # database and other runtime failures: one line, no traceback
        return _fail(_unexpected(error, invocation.target), DATABASE)
    if result == INTERRUPTED:  # Typer ends a command interrupted by Ctrl-C with 130
        return _fail("interrupted", INTERRUPTED)
    return result if isinstance(result, int) else 0


def _flag(command, param: str) -> str:
    """How the invoked command spells an allocator parameter: its longest option
    (`--limit`), an argument's metavar (`ARTIFACT_ID`), or the name itself."""
    for option in _params(command):
        if option.name == param:
            if option.param_type_name == "argument":
                return option.metavar or option.name.upper()
            return max((o for o in option.opts if o.startswith("--")), key=len, default=param)
    return param


def _params(command):
    """The parameters of a command and of every command of a group (holding only the
    invoked one: see `alloc`)."""
    yield from command.params
    for sub in getattr(command, "commands", {}).values():
        yield from _params(sub)


def _unexpected(error: Exception, target) -> str:
    """One line for a failure no command handled; SCIDEX_DEBUG=1 prints its traceback too."""
    from sqlalchemy.exc import SQLAlchemyError

    from scidex_alloc.storage import database

    if os.environ.get("SCIDEX_DEBUG") == "1":
        import traceback

        traceback.print_exception(error, file=sys.stderr)
    if isinstance(error, (SQLAlchemyError, *database.driver_errors())):
        return database.explain(error, target)
    if isinstance(error, OSError):
        return f"error: {error.strerror or error}"
    return f"error: {type(error).__name__}: {error}"


def _fail(text: str, code: int) -> int:
    sys.stderr.write(f"alloc: {text}\n")
    return code
