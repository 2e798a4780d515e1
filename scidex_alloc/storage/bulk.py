"""Fast bulk inserts inside the caller's transaction: COPY on PostgreSQL, INSERTs of many rows
each on SQLite."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from datetime import datetime, timezone
from decimal import Decimal
from functools import lru_cache
from itertools import chain, islice
from typing import Callable, Iterable, Iterator, Sequence

from sqlalchemy import Numeric, Table, text
from sqlalchemy.engine import Connection

from scidex_alloc.storage.schema import Timestamp

ROWS_PER_INSERT = 100  # rows to one INSERT statement on SQLite
MAX_SQLITE_VARIABLES = 32_766  # SQLite's bound on a statement's parameters (3.32 on)


@lru_cache(maxsize=1)  # a batch stamps every row with the same instant
def _utc_text(value: datetime) -> str:
    if value.tzinfo is not timezone.utc:
        value = value.astimezone(timezone.utc)
    return value.replace(tzinfo=None).isoformat(" ")


def stored(value):
    """A value as both databases take it in a bulk insert and store it, as SQLAlchemy's own
    types store it: a Decimal as exact decimal text (SQLite's NUMERIC affinity makes it a
    number), a datetime as naive UTC text (alloc's PostgreSQL sessions are in UTC)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return _utc_text(value)
    return value


def _sqlite_values(table: Table, columns: Sequence[str]) -> Callable[[tuple], Sequence]:
    """Rows as the raw sqlite3 inserts below can bind them (sqlite3.register_adapter
    would do it for the whole process). Only the numeric and timestamp columns are looked at."""
    converted = [i for i, name in enumerate(columns)
                 if isinstance(table.c[name].type, (Numeric, Timestamp))]

    def values(row: tuple) -> Sequence:
        row = list(row)
        for i in converted:
            row[i] = stored(row[i])
        return row

    return values


def insert_rows(connection: Connection, table: Table, columns: Sequence[str],
                rows: Iterable[tuple]) -> None:
    """Rows of any values the columns' types take (Decimals, datetimes, ...)."""
    if connection.dialect.name == "sqlite":
        rows = map(_sqlite_values(table, columns), rows)
    insert_stored(connection, table, columns, rows)


def insert_stored(connection: Connection, table: Table, columns: Sequence[str],
                  rows: Iterable[Sequence]) -> None:
    """Rows whose values are already as `stored` makes them (or text, whole numbers, None)."""
    names = ", ".join(columns)
    if connection.dialect.name == "postgresql":
        driver = connection.connection.driver_connection
        with driver.cursor() as cursor:
            writer = _copy_writer()(cursor)
            with cursor.copy(f"COPY {table.name} ({names}) FROM STDIN", writer=writer) as copy:
                for row in rows:
                    copy.write_row(row)
        return
    # Many rows to a statement: SQLite's per-statement work, not the rows', made
    # executemany's single-row inserts cost about 1.6x as much.
    per = min(ROWS_PER_INSERT, MAX_SQLITE_VARIABLES // len(columns))
    insert = f"INSERT INTO {table.name} ({names}) VALUES "
    marks = "(" + ", ".join("?" for _ in columns) + ")"
    full = insert + ", ".join([marks] * per)
    rows = iter(rows)
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        while values := list(chain.from_iterable(islice(rows, per))):
            count = len(values) // len(columns)
            cursor.execute(full if count == per else insert + ", ".join([marks] * count), values)
    finally:
        cursor.close()


@lru_cache(maxsize=1)  # psycopg is imported only for PostgreSQL
def _copy_writer():
    from psycopg.copy import LibpqWriter

    class Writer(LibpqWriter):
        """Ends a failed COPY only while the connection lives: ending it on a lost one
        fails again, and psycopg would print that second failure besides raising the first."""

        def finish(self, exc: BaseException | None = None) -> None:
            if exc is None or not self.connection.broken:
                super().finish(exc)

    return Writer


def advance_sequence(connection: Connection, table: Table) -> None:
    """After explicit ids were copied in, make PostgreSQL's serial continue past them."""
    if connection.dialect.name != "postgresql":
        return
    connection.execute(
        text(
            f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
            f"COALESCE((SELECT MAX(id) FROM {table.name}), 0) + 1, false)"
        )
    )


@contextmanager
def paused_cycle_collection() -> Iterator[None]:
    """Pause the cyclic garbage collector, as it was, for a batch: each line allocates
    objects that reference counting frees with their chunk, and every collection they
    trigger also scans all objects of the imported libraries (~14 % of a batch's CPU)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
