"""The server's cache of its summing reads (the pipeline, research activity, agents): a
result is served again only while it is still exact, so no reader ever sees a stale
total.

A result stays exact while (1) no transaction has committed since it was read, and (2) no
bounty, hold or claim lease it counted has expired since. (1) is the database's version:
on PostgreSQL the read transaction's own snapshot (`pg_current_snapshot()`, which any
commit on the server changes), on SQLite `PRAGMA data_version` read through a connection
of its own (which any other connection's commit changes) and the file's identity. (2) is
the earliest expiry still to come when the result was read. Each server process (worker)
keeps its own cache, of at most CACHED_RESULTS results.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from datetime import datetime
from typing import Callable, TypeVar

from sqlalchemy import literal, select, union_all
from sqlalchemy.engine import Connection

from scidex_alloc.storage.schema import Timestamp, claims, holds, token_bounties, utcnow
from scidex_alloc.storage.sql import InstantKey, LaterThan
from scidex_alloc.storage.transactions import Transactions

CACHED_RESULTS = 64
T = TypeVar("T")


class ReadCache:
    def __init__(self, tx: Transactions, sqlite_path=None):
        self._tx = tx
        self._sqlite_path = sqlite_path
        self._probe: sqlite3.Connection | None = None
        self._probe_identity = None
        self._lock = threading.Lock()
        self._results: dict = {}

    def read(self, key: tuple, compute: Callable[[Connection], T]) -> T:
        """`compute` in a read transaction, or its result kept from an earlier call with
        the same `key` while that is still exact."""
        outside = self._sqlite_version()
        with self._tx.reading() as connection:
            version = outside or _snapshot(connection)
            now = utcnow()
            kept = self._results.get(key)
            if kept is not None and kept[0] == version and now < kept[1]:
                return kept[2]
            value = compute(connection)
            until = next_expiry(connection, now) or datetime.max.replace(tzinfo=now.tzinfo)
        with self._lock:
            self._results.pop(key, None)
            self._results[key] = (version, until, value)
            while len(self._results) > CACHED_RESULTS:
                self._results.pop(next(iter(self._results)))
        return value

    def _sqlite_version(self):
        """SQLite's data version and file identity, read before the read transaction (a
        commit in between only makes the next call read again); None on PostgreSQL."""
        if self._sqlite_path is None:
            return None
        try:
            stat = os.stat(self._sqlite_path)
        except OSError:  # gone: nothing kept matches; the read itself reports the failure
            return object()
        identity = stat.st_dev, stat.st_ino
        with self._lock:
            if self._probe is None or identity != self._probe_identity:
                if self._probe is not None:
                    self._probe.close()
                self._probe = sqlite3.connect(f"file:{self._sqlite_path}?mode=ro", uri=True,
                                              check_same_thread=False)
                self._probe_identity = identity
            return identity, self._probe.execute("PRAGMA data_version").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._probe is not None:
                self._probe.close()
                self._probe = None


def _snapshot(connection: Connection) -> str:
    """The PostgreSQL read transaction's snapshot: its first statement, so its own."""
    return connection.exec_driver_sql("SELECT pg_current_snapshot()::text").scalar_one()


def next_expiry(connection: Connection, now: datetime) -> datetime | None:
    """The earliest instant after `now` at which an open bounty, an active hold or an
    active claim's lease runs out: totals and counts may change then without a write."""
    at = literal(now, Timestamp())
    sources = [(token_bounties, token_bounties.c.expires_at, token_bounties.c.status == "open"),
               (holds, holds.c.expires_at, holds.c.status == "active"),
               (claims, claims.c.lease_expires_at, claims.c.status == "active")]
    firsts = [select(column.label("at")).where(status, LaterThan(column, at))
              .order_by(InstantKey(column)).limit(1).subquery()
              for _, column, status in sources]
    instants = union_all(*(select(first.c.at) for first in firsts)).subquery()
    found = [moment for moment in connection.scalars(select(instants.c.at)) if moment]
    return min((Timestamp().process_result_value(m, connection.dialect) for m in found),
               default=None)
