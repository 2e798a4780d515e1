"""The work queue's candidates: the budget SELECT with each artifact's claims and rewards.

Only two kinds of candidate can reach the top of the queue, so only they are read: every
explored one (an artifact with a completed investigation: its UCB term varies), and the
unexplored ones with the most remaining budget (their UCB term is the same, 1, so their
score rises with remaining alone). The rest never leaves the database.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, and_, func, literal, select

from scidex_alloc.budgets.queries import budget_select
from scidex_alloc.formula import Params
from scidex_alloc.storage.schema import (
    Timestamp,
    artifacts,
)
from scidex_alloc.storage.sql import LaterThan


def queue_candidates(params: Params, now: datetime, type_: str | None, agent: str | None,
                     explored: bool, limit: int | None = None) -> Select:
    """Artifacts with budget left and no live claim by another agent, with their
    investigation counts and reward totals, and the asking agent's own live claim: the
    explored ones, or the unexplored ones by remaining budget (the best `limit`)."""
    from scidex_alloc.storage.schema import claims

    def live(*where):
        return and_(claims.c.artifact_id == artifacts.c.id, claims.c.status == "active",
                    LaterThan(claims.c.lease_expires_at, literal(now, Timestamp())), *where)

    done = and_(claims.c.artifact_id == artifacts.c.id, claims.c.status == "done")
    others = live() if agent is None else live(claims.c.agent_id != agent)
    own = live(claims.c.agent_id == agent) if agent is not None else None
    investigated = select(claims.c.id).where(done).exists()
    base = budget_select(params, now, type_, where=[
        ~select(claims.c.id).where(others).exists(),
        investigated if explored else ~investigated,
    ], extra=[
        select(func.count()).where(done).scalar_subquery().label("investigations"),
        func.coalesce(select(func.sum(claims.c.reward)).where(done).scalar_subquery(), 0)
        .label("reward_total"),
        (select(claims.c.id).where(own).scalar_subquery() if own is not None
         else literal(None)).label("claim_id"),
        (select(claims.c.lease_expires_at).where(own).scalar_subquery() if own is not None
         else literal(None, Timestamp())).label("lease_expires_at"),
    ])
    inner = base.subquery()
    stmt = select(inner).where(inner.c.remaining > 0)
    if explored:
        return stmt
    return stmt.order_by(inner.c.remaining.desc(), inner.c.artifact_id).limit(limit)
