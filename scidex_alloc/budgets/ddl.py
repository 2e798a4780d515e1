"""The SQL that keeps the balances: the generated ranking keys and the triggers on the
source tables, for each database (bulkwrites.py steps around them for bulk writes).

A change to positions, which other services write most, only appends its artifact to
`pending_demand` (on PostgreSQL once per statement): readers sum a pending artifact's
demand again until it is folded (folding.fold_pending), so that such a write costs one
row at the end of a small table rather than its balance's moves in every ranking index.

On PostgreSQL the triggers on the other tables other services write (artifacts, markets,
token_bounties) are row triggers deferred to commit, so that a writer that keeps its
transaction open never holds a balance row that spends and claims need; those on alloc's
own tables run at once: once per statement on resource_allocations and claims, per row
on holds (few per artifact, summed again as bounties are). On SQLite, whose writers queue
for one lock anyway, every trigger is a row trigger that applies at once.
"""

from __future__ import annotations

from sqlalchemy import and_, case, literal, literal_column
from sqlalchemy.engine import Connection
from sqlalchemy.sql.expression import ColumnElement

from scidex_alloc.budgets import totals
from scidex_alloc.budgets.balances import (
    BOUNTY,
    COLUMNS,
    HELD,
    SUMMED,
    billionths,
    finite,
    recomputed,
    valid_total,
)
from scidex_alloc.formula import Params
from scidex_alloc.storage.sql import ExactSum, InstantKey, LaterThan, MicroTokens, literal_sql

SUSPEND_SETTING = "scidex_alloc.balances"  # PostgreSQL: 'suspended' inside alloc load
# PostgreSQL: tables whose writers may be other services, whose triggers wait for the
# commit; and those whose triggers run once per statement: alloc's own, and positions
# (whose trigger, without pending_demand, is deferred as the others' above).
DEFERRED = ("artifacts", "markets", "token_bounties")
STATEMENT_LEVEL = ("resource_allocations", "claims", "positions")
# The balance columns of alloc's own tables, whose triggers run at once.
IMMEDIATE = ("spent", "spent_invalid", "investigations", "reward_total", *HELD)


def key_columns(connection: Connection, budget_expression) -> dict[str, str]:
    """The generated ranking keys' SQL: budget and remaining by the default formula, NULL
    for an artifact without a valid budget. `budget_expression(params, demand, bounty,
    price)` is the budget SELECT's own formula, so both order alike."""
    b = {name: literal_column(name) for name in COLUMNS}
    terms = {name: valid_total(b[name], b[f"{name}_invalid"]) for name in SUMMED}
    price_ok, _, budget = budget_expression(Params(), terms["demand"], terms["bounty"], b["price"])
    valid = and_(price_ok, *(terms[name].is_not(None) for name in SUMMED))
    return {"budget_key": literal_sql(connection, case((valid, budget))),
            "remaining_key": literal_sql(connection, case((valid, budget - terms["spent"])))}


def additions(connection: Connection, row: str) -> dict[str, tuple[dict[str, str], str | None]]:
    """Per table whose rows add to a balance: SQL of what one row (`row` is NEW, OLD or an
    alias) adds, per column, and the condition for it to count."""
    r = {name: literal_column(f"{row}.{name}") for name in
         ("tokens", "status", "reward")}
    counted = finite([r["tokens"]])
    amount = {
        "positions": ({"demand": case((counted, MicroTokens(r["tokens"])), else_=0),
                       "demand_invalid": case((counted, 0), else_=1)}, r["status"] == "open"),
        "resource_allocations": ({"spent": case((counted, MicroTokens(r["tokens"])), else_=0),
                                  "spent_invalid": case((counted, 0), else_=1)}, None),
        "claims": ({"investigations": literal(1), "reward_total": billionths(r["reward"])},
                   r["status"] == "done"),
    }
    return {table: ({column: f"({literal_sql(connection, value)})" for column, value in columns.items()},
                    None if condition is None else literal_sql(connection, condition))
            for table, (columns, condition) in amount.items()}


