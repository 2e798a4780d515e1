"""The balances the database keeps: every term of each artifact's budget in one row of
`artifact_balances`, summed by triggers on the source tables, so that no reader sums them.

One definition of each term (`_TERMS`) yields the trigger bodies, the per-artifact
recomputation and the set-based one that backfills, rebuilds and audits the balances.

On PostgreSQL the triggers on the tables other services write (artifacts, markets,
positions, token_bounties) are deferred to commit, so that a writer that keeps its
transaction open never holds a balance row that spends and claims need; those on
alloc's own tables (resource_allocations, claims) apply at once. On SQLite, whose
writers queue for one lock anyway, every trigger applies at once.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, and_, case, cast, func, literal, literal_column, or_, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.sql.expression import ColumnElement

from scidex_alloc.formula import MAX_TOTAL, Params
from scidex_alloc.storage.schema import (
    Timestamp,
    artifact_balances,
    artifacts,
    claims,
    markets,
    positions,
    resource_allocations,
    token_bounties,
)
from scidex_alloc.storage.sql import (
    MICRO_PER_TOKEN,
    ExactSum,
    InstantKey,
    IsFinite,
    LaterThan,
    MicroTokens,
    WholeNumber,
)

MAX_TOTAL_MICRO = int(MAX_TOTAL) * MICRO_PER_TOKEN
REWARD_SCALE = 1_000_000_000  # reward_total counts billionths: exact sums on both databases
SUSPEND_SETTING = "scidex_alloc.balances"  # PostgreSQL: 'suspended' inside alloc load
# PostgreSQL: tables whose writers may be other services, whose triggers wait for the
# commit; and alloc's own, whose triggers run once per statement.
DEFERRED = ("artifacts", "markets", "positions", "token_bounties")
STATEMENT_LEVEL = ("resource_allocations", "claims")
SUMMED = ("demand", "bounty", "spent")
COLUMNS = ("demand", "demand_invalid", "bounty", "bounty_invalid", "next_expiry", "price",
           "spent", "spent_invalid", "investigations", "reward_total")


def _terms(now: ColumnElement) -> dict:
    """Each summed term: its table, a row's amount in micro-tokens, the row's columns that
    must be finite numbers for it to count, and which rows count (at instant `now`)."""
    offered, paid = token_bounties.c.tokens_offered, token_bounties.c.tokens_paid
    return {
        "demand": (positions, MicroTokens(positions.c.tokens), [positions.c.tokens],
                   [positions.c.status == "open"]),
        "bounty": (token_bounties, MicroTokens(offered) - MicroTokens(paid), [offered, paid],
                   [token_bounties.c.status == "open",
                    or_(token_bounties.c.expires_at.is_(None),
                        LaterThan(token_bounties.c.expires_at, now))]),
        "spent": (resource_allocations, MicroTokens(resource_allocations.c.tokens),
                  [resource_allocations.c.tokens], []),
    }


def _finite(columns) -> ColumnElement:
    return and_(*(IsFinite(column) for column in columns))


def _aggregates(now: ColumnElement) -> dict:
    """Every balance column as an aggregate over its source rows: (table, expression, filter)."""
    found = {}
    for name, (table, amount, columns, where) in _terms(now).items():
        finite = _finite(columns)
        found[name] = (table, ExactSum(case((finite, amount), else_=0)), where)
        found[f"{name}_invalid"] = (table, func.count(case((~finite, 1))), where)
    bounty_rows = _terms(now)["bounty"][3]
    found["next_expiry"] = (token_bounties, func.min(InstantKey(token_bounties.c.expires_at)),
                            bounty_rows)
    done = [claims.c.status == "done"]
    found["investigations"] = (claims, func.count(), done)
    found["reward_total"] = (claims, func.coalesce(func.sum(_billionths(claims.c.reward)), 0),
                             done)
    return found


def _billionths(reward: ColumnElement) -> ColumnElement:
    return cast(func.round(func.coalesce(reward, 0) * REWARD_SCALE), Integer)


def recomputed(artifact_id: ColumnElement, now: ColumnElement) -> dict[str, ColumnElement]:
    """Every balance column of one artifact, summed again from the source tables."""
    columns = {name: select(aggregate).where(table.c.artifact_id == artifact_id, *where)
               .scalar_subquery()
               for name, (table, aggregate, where) in _aggregates(now).items()}
    columns["price"] = (select(markets.c.price).where(markets.c.artifact_id == artifact_id)
                        .scalar_subquery())
    return {name: columns[name] for name in COLUMNS}


def recomputed_all(now: datetime):
    """Every artifact with its balance columns summed again, set-based: one grouped pass over
    each source table."""
    instant = literal(now, Timestamp())
    grouped = {}
    for name, (table, aggregate, where) in _aggregates(instant).items():
        grouped.setdefault((table.name, len(where)), (table, where, {}))[2][name] = aggregate
    stmt_columns = {}
    joins = artifacts.outerjoin(markets, markets.c.artifact_id == artifacts.c.id)
    for index, (table, where, aggregates) in enumerate(grouped.values()):
        sub = (select(table.c.artifact_id, *(a.label(n) for n, a in aggregates.items()))
               .where(*where).group_by(table.c.artifact_id).subquery(f"source{index}"))
        joins = joins.outerjoin(sub, sub.c.artifact_id == artifacts.c.id)
        for name in aggregates:
            zero = None if name == "next_expiry" else 0
            stmt_columns[name] = sub.c[name] if zero is None else func.coalesce(sub.c[name], zero)
    stmt_columns["price"] = markets.c.price
    return select(artifacts.c.id.label("artifact_id"), artifacts.c.type,
                  *(stmt_columns[name].label(name) for name in COLUMNS)).select_from(joins)


def rebuild(connection: Connection, now: datetime) -> int:
    """Sum every balance again from the source tables, in the caller's transaction; how many
    artifacts there are. On PostgreSQL concurrent writers' triggers wait until it commits;
    on SQLite, whose writers wait anyway, the indexes are made afresh after the rows."""
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        for name in indexes(connection):
            connection.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
    else:
        connection.execute(text("LOCK TABLE artifact_balances IN EXCLUSIVE MODE"))
    connection.execute(artifact_balances.delete())
    count = connection.execute(
        artifact_balances.insert().from_select(["artifact_id", "type", *COLUMNS],
                                               recomputed_all(now))
        .execution_options(preserve_rowcount=True)
    ).rowcount
    if sqlite:
        create_indexes(connection)
    else:  # a table filled at once has no statistics
        connection.execute(text("ANALYZE artifact_balances"))
    return count


def indexes(connection: Connection) -> dict[str, str]:
    """The balances' secondary indexes: the ranking keys (also within a type), the balances
    whose bounties expire, and the explored artifacts."""
    last = " NULLS LAST" if connection.dialect.name == "postgresql" else ""
    found = {}
    for key in ("budget", "remaining"):
        found[f"ix_artifact_balances_{key}"] = f"({key}_key DESC{last}, artifact_id)"
        found[f"ix_artifact_balances_type_{key}"] = f"(type, {key}_key DESC{last}, artifact_id)"
    found["ix_artifact_balances_next_expiry"] = "(next_expiry) WHERE next_expiry IS NOT NULL"
    found["ix_artifact_balances_explored"] = "(artifact_id) WHERE investigations > 0"
    return found


def create_indexes(connection: Connection) -> None:
    for name, columns in indexes(connection).items():
        connection.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {name} ON artifact_balances "
                                   f"{columns}")


def fold_expired(connection: Connection, now: datetime) -> int:
    """Sum again the bounties of the balances whose bounties expired by `now` (readers do so
    on every read until then); how many balances."""
    b = artifact_balances
    values = recomputed(b.c.artifact_id, literal(now, Timestamp()))
    return connection.execute(
        b.update().where(expired_bounty(b.c.next_expiry, now))
        .values({name: values[name] for name in ("bounty", "bounty_invalid", "next_expiry")})
    ).rowcount


def mismatches(now: datetime):
    """Artifacts whose balance differs from its recomputation (or that lack one, or whose
    balance has no artifact). The bounty terms are compared only while the stored ones are
    current: past the stored `next_expiry`, readers sum the bounties again themselves."""
    b = artifact_balances.c
    fresh = current_bounty(b.next_expiry, now)

    def compared(columns):
        return [case((fresh, columns[name])) if name.startswith(("bounty", "next_"))
                else columns[name] for name in COLUMNS]

    stored = select(b.artifact_id, b.type, *compared(b))
    source = recomputed_all(now).subquery()
    expected = (select(source.c.artifact_id, source.c.type, *compared(source.c))
                .select_from(source.outerjoin(artifact_balances,
                                              b.artifact_id == source.c.artifact_id)))
    extra = stored.except_(expected).subquery("extra")
    missing = expected.except_(stored).subquery("missing")
    ids = select(extra.c.artifact_id).union(select(missing.c.artifact_id)).subquery()
    return select(ids.c.artifact_id).order_by(ids.c.artifact_id)


def current_bounty(next_expiry: ColumnElement, now: datetime) -> ColumnElement:
    """Whether a stored bounty still holds at `now`: none of its bounties has expired since."""
    return or_(next_expiry.is_(None), ~expired_bounty(next_expiry, now))


def expired_bounty(next_expiry: ColumnElement, now: datetime) -> ColumnElement:
    """Whether one of the bounties a stored bounty counts has expired by `now` (an indexed
    comparison of instant keys)."""
    return next_expiry <= InstantKey(literal(now, Timestamp()))


def valid_total(column: ColumnElement, invalid: ColumnElement) -> ColumnElement:
    """A stored total when every row counted and it lies within MAX_TOTAL; else NULL."""
    return case((and_(invalid == 0, WholeNumber(column),
                      column.between(-MAX_TOTAL_MICRO, MAX_TOTAL_MICRO)), column))


# --------------------------------------------------------------------------- DDL


def _sql(connection: Connection, element) -> str:
    return str(element.compile(dialect=connection.dialect,
                               compile_kwargs={"literal_binds": True}))


def key_columns(connection: Connection, budget_expression) -> dict[str, str]:
    """The generated ranking keys' SQL: budget and remaining by the default formula, NULL
    for an artifact without a valid budget. `budget_expression(params, demand, bounty,
    price)` is the budget SELECT's own formula, so both order alike."""
    b = {name: literal_column(name) for name in COLUMNS}
    terms = {name: valid_total(b[name], b[f"{name}_invalid"]) for name in SUMMED}
    price_ok, _, budget = budget_expression(Params(), terms["demand"], terms["bounty"], b["price"])
    valid = and_(price_ok, *(terms[name].is_not(None) for name in SUMMED))
    return {"budget_key": _sql(connection, case((valid, budget))),
            "remaining_key": _sql(connection, case((valid, budget - terms["spent"])))}


