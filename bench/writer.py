"""Case 14's writer: another service inserting positions one row at a time through the
bare driver, each insert its own transaction (sqlite3 in autocommit, psycopg with
autocommit), as fast as it can.

    python bench/writer.py URL ROWS SEED

Prints {"rows": N, "seconds": S}: S times the inserts only (the artifact ids are read and
drawn before). Only the standard library and the driver are imported.
"""

import json
import random
import sys
import time
from datetime import datetime, timezone

STATEMENT = ("INSERT INTO positions (artifact_id, agent_id, tokens, status, created_at) "
             "VALUES ({0}, {0}, {0}, 'open', {0})")


def main(url, rows, seed):
    rows = int(rows)
    rng = random.Random(int(seed))
    pg = url.startswith(("postgresql://", "postgres://"))
    if pg:
        import psycopg
        conn = psycopg.connect(url, autocommit=True, options="-c timezone=UTC")
        statement = STATEMENT.format("%s")
        now = datetime.now(timezone.utc)
    else:
        import sqlite3
        conn = sqlite3.connect(url, isolation_level=None, timeout=30)
        # What alloc sets on its own connections (a service could do less, not more).
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
        statement = STATEMENT.format("?")
        now = datetime.now(timezone.utc).replace(tzinfo=None).isoformat(" ")
    ids = [r[0] for r in conn.execute("SELECT id FROM artifacts").fetchall()]
    work = [(rng.choice(ids), f"writer-{i % 50}", round(rng.uniform(0.5, 200), 2), now)
            for i in range(rows)]
    cursor = conn.cursor()
    start = time.perf_counter()
    for values in work:
        cursor.execute(statement, values)
    seconds = time.perf_counter() - start
    conn.close()
    print(json.dumps({"rows": rows, "seconds": seconds}))


if __name__ == "__main__":
    main(*sys.argv[1:])
