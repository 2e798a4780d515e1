"""Every output format in one place: tables, JSON and CSV from the same result objects.

Rich draws tables on a terminal; piped, the same characters are written without it
(importing Rich costs ~15 ms a call). JSON and CSV stream row by row.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import fields
from datetime import datetime
from decimal import Decimal
from typing import Any, Iterable, NamedTuple, Sequence

from scidex_alloc.formula import plain as number

PIPED_WIDTH = 400
RATIO_FIELDS = {"price", "uncertainty", "multiplier", "units_per_token", "rate", "fraction",
                "score", "ucb", "ucb_norm", "budget_norm", "mean_reward", "reward"}
# Budget terms: unknown (invalid data) ones show as a dash in tables.
TERM_FIELDS_ORDER = ("demand", "bounty", "price", "uncertainty", "multiplier", "budget", "spent",
                     "remaining")
TERM_FIELDS = set(TERM_FIELDS_ORDER)



def json_value(value: Any) -> str:
    if isinstance(value, Decimal):
        return number(value)
    if isinstance(value, datetime):
        return json.dumps(value.isoformat())
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {json_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(json_value(v) for v in value) + "]"
    return json.dumps(value)


def as_dict(obj: Any) -> dict:
    if isinstance(obj, dict):
        return obj
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return number(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
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
    if fmt == "json":
        count = 0
        out.write("[")
        for count, row in enumerate(rows, start=1):
            data = as_dict(row)
            body = ", ".join(f"{json.dumps(c)}: {json_value(data[c])}" for c in columns)
            out.write(("\n  " if count == 1 else ",\n  ") + "{" + body + "}")
        out.write("\n]\n" if count else "]\n")
        return count
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        count = 0
        for row in rows:
            data = as_dict(row)
            writer.writerow([csv_value(data[c]) for c in columns])
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


def message(text: str) -> None:
    """A line for people, on stderr, so stdout stays data."""
    sys.stderr.write(text + "\n")


def budget_detail(detail, fmt: str, params) -> None:
    """One artifact's budget; the table shows how each term was computed."""
    row = as_dict(detail.row)
    units = {u.unit: {"units_per_token": u.units_per_token, "budget": u.budget,
                      "spent": u.spent, "remaining": u.remaining} for u in detail.in_units}
    if fmt == "json":
        sys.stdout.write(json_value({**row, "in_units": units}) + "\n")
        return
    if fmt == "csv":
        emit_rows([detail.row], "csv", list(row))
        return
    r = detail.row
    if r.problem is not None:
        _invalid_detail(detail, row)
        return
    share, floor = params.research_share, params.multiplier_floor
    how = {
        "demand": "sum of tokens over open positions",
        "bounty": "open, unexpired bounties: offered - paid",
        "price": f"market price, clamped to [0, 1] ({number(params.default_price)} if none)",
        "uncertainty": f"1 - |{number(r.price)} - 0.5| x 2",
        "multiplier": f"{number(floor)} + {number(1 - floor)} x {number(r.uncertainty)}",
        "budget": f"({number(share)} x {cell('demand', r.demand)} + {cell('bounty', r.bounty)})"
                  f" x {number(r.multiplier)}",
        "spent": "sum of the spend log",
        "remaining": f"{cell('budget', r.budget)} - {cell('spent', r.spent)}",
    }
    draw([Col("term", style="bold"), Col("value", "right"), Col("how", style="dim")],
         [[name, cell(name, row[name]), explanation] for name, explanation in how.items()],
         f"{r.artifact_id} ({r.type}): {r.title or ''}")
    _in_units(detail)


def _invalid_detail(detail, row: dict) -> None:
    """An artifact without a valid budget: what is known, and why."""
    r = detail.row
    draw([Col("term", style="bold"), Col("value", "right")],
         [[name, cell(name, row[name])] for name in TERM_FIELDS_ORDER],
         f"{r.artifact_id} ({r.type}): {r.title or ''}")
    sys.stdout.write(f"{r.artifact_id} has no valid budget: {r.problem}; see alloc audit\n")
    _in_units(detail)


