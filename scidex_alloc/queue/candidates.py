"""The work queue's candidates: the budget SELECT with each artifact's claims and rewards.

Only two kinds of candidate can reach the top of the queue, so only they are read: every
explored one (an artifact with a completed investigation: its UCB term varies), and the
unexplored ones with the most remaining budget (their UCB term is the same, 1, so their
score rises with remaining alone). The rest never leaves the database.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, and_, literal, select

from scidex_alloc.budgets.queries import budget_select, of_type_unindexed, top_ids
from scidex_alloc.formula import Params
from scidex_alloc.storage.schema import Timestamp, artifact_balances, claims
from scidex_alloc.storage.sql import LaterThan


def queue_candidates(params: Params, now: datetime, type_: str | None, agent: str | None,
                     explored: bool, limit: int | None = None) -> Select:
    """Artifacts with budget left and no live claim by another agent, with their
    investigation counts and reward totals (billionths), and the asking agent's own live
    claim: the explored ones, or the unexplored ones by remaining budget (the best `limit`,
    read in the order of the maintained remaining key)."""
    b = artifact_balances.c

    def live(*where):
        return and_(claims.c.artifact_id == b.artifact_id, claims.c.status == "active",
                    LaterThan(claims.c.lease_expires_at, literal(now, Timestamp())), *where)

    others = live() if agent is None else live(claims.c.agent_id != agent)
    own = live(claims.c.agent_id == agent) if agent is not None else None
    where = [~select(claims.c.id).where(others).exists(),
             b.investigations > 0 if explored else b.investigations == 0]
    if explored:
        within, where = None, [*where, *of_type_unindexed(type_)]
        type_ = None
    else:
        within = top_ids(params, now, type_, "remaining", limit, where)
    base = budget_select(params, now, type_, where=where if within is None else (),
                         within=within, extra=[
        b.investigations, b.reward_total,
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
