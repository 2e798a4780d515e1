"""The agent work queue's decisions: claim the best candidates (ranked by ranking.py),
close claims.

Claiming locks each chosen artifact (PostgreSQL: FOR NO KEY UPDATE SKIP LOCKED, so
parallel claimers pass each other by, while the KEY SHARE locks that inserts of positions
or spends take on the artifact do not hide it; SQLite: the write transaction) and re-reads
its claims before writing, and a partial unique index allows one active claim per artifact.
Closing a claim is one conditional UPDATE, so of two concurrent closers only one succeeds.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial

from sqlalchemy import and_, literal, select
from sqlalchemy.engine import Connection

from scidex_alloc import errors
from scidex_alloc.formula import Params
from scidex_alloc.holds import reserving
from scidex_alloc.holds.results import HoldRecord
from scidex_alloc.ledger import spending
from scidex_alloc.queue.ranking import ranked
from scidex_alloc.queue.results import ClaimInfo, QueueEntry
from scidex_alloc.storage import sql
from scidex_alloc.storage.schema import (
    BASE_UNIT,
    Timestamp,
    artifacts,
    claims,
    holds,
    utcnow,
)
from scidex_alloc.storage.transactions import Transactions

REWARD_PRECISION = Decimal("1e-9")
# When every candidate read is taken by others, read this many times as many.
CANDIDATE_GROWTH = 4


def preview(connection: Connection, params: Params, type_: str | None, agent: str | None,
            limit: int, weight: float, exploration: float,
            reserve: tuple[Decimal, str] | None = None) -> list[QueueEntry]:
    """The top `limit` candidates (with `reserve` available, if given), claimed by nobody;
    the asking agent's own claims show."""
    scored, _ = ranked(connection, params, utcnow(), type_, agent, weight, exploration, limit,
                       reserve)
    return [entry(i, s, budget, row.claim_id, row.lease_expires_at)
            for i, (s, budget, row) in enumerate(scored[:limit], start=1)]


def entry(position: int, score, budget, claim_id, lease_expires_at, hold=None) -> QueueEntry:
    """A queue entry; `hold`, a claim's hold, gives the hold's id and the available budget
    after it."""
    return QueueEntry(
        rank=position, artifact_id=budget.artifact_id, type=budget.type, title=budget.title,
        score=score.score, ucb=score.ucb, ucb_norm=score.ucb_norm,
        budget_norm=score.budget_norm, remaining=budget.remaining,
        investigations=score.candidate.investigations,
        mean_reward=score.candidate.mean_reward, claim_id=claim_id,
        lease_expires_at=lease_expires_at,
        available=budget.available if hold is None else hold.available,
        hold_id=None if hold is None else hold.id,
    )


def claim_top(tx: Transactions, params: Params, type_: str | None, agent: str,
              lease: timedelta, limit: int, weight: float, exploration: float,
              reserve: tuple[Decimal, str] | None = None) -> list[QueueEntry]:
    """Lease the best `limit` candidates to `agent`, passing by those others hold; with
    `reserve` (an amount and its unit), only those with that much available, each with a
    hold of it that lives as long as the lease.

    The queue is ranked in a read transaction; only the leases are written, in a short
    write transaction that re-checks each artifact (its claims, its available budget), so
    that a claimer holds SQLite's write lock for milliseconds, not for the ranking."""
    taken: list[QueueEntry] = []
    tried: set[str] = set()
    wanted = limit
    while True:
        now = utcnow()
        scored, more = tx.read(partial(
            ranked, params=params, now=now, type_=type_, agent=agent, weight=weight,
            exploration=exploration, wanted=wanted, reserve=reserve))
        pending = [(score, budget) for score, budget, _ in scored
                   if budget.artifact_id not in tried]
        leased, examined = tx.write_retried(partial(
            _lease_best, params=params, pending=pending, agent=agent, lease=lease,
            wanted=limit - len(taken), reserve=reserve))
        tried.update(examined)
        taken += [entry(len(taken) + i, score, budget, claim_id, expires, hold)
                  for i, (score, budget, claim_id, hold, expires)
                  in enumerate(leased, start=1)]
        if len(taken) == limit or not more:
            return taken
        wanted *= CANDIDATE_GROWTH


def _lease_best(connection: Connection, params: Params, pending: list, agent: str,
                lease: timedelta, wanted: int, reserve: tuple[Decimal, str] | None
                ) -> tuple[list, list[str]]:
    """Lease up to `wanted` of the ranked `pending` candidates, best first: the leases
    (score, budget, claim id, hold, expiry) and the ids examined."""
    now = utcnow()
    amount = None if reserve is None else reserving.amount_in(connection, *reserve)
    leased, examined = [], []
    for score, budget in pending:
        if len(leased) == wanted:
            break
        examined.append(budget.artifact_id)
        ids = _lease(connection, params, budget.artifact_id, agent, now, now + lease, amount)
        if ids is not None:
            leased.append((score, budget, *ids, now + lease))
    return leased, examined