def _in_units(detail) -> None:
    if detail.in_units:
        draw([Col(name, "left" if name == "unit" else "right")
              for name in ("unit", "per token", "budget", "spent", "remaining")],
             [[u.unit, number(u.units_per_token), cell("budget", u.budget),
               cell("spent", u.spent), cell("remaining", u.remaining)] for u in detail.in_units],
             "In other units")


def load_report(report) -> None:
    if report.ok:
        message(f"loaded {report.loaded} {report.table} rows")
        return
    shown = report.problems[:20]
    for problem in shown:
        message(f"line {problem.line}: {problem.message}")
    more = len(report.problems) - len(shown)
    message(
        f"{report.table}: {len(report.problems)} bad row(s){f' ({more} not shown)' if more else ''};"
        " nothing was loaded"
    )


class progress:
    """A progress bar over a file's bytes on stderr, only when stderr is a terminal.

    Used as ``with progress(stream, path) as advance``; advance(n) is a no-op hook for
    callers that count lines instead.
    """

    def __init__(self, stream, path: str):
        self.stream, self.path, self._bar = stream, path, None

    def __enter__(self):
        import os

        if not sys.stderr.isatty() or self.path == "-":
            return None
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

        total = os.fstat(self.stream.fileno()).st_size
        self._bar = Progress("{task.description}", BarColumn(), DownloadColumn(),
                             TimeRemainingColumn(), console=console(stderr=True), transient=True)
        self._bar.start()
        task = self._bar.add_task(os.path.basename(self.path), total=total)
        tell = self.stream.tell
        self._bar_update = lambda _lines: self._bar.update(task, completed=tell())
        return self._bar_update

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()
        return False


def spend_record(record, fmt: str) -> None:
    from scidex_alloc.ledger.results import SPEND_JSON_FIELDS

    data = as_dict(record)
    if fmt == "json":
        sys.stdout.write(json_value({k: data[k] for k in SPEND_JSON_FIELDS}) + "\n")
        return
    emit_object(record, "table", title="Replayed (already recorded)" if record.replayed
                else "Recorded")


def batch_summary(summary, fmt: str) -> None:
    failures = [{"line": f.line, "status": f.status, "code": f.code, "message": f.message}
                for f in summary.failures]
    if fmt == "json":
        sys.stdout.write(json_value({
            "recorded": summary.recorded, "replayed": summary.replayed,
            "refused": summary.refused, "invalid": summary.invalid,
            "atomic": summary.atomic, "failures": failures}) + "\n")
        return
    for f in failures[:50]:
        message(f"line {f['line']}: {f['status']}: {f['message']}")
    if len(failures) > 50:
        message(f"... and {len(failures) - 50} more failed lines")
    rolled_back = " (--atomic: nothing was recorded)" if summary.atomic and failures else ""
    message(f"recorded {summary.recorded}, replayed {summary.replayed}, refused {summary.refused},"
            f" invalid {summary.invalid}{rolled_back}")


