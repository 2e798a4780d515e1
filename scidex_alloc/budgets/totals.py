"""The balances' totals per artifact type, kept by the database, so that the pipeline
reads a few rows where it summed every balance.

A trigger on `artifact_balances` appends what each change adds to its type's totals as
a row of `balance_totals` (on PostgreSQL one row per type per statement, from its
transition tables); every COMPACT_EVERY-th row folds the rows before it into one per
type. Writers only append, so that concurrent ones never wait for each other on a
shared row; on PostgreSQL one transaction folds at a time (an advisory lock; the others
leave it for later), and deleting the rows it folds in the statement that sums them
moves each row's amounts exactly once. A type's totals are the sums of its rows: the
stored balances' sums, which readers correct for the balances whose bounties expired
since they were summed, as they read those balances themselves.
"""

from __future__ import annotations

from sqlalchemy import case, func, literal, literal_column, or_, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.sql.expression import ColumnElement

from scidex_alloc.storage.schema import TOTALS, artifact_balances, balance_totals
from scidex_alloc.storage.sql import MICRO_PER_TOKEN, WholeTokens, literal_sql

COMPACT_EVERY = 1000  # rows appended between two folds
COLUMNS = ("artifacts", "invalid", *(f"{name}{part}" for name in TOTALS
                                     for part in ("", "_micro")))
# A balance's columns each total sums, over the balances with a valid budget.
SOURCES = {"demand": "demand", "bounty": "bounty", "budget": "budget_key", "spent": "spent",
           "remaining": "remaining_key"}
WATCHED = ("type", "demand", "demand_invalid", "bounty", "bounty_invalid", "price", "spent",
           "spent_invalid")  # the columns a balance's totals follow (and the keys, from them)
OFF_SETTING = "scidex_alloc.totals"  # PostgreSQL: 'off' while the balances are rebuilt
FOLD_LOCK = 0x5CD3A70  # PostgreSQL: the advisory lock one folding transaction holds


def contribution(balance, sign: int = 1, valid: ColumnElement | None = None
                 ) -> dict[str, ColumnElement]:
    """What one balance row (`balance`: its columns by name) adds to its type's totals
    (`sign` -1: takes from them); `valid` tells whether it has a valid budget (by default:
    whether it has a budget key)."""
    if valid is None:
        valid = balance["budget_key"].is_not(None)
    found = {"artifacts": literal(sign), "invalid": case((valid, 0), else_=sign)}
    for name, source in SOURCES.items():
        amount = case((valid, balance[source]), else_=0)
        whole = WholeTokens(amount)
        found[name] = whole * sign
        found[f"{name}_micro"] = (amount - whole * MICRO_PER_TOKEN) * sign
    return found


def by_type(rows):
    """The totals per type of `rows` (a subquery with a `type` and the COLUMNS): type,
    then each column summed; a type whose totals are all zero (it has no artifacts left)
    is left out."""
    sums = [func.sum(rows.c[name]) for name in COLUMNS]
    return (select(rows.c.type, *(total.label(name) for total, name in zip(sums, COLUMNS)))
            .group_by(rows.c.type).having(or_(*(total != 0 for total in sums))))


def summed_again():
    """The totals per type summed from every stored balance. (Grouped by an expression of
    the type, not the column: SQLite would walk an index by type and look up every row,
    where a scan and a sort take half the time.)"""
    b = artifact_balances.c
    rows = select(b.type.concat("").label("type"),
                  *(v.label(k) for k, v in contribution(b).items())).subquery()
    return by_type(rows)


def rebuild(connection: Connection) -> None:
    """Sum the totals again from the stored balances, in the caller's transaction."""
    connection.execute(balance_totals.delete())
    connection.execute(balance_totals.insert().from_select(["type", *COLUMNS],
                                                           summed_again()))


def artifacts(connection: Connection) -> int:
    """How many balances there are, as the totals count them: a few rows, not a count."""
    return _counted(connection, "artifacts")


def invalid(connection: Connection) -> int:
    """How many balances have no valid budget, as the totals count them."""
    return _counted(connection, "invalid")


def _counted(connection: Connection, name: str) -> int:
    total = func.coalesce(func.sum(balance_totals.c[name]), 0)
    return int(connection.execute(select(total)).scalar_one())


def mismatches():
    """The types whose kept totals differ from the stored balances' sums."""
    kept, summed = by_type(balance_totals), summed_again()
    extra, missing = kept.except_(summed).subquery(), summed.except_(kept).subquery()
    types = select(extra.c.type).union(select(missing.c.type)).subquery()
    return select(types.c.type).order_by(types.c.type)


def appended(connection: Connection, sources: list[tuple[str, str, int]]) -> str:
    """INSERT of the rows' differences per type: `sources` are (FROM clause, row alias,
    sign); types whose totals do not move append nothing."""
    parts = []
    for source, alias, sign in sources:
        row = {name: literal_column(f"{alias}.{name}") for name in
               ("type", *SOURCES.values())}
        values = contribution(row, sign)
        parts.append(f"SELECT {alias}.type AS type, "
                     + ", ".join(f"{literal_sql(connection, values[c])} AS {c}" for c in COLUMNS)
                     + (f" FROM {source}" if source else ""))
    sums = ", ".join(f"sum({c})" for c in COLUMNS)
    moved = " OR ".join(f"sum({c}) <> 0" for c in COLUMNS)
    return (f"INSERT INTO balance_totals (type, {', '.join(COLUMNS)}) SELECT type, {sums} "
            f"FROM ({' UNION ALL '.join(parts)}) d GROUP BY type HAVING {moved}")


