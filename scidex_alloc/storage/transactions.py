"""The transactions of one database: reads, writes, and writes run again when a concurrent
writer made them fail. Every operation of the allocator opens its transaction here."""

from __future__ import annotations

import random
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from scidex_alloc.storage import database

# A write transaction that a concurrent writer made fail runs again, up to this many
# attempts in all, each after a random pause of up to RETRY_PAUSE seconds times the
# attempts so far (so that the parties of a deadlock do not meet again at once).
WRITE_ATTEMPTS = 5
RETRY_PAUSE = 0.05
# PostgreSQL cancels one party of a deadlock (40P01) or of a serialization failure (40001).
RETRIED_SQLSTATES = frozenset({"40P01", "40001"})
T = TypeVar("T")


class Transactions:
    """Transactions on one engine: `read`, `write` and `write_retried` run a function of the
    connection; `reading` and `writing` are the bare transactions, for work over several."""

    def __init__(self, engine: Engine):
        self.engine = engine
        # SQLite: a writer takes the write lock at BEGIN, before any of its checks read.
        self._writer = engine.execution_options(sqlite_begin="IMMEDIATE")
        # PostgreSQL: a read of several statements sees one snapshot, as on SQLite (a
        # transaction at this level that only reads never fails to serialize).
        self._reader = (engine.execution_options(isolation_level="REPEATABLE READ")
                        if engine.dialect.name == "postgresql" else engine)

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self._reader.begin() as connection:
            yield connection

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        with self._writer.begin() as connection:
            yield connection

    def read(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in a read transaction."""
        with self.reading() as connection:
            return work(connection)

    def write(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in a write transaction, once: for work that consumes a stream."""
        with self.writing() as connection:
            return work(connection)

    def stream(self, rows: Callable[[Connection], Iterator[T]]) -> Iterator[T]:
        """The rows of a read, yielded as they are fetched inside one transaction, which
        begins at the first row asked for and ends with the last."""
        with self.reading() as connection:
            yield from rows(connection)

    def write_retried(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in a write transaction, and again when a concurrent writer made it
        fail: a deadlock or serialization failure, or a unique key that a concurrent insert
        took first (the re-run sees that row, and replays or looks elsewhere). Only for work
        that reads all it needs again: never a stream that was consumed."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                return self.write(work)
            except Exception as error:
                retriable = (self._is_integrity_error(error)
                             or database.sqlstate(error) in RETRIED_SQLSTATES)
                if attempt == WRITE_ATTEMPTS or not retriable:
                    raise
            time.sleep(random.uniform(0, RETRY_PAUSE * attempt))
        raise AssertionError("unreachable")

    def _is_integrity_error(self, error: Exception) -> bool:
        """A constraint the database refused, wrapped by SQLAlchemy or raw from the driver
        (bulk inserts use the driver directly)."""
        return isinstance(error, (sa_exc.IntegrityError,
                                  self.engine.dialect.loaded_dbapi.IntegrityError))