def _additions(connection: Connection, row: str) -> dict[str, tuple[dict[str, str], str | None]]:
    """Per table whose rows add to a balance: SQL of what one row (`row` is NEW, OLD or an
    alias) adds, per column, and the condition for it to count."""
    r = {name: literal_column(f"{row}.{name}") for name in
         ("tokens", "status", "reward")}
    finite = _finite([r["tokens"]])
    amount = {
        "positions": ({"demand": case((finite, MicroTokens(r["tokens"])), else_=0),
                       "demand_invalid": case((finite, 0), else_=1)}, r["status"] == "open"),
        "resource_allocations": ({"spent": case((finite, MicroTokens(r["tokens"])), else_=0),
                                  "spent_invalid": case((finite, 0), else_=1)}, None),
        "claims": ({"investigations": literal(1), "reward_total": _billionths(r["reward"])},
                   r["status"] == "done"),
    }
    return {table: ({column: f"({_sql(connection, value)})" for column, value in columns.items()},
                    None if condition is None else _sql(connection, condition))
            for table, (columns, condition) in amount.items()}


def _update_additive(connection, table: str, row: str, sign: str) -> str:
    """UPDATE of the balance that one row of `table` adds to (or, with '-', takes from)."""
    columns, condition = _additions(connection, row)[table]
    sets = []
    heal = recomputed(literal_column("artifact_balances.artifact_id"), _now(connection))
    for column, amount in columns.items():
        change = f"{sign} {amount}"
        if connection.dialect.name == "sqlite" and column in SUMMED:
            # A sum past 64 bits became a float: sum it again, exactly, from the source.
            sets.append(f"{column} = CASE WHEN typeof({column} {change}) = 'integer' "
                        f"THEN {column} {change} ELSE {_sql(connection, heal[column])} END")
        else:
            sets.append(f"{column} = {column} {change}")
    where = f"artifact_id = {row}.artifact_id" + (f" AND {condition}" if condition else "")
    return f"UPDATE artifact_balances SET {', '.join(sets)} WHERE {where}"


