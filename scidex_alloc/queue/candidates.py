"""The work queue's candidates: the budget SELECT with each artifact's claims and rewards.

A candidate's budget term is its available budget (remaining, less what holds keep), and
only artifacts with some (or, for a reservation, enough) available are candidates. Only
two kinds of candidate can reach the top of the queue, so only they are read: every
explored one (an artifact with a completed investigation: its UCB term varies), and the
unexplored ones with the most available budget (their UCB term is the same, 1, so their
score rises with available alone). The rest never leaves the database.

Each statement is built once per shape and executed with its values as parameters (see
`values`): an agent asks for the queue many times a minute.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from sqlalchemy import (
    Float,
    Select,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
    true,
    union_all,
)

from scidex_alloc.budgets import balances
from scidex_alloc.budgets.balances import NOW, REWARD_SCALE
from scidex_alloc.budgets.queries import (
    budget_select,
    of_type_unindexed,
    pending_balances,
    top_ids,
)
from scidex_alloc.formula import Params
from scidex_alloc.storage.schema import Timestamp, artifact_balances, claims, pending_demand
from scidex_alloc.storage.sql import LaterThan

CACHED = 64  # statements kept per builder: one per formula, type and shape in use
AGENT = bindparam("agent")


def values(now: datetime, agent: str | None, at_least: int, **more) -> dict:
    """The parameters of the queue's statements: the instant, the asking agent, and the
    least available budget a candidate needs, in micro-tokens (at least 1: some)."""
    return {"now": now, "agent": agent, "at_least": max(at_least, 1), **more}


def _live(*where):
    return and_(claims.c.status == "active", LaterThan(claims.c.lease_expires_at, NOW), *where)


def _hiding(has_agent: bool):
    """The live claims that hide an artifact from the asker: another agent's (any, when no
    agent asks)."""
    return _live(claims.c.agent_id != AGENT) if has_agent else _live()


@lru_cache(maxsize=2)
def hidden_and_pending(has_agent: bool) -> Select:
    """Whether some live claim hides an artifact from the asker (`hidden`), and whether
    some artifact is pending (`pending`, see balances.pending): where none is, the scans
    of many candidates leave out the test for each of them. One round trip."""
    return select(exists(select(claims.c.id).where(_hiding(has_agent))).label("hidden"),
                  exists(select(pending_demand.c.id)).label("pending"))


def _free(has_agent: bool, hidden: bool):
    """No live claim of another agent on the artifact. The live claims are few and read
    once, rather than looked up for each of many candidates (their artifact ids are never
    NULL, so NOT IN is exact); when none hides any artifact (not `hidden`, see
    hidden_and_pending), there is nothing to look up for each candidate."""
    if not hidden:
        return true()
    return artifact_balances.c.artifact_id.not_in(
        select(claims.c.artifact_id).where(_hiding(has_agent)))


def _enough(available):
    """Whether an available budget (in micro-tokens, whole) makes a candidate."""
    return available >= bindparam("at_least")


def _stale(pending: bool):
    """Balances whose bounty or held total is out of date, or (where any artifact is
    `pending`) whose artifact is pending: summed again by the budget SELECT."""
    b = artifact_balances.c
    return or_(*(balances.expired(b[expiry]) for expiry in balances.EXPIRY.values()),
               *_pending(pending))


def _pending(pending: bool) -> list:
    return [balances.pending(artifact_balances.c.artifact_id)] if pending else []


def _near(pending: bool):
    """Balances that may have `least` (a parameter) available or more: available is at
    most remaining, but where an artifact has holds (whose total another service may have
    made negative), a stale bounty or is pending. Every stale balance is among them."""
    b = artifact_balances.c
    return or_(b.remaining_key >= bindparam("least"), balances.expired(b.next_expiry),
               b.held_expiry.is_not(None), *_pending(pending))


@lru_cache(maxsize=CACHED)
def queue_candidates(params: Params, type_: str | None, has_agent: bool, hidden: bool,
                     explored: bool, lean: bool = False, by_ids: bool = False) -> Select:
    """Artifacts with `at_least` available budget and no live claim by another agent, with
    their investigation counts and reward totals (billionths), and the asking agent's own
    live claim: the explored ones, or the unexplored ones by available budget (the best
    `limit`, found by way of the maintained remaining key). Of the explored, `by_ids` keeps
    those of `ids`. `lean` leaves out the titles and own claims, for scans of many."""
    b = artifact_balances.c
    own = (_live(claims.c.artifact_id == b.artifact_id, claims.c.agent_id == AGENT)
           if has_agent and not lean else None)
    where = [_free(has_agent, hidden),
             b.investigations > 0 if explored else b.investigations == 0]
    if explored:
        narrowed = [b.artifact_id.in_(bindparam("ids", expanding=True))] if by_ids else []
        within, where = None, [*where, *of_type_unindexed(type_), *narrowed]
        type_ = None
    else:
        within = top_ids(params, type_, "available", where)
    base = budget_select(params, type_, where=where if within is None else (),
                         within=within, titled=not lean, extra=[
        b.investigations, b.reward_total,
        (select(claims.c.id).where(own).scalar_subquery() if own is not None
         else literal(None)).label("claim_id"),
        (select(claims.c.lease_expires_at).where(own).scalar_subquery() if own is not None
         else literal(None, Timestamp())).label("lease_expires_at"),
    ])
    inner = base.subquery()
    stmt = select(inner).where(_enough(inner.c.available))
    if explored:
        return stmt
    return (stmt.order_by(inner.c.available.desc(), inner.c.artifact_id)
            .limit(bindparam("count")))


POOL_COLUMNS = ("artifact_id", "investigations", "reward_total", "available")


def _explored_pool(params: Params, type_: str | None, has_agent: bool, hidden: bool,
                   pending: bool):
    """Explored candidates' ids, investigations, reward totals and available budgets (as
    SQL computes them), for scans of many. With the default formula, the fresh balances
    only, read from the explored artifacts' covering index in order of investigation count,
    with the maintained remaining key and held total; the stale ones (see _stale; the
    pending ones are tested for only where any artifact is `pending`) are found by
    `explored_flagged` (or `explored_near`). With another formula, every explored
    candidate, through the budget SELECT."""
    if params != Params():
        e = queue_candidates(params, type_, has_agent, hidden, True, lean=True).subquery()
        return select(*(e.c[name] for name in POOL_COLUMNS)).subquery()
    b = artifact_balances.c
    fresh = [*(balances.unexpired(b[expiry]) for expiry in balances.EXPIRY.values()),
             *(~test for test in _pending(pending))]
    # An expression, so SQLite walks the explored; none where a hold's amount is invalid.
    available = b.remaining_key - b.held + 0
    return select(b.artifact_id, b.investigations, b.reward_total,
                  available.label("available")).where(
        b.investigations > 0, b.held_invalid == 0, _free(has_agent, hidden),
        *of_type_unindexed(type_), *fresh, _enough(available)).subquery()


@lru_cache(maxsize=CACHED)
def explored_near(params: Params, type_: str | None, has_agent: bool, hidden: bool,
                  pending: bool) -> Select:
    """The ids of the explored candidates that may have `least` (a parameter, in
    micro-tokens) available or more, or that the pool leaves out, with whether it does
    (`stale`): those to read in full before the rest are ranked. Cheap to build and run:
    with the default formula it reads only the explored artifacts' index."""
    if params != Params():
        e = _explored_pool(params, type_, has_agent, hidden, pending)
        return select(e.c.artifact_id, literal(0).label("stale")).where(
            e.c.available >= bindparam("least"))
    b = artifact_balances.c
    return select(b.artifact_id, case((_stale(pending), 1), else_=0).label("stale")).where(
        b.investigations > 0, _free(has_agent, hidden), *of_type_unindexed(type_),
        _near(pending))


