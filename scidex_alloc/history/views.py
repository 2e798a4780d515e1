"""How `alloc snapshot` and `alloc history` show their results; the chart's sparklines."""

from __future__ import annotations

import sys
from decimal import Decimal
from typing import Sequence

from scidex_alloc.history.results import HISTORY_COLUMNS
from scidex_alloc.rendering import as_dict, cell, emit_rows, json_value, line

BARS = "▁▂▃▄▅▆▇█"
CHART_WIDTH = 50  # characters per sparkline: with its label and last value, fits 80 columns
CHART_TABLE_COLUMNS = ("bucket", "budget", "spent", "remaining", "demand", "bounty", "price")


def snapshot_result(result, fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(json_value(as_dict(result)) + "\n")
        return
    bucket = result.bucket.strftime("%Y-%m-%d %H:%M")
    if result.recorded:
        print(f"recorded {result.recorded} artifacts in the {result.period} bucket {bucket} UTC")
    else:
        print(f"the {result.period} bucket {bucket} UTC was already recorded: nothing added")


def sparkline(values: Sequence[Decimal], low: Decimal, high: Decimal, width: int) -> str:
    """Values as block characters on a shared scale, resampled to at most `width`."""
    if len(values) > width:
        step = len(values) / width
        values = [values[int(i * step)] for i in range(width - 1)] + [values[-1]]
    span = high - low
    return "".join(BARS[0] if span == 0 else
                   BARS[min(len(BARS) - 1, int((v - low) / span * (len(BARS) - 1) + Decimal("0.5")))]
                   for v in values)


def history(artifact_id: str, points, fmt: str) -> None:
    """The snapshots, and on a table a chart of budget and remaining that fits 80 columns."""
    if fmt != "table":
        emit_rows(points, fmt, HISTORY_COLUMNS)
        return
    if not points:
        return
    budgets = [p.budget for p in points]
    remainings = [p.remaining for p in points]
    low, high = min(budgets + remainings), max(budgets + remainings)
    first, last = points[0].bucket, points[-1].bucket
    line(f"{artifact_id}: {len(points)} snapshots, {first:%Y-%m-%d %H:%M} to "
         f"{last:%Y-%m-%d %H:%M} UTC")
    line(f"budget     {sparkline(budgets, low, high, CHART_WIDTH)}  {cell('budget', budgets[-1])}")
    line(f"remaining  {sparkline(remainings, low, high, CHART_WIDTH)}  "
         f"{cell('remaining', remainings[-1])}")
    line(f"           scale {cell('budget', low)} to {cell('budget', high)} tokens")
    emit_rows(points, "table", CHART_TABLE_COLUMNS)
