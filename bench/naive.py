"""The ranking as "the original exchange code" computed it: one call per artifact.

    python bench/naive.py URL TYPE LIMIT

For every artifact of TYPE, `artifact_budget` runs its own demand, price, bounty and
spent queries through the bare driver (sqlite3 or psycopg), the formula is applied in
Python, and the list is sorted at the end; the top LIMIT are printed as JSON. Same
formula and tie-break as alloc (budget descending, then artifact id bytewise), so the
output can be checked against `alloc rank`.
"""

import json
import sys
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal

MICRO = Decimal("0.000001")


def connect(url):
    if url.startswith(("postgresql://", "postgres://")):
        import psycopg
        return psycopg.connect(url), "%s", True
    import sqlite3
    return sqlite3.connect(url), "?", False


def queries(mark, pg):
    if pg:
        later = f"expires_at > {mark}"
        total = "COALESCE(SUM({}), 0)"
    else:  # exact sums over integer micro-tokens, instants compared as instants
        later = f"julianday(expires_at) > julianday({mark})"
        total = "COALESCE(SUM(CAST(ROUND(({}) * 1000000) AS INTEGER)), 0)"
    return {
        "demand": f"SELECT {total.format('tokens')} FROM positions "
                  f"WHERE artifact_id = {mark} AND status = 'open'",
        "price": f"SELECT price FROM markets WHERE artifact_id = {mark}",
        "bounty": f"SELECT {total.format('tokens_offered - tokens_paid')} FROM token_bounties "
                  f"WHERE artifact_id = {mark} AND status = 'open' "
                  f"AND (expires_at IS NULL OR {later})",
        "spent": f"SELECT {total.format('tokens')} FROM resource_allocations "
                 f"WHERE artifact_id = {mark}",
    }


def amount(value, pg):
    return Decimal(value) if pg else Decimal(value) / 1000000


def artifact_budget(cursor, sql, pg, artifact_id, now):
    """One artifact's budget: its own four queries, then the formula."""
    cursor.execute(sql["demand"], (artifact_id,))
    demand = amount(cursor.fetchone()[0], pg)
    cursor.execute(sql["price"], (artifact_id,))
    row = cursor.fetchone()
    cursor.execute(sql["bounty"], (artifact_id, now))
    bounty = amount(cursor.fetchone()[0], pg)
    cursor.execute(sql["spent"], (artifact_id,))
    spent = amount(cursor.fetchone()[0], pg)
    price = Decimal("0.5") if row is None or row[0] is None else \
        Decimal(str(row[0])).quantize(MICRO, ROUND_HALF_UP)
    price = min(max(price, Decimal(0)), Decimal(1))
    uncertainty = 1 - abs(price - Decimal("0.5")) * 2
    multiplier = Decimal("0.5") + Decimal("0.5") * uncertainty
    budget = ((Decimal("0.1") * demand + bounty) * multiplier).quantize(MICRO, ROUND_HALF_UP)
    return {"demand": demand, "bounty": bounty, "price": price, "budget": budget,
            "spent": spent, "remaining": budget - spent}


def main(url, type_, limit):
    conn, mark, pg = connect(url)
    cursor = conn.cursor()
    now = datetime.now(timezone.utc)
    now = now if pg else now.replace(tzinfo=None).isoformat(" ")
    sql = queries(mark, pg)
    cursor.execute(f"SELECT id, type, title FROM artifacts WHERE type = {mark}", (type_,))
    results = []
    for artifact_id, kind, title in cursor.fetchall():
        terms = artifact_budget(cursor, sql, pg, artifact_id, now)
        results.append({"artifact_id": artifact_id, "type": kind, "title": title, **terms})
    results.sort(key=lambda r: r["artifact_id"].encode())
    results.sort(key=lambda r: r["budget"], reverse=True)
    top = results[:int(limit)]
    sys.stdout.write(json.dumps([{"rank": i, **r} for i, r in enumerate(top, 1)], default=str))
    sys.stdout.write("\n")
    conn.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