def _update_additive(connection, table: str, row: str, sign: str) -> str:
    """UPDATE of the balance that one row of `table` adds to (or, with '-', takes from)."""
    columns, condition = additions(connection, row)[table]
    sets = []
    heal = recomputed(literal_column("artifact_balances.artifact_id"), current_instant(connection), SUMMED)
    for column, amount in columns.items():
        change = f"{sign} {amount}"
        if connection.dialect.name == "sqlite" and column in SUMMED:
            # A sum past 64 bits became a float: sum it again, exactly, from the source.
            sets.append(f"{column} = CASE WHEN typeof({column} {change}) = 'integer' "
                        f"THEN {column} {change} ELSE {literal_sql(connection, heal[column])} END")
        else:
            sets.append(f"{column} = {column} {change}")
    where = f"artifact_id = {row}.artifact_id" + (f" AND {condition}" if condition else "")
    return f"UPDATE artifact_balances SET {', '.join(sets)} WHERE {where}"


def current_instant(connection: Connection) -> ColumnElement:
    """The transaction's instant in a trigger's SQL."""
    return literal_column("'now'" if connection.dialect.name == "sqlite" else "now()")


def _update_recomputed(connection, row: str, columns, only: str = "") -> str:
    values = recomputed(literal_column(f"{row}.artifact_id"), current_instant(connection), columns)
    sets = ", ".join(f"{c} = {literal_sql(connection, values[c])}" for c in columns)
    return f"UPDATE artifact_balances SET {sets} WHERE artifact_id = {row}.artifact_id{only}"


def _insert_recomputed(connection, row: str) -> str:
    values = recomputed(literal_column(f"{row}.id"), current_instant(connection))
    return (f"INSERT INTO artifact_balances (artifact_id, type, {', '.join(COLUMNS)}) "
            f"SELECT {row}.id, {row}.type, "
            + ", ".join(literal_sql(connection, values[c]) for c in COLUMNS))


def _statements(connection, pending: bool) -> dict[str, dict[str, list[str]]]:
    """Per source table and event (INSERT, DELETE, UPDATE), the row trigger's statements
    that keep the balances, in terms of NEW and OLD (positions: see create_triggers)."""
    def additive(table):
        plus = _update_additive(connection, table, "NEW", "+")
        minus = _update_additive(connection, table, "OLD", "-")
        return {"INSERT": [plus], "DELETE": [minus], "UPDATE": [minus, plus]}

    def summed_again(row, columns, only=""):
        lock = [_lock_balance(row, only)] if connection.dialect.name == "postgresql" else []
        return lock + [_update_recomputed(connection, row, columns, only)]

    def expiring(columns):  # bounties and holds: summed again, as they expire with time
        # An update summing the new row's artifact again sums the old one's too, unless
        # it moved the row to another artifact.
        moved = " AND OLD.artifact_id <> NEW.artifact_id"
        return {"INSERT": summed_again("NEW", columns), "DELETE": summed_again("OLD", columns),
                "UPDATE": summed_again("OLD", columns, moved) + summed_again("NEW", columns)}

    holds_kept = expiring(HELD)
    if connection.dialect.name == "postgresql":
        holds_kept = _held_by_addition(connection, summed_again)
        # Deferred to commit, after which no row of the artifact can precede it (the foreign
        # keys hold at once): it starts from nothing for the deferred tables, whose rows'
        # triggers add to it next; the rows of alloc's own tables, whose triggers ran at
        # once and found no balance, are summed.
        values = recomputed(literal_column("NEW.id"), current_instant(connection), IMMEDIATE)
        start = (f"INSERT INTO artifact_balances (artifact_id, type, {', '.join(IMMEDIATE)}) "
                 f"SELECT NEW.id, NEW.type, "
                 + ", ".join(literal_sql(connection, values[c]) for c in IMMEDIATE))
        artifact = {
            "INSERT": [start],
            "DELETE": ["DELETE FROM artifact_balances WHERE artifact_id = OLD.id"],
            "UPDATE": ["UPDATE artifact_balances SET artifact_id = NEW.id, type = NEW.type "
                       "WHERE artifact_id = OLD.id"],
        }
    else:  # rows may precede their artifact (foreign keys are off for other connections)
        artifact = {
            "INSERT": [_insert_recomputed(connection, "NEW")],
            "DELETE": ["DELETE FROM artifact_balances WHERE artifact_id = OLD.id"],
            "UPDATE": ["DELETE FROM artifact_balances WHERE artifact_id = OLD.id",
                       _insert_recomputed(connection, "NEW")],
        }
    return {
        "artifacts": artifact,
        "markets": {
            "INSERT": ["UPDATE artifact_balances SET price = NEW.price "
                       "WHERE artifact_id = NEW.artifact_id"],
            "DELETE": ["UPDATE artifact_balances SET price = NULL "
                       "WHERE artifact_id = OLD.artifact_id"],
            "UPDATE": ["UPDATE artifact_balances SET price = NULL "
                       "WHERE artifact_id = OLD.artifact_id",
                       "UPDATE artifact_balances SET price = NEW.price "
                       "WHERE artifact_id = NEW.artifact_id"],
        },
        "positions": ({"INSERT": [_pending("NEW")], "DELETE": [_pending("OLD")],
                       "UPDATE": [_pending("OLD"), _pending("NEW")]} if pending
                      else additive("positions")),
        "token_bounties": expiring(BOUNTY),
        "resource_allocations": additive("resource_allocations"),
        "claims": additive("claims"),
        "holds": holds_kept,
    }