@lru_cache(maxsize=CACHED)
def balances_above(type_: str | None) -> Select:
    """At most `count` (a parameter) of the balances (of `type_`) whose maintained remaining
    key is `least` (micro-tokens) or more, in the remaining index's order: their ids and
    investigation counts. An artifact without holds has its remaining available, so fewer
    than `count` rows hold every such candidate but those with holds, a stale bounty or
    a pending artifact (see explored_flagged). Default formula only."""
    b = artifact_balances.c
    of_type = [] if type_ is None else [b.type == type_]
    return (select(b.artifact_id, b.investigations)
            .where(b.remaining_key >= bindparam("least"), *of_type)
            .order_by(b.remaining_key.desc().nulls_last(), b.artifact_id)
            .limit(bindparam("count")))


@lru_cache(maxsize=CACHED)
def explored_flagged(type_: str | None, has_agent: bool, hidden: bool, pending: bool
                     ) -> Select:
    """The explored candidates whose stored bounty has expired or that have holds, found
    along the partial indexes on those expiries, and (where any is `pending`) the pending
    ones, found from their rows: their ids, and whether the pool leaves them out
    (`stale`). Default formula only."""
    b = artifact_balances.c
    # "Explored" as an expression the explored artifacts' index does not serve: else SQLite
    # would walk it whole rather than the expiries' indexes.
    explored = b.investigations + 0 > 0
    where = [explored, _free(has_agent, hidden), *of_type_unindexed(type_)]
    flag = case((_stale(pending), 1), else_=0).label("stale")
    found = [pending_balances(*where).add_columns(literal(1).label("stale"))] if pending else []
    return union_all(select(b.artifact_id, flag).where(balances.expired(b.next_expiry), *where),
                     select(b.artifact_id, flag).where(b.held_expiry.is_not(None), *where),
                     *found)


