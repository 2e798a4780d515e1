"""`alloc plan`: a pool of whole units split across the artifacts with budget left."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Select, select
from sqlalchemy.engine import Connection

from scidex_alloc.budgets import queries, rates
from scidex_alloc.formula import Params
from scidex_alloc.history import planning
from scidex_alloc.history.results import PlanPart
from scidex_alloc.storage.schema import utcnow

FRACTION = Decimal("1e-12")  # the precision of each part's fraction of the pool


def plan(connection: Connection, params: Params, pool: int, unit: str, type_: str | None,
         cap: int | None, minimum: int | None) -> list[PlanPart]:
    """Each artifact's share of `pool`, by remaining budget; reads only."""
    rates.rate_of(connection, unit)  # an unknown unit is an error
    rows = {r.artifact_id: queries.budget_row(0, r, params)
            for r in connection.execute(plan_candidates(params, type_), {"now": utcnow()})}
    parts = planning.split(pool, {k: r.remaining for k, r in rows.items()},
                           cap=cap, minimum=minimum)
    total = Decimal(pool) or Decimal(1)
    return [PlanPart(p.artifact_id, rows[p.artifact_id].type, rows[p.artifact_id].remaining,
                     p.share, (p.share / total).quantize(FRACTION))
            for p in parts]


def plan_candidates(params: Params, type_: str | None) -> Select:
    """Artifacts with budget left (an invalid one has no `remaining`), at `now`."""
    inner = queries.budget_select(params, type_)
    b = inner.subquery()
    return select(b).where(b.c.remaining > 0)