def _now(connection: Connection) -> ColumnElement:
    return literal_column("'now'" if connection.dialect.name == "sqlite" else "now()")


def _update_recomputed(connection, row: str, columns) -> str:
    values = recomputed(literal_column(f"{row}.artifact_id"), _now(connection))
    sets = ", ".join(f"{c} = {_sql(connection, values[c])}" for c in columns)
    return f"UPDATE artifact_balances SET {sets} WHERE artifact_id = {row}.artifact_id"


def _insert_recomputed(connection, row: str) -> str:
    values = recomputed(literal_column(f"{row}.id"), _now(connection))
    return (f"INSERT INTO artifact_balances (artifact_id, type, {', '.join(COLUMNS)}) "
            f"SELECT {row}.id, {row}.type, "
            + ", ".join(_sql(connection, values[c]) for c in COLUMNS))


def _statements(connection) -> dict[str, dict[str, list[str]]]:
    """Per source table and event (INSERT, DELETE, UPDATE), the row trigger's statements
    that keep the balances, in terms of NEW and OLD."""
    bounty = ("bounty", "bounty_invalid", "next_expiry")

    def additive(table):
        plus = _update_additive(connection, table, "NEW", "+")
        minus = _update_additive(connection, table, "OLD", "-")
        return {"INSERT": [plus], "DELETE": [minus], "UPDATE": [minus, plus]}

    def bounties(row):
        # PostgreSQL: lock the row first, so that the sum (a statement of its own, with a
        # snapshot of its own) sees a concurrent writer's bounty committed meanwhile.
        lock = f"PERFORM 1 FROM artifact_balances WHERE artifact_id = {row}.artifact_id FOR UPDATE"
        return ([lock] if connection.dialect.name == "postgresql" else []) + \
            [_update_recomputed(connection, row, bounty)]

    if connection.dialect.name == "postgresql":
        # Deferred to commit, after which no row of the artifact can precede it (the foreign
        # keys hold at once): it starts from nothing, and its rows' triggers add to it.
        zero = "INSERT INTO artifact_balances (artifact_id, type) VALUES (NEW.id, NEW.type)"
        artifact = {
            "INSERT": [zero],
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
        "positions": additive("positions"),
        "token_bounties": {
            "INSERT": bounties("NEW"),
            "DELETE": bounties("OLD"),
            "UPDATE": bounties("OLD") + bounties("NEW"),
        },
        "resource_allocations": additive("resource_allocations"),
        "claims": additive("claims"),
    }


