"""What every command's output shares: tables, JSON and CSV from the same result objects,
messages on stderr, a progress bar and a spinner. Each area's own views (its `views.py`)
are built from these.

Rich draws tables on a terminal; piped, the same characters are written without it
(importing Rich costs ~15 ms a call). JSON and CSV stream row by row.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from json.encoder import encode_basestring_ascii
from operator import attrgetter, itemgetter
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

from scidex_alloc.formula import plain as number

json_string = encode_basestring_ascii  # what json.dumps writes for a str

PIPED_WIDTH = 400
RATIO_FIELDS = {"price", "uncertainty", "multiplier", "units_per_token", "rate", "fraction",
                "score", "ucb", "ucb_norm", "budget_norm", "mean_reward", "reward"}
# Budget terms, in the formula's order: unknown (invalid data) ones show as a dash in tables.
TERM_FIELDS = ("demand", "bounty", "price", "uncertainty", "multiplier", "budget", "spent",
               "remaining", "held", "available")


def json_value(value: Any) -> str:
    """JSON text with every Decimal as an exact number. (The common types are written
    directly: json.dumps costs a microsecond a call, and an API page has a thousand.)"""
    kind = type(value)
    if kind is str:
        return json_string(value)
    if kind is Decimal:
        return number(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if isinstance(value, datetime):
        return json_string(value.isoformat())
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json_string(k)}: {json_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(json_value(v) for v in value) + "]"
    return json.dumps(value)


def as_dict(obj: Any) -> dict:
    if isinstance(obj, dict):
        return obj
    return {name: getattr(obj, name) for name in _field_names(type(obj))}


@lru_cache(maxsize=None)
def _field_names(kind: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(kind))


def _getter(columns: Sequence[str]) -> Callable[[Any], tuple]:
    """A row's values in `columns`' order, whether the row is a result object or a dict."""
    by_name, by_key = attrgetter(*columns), itemgetter(*columns)
    if len(columns) == 1:
        return lambda row: (by_key(row) if isinstance(row, dict) else by_name(row),)
    return lambda row: by_key(row) if isinstance(row, dict) else by_name(row)


def csv_value(value: Any) -> str:
    if value is None:
        return ""
    kind = type(value)  # exact types first: called for every cell of an export
    if kind is Decimal:
        return number(value)
    if kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def cell(name: str, value: Any) -> str:
    """A value as a table shows it: amounts with thousands separators, exact to 1e-6."""
    if value is None:
        return "-" if name in TERM_FIELDS else ""
    if isinstance(value, Decimal):
        if name in RATIO_FIELDS:
            return number(value)
        text = f"{value:,.6f}".rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output is plain and never wrapped at 80 columns.
    return Console(file=stream, width=None if stream.isatty() else PIPED_WIDTH, highlight=False)


class Col(NamedTuple):
    name: str
    justify: str = "left"
    style: str | None = None
    overflow: str = "ellipsis"


def draw(columns: Sequence[Col], rows: Sequence[Sequence[str]], title: str | None = None,
         show_header: bool = True) -> None:
    """Print a table on stdout, every text as given (never read as markup or emoji codes).

    Rich draws it where it would style it (a terminal); piped, the same box is written as
    plain text with no wrapping, which also spares the ~15 ms Rich import.
    """
    if not _styled(sys.stdout):
        sys.stdout.write(_plain_table(columns, rows, title, show_header))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title=None if title is None else Text(title), title_justify="left",
                  show_header=show_header)
    for col in columns:
        table.add_column(col.name, justify=col.justify, style=col.style, overflow=col.overflow)
    for row in rows:
        table.add_row(*map(Text, row))
    console().print(table)


def _styled(stream) -> bool:
    """Whether Rich would colour or reshape output to `stream` (its own rules: a terminal,
    TTY_COMPATIBLE, FORCE_COLOR, or an encoding that needs ASCII boxes)."""
    if not (getattr(stream, "encoding", None) or "utf-8").lower().startswith("utf"):
        return True
    compatible = os.environ.get("TTY_COMPATIBLE", "")
    if compatible in ("0", "1"):
        return compatible == "1"
    force = os.environ.get("FORCE_COLOR")
    return force != "" if force is not None else stream.isatty()


def _plain_table(columns: Sequence[Col], rows: Sequence[Sequence[str]], title: str | None,
                 show_header: bool) -> str:
    """Rich's heavy-headed box with one space of padding, as plain text; control
    characters become spaces so that every row stays one line."""
    body = [[_printable(text) for text in row] for row in rows]
    if show_header:
        body.insert(0, [c.name for c in columns])
    sizes = [max((_width(row[i]) for row in body), default=0) for i in range(len(columns))]

    def line(cells: Sequence[str], edge: str) -> str:
        return edge + edge.join(f" {_pad(text, size, col.justify)} "
                                for col, size, text in zip(columns, sizes, cells)) + edge

    def rule(left: str, fill: str, cross: str, right: str) -> str:
        return left + cross.join(fill * (size + 2) for size in sizes) + right

    width = sum(sizes) + 3 * len(columns) + 1
    lines = [_pad(_printable(title), width, "left")] if title else []
    if show_header:
        lines += [rule("┏", "━", "┳", "┓"), line(body.pop(0), "┃"), rule("┡", "━", "╇", "┩")]
    else:
        lines.append(rule("┌", "─", "┬", "┐"))
    lines += [line(row, "│") for row in body]
    lines.append(rule("└", "─", "┴", "┘"))
    return "\n".join(lines) + "\n"


def _printable(text: str) -> str:
    return text if text.isprintable() else "".join(c if c.isprintable() else " " for c in text)


def _width(text: str) -> int:
    """Terminal cells: wide characters take two."""
    if text.isascii():
        return len(text)
    from rich.cells import cell_len

    return cell_len(text)


def _pad(text: str, size: int, justify: str) -> str:
    if justify == "right":
        text = text.rstrip()
        return " " * (size - _width(text)) + text
    return text + " " * (size - _width(text))


def emit_rows(rows: Iterable[Any], fmt: str, columns: Sequence[str], title: str | None = None,
              out=None) -> int:
    """Write rows in `fmt`; returns how many were written."""
    out = out or sys.stdout
    values = _getter(columns)
    if fmt == "json":
        count = 0
        keys = [f"{json_string(c)}: " for c in columns]
        out.write("[")
        for count, row in enumerate(rows, start=1):
            body = ", ".join(key + json_value(v) for key, v in zip(keys, values(row)))
            out.write(("\n  " if count == 1 else ",\n  ") + "{" + body + "}")
        out.write("\n]\n" if count else "]\n")
        return count
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        count = 0
        for row in rows:
            writer.writerow([csv_value(v) for v in values(row)])
            count += 1
        return count
    return _table(rows, columns, title)


def _table(rows: Iterable[Any], columns: Sequence[str], title: str | None) -> int:
    materialised = [as_dict(r) for r in rows]
    if not materialised:
        message("no rows")
        return 0
    cols = [Col(name, "right" if any(isinstance(r[name], (Decimal, int))
                                     and not isinstance(r[name], bool)
                                     for r in materialised[:50]) else "left", overflow="fold")
            for name in columns]
    draw(cols, [[cell(c, data[c]) for c in columns] for data in materialised], title)
    return len(materialised)


def emit_object(obj: Any, fmt: str, title: str | None = None) -> None:
    """One object: a JSON object, a one-row CSV, or a two-column table."""
    data = as_dict(obj)
    if fmt == "json":
        sys.stdout.write(json_value(data) + "\n")
    elif fmt == "csv":
        flat = {k: v for k, v in data.items() if not isinstance(v, (dict, list))}
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(flat.keys())
        writer.writerow([csv_value(v) for v in flat.values()])
    else:
        draw([Col("field", style="bold"), Col("value", "right")],
             [[key, cell(key, value)] for key, value in data.items()
              if not isinstance(value, (dict, list))], title, show_header=False)


def line(text: str) -> None:
    """A line of data on stdout, every text as given (never read as markup or emoji codes);
    control characters become spaces so that it stays one line."""
    sys.stdout.write(_printable(text) + "\n")


def message(text: str) -> None:
    """A line for people, on stderr, so stdout stays data."""
    sys.stderr.write(text + "\n")


@contextmanager
def progress(stream, path: str) -> Iterator[Callable[[int], None] | None]:
    """A progress bar over a file's bytes on stderr, only when stderr is a terminal.

    Yields the callback to hand to a loader (it counts rows, the bar follows the bytes read),
    or None when there is no bar to move.
    """
    if not sys.stderr.isatty() or path == "-":
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, TimeRemainingColumn
    from rich.progress import Progress as Bar

    bar = Bar("{task.description}", BarColumn(), DownloadColumn(), TimeRemainingColumn(),
              console=console(stderr=True), transient=True)
    task = bar.add_task(os.path.basename(path), total=os.fstat(stream.fileno()).st_size)
    with bar:
        yield lambda _rows: bar.update(task, completed=stream.tell())


@contextmanager
def spinner(text: str) -> Iterator[None]:
    """A spinner on stderr while something long runs, only on a terminal."""
    if not sys.stderr.isatty():
        yield
        return
    with console(stderr=True).status(text):
        yield
