"""The work queue's candidates: the budget SELECT with each artifact's claims and rewards.

Only two kinds of candidate can reach the top of the queue, so only they are read: every
explored one (an artifact with a completed investigation: its UCB term varies), and the
unexplored ones with the most remaining budget (their UCB term is the same, 1, so their
score rises with remaining alone). The rest never leaves the database.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Float, Select, and_, cast, func, literal, select

from scidex_alloc.budgets import balances
from scidex_alloc.budgets.balances import REWARD_SCALE
from scidex_alloc.budgets.queries import budget_select, of_type_unindexed, top_ids
from scidex_alloc.formula import Params
from scidex_alloc.storage.schema import Timestamp, artifact_balances, claims
from scidex_alloc.storage.sql import LaterThan


def _live(now: datetime, *where):
    b = artifact_balances.c
    return and_(claims.c.artifact_id == b.artifact_id, claims.c.status == "active",
                LaterThan(claims.c.lease_expires_at, literal(now, Timestamp())), *where)


def _free(now: datetime, agent: str | None):
    """No live claim of another agent on the artifact."""
    others = _live(now) if agent is None else _live(now, claims.c.agent_id != agent)
    return ~select(claims.c.id).where(others).exists()


def queue_candidates(params: Params, now: datetime, type_: str | None, agent: str | None,
                     explored: bool, limit: int | None = None, lean: bool = False,
                     ids: list[str] | None = None, where=()) -> Select:
    """Artifacts with budget left and no live claim by another agent (and meeting `where`),
    with their investigation counts and reward totals (billionths), and the asking agent's
    own live claim: the explored ones (those of `ids`, if given), or the unexplored ones by
    remaining budget (the best `limit`, read in the order of the maintained remaining key).
    `lean` leaves out the titles and own claims, for scans of many."""
    b = artifact_balances.c
    own = _live(now, claims.c.agent_id == agent) if agent is not None and not lean else None
    where = [*where, _free(now, agent),
             b.investigations > 0 if explored else b.investigations == 0]
    if explored:
        ids_in = [] if ids is None else [b.artifact_id.in_(ids)]
        within, where = None, [*where, *of_type_unindexed(type_), *ids_in]
        type_ = None
    else:
        within = top_ids(params, now, type_, "remaining", limit, where)
    base = budget_select(params, now, type_, where=where if within is None else (),
                         within=within, titled=not lean, extra=[
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


def _explored_pool(params: Params, now: datetime, type_: str | None, agent: str | None):
    """Every explored candidate's id, investigations, reward total and remaining budget (as
    SQL computes it), for scans of them all. With the default formula the maintained
    remaining key serves; only the balances whose bounties expired since they were summed
    go through the budget SELECT."""
    columns = ("artifact_id", "investigations", "reward_total", "remaining")
    b = artifact_balances.c
    if params != Params():
        e = queue_candidates(params, now, type_, agent, True, lean=True).subquery()
        return select(*(e.c[name] for name in columns)).subquery()
    current = select(b.artifact_id, b.investigations, b.reward_total,
                     b.remaining_key.label("remaining")).where(
        b.investigations > 0, _free(now, agent), *of_type_unindexed(type_),
        balances.current_bounty(b.next_expiry, now),
        b.remaining_key + 0 > 0)  # an expression: SQLite walks the explored, not every key
    expired = queue_candidates(params, now, type_, agent, True, lean=True,
                               where=[balances.expired_bounty(b.next_expiry, now)]).subquery()
    return current.union_all(select(*(expired.c[name] for name in columns))).subquery()


def explored_groups(params: Params, now: datetime, type_: str | None, agent: str | None
                    ) -> Select:
    """The explored candidates by investigation count: how many, the best reward total, and
    the most remaining budget, per count. Enough for the whole queue's totals."""
    e = _explored_pool(params, now, type_, agent)
    return (select(e.c.investigations, func.count().label("candidates"),
                   func.max(e.c.reward_total).label("best_reward"),
                   func.max(e.c.remaining).label("most_remaining"))
            .group_by(e.c.investigations))


def explored_by_score(params: Params, now: datetime, type_: str | None, agent: str | None,
                      bonus: float, top_ucb: float, top_remaining: Decimal, weight: float,
                      at_least: float | None = None, limit: int | None = None) -> Select:
    """The ids of explored candidates by their score as SQL computes it in floating point
    (close to, but not always exactly, the pure scoring's): the best `limit`, or those
    scoring `at_least`. A candidate's UCB exploration bonus is `bonus` / sqrt(its
    investigations)."""
    e = _explored_pool(params, now, type_, agent)
    n = cast(e.c.investigations, Float)
    ucb = cast(e.c.reward_total, Float) / REWARD_SCALE / n + literal(bonus) / func.sqrt(n)
    ucb_norm = ucb / top_ucb if top_ucb > 0 else literal(0.0)
    score = (literal(weight) * ucb_norm
             + literal(1 - weight) * cast(e.c.remaining, Float) / float(top_remaining))
    stmt = select(e.c.artifact_id, score.label("sql_score"))
    if at_least is not None:
        stmt = stmt.where(score >= at_least)
    return stmt.order_by(score.desc()).limit(limit)