def _statement_level(connection, table: str) -> dict[str, str]:
    """PostgreSQL, for alloc's own tables: per event, one UPDATE that adds what a whole
    statement's rows (its transition tables new_rows and old_rows) change, per artifact, so
    that a batch of many lines on one artifact updates its balance once, not per line.
    The rows are locked in artifact order first, so that two batches cannot deadlock."""

    def changes(row: str, sign: str) -> str:
        columns, condition = _additions(connection, row)[table]
        parts = ", ".join(f"{sign}{amount} AS {c}" for c, amount in columns.items())
        where = f" WHERE {condition}" if condition else ""
        return f"SELECT {row}.artifact_id, {parts} FROM {row}_rows {row}{where}"

    columns = list(_additions(connection, "n")[table][0])
    sources = {"INSERT": [changes("n", "")], "DELETE": [changes("o", "-")],
               "UPDATE": [changes("o", "-"), changes("n", "")]}
    found = {}
    sums = ", ".join(f"sum({c}) AS {c}" for c in columns)
    moved = " OR ".join(f"sum({c}) <> 0" for c in columns)
    sets = ", ".join(f"{c} = b.{c} + d.{c}" for c in columns)
    for event, selects in sources.items():
        deltas = (f"SELECT artifact_id, {sums} FROM ({' UNION ALL '.join(selects)}) c "
                  f"GROUP BY artifact_id HAVING {moved}")
        found[event] = (
            f"PERFORM 1 FROM artifact_balances WHERE artifact_id IN (SELECT artifact_id FROM "
            f"({deltas}) d) ORDER BY artifact_id FOR UPDATE;\n"
            f"    UPDATE artifact_balances b SET {sets} FROM ({deltas}) d "
            f"WHERE b.artifact_id = d.artifact_id")
    return found


# The columns whose change moves a balance: an UPDATE of any other leaves it alone.
WATCHED = {
    "artifacts": "id, type",
    "markets": "artifact_id, price",
    "positions": "artifact_id, tokens, status",
    "token_bounties": "artifact_id, tokens_offered, tokens_paid, status, expires_at",
    "resource_allocations": "artifact_id, tokens",
    "claims": "artifact_id, status, reward",
}


def _trigger_name(table: str, event: str | None = None) -> str:
    return f"balances_{table}" + (f"_{event.lower()}" if event else "")