@lru_cache(maxsize=CACHED)
def explored_groups(params: Params, type_: str | None, has_agent: bool, hidden: bool,
                    pending: bool) -> Select:
    """The pool's candidates (see _explored_pool) by investigation count: how many, and the
    best reward total, per count."""
    e = _explored_pool(params, type_, has_agent, hidden, pending)
    return (select(e.c.investigations, func.count().label("candidates"),
                   func.max(e.c.reward_total).label("best_reward"))
            .group_by(e.c.investigations))


@lru_cache(maxsize=CACHED)
def explored_most_available(params: Params, type_: str | None, has_agent: bool, hidden: bool,
                            pending: bool) -> Select:
    """The largest available budget of the pool's candidates (see _explored_pool)."""
    e = _explored_pool(params, type_, has_agent, hidden, pending)
    return select(func.max(e.c.available))


@lru_cache(maxsize=CACHED)
def explored_by_score(params: Params, type_: str | None, has_agent: bool, hidden: bool,
                      pending: bool, bounded: bool) -> Select:
    """The ids of the pool's candidates (see _explored_pool) by their score as SQL computes
    it in floating point (close to, but not always exactly, the pure scoring's): the best
    `score_limit`, or (`bounded`) those scoring `score_at_least`, of those with
    `available_floor` available or more. The score is `ucb_factor` x (mean reward +
    `bonus` / sqrt(investigations)) + `available_factor` x available."""
    e = _explored_pool(params, type_, has_agent, hidden, pending)
    n = cast(e.c.investigations, Float)
    ucb = (cast(e.c.reward_total, Float) / REWARD_SCALE / n
           + bindparam("bonus", type_=Float) / func.sqrt(n))
    score = (bindparam("ucb_factor", type_=Float) * ucb
             + bindparam("available_factor", type_=Float) * cast(e.c.available, Float))
    stmt = select(e.c.artifact_id, score.label("sql_score")).where(
        e.c.available >= bindparam("available_floor"))
    if bounded:
        return stmt.where(score >= bindparam("score_at_least", type_=Float)).order_by(
            score.desc())
    return stmt.order_by(score.desc()).limit(bindparam("score_limit"))