def _pending(row: str) -> str:
    """Append the artifact of one position row (NEW or OLD) to pending_demand when the
    row counts in its demand."""
    return (f"INSERT INTO pending_demand (artifact_id) SELECT {row}.artifact_id "
            f"WHERE {row}.status = 'open'")


def _pending_per_statement() -> dict[str, str]:
    """PostgreSQL: per event, append once each artifact whose open positions a whole
    statement changed (its transition tables new_rows and old_rows)."""
    def appended(*rows: str) -> str:
        selects = " UNION ALL ".join(f"SELECT artifact_id FROM {row}_rows WHERE status = 'open'"
                                     for row in rows)
        return (f"INSERT INTO pending_demand (artifact_id) SELECT DISTINCT artifact_id "
                f"FROM ({selects}) changed")

    return {"INSERT": appended("n"), "DELETE": appended("o"), "UPDATE": appended("o", "n")}


def _held_by_addition(connection, summed_again) -> dict[str, list[str]]:
    """PostgreSQL's hold triggers: a hold placed adds to `held`, and one that ends
    (settled, voided) or is renewed changes it by the difference, with `held_expiry`,
    while the stored sum is current (no hold it counts has expired); otherwise, and for a
    hold that moves, changes amount or is not a finite number, the artifact's holds are
    summed again (`summed_again`, as SQLite always does).

    The instant is read from the clock once the balance is locked, not at the start of
    the transaction: it is then no earlier than the instant the stored sum was made at,
    so that the holds live now are exactly those it counted."""
    now = literal_column("clock_timestamp()")

    def sql(row, expression):
        tokens, status, expires_at = (literal_column(f"{row}.{name}") for name in
                                      ("tokens", "status", "expires_at"))
        return f"({literal_sql(connection, expression(tokens, status, expires_at))})"

    def live(row):  # counted by `held` (or `held_invalid`) now
        return sql(row, lambda t, status, expires: and_(status == "active",
                                                          LaterThan(expires, now)))

    def finite_amount(row):
        return sql(row, lambda tokens, s, e: finite([tokens]))

    def counted(row):
        return f"(CASE WHEN {live(row)} THEN {sql(row, lambda t, s, e: MicroTokens(t))} ELSE 0 END)"

    fresh = f"(held_expiry IS NULL OR held_expiry > {literal_sql(connection, InstantKey(now))})"
    first = literal_sql(connection, recomputed(literal_column("NEW.artifact_id"), now,
                                        ("held_expiry",))["held_expiry"])
    placed = (f"IF NOT {live('NEW')} THEN RETURN NULL; END IF;\n"  # it counts nowhere
              f"    IF {finite_amount('NEW')} THEN\n"
              f"      UPDATE artifact_balances SET held = held + {counted('NEW')}, "
              f"held_expiry = LEAST(held_expiry, {sql('NEW', lambda t, s, e: InstantKey(e))}) "
              f"WHERE artifact_id = NEW.artifact_id AND {fresh};\n"
              f"      IF FOUND THEN RETURN NULL; END IF;\n"
              f"    END IF")
    changed = (f"IF OLD.artifact_id = NEW.artifact_id AND OLD.tokens = NEW.tokens "
               f"AND {finite_amount('NEW')} THEN\n"
               f"      {_lock_balance('NEW')};\n"  # so that the minimum sees every hold
               f"      UPDATE artifact_balances SET held = held + {counted('NEW')} - "
               f"{counted('OLD')}, held_expiry = {first} "
               f"WHERE artifact_id = NEW.artifact_id AND {fresh};\n"
               f"      IF FOUND THEN RETURN NULL; END IF;\n"
               f"    END IF")
    moved = " AND OLD.artifact_id <> NEW.artifact_id"
    return {"INSERT": [placed, *summed_again("NEW", HELD)],
            "DELETE": summed_again("OLD", HELD),
            "UPDATE": [changed, *summed_again("OLD", HELD, moved), *summed_again("NEW", HELD)]}