def audit_report(checks, fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(json_value({
            "ok": all(c.ok for c in checks),
            "checks": [{"name": c.name, "ok": c.ok, "description": c.description, "rows": c.rows}
                       for c in checks]}) + "\n")
        return
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(("check", "ok", "row"))
        for c in checks:
            for row in c.rows or [None]:
                writer.writerow((c.name, "true" if c.ok else "false",
                                 "" if row is None else json_value(row)))
        return
    draw([Col("check"), Col("result"), Col("rows concerned")],
         [[c.name, "ok" if c.ok else f"BREACH ({len(c.rows)})",
           "; ".join(json_value(r) for r in c.rows[:5]) + (" ..." if len(c.rows) > 5 else "")]
          for c in checks], "Audit")


def queue(entries, fmt: str, weight: float, claimed: bool) -> None:
    """The work queue; the table shows the two weighted components of each score."""
    from scidex_alloc.queue.results import QUEUE_COLUMNS

    if fmt != "table":
        emit_rows(entries, fmt, QUEUE_COLUMNS)
        return
    if not entries:
        message("no candidates: nothing with budget left that is not claimed by another agent")
        return
    columns = [Col(name, "right" if right else "left") for name, right in (
        ("rank", True), ("artifact_id", False), ("type", False), ("score", True),
        (f"{weight:g} x ucb_norm", True), (f"{1 - weight:g} x budget_norm", True),
        ("investigations", True), ("mean_reward", True), ("remaining", True), ("claim", True),
        ("lease until", False))]
    draw(columns, [[
        str(e.rank), e.artifact_id, e.type, f"{e.score:.4f}",
        f"{weight * e.ucb_norm:.4f}" + ("  (new)" if e.ucb is None else ""),
        f"{(1 - weight) * e.budget_norm:.4f}", str(e.investigations),
        cell("mean_reward", e.mean_reward), cell("remaining", e.remaining),
        cell("claim_id", e.claim_id), cell("lease_expires_at", e.lease_expires_at),
    ] for e in entries], ("Claimed" if claimed else "Next investigations")
        + f" (score = {weight:g} x ucb_norm + {1 - weight:g} x budget_norm)")


class status:
    """A spinner on stderr while something long runs, only on a terminal."""

    def __init__(self, text: str):
        self.text, self._status = text, None

    def __enter__(self):
        if sys.stderr.isatty():
            self._status = console(stderr=True).status(self.text)
            self._status.__enter__()
        return self

    def __exit__(self, *exc):
        if self._status is not None:
            self._status.__exit__(*exc)
        return False


def snapshot_result(result, fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(json_value(as_dict(result)) + "\n")
        return
    bucket = result.bucket.strftime("%Y-%m-%d %H:%M")
    if result.recorded:
        print(f"recorded {result.recorded} artifacts in the {result.period} bucket {bucket} UTC")
    else:
        print(f"the {result.period} bucket {bucket} UTC was already recorded: nothing added")


BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[Decimal], low: Decimal, high: Decimal, width: int) -> str:
    """Values as block characters on a shared scale, resampled to at most `width`."""
    if len(values) > width:
        step = len(values) / width
        values = [values[int(i * step)] for i in range(width - 1)] + [values[-1]]
    span = high - low
    return "".join(BARS[0] if span == 0 else
                   BARS[min(len(BARS) - 1, int((v - low) / span * (len(BARS) - 1) + Decimal("0.5")))]
                   for v in values)


def history(artifact_id: str, points, fmt: str, columns: Sequence[str]) -> None:
    """The snapshots, and on a table a chart of budget and remaining that fits 80 columns."""
    if fmt != "table" or not points:
        if fmt != "table":
            emit_rows(points, fmt, columns)
        return
    budgets = [p.budget for p in points]
    remainings = [p.remaining for p in points]
    low, high = min(budgets + remainings), max(budgets + remainings)
    first, last = points[0].bucket, points[-1].bucket
    out = console()
    out.print(f"{artifact_id}: {len(points)} snapshots, {first:%Y-%m-%d %H:%M} to "
              f"{last:%Y-%m-%d %H:%M} UTC")
    out.print(f"budget     {sparkline(budgets, low, high, 50)}  {cell('budget', budgets[-1])}")
    out.print(f"remaining  {sparkline(remainings, low, high, 50)}  "
              f"{cell('remaining', remainings[-1])}")
    out.print(f"           scale {cell('budget', low)} to {cell('budget', high)} tokens")
    emit_rows(points, "table", ("bucket", "budget", "spent", "remaining", "demand", "bounty",
                                "price"))
