"""The work queue's candidates: the budget SELECT with each artifact's claims and rewards.

A candidate's budget term is its available budget (remaining, less what holds keep), and
only artifacts with some (or, for a reservation, enough) available are candidates. Only
two kinds of candidate can reach the top of the queue, so only they are read: every
explored one (an artifact with a completed investigation: its UCB term varies), and the
unexplored ones with the most available budget (their UCB term is the same, 1, so their
score rises with available alone). The rest never leaves the database.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Float, Select, and_, case, cast, func, literal, or_, select

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


def enough(available, at_least: int):
    """Whether an available budget (in micro-tokens) makes a candidate: at least `at_least`
    micro-tokens, or when that is 0, any."""
    return available >= at_least if at_least else available > 0


def queue_candidates(params: Params, now: datetime, type_: str | None, agent: str | None,
                     explored: bool, limit: int | None = None, lean: bool = False,
                     ids: list[str] | None = None, where=(), at_least: int = 0) -> Select:
    """Artifacts with enough available budget (see `enough`) and no live claim by another
    agent (and meeting `where`), with their investigation counts and reward totals
    (billionths), and the asking agent's own live claim: the explored ones (those of `ids`,
    if given), or the unexplored ones by available budget (the best `limit`, found by way
    of the maintained remaining key). `lean` leaves out the titles and own claims, for
    scans of many."""
    b = artifact_balances.c
    own = _live(now, claims.c.agent_id == agent) if agent is not None and not lean else None
    where = [*where, _free(now, agent),
             b.investigations > 0 if explored else b.investigations == 0]
    if explored:
        ids_in = [] if ids is None else [b.artifact_id.in_(ids)]
        within, where = None, [*where, *of_type_unindexed(type_), *ids_in]
        type_ = None
    else:
        within = top_ids(params, now, type_, "available", limit, where)
    base = budget_select(params, now, type_, where=where if within is None else (),
                         within=within, titled=not lean, extra=[
        b.investigations, b.reward_total,
        (select(claims.c.id).where(own).scalar_subquery() if own is not None
         else literal(None)).label("claim_id"),
        (select(claims.c.lease_expires_at).where(own).scalar_subquery() if own is not None
         else literal(None, Timestamp())).label("lease_expires_at"),
    ])
    inner = base.subquery()
    stmt = select(inner).where(enough(inner.c.available, at_least))
    if explored:
        return stmt
    return stmt.order_by(inner.c.available.desc(), inner.c.artifact_id).limit(limit)


def _explored_pool(params: Params, now: datetime, type_: str | None, agent: str | None,
                   at_least: int):
    """Every explored candidate's id, investigations, reward total and available budget (as
    SQL computes it), for scans of them all. With the default formula the maintained
    remaining key and held total serve; only the balances whose bounties or holds expired
    since they were summed, or whose held total is invalid, go through the budget SELECT."""
    columns = ("artifact_id", "investigations", "reward_total", "available")
    b = artifact_balances.c
    if params != Params():
        e = queue_candidates(params, now, type_, agent, True, lean=True,
                             at_least=at_least).subquery()
        return select(*(e.c[name] for name in columns)).subquery()
    expiries = (b.next_expiry, b.held_expiry)
    fresh = [balances.unexpired(expiry, now) for expiry in expiries]
    stale = or_(*(balances.expired(expiry, now) for expiry in expiries))  # indexed, each
    # NULL when a hold's amount is invalid; an expression, so SQLite walks the explored.
    available = case((b.held_invalid == 0, b.remaining_key - b.held + 0))
    current = select(b.artifact_id, b.investigations, b.reward_total,
                     available.label("available")).where(
        b.investigations > 0, _free(now, agent), *of_type_unindexed(type_), *fresh,
        enough(available, at_least))
    rest = queue_candidates(params, now, type_, agent, True, lean=True, where=[stale],
                            at_least=at_least).subquery()
    return current.union_all(select(*(rest.c[name] for name in columns))).subquery()


def explored_groups(params: Params, now: datetime, type_: str | None, agent: str | None,
                    at_least: int) -> Select:
    """The explored candidates by investigation count: how many, the best reward total, and
    the most available budget, per count. Enough for the whole queue's totals."""
    e = _explored_pool(params, now, type_, agent, at_least)
    return (select(e.c.investigations, func.count().label("candidates"),
                   func.max(e.c.reward_total).label("best_reward"),
                   func.max(e.c.available).label("most_available"))
            .group_by(e.c.investigations))


def explored_by_score(params: Params, now: datetime, type_: str | None, agent: str | None,
                      at_least: int, bonus: float, top_ucb: float, top_available: Decimal,
                      weight: float, score_at_least: float | None = None,
                      limit: int | None = None) -> Select:
    """The ids of explored candidates by their score as SQL computes it in floating point
    (close to, but not always exactly, the pure scoring's): the best `limit`, or those
    scoring `score_at_least`. A candidate's UCB exploration bonus is `bonus` / sqrt(its
    investigations)."""
    e = _explored_pool(params, now, type_, agent, at_least)
    n = cast(e.c.investigations, Float)
    ucb = cast(e.c.reward_total, Float) / REWARD_SCALE / n + literal(bonus) / func.sqrt(n)
    ucb_norm = ucb / top_ucb if top_ucb > 0 else literal(0.0)
    score = (literal(weight) * ucb_norm
             + literal(1 - weight) * cast(e.c.available, Float) / float(top_available))
    stmt = select(e.c.artifact_id, score.label("sql_score"))
    if score_at_least is not None:
        stmt = stmt.where(score >= score_at_least)
    return stmt.order_by(score.desc()).limit(limit)
