"""How `alloc load` reports: the count loaded, or the bad rows that stopped it."""

from __future__ import annotations

from scidex_alloc.rendering import message

PROBLEMS_SHOWN = 20  # a file with more bad rows is wrong as a whole; the rest are counted


def load_report(report) -> None:
    if report.ok:
        message(f"loaded {report.loaded} {report.table} rows")
        return
    shown = report.problems[:PROBLEMS_SHOWN]
    for problem in shown:
        message(f"line {problem.line}: {problem.message}")
    more = len(report.problems) - len(shown)
    message(
        f"{report.table}: {len(report.problems)} bad row(s){f' ({more} not shown)' if more else ''};"
        " nothing was loaded"
    )