def _lease(connection: Connection, params: Params, artifact_id: str, agent: str,
           now: datetime, expires: datetime, amount: reserving.Amount | None
           ) -> tuple[int, HoldRecord | None] | None:
    """Lease one artifact to `agent` (a new claim, or its own renewed, with its hold): the
    claim's id and its hold, if any; None when another claimer holds it right now, has
    claimed it since the queue was ranked, or its available budget has run short since."""
    if connection.dialect.name == "postgresql" and connection.execute(
        select(artifacts.c.id).where(artifacts.c.id == artifact_id)
        .with_for_update(key_share=True, skip_locked=True)
    ).first() is None:
        return None
    # Locked now: by the statement above, or on SQLite by the write transaction.
    balance = spending.read(connection, params, [artifact_id]).get(artifact_id)
    if balance is None or balance.available is None:
        return None
    available = balance.available
    current = connection.execute(
        select(claims).where(claims.c.artifact_id == artifact_id, claims.c.status == "active")
    ).first()
    live = current is not None and current.lease_expires_at > now
    if live and current.agent_id != agent:
        return None
    hold = reserving.of_claim(connection, current.id) if live else None
    if hold is None and not (available >= amount.tokens if amount else available > 0):
        return None
    if live:  # the agent's own: its lease and hold renewed
        connection.execute(claims.update().where(claims.c.id == current.id)
                           .values(lease_expires_at=expires))
        renewed = reserving.renew(connection, current.id, expires, now, available)
        return current.id, renewed or _hold(
            connection, params, balance, artifact_id, agent, amount, current.id, now, expires)
    if current is not None:
        connection.execute(claims.update().where(claims.c.id == current.id)
                           .values(status="expired"))
    claim_id = connection.execute(
        claims.insert().returning(claims.c.id),
        [{"artifact_id": artifact_id, "agent_id": agent, "status": "active",
          "claimed_at": now, "lease_expires_at": expires}],
    ).scalar_one()
    return claim_id, _hold(connection, params, balance, artifact_id, agent, amount, claim_id,
                           now, expires)


def _hold(connection, params, balance, artifact_id, agent, amount, claim_id, now, expires
          ) -> HoldRecord | None:
    """The hold a reserving claim places, for as long as its lease, from the `balance`
    the lease read under the artifact's lock."""
    if amount is None:
        return None
    return reserving.place(connection, params, artifact_id, amount.units, amount.unit, agent,
                           expires - now, None, None, claim=(claim_id, expires),
                           locked=balance)


def checked_reward(reward: float | None) -> Decimal | None:
    """An investigation's reward as stored: a number from 0 to 1, to 1e-9."""
    if reward is None:
        return None
    if not math.isfinite(reward) or not 0 <= reward <= 1:
        raise errors.UsageError("{reward} must be a number from 0 to 1", "reward")
    return Decimal(repr(reward)).quantize(REWARD_PRECISION)


def finish(connection: Connection, params: Params, claim_id: int, status: str,
           reward: Decimal | None, spend: tuple[Decimal, str | None] | None = None,
           kind: str | None = None) -> ClaimInfo:
    """Close an active claim as done (with its reward) or released. Done settles the
    claim's hold (for `spend`, an amount and unit, or else the held amount), or without a
    hold records `spend` as a plain spend; released voids the hold: all in this
    transaction.

    The UPDATE itself checks that the claim is still active: on PostgreSQL a concurrent
    closer's UPDATE waits for this one's row lock, then finds the claim closed. Where a
    hold or spend is involved the artifact is locked first, as spends and claimers do, and
    the time is read once it is held: a hold may expire while the lock is awaited."""
    hold = reserving.of_claim(connection, claim_id)
    locked = None
    if hold is not None:
        locked = reserving.lock_hold(connection, params, hold.id, hold.artifact_id)
    elif spend is not None:
        artifact_id = connection.execute(
            select(claims.c.artifact_id).where(claims.c.id == claim_id)).scalar()
        if artifact_id is not None:
            spending.lock(connection, [artifact_id])
    now = utcnow()
    row = connection.execute(
        claims.update().where(claims.c.id == claim_id, claims.c.status == "active")
        .values(status=status, finished_at=now, reward=reward).returning(claims)
    ).first()
    if row is None:
        current = connection.execute(select(claims.c.status).where(claims.c.id == claim_id)).scalar()
        if current is None:
            raise errors.UnknownId(f"no claim with id {claim_id}")
        raise errors.UsageError(f"claim {claim_id} is {current}, not active")
    spend_id = None
    if hold is not None and status == "released":
        reserving.void(connection, params, hold.id, locked)
    elif hold is not None:
        units, unit = spend if spend is not None else (None, None)
        spend_id = reserving.settle(connection, params, hold.id, units, unit, kind, None,
                                    locked).id
    elif spend is not None:
        spend_id = spending.record_one(connection, params, spending.SpendRequest(
            0, row.artifact_id, spend[0], spend[1] or BASE_UNIT, kind, row.agent_id)).id
    return info({**row._mapping, "reward": reward}, now,
                None if hold is None else hold.id, spend_id)


def info(row, now: datetime, hold_id: int | None = None, spend_id: int | None = None
         ) -> ClaimInfo:
    return ClaimInfo(
        id=row["id"], artifact_id=row["artifact_id"], agent=row["agent_id"],
        status=row["status"], claimed_at=row["claimed_at"],
        lease_expires_at=row["lease_expires_at"],
        expired=row["status"] == "active" and row["lease_expires_at"] <= now,
        finished_at=row["finished_at"], reward=row["reward"], hold_id=hold_id,
        spend_id=spend_id,
    )


def listing(connection: Connection, agent: str | None, expired: bool) -> list[ClaimInfo]:
    """Active claims: live ones, or with `expired` those whose lease ran out."""
    now = utcnow()
    live = sql.LaterThan(claims.c.lease_expires_at, literal(now, Timestamp()))
    stmt = (select(claims, holds.c.id.label("hold_id"))
            .outerjoin(holds, and_(holds.c.claim_id == claims.c.id, holds.c.status == "active"))
            .where(claims.c.status == "active", ~live if expired else live)
            .order_by(claims.c.id))
    if agent is not None:
        stmt = stmt.where(claims.c.agent_id == agent)
    return [info(row._mapping, now, row.hold_id) for row in connection.execute(stmt)]
