"""The `alloc` command: parse arguments, call the allocator service, hand results to render.

No SQL and no business rules live here: each command module registers its commands on
the one Typer app.
"""

from __future__ import annotations

import sys

import typer

# isort: off
# Import order is the order `alloc --help` lists the commands in.
from scidex_alloc.cli import budgets, spending, queue, history, serving  # noqa: F401
# isort: on
from scidex_alloc.cli.app import app, state
from scidex_alloc.errors import DATABASE, USAGE, AllocError


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: every failure is one line on stderr and a documented exit code."""
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    command = typer.main.get_command(app)
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

        from scidex_alloc import database

        if isinstance(error, SQLAlchemyError):
            return _fail(database.explain(error, state.target), DATABASE)
        if isinstance(error, OSError):
            return _fail(f"error: {error.strerror or error}", DATABASE)
        return _fail(f"error: {type(error).__name__}: {error}", DATABASE)


def _fail(text: str, code: int) -> int:
    sys.stderr.write(f"alloc: {text}\n")
    return code
