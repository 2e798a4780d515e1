"""Floor processes: the same work as an `alloc` command, through the bare driver only.

    python bench/floor.py sql URL SPEC {json|csv|none}   run one captured SELECT, print its rows
    python bench/floor.py exec URL SPEC                   run one captured statement, commit
    python bench/floor.py budget-one URL SPEC             import sqlalchemy.orm and typer, then `sql`
    python bench/floor.py spend-one URL ARTIFACT AMOUNT   import sqlalchemy.orm and typer, insert one spend
    python bench/floor.py spend-many URL FILE.csv         executemany of the same inserts, 20,000 a transaction
    python bench/floor.py load-positions URL FILE.csv     COPY (PostgreSQL) or executemany (SQLite)

URL is a postgresql:// URL (psycopg) or a SQLite path (sqlite3). SPEC is a JSON file
{"sql": ..., "params": ...} captured from what alloc itself sends to the driver
(bench/capture.py), with Decimal and datetime values tagged. Only the standard library
and the driver are imported (plus, where the case says so, sqlalchemy.orm and typer).
"""

import json
import sys


def _decode(value):
    if isinstance(value, dict) and len(value) == 1:
        (tag, raw), = value.items()
        if tag == "$decimal":
            from decimal import Decimal
            return Decimal(raw)
        if tag == "$datetime":
            from datetime import datetime
            return datetime.fromisoformat(raw)
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    return value


def _spec(path):
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    params = _decode(spec["params"])
    return spec["sql"], (tuple(params) if isinstance(params, list) else params)


def _is_pg(url):
    return url.startswith(("postgresql://", "postgres://"))


def _connect(url, write=False):
    if _is_pg(url):
        import psycopg
        # The session settings alloc uses (database.engine_for): the same statement, run
        # the same way.
        return psycopg.connect(url, options="-c jit=off -c timezone=UTC")
    import sqlite3
    conn = sqlite3.connect(url, isolation_level=None, timeout=30)
    if write:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _plain(value):
    return str(value) if value is not None and not isinstance(value, (int, float, str)) else value


def sql(url, spec_path, out="json"):
    statement, params = _spec(spec_path)
    conn = _connect(url)
    write = sys.stdout.write
    if _is_pg(url) and out == "csv":
        cursor = conn.cursor(name="floor")  # server-side, streamed like alloc's yield_per
    else:
        cursor = conn.cursor()
    cursor.execute(statement, params)
    if out == "csv":
        import csv
        writer = None
        while True:
            rows = cursor.fetchmany(2000)
            if not rows:
                break
            if writer is None:
                writer = csv.writer(sys.stdout, lineterminator="\n")
                writer.writerow([d[0] for d in cursor.description])
            writer.writerows([[_plain(v) for v in row] for row in rows])
    elif out == "json":
        names = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
        write("[" + ",\n".join(json.dumps(dict(zip(names, map(_plain, row)))) for row in rows)
              + "]\n")
    else:
        cursor.fetchall()
    conn.close()


def exec_(url, spec_path):
    statement, params = _spec(spec_path)
    conn = _connect(url, write=True)
    cursor = conn.cursor()
    if not _is_pg(url):
        cursor.execute("BEGIN IMMEDIATE")
    cursor.execute(statement, params)
    count = cursor.rowcount
    cursor.execute("COMMIT") if not _is_pg(url) else conn.commit()
    conn.close()
    print(count)


def budget_one(url, spec_path):
    import sqlalchemy.orm  # noqa: F401  the floor pays for the same frameworks
    import typer  # noqa: F401

    sql(url, spec_path, "json")


INSERT = ("INSERT INTO resource_allocations (artifact_id, tokens, unit, units, rate, kind, "
          "agent_id, note, idempotency_key, overdraft, created_at, budget_at_spend) "
          "VALUES ({}) RETURNING id")


def _marks(url, n=12):
    return ", ".join(["%s" if _is_pg(url) else "?"] * n)


def _now(url):
    from datetime import datetime, timezone
    now = datetime.now(timezone.utc)
    return now if _is_pg(url) else now.replace(tzinfo=None).isoformat(" ")


def spend_one(url, artifact_id, amount):
    import sqlalchemy.orm  # noqa: F401
    import typer  # noqa: F401

    conn = _connect(url, write=True)
    cursor = conn.cursor()
    if not _is_pg(url):
        cursor.execute("BEGIN IMMEDIATE")
    cursor.execute(INSERT.format(_marks(url)), (artifact_id, amount, "tokens", amount, 1,
                                                "bench", None, None, None, False, _now(url), amount))
    new_id = cursor.fetchone()[0]
    cursor.execute("COMMIT") if not _is_pg(url) else conn.commit()
    conn.close()
    print(json.dumps({"id": new_id, "artifact_id": artifact_id, "tokens": amount}))


# Lines per transaction, as `alloc spend --file` commits them (service.SPEND_CHUNK).
SPEND_CHUNK = 20_000


def spend_many(url, path):
    import csv
    pg = _is_pg(url)
    conn = _connect(url, write=True)
    cursor = conn.cursor()
    statement = INSERT.replace(" RETURNING id", "").format(_marks(url))
    now = _now(url)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        batch = []
        count = 0

        def flush():
            if not pg:
                cursor.execute("BEGIN IMMEDIATE")
            cursor.executemany(statement, batch)
            cursor.execute("COMMIT") if not pg else conn.commit()

        for r in reader:
            amount = r["amount"]
            batch.append((r["artifact_id"], amount, "tokens", amount, 1, r.get("kind") or None,
                          r.get("agent") or None, r.get("note") or None, r.get("key") or None,
                          False, now, amount))
            if len(batch) == SPEND_CHUNK:
                flush()
                count += len(batch)
                batch = []
        if batch:
            flush()
            count += len(batch)
    conn.close()
    print(count)


# The balance triggers on positions (SQLite), which a bare load leaves out: the floor is
# the insert alone (alloc load drops and recreates them, then sums the balances).
POSITION_TRIGGERS = ("balances_positions_insert", "balances_positions_update",
                     "balances_positions_delete")


def load_positions(url, path):
    columns = "artifact_id, agent_id, tokens, status, created_at"
    if _is_pg(url):
        conn = _connect(url)
        # Without the balances' work, as `alloc load` does it: their triggers stand aside.
        conn.execute("SELECT set_config('scidex_alloc.balances', 'suspended', true)")
        with conn.cursor() as cursor, open(path, "rb") as f:
            with cursor.copy(f"COPY positions ({columns}) FROM STDIN (FORMAT csv, HEADER true)") as copy:
                while block := f.read(1 << 20):
                    copy.write(block)
            count = cursor.rowcount
        conn.commit()
        conn.close()
        print(count)
        return
    import csv
    conn = _connect(url, write=True)
    cursor = conn.cursor()
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        assert ", ".join(header) == columns, header
        cursor.execute("BEGIN IMMEDIATE")
        for trigger in POSITION_TRIGGERS:  # without the balances' work, as `alloc load`
            cursor.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        cursor.executemany(f"INSERT INTO positions ({columns}) VALUES (?, ?, ?, ?, ?)", reader)
        count = cursor.rowcount
        cursor.execute("COMMIT")
    conn.close()
    print(count)


COMMANDS = {"sql": sql, "exec": exec_, "budget-one": budget_one, "spend-one": spend_one,
            "spend-many": spend_many, "load-positions": load_positions}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](*sys.argv[2:])
