"""The balances around bulk writes, which would pay their triggers per row: a load
suspends them and sums the balances it moved set-based afterwards (`suspend`, `resume`);
a spend file adds its rows to each balance once per statement (`added_per_statement`).
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime
from typing import Iterator

from sqlalchemy import literal_column, text
from sqlalchemy.engine import Connection

from scidex_alloc.budgets import ddl, totals
from scidex_alloc.budgets.balances import SUMMED, few, rebuild, recomputed, resum
from scidex_alloc.storage.sql import literal_sql

MAX_ROWID = 2**63 - 1  # SQLite's greatest id


def suspend(connection: Connection) -> None:
    """Leave the balances alone for the rest of the caller's transaction, for a bulk insert
    that `resume` then sums set-based: the transaction must write nothing else after it (on
    PostgreSQL the deferred triggers fire at commit, and still find themselves suspended).
    Other connections' writes keep their triggers."""
    if connection.dialect.name == "sqlite":  # the write lock keeps everyone else out
        ddl.drop_triggers(connection)
    else:
        _set_suspended(connection, True)


def _set_suspended(connection: Connection, suspended: bool) -> None:
    """PostgreSQL: whether the triggers skip the rest of the transaction's statements."""
    value = "suspended" if suspended else ""
    connection.execute(text(f"SELECT set_config('{ddl.SUSPEND_SETTING}', '{value}', true)"))


def resume(connection: Connection, now: datetime, touched: set[str] | None = None) -> None:
    """Sum the balances again from the source tables, and keep them again from the next
    transaction on (SQLite: from now on): only those of the artifacts `touched` (every
    artifact whose rows the bulk insert wrote) when they are few of all, else every one."""
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        ddl.create_triggers(connection)
    if touched is None or not few(connection, len(touched)):
        rebuild(connection, now)
    elif sqlite:
        resum(connection, now, touched)
    else:  # with the totals' triggers running for its statements only
        _set_suspended(connection, False)
        resum(connection, now, touched)
        _set_suspended(connection, True)


@contextmanager
def added_per_statement(connection: Connection, table: str) -> Iterator[None]:
    """Inside a write transaction (which an error rolls back), a bulk insert into alloc's
    own `table` that adds to each balance and to the totals once, as PostgreSQL's
    statement-level triggers do. On SQLite, whose row triggers cost more than the insert
    itself, the insert's and the totals' triggers are dropped for it; then the totals lose
    the balances it moves, one grouped UPDATE adds the new rows (those past the greatest
    id before it: the write lock keeps other writers out), the totals gain the balances
    back, and the triggers are made again."""
    if connection.dialect.name != "sqlite":
        yield
        return
    after = connection.exec_driver_sql(f"SELECT max(id) FROM {table}").scalar() or 0
    if after >= MAX_ROWID:  # past it SQLite picks new ids at random: keep the row trigger
        yield
        return
    dropped = [ddl.trigger_name(table, "INSERT"), totals.trigger_name("UPDATE")]
    made = [connection.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?", (name,)).scalar()
        for name in dropped]
    for name in dropped:
        connection.exec_driver_sql(f"DROP TRIGGER {name}")
    yield
    columns, _ = ddl.additions(connection, "n")[table]
    changes = (f"SELECT n.artifact_id, {', '.join(f'{a} AS {c}' for c, a in columns.items())} "
               f"FROM {table} n WHERE n.id > ?")
    heal = recomputed(literal_column("artifact_balances.artifact_id"), ddl.current_instant(connection), SUMMED)
    added = {c: f"artifact_balances.{c} + d.{c}" for c in columns}
    sets = ", ".join(
        f"{c} = CASE WHEN typeof({added[c]}) = 'integer' THEN {added[c]} "
        f"ELSE {literal_sql(connection, heal[c])} END" if c in SUMMED else f"{c} = {added[c]}"
        for c in columns)
    moved = (f"artifact_balances b WHERE b.artifact_id IN "
             f"(SELECT artifact_id FROM {table} WHERE id > ?)")
    deltas = ddl.grouped(connection, list(columns), changes)
    connection.exec_driver_sql(totals.appended(connection, [(moved, "b", -1)]), (after,))
    connection.exec_driver_sql(
        f"UPDATE artifact_balances SET {sets} FROM ({deltas}) d "
        f"WHERE artifact_balances.artifact_id = d.artifact_id", (after,))
    connection.exec_driver_sql(totals.appended(connection, [(moved, "b", 1)]), (after,))
    for trigger in made:
        connection.exec_driver_sql(trigger)
