"""The SELECT a plan splits its pool over: artifacts with budget left."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, select

from scidex_alloc.budgets.queries import budget_select
from scidex_alloc.formula import Params


def plan_candidates(params: Params, now: datetime, type_: str | None) -> Select:
    """Artifacts with budget left (an invalid one has no `remaining`)."""
    inner = budget_select(params, now, type_)
    b = inner.subquery()
    return select(b).where(b.c.remaining > 0)
