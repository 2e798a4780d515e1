"""How `alloc budget` shows one artifact: each term with how it was computed."""

from __future__ import annotations

import sys

from scidex_alloc.formula import plain as number
from scidex_alloc.rendering import TERM_FIELDS, Col, as_dict, cell, draw, emit_rows, json_value


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
        "held": "sum of active, unexpired holds",
        "available": f"{cell('remaining', r.remaining)} - {cell('held', r.held)}",
    }
    draw([Col("term", style="bold"), Col("value", "right"), Col("how", style="dim")],
         [[name, cell(name, row[name]), explanation] for name, explanation in how.items()],
         f"{r.artifact_id} ({r.type}): {r.title or ''}")
    _in_units(detail)


def _invalid_detail(detail, row: dict) -> None:
    """An artifact without a valid budget: what is known, and why."""
    r = detail.row
    draw([Col("term", style="bold"), Col("value", "right")],
         [[name, cell(name, row[name])] for name in TERM_FIELDS],
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
