"""Claims as the dashboard lists them: live, stale (active with the lease run out), done
or all, newest first, each with its artifact's type, its lease countdown and its hold."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, case, literal, select
from sqlalchemy.engine import Connection

from scidex_alloc.queue.results import ClaimRow
from scidex_alloc.storage.schema import Timestamp, artifacts, claims, holds
from scidex_alloc.storage.sql import IsFinite, LaterThan


def page(connection: Connection, now: datetime, status: str, agent: str | None,
         artifact_id: str | None, type_: str | None, limit: int, offset: int
         ) -> list[ClaimRow]:
    live = LaterThan(claims.c.lease_expires_at, literal(now, Timestamp()))
    active = claims.c.status == "active"
    which = {"live": and_(active, live), "stale": and_(active, ~live),
             "done": claims.c.status == "done", "all": None}[status]
    stmt = (select(claims, artifacts.c.type, holds.c.id.label("hold_id"),
                   case((IsFinite(holds.c.tokens), holds.c.tokens)).label("held"))
            .join(artifacts, artifacts.c.id == claims.c.artifact_id)
            .outerjoin(holds, and_(holds.c.claim_id == claims.c.id, holds.c.status == "active"))
            .order_by(claims.c.id.desc()).limit(limit).offset(offset or None))
    for condition in (which,
                      None if agent is None else claims.c.agent_id == agent,
                      None if artifact_id is None else claims.c.artifact_id == artifact_id,
                      None if type_ is None else artifacts.c.type == type_):
        if condition is not None:
            stmt = stmt.where(condition)
    return [row_of(r, now) for r in connection.execute(stmt)]


def row_of(r, now: datetime) -> ClaimRow:
    is_active = r.status == "active"
    left = (r.lease_expires_at - now).total_seconds() if is_active else None
    return ClaimRow(r.id, r.artifact_id, r.type, r.agent_id, r.status, r.claimed_at,
                    r.lease_expires_at, None if left is None else round(left, 3),
                    is_active and left <= 0, r.hold_id, r.held, r.reward, r.finished_at)