def _folded(connection: Connection, upto: str) -> str:
    """Fold the rows up to id `upto` into one per type."""
    sums = ", ".join(f"sum({c})" for c in COLUMNS)
    names = ", ".join(COLUMNS)
    if connection.dialect.name == "sqlite":
        return (f"INSERT INTO balance_totals (type, {names}) SELECT type, {sums} "
                f"FROM balance_totals WHERE id <= {upto} GROUP BY type;\n"
                f"  DELETE FROM balance_totals WHERE id <= {upto}")
    return (f"WITH folded AS (DELETE FROM balance_totals WHERE id <= {upto} RETURNING *) "
            f"INSERT INTO balance_totals (type, {names}) SELECT type, {sums} "
            f"FROM folded GROUP BY type")


def create_triggers(connection: Connection) -> None:
    """Create the triggers that keep the totals (replacing any of the same name)."""
    drop_triggers(connection)
    if connection.dialect.name == "sqlite":
        events = {"INSERT": [("", "NEW", 1)], "DELETE": [("", "OLD", -1)],
                  "UPDATE": [("", "OLD", -1), ("", "NEW", 1)]}
        for event, sources in events.items():
            of = f" OF {', '.join(WATCHED)}" if event == "UPDATE" else ""
            connection.exec_driver_sql(
                f"CREATE TRIGGER {trigger_name(event)} AFTER {event}{of} "
                f"ON artifact_balances FOR EACH ROW BEGIN\n  "
                f"{appended(connection, sources)};\nEND")
        connection.exec_driver_sql(
            f"CREATE TRIGGER balance_totals_fold AFTER INSERT ON balance_totals "
            f"FOR EACH ROW WHEN NEW.id % {COMPACT_EVERY} = 0 BEGIN\n  "
            f"{_folded(connection, 'NEW.id')};\nEND")
        return
    from scidex_alloc.budgets.ddl import SUSPEND_SETTING

    skip = (f"IF current_setting('{SUSPEND_SETTING}', true) = 'suspended' "
            f"OR current_setting('{OFF_SETTING}', true) = 'off' THEN RETURN NULL; END IF;")
    events = {"INSERT": [("n_rows n", "n", 1)], "DELETE": [("o_rows o", "o", -1)],
              "UPDATE": [("o_rows o", "o", -1), ("n_rows n", "n", 1)]}
    branches = "".join(f"  IF TG_OP = '{event}' THEN\n    {appended(connection, sources)};\n"
                       f"  END IF;\n" for event, sources in events.items())
    connection.exec_driver_sql(
        f"CREATE OR REPLACE FUNCTION balance_totals_append() RETURNS trigger "
        f"LANGUAGE plpgsql AS $body$\nBEGIN\n  {skip}\n{branches}  RETURN NULL;\nEND\n$body$")
    for event, tables in (("INSERT", "NEW TABLE AS n_rows"), ("DELETE", "OLD TABLE AS o_rows"),
                          ("UPDATE", "NEW TABLE AS n_rows OLD TABLE AS o_rows")):
        connection.exec_driver_sql(
            f"CREATE TRIGGER {trigger_name(event)} AFTER {event} ON artifact_balances "
            f"REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION balance_totals_append()")
    connection.exec_driver_sql(
        f"CREATE OR REPLACE FUNCTION balance_totals_fold() RETURNS trigger "
        f"LANGUAGE plpgsql AS $body$\nBEGIN\n"
        f"  IF pg_try_advisory_xact_lock({FOLD_LOCK}) THEN\n    {_folded(connection, 'NEW.id')};\n"
        f"  END IF;\n  RETURN NULL;\nEND\n$body$")
    connection.exec_driver_sql(
        f"CREATE TRIGGER balance_totals_fold AFTER INSERT ON balance_totals FOR EACH ROW "
        f"WHEN (mod(NEW.id, {COMPACT_EVERY}) = 0) EXECUTE FUNCTION balance_totals_fold()")


def trigger_name(event: str) -> str:
    """The name of the trigger that appends the changes of `event` to the totals."""
    return f"balance_totals_{event.lower()}"


def drop_triggers(connection: Connection) -> None:
    names = [trigger_name(event) for event in ("INSERT", "DELETE", "UPDATE")]
    if connection.dialect.name == "sqlite":
        for name in (*names, "balance_totals_fold"):
            connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
        return
    for table, triggers in (("artifact_balances", names), ("balance_totals", ["balance_totals_fold"])):
        if connection.exec_driver_sql(f"SELECT to_regclass('{table}')").scalar() is not None:
            for name in triggers:  # an older revision lacks the table
                connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    for function in ("balance_totals_append", "balance_totals_fold"):
        connection.exec_driver_sql(f"DROP FUNCTION IF EXISTS {function}()")


def pause(connection: Connection) -> None:
    """Leave the totals alone while the caller rewrites every balance (`rebuild` then sums
    them): SQLite drops the triggers, which `create_triggers` makes again; PostgreSQL's
    skip the rest of the transaction."""
    if connection.dialect.name == "sqlite":
        drop_triggers(connection)
    else:
        connection.execute(text(f"SELECT set_config('{OFF_SETTING}', 'off', true)"))


def resume(connection: Connection) -> None:
    """Sum the totals again, and keep them from now on."""
    rebuild(connection)
    if connection.dialect.name == "sqlite":
        create_triggers(connection)
    else:
        connection.execute(text(f"SELECT set_config('{OFF_SETTING}', '', true)"))