def create_triggers(connection: Connection) -> None:
    """Create the triggers that keep the balances (replacing any of the same name)."""
    drop_triggers(connection)
    for table, events in _statements(connection).items():
        if connection.dialect.name == "sqlite":
            for event, statements in events.items():
                of = f" OF {WATCHED[table]}" if event == "UPDATE" else ""
                body = "".join(f"{s};\n" for s in statements)
                connection.exec_driver_sql(
                    f"CREATE TRIGGER {_trigger_name(table, event)} AFTER {event}{of} "
                    f"ON {table} FOR EACH ROW BEGIN\n{body}END")
        else:
            _create_postgresql_trigger(connection, table, events)


def _create_postgresql_trigger(connection: Connection, table: str, events) -> None:
    if table in STATEMENT_LEVEL:
        events = {event: [statement] for event, statement
                  in _statement_level(connection, table).items()}
    branches = "".join(
        f"  IF TG_OP = '{event}' THEN\n" + "".join(f"    {s};\n" for s in statements)
        + "  END IF;\n" for event, statements in events.items())
    name = _trigger_name(table)
    connection.exec_driver_sql(
        f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $body$\n"
        f"BEGIN\n"
        f"  IF current_setting('{SUSPEND_SETTING}', true) = 'suspended' THEN RETURN NULL; END IF;\n"
        f"{branches}  RETURN NULL;\nEND\n$body$")
    if table in STATEMENT_LEVEL:  # transition tables need one trigger per event
        for event, tables in (("INSERT", "NEW TABLE AS n_rows"), ("DELETE", "OLD TABLE AS o_rows"),
                              ("UPDATE", "NEW TABLE AS n_rows OLD TABLE AS o_rows")):
            connection.exec_driver_sql(
                f"CREATE TRIGGER {_trigger_name(table, event)} AFTER {event} ON {table} "
                f"REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION {name}()")
        return
    kind, timing = (("CONSTRAINT TRIGGER", " DEFERRABLE INITIALLY DEFERRED")
                    if table in DEFERRED else ("TRIGGER", ""))
    connection.exec_driver_sql(
        f"CREATE {kind} {name} AFTER INSERT OR DELETE OR UPDATE OF {WATCHED[table]} "
        f"ON {table}{timing} FOR EACH ROW EXECUTE FUNCTION {name}()")


def drop_triggers(connection: Connection) -> None:
    for table in WATCHED:
        if connection.dialect.name == "sqlite":
            for event in ("INSERT", "DELETE", "UPDATE"):
                connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {_trigger_name(table, event)}")
        else:
            for event in (None, "INSERT", "DELETE", "UPDATE"):
                connection.exec_driver_sql(
                    f"DROP TRIGGER IF EXISTS {_trigger_name(table, event)} ON {table}")
            connection.exec_driver_sql(f"DROP FUNCTION IF EXISTS {_trigger_name(table)}()")


def suspend(connection: Connection) -> None:
    """Leave the balances alone for the rest of the caller's transaction, for a bulk insert
    that `resume` then sums set-based: the transaction must write nothing else after it (on
    PostgreSQL the deferred triggers fire at commit, and still find themselves suspended).
    Other connections' writes keep their triggers."""
    if connection.dialect.name == "sqlite":  # the write lock keeps everyone else out
        drop_triggers(connection)
    else:
        connection.execute(text(f"SELECT set_config('{SUSPEND_SETTING}', 'suspended', true)"))


def resume(connection: Connection, now: datetime) -> None:
    """Sum every balance from the source tables, and keep them again from the next
    transaction on (SQLite: from now on)."""
    if connection.dialect.name == "sqlite":
        create_triggers(connection)
    rebuild(connection, now)


def stored_terms(now: datetime) -> dict[str, ColumnElement]:
    """The balance columns as the budget SELECT reads them: each total NULL when invalid,
    the bounty summed again from the source where one of its bounties expired since."""
    b = artifact_balances.c
    fresh = current_bounty(b.next_expiry, now)
    source = recomputed(b.artifact_id, literal(now, Timestamp()))
    return {
        "demand": valid_total(b.demand, b.demand_invalid),
        "bounty": case((fresh, valid_total(b.bounty, b.bounty_invalid)),
                       else_=valid_total(source["bounty"], source["bounty_invalid"])),
        "spent": valid_total(b.spent, b.spent_invalid),
        "demand_invalid": b.demand_invalid,
        "bounty_invalid": case((fresh, b.bounty_invalid), else_=source["bounty_invalid"]),
        "spent_invalid": b.spent_invalid,
    }