def _lock_balance(row: str, only: str = "") -> str:
    """PostgreSQL: lock the artifact's balance first, so that a sum (a statement of its
    own, with a snapshot of its own) sees a concurrent writer's row committed meanwhile."""
    return (f"PERFORM 1 FROM artifact_balances WHERE artifact_id = {row}.artifact_id"
            f"{only} FOR UPDATE")


def _statement_level(connection, table: str) -> dict[str, str]:
    """PostgreSQL, for alloc's own tables: per event, one UPDATE that adds what a whole
    statement's rows (its transition tables new_rows and old_rows) change, per artifact, so
    that a batch of many lines on one artifact updates its balance once, not per line.
    The rows are locked in artifact order first, so that two batches cannot deadlock."""

    def changes(row: str, sign: str) -> str:
        columns, condition = additions(connection, row)[table]
        parts = ", ".join(f"{sign}{amount} AS {c}" for c, amount in columns.items())
        where = f" WHERE {condition}" if condition else ""
        return f"SELECT {row}.artifact_id, {parts} FROM {row}_rows {row}{where}"

    columns = list(additions(connection, "n")[table][0])
    sources = {"INSERT": [changes("n", "")], "DELETE": [changes("o", "-")],
               "UPDATE": [changes("o", "-"), changes("n", "")]}
    found = {}
    sets = ", ".join(f"{c} = b.{c} + d.{c}" for c in columns)
    for event, selects in sources.items():
        deltas = grouped(connection, columns, " UNION ALL ".join(selects))
        found[event] = (
            f"PERFORM 1 FROM artifact_balances WHERE artifact_id IN (SELECT artifact_id FROM "
            f"({deltas}) d) ORDER BY artifact_id FOR UPDATE;\n"
            f"    UPDATE artifact_balances b SET {sets} FROM ({deltas}) d "
            f"WHERE b.artifact_id = d.artifact_id")
    return found


def grouped(connection, columns: list[str], changes: str) -> str:
    """Per artifact, the sums of the `changes` rows' columns, where any is not zero."""
    sums = {c: literal_sql(connection, ExactSum(literal_column(c))) for c in columns}
    return (f"SELECT artifact_id, {', '.join(f'{s} AS {c}' for c, s in sums.items())} "
            f"FROM ({changes}) c GROUP BY artifact_id "
            f"HAVING {' OR '.join(f'{s} <> 0' for s in sums.values())}")


# The columns whose change moves a balance: an UPDATE of any other leaves it alone.
WATCHED = {
    "artifacts": "id, type",
    "markets": "artifact_id, price",
    "positions": "artifact_id, tokens, status",
    "token_bounties": "artifact_id, tokens_offered, tokens_paid, status, expires_at",
    "resource_allocations": "artifact_id, tokens",
    "claims": "artifact_id, status, reward",
    "holds": "artifact_id, tokens, status, expires_at",
}


def trigger_name(table: str, event: str | None = None) -> str:
    return f"balances_{table}" + (f"_{event.lower()}" if event else "")


def create_triggers(connection: Connection, pending: bool = True) -> None:
    """Create the triggers that keep the balances and their totals (replacing any of the
    same name). A change to positions makes its artifact pending; without `pending` (as
    before revision 0010), it adds to the balance itself."""
    drop_triggers(connection)
    totals.create_triggers(connection)
    for table, events in _statements(connection, pending).items():
        if connection.dialect.name == "sqlite":
            for event, statements in events.items():
                of = f" OF {WATCHED[table]}" if event == "UPDATE" else ""
                body = "".join(f"{s};\n" for s in statements)
                connection.exec_driver_sql(
                    f"CREATE TRIGGER {trigger_name(table, event)} AFTER {event}{of} "
                    f"ON {table} FOR EACH ROW BEGIN\n{body}END")
        else:
            _create_postgresql_trigger(connection, table, events, pending)


def _create_postgresql_trigger(connection: Connection, table: str, events, pending: bool
                               ) -> None:
    per_statement = table in STATEMENT_LEVEL and (pending or table != "positions")
    if per_statement:
        found = (_pending_per_statement() if table == "positions"
                 else _statement_level(connection, table))
        events = {event: [statement] for event, statement in found.items()}
    branches = "".join(
        f"  IF TG_OP = '{event}' THEN\n" + "".join(f"    {s};\n" for s in statements)
        + "  END IF;\n" for event, statements in events.items())
    name = trigger_name(table)
    connection.exec_driver_sql(
        f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $body$\n"
        f"BEGIN\n"
        f"  IF current_setting('{SUSPEND_SETTING}', true) = 'suspended' THEN RETURN NULL; END IF;\n"
        f"{branches}  RETURN NULL;\nEND\n$body$")
    if per_statement:  # transition tables need one trigger per event
        for event, tables in (("INSERT", "NEW TABLE AS n_rows"), ("DELETE", "OLD TABLE AS o_rows"),
                              ("UPDATE", "NEW TABLE AS n_rows OLD TABLE AS o_rows")):
            connection.exec_driver_sql(
                f"CREATE TRIGGER {trigger_name(table, event)} AFTER {event} ON {table} "
                f"REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION {name}()")
        return
    kind, timing = (("CONSTRAINT TRIGGER", " DEFERRABLE INITIALLY DEFERRED")
                    if table in (*DEFERRED, "positions") else ("TRIGGER", ""))
    connection.exec_driver_sql(
        f"CREATE {kind} {name} AFTER INSERT OR DELETE OR UPDATE OF {WATCHED[table]} "
        f"ON {table}{timing} FOR EACH ROW EXECUTE FUNCTION {name}()")


def drop_triggers(connection: Connection) -> None:
    """Drop the triggers of every table that exists (an older revision lacks some)."""
    totals.drop_triggers(connection)
    for table in WATCHED:
        if connection.dialect.name == "sqlite":
            for event in ("INSERT", "DELETE", "UPDATE"):
                connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger_name(table, event)}")
        else:
            if connection.exec_driver_sql(f"SELECT to_regclass('{table}')").scalar() is not None:
                for event in (None, "INSERT", "DELETE", "UPDATE"):
                    connection.exec_driver_sql(
                        f"DROP TRIGGER IF EXISTS {trigger_name(table, event)} ON {table}")
            connection.exec_driver_sql(f"DROP FUNCTION IF EXISTS {trigger_name(table)}()")
