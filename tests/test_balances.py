"""The maintained balances (`artifact_balances`, revision 0005): whatever writes the source
tables -- another service's bare connection, `alloc load`, sixteen writers at once, an
upgrade from revision 0004 -- every balance equals its recomputation (`alloc audit`'s
`balances-exact`), their totals per type equal the balances' sums (`totals-exact`), and
the readers show what the source rows, summed in Python by this file with plain SQL, say
the budgets are. (After a killed batch: tests/test_concurrency.py.)
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal

import psycopg
import pytest

from scidex_alloc.allocator import Allocator

D = Decimal
MICRO = D("0.000001")
CHILD_TABLES = ("markets", "positions", "token_bounties", "resource_allocations", "claims",
                "budget_snapshots", "holds")


# --------------------------------------------------------------------------- another service


class Direct:
    """A bare driver connection, writing the tables as another service would: explicit
    transactions, `?` placeholders on both databases."""

    def __init__(self, db_kind: str, db_url: str):
        self.kind = db_kind
        if db_kind == "sqlite":
            self.connection = sqlite3.connect(db_url, isolation_level=None, timeout=60)
            self.connection.execute("PRAGMA foreign_keys = ON")
        else:
            self.connection = psycopg.connect(db_url)

    def _params(self, params):
        if self.kind == "postgresql":
            return params
        return tuple(str(p) if isinstance(p, Decimal) else
                     p.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
                     if isinstance(p, datetime) else p for p in params)

    def execute(self, sql: str, *params):
        if self.kind == "sqlite":
            if not self.connection.in_transaction:
                self.connection.execute("BEGIN IMMEDIATE")
            return self.connection.execute(sql, self._params(params))
        return self.connection.execute(sql.replace("?", "%s"), params)

    def rows(self, sql: str, *params) -> list[tuple]:
        return list(self.execute(sql, *params).fetchall())

    def commit(self):
        self.connection.commit()

    def rollback(self):
        self.connection.rollback()

    def close(self):
        self.connection.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.kind == "sqlite" and self.connection.in_transaction:
            self.connection.rollback()
        self.close()


def write(db_kind, db_url, *statements):
    """Run statements (SQL, or (SQL, params)) in one committed transaction."""
    with Direct(db_kind, db_url) as direct:
        for statement in statements:
            sql, params = (statement, ()) if isinstance(statement, str) else statement
            direct.execute(sql, *params)
        direct.commit()


# --------------------------------------------------------------------------- the oracle


MAX_TOTAL = D(9_000_000_000)


def amount(value) -> Decimal | None:
    """A stored amount as an exact Decimal, however the driver returned it; None when it
    is not a finite number (NaN, infinite, text)."""
    try:
        value = D(repr(value)) if isinstance(value, float) else D(value)
        return value.quantize(MICRO, rounding=ROUND_HALF_UP) if value.is_finite() else None
    except (ArithmeticError, TypeError, ValueError):
        return None


def instant(value) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def budget_of(demand: Decimal, bounty: Decimal, price: Decimal | None) -> Decimal:
    """The README's formula with the default parameters, written out again."""
    p = D("0.5") if price is None else min(max(price, D(0)), D(1))
    multiplier = D("0.5") + D("0.5") * (1 - abs(p - D("0.5")) * 2)
    return ((D("0.1") * demand + bounty) * multiplier).quantize(MICRO, rounding=ROUND_HALF_UP)


def source_rows(db_kind, db_url) -> dict:
    """The source tables' rows, read with plain SQL, and the stored investigation counts."""
    with Direct(db_kind, db_url) as direct:
        rows = {
            "artifacts": direct.rows("SELECT id, type FROM artifacts"),
            "markets": direct.rows("SELECT artifact_id, price FROM markets"),
            "positions": direct.rows("SELECT artifact_id, tokens, status FROM positions"),
            "bounties": direct.rows("SELECT artifact_id, tokens_offered, tokens_paid, status, "
                                    "expires_at FROM token_bounties"),
            "spends": direct.rows("SELECT artifact_id, tokens FROM resource_allocations"),
            "claims": direct.rows("SELECT artifact_id, status, reward FROM claims"),
            "holds": direct.rows("SELECT artifact_id, tokens, status, expires_at FROM holds"),
            "balances": direct.rows("SELECT artifact_id, investigations, reward_total "
                                    "FROM artifact_balances"),
        }
        direct.rollback()
    return rows


def expected(rows: dict, now: datetime) -> dict[str, dict]:
    """Every artifact's terms and budget at `now`, summed in Python from the source rows;
    `invalid` when a counted amount or the price is not a finite number, or a total lies
    beyond MAX_TOTAL; `no_budget` when that is so of another term than `held`."""
    found = {aid: {"type": type_, "demand": D(0), "bounty": D(0), "spent": D(0), "held": D(0),
                   "price": None, "bad": set(), "investigations": 0, "reward_total": 0}
             for aid, type_ in rows["artifacts"]}

    def add(aid, name, value):
        if value is None:
            found[aid]["bad"].add(name)
        else:
            found[aid][name] += value

    for aid, price in rows["markets"]:
        if price is not None:
            found[aid]["price"] = amount(price)
            if found[aid]["price"] is None:
                found[aid]["bad"].add("price")
    for aid, tokens, status in rows["positions"]:
        if status == "open":
            add(aid, "demand", amount(tokens))
    for aid, offered, paid, status, expires in rows["bounties"]:
        if status == "open" and (expires is None or instant(expires) > now):
            offered, paid = amount(offered), amount(paid)
            add(aid, "bounty", None if None in (offered, paid) else offered - paid)
    for aid, tokens in rows["spends"]:
        add(aid, "spent", amount(tokens))
    for aid, tokens, status, expires in rows["holds"]:
        if status == "active" and instant(expires) > now:
            add(aid, "held", amount(tokens))
    for aid, status, reward in rows["claims"]:
        if status == "done":
            found[aid]["investigations"] += 1
            found[aid]["reward_total"] += int((amount(reward or 0) * 10**9).to_integral_value())
    for terms in found.values():
        terms["bad"] |= {n for n in ("demand", "bounty", "spent", "held")
                         if abs(terms[n]) > MAX_TOTAL}
        terms["invalid"], terms["no_budget"] = bool(terms["bad"]), bool(terms["bad"] - {"held"})
        terms["budget"] = budget_of(terms["demand"], terms["bounty"], terms["price"])
    return found


def pipeline_of(terms: dict) -> dict:
    """Per type: how many artifacts, how many without a budget, and demand, bounty,
    budget, spent and remaining summed over the others (the pipeline's totals)."""
    found = {}
    for t in terms.values():
        row = found.setdefault(t["type"], [0, 0, D(0), D(0), D(0), D(0), D(0)])
        row[0] += 1
        if t["no_budget"]:
            row[1] += 1
            continue
        for index, value in enumerate((t["demand"], t["bounty"], t["budget"], t["spent"],
                                       t["budget"] - t["spent"]), start=2):
            row[index] += value
    return {type_: tuple(row) for type_, row in found.items()}


def shown(row) -> dict:
    """What a reader showed of one artifact (a BudgetRow, or a row of `-f json`)."""
    get = row.get if isinstance(row, dict) else (lambda name: getattr(row, name))
    if get("problem") is not None:
        return {"problem": True}
    return {name: D(str(get(name)))
            for name in ("demand", "bounty", "spent", "budget", "price", "held", "available")}


def oracle_view(terms: dict) -> dict:
    if terms["invalid"]:
        return {"problem": True}
    p = terms["price"]
    return {"demand": terms["demand"], "bounty": terms["bounty"], "spent": terms["spent"],
            "budget": terms["budget"],
            "price": D("0.5") if p is None else min(max(p, D(0)), D(1)),
            "held": terms["held"], "available": terms["budget"] - terms["spent"] - terms["held"]}


def assert_readers_match_sources(db_kind, db_url, allocator: Allocator, context=""):
    """`rank` (through the library) shows for every artifact the terms summed in Python
    from the source rows (or a problem, for invalid data), the pipeline their sums per
    type, and the stored investigation
    counts and reward totals are those of the claims. A bounty or hold expiring during the
    read may be counted either way."""
    before = datetime.now(timezone.utc)
    ranked = {row.artifact_id: shown(row) for row in allocator.rank()}
    piped = {t.type: (t.artifacts, t.invalid, t.demand, t.bounty, t.budget, t.spent,
                      t.remaining) for t in allocator.pipeline().types}
    after = datetime.now(timezone.utc)
    rows = source_rows(db_kind, db_url)
    early, late = expected(rows, before), expected(rows, after)
    assert set(ranked) == set(early), context
    wrong = {aid: (ranked[aid], oracle_view(early[aid])) for aid in ranked
             if ranked[aid] not in (oracle_view(early[aid]), oracle_view(late[aid]))}
    assert not wrong, f"{context}: readers differ from the source rows: {wrong}"
    assert piped in (pipeline_of(early), pipeline_of(late)), (context, piped)
    stored = {aid: (n, int(r)) for aid, n, r in rows["balances"]}
    counted = {aid: (t["investigations"], t["reward_total"]) for aid, t in early.items()}
    assert stored == counted, context


def balances_check(allocator: Allocator, context="") -> list[dict]:
    """The rows `balances-exact` and `totals-exact` report (empty: ok)."""
    try:
        checks = allocator.audit()
    except Exception as error:  # noqa: BLE001 -- a crash is a failure with its context
        raise AssertionError(f"{context}: alloc audit failed: {error}") from error
    return [row for c in checks if c.name in ("balances-exact", "totals-exact")
            for row in c.rows]


def audit_json(cli, db_url):
    """(exit code, checks by name) of `alloc audit --format json`."""
    result = cli("audit", "--format", "json", "--db", db_url)
    assert result.exit_code in (0, 6), result.stderr
    return result.exit_code, {c["name"]: c for c in result.json()["checks"]}


def budget_json(cli, db_url, artifact_id):
    result = cli("budget", artifact_id, "-f", "json", "--db", db_url)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout, parse_float=Decimal)


def rank_json(cli, db_url, *args):
    result = cli("rank", "-f", "json", *args, "--db", db_url)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout, parse_float=Decimal)


def stored_balances(db_kind, db_url) -> list[tuple]:
    with Direct(db_kind, db_url) as direct:
        rows = direct.rows("SELECT * FROM artifact_balances ORDER BY artifact_id")
        direct.rollback()
    return rows


def generate(cli, db_url, artifacts, seed):
    result = cli("generate", "--artifacts", artifacts, "--seed", seed, "--db", db_url)
    assert result.exit_code == 0, result.stderr


@pytest.fixture
def allocator(db_url):
    opened = Allocator.open(db_url)
    yield opened
    opened.close()


# --------------------------------------------------------------------------- 1. random writes


def tokens(rng: random.Random) -> Decimal:
    return D(rng.randint(0, 5_000_000)) / 1000


class RandomWriter:
    """Random inserts, updates and deletes of every source table, as another service makes
    them; each op reads what it needs, so a seed replays the same writes."""

    def __init__(self, direct: Direct, rng: random.Random, tag: str):
        self.d, self.rng, self.tag, self.created = direct, rng, tag, 0
        self.soon: datetime | None = None  # this transaction's "expires in a second"

    def pick(self, sql, *params):
        rows = self.d.rows(sql, *params)
        return self.rng.choice(rows) if rows else None

    def artifact(self) -> str:
        return self.pick("SELECT id FROM artifacts ORDER BY id")[0]

    def op(self) -> str:
        name = self.rng.choice([n for n in dir(self) if n.startswith("do_")])
        getattr(self, name)()
        return name

    # positions
    def do_insert_position(self):
        status = self.rng.choice(["open"] * 4 + ["closed", "settled"])
        self.d.execute("INSERT INTO positions (artifact_id, agent_id, tokens, status) "
                       "VALUES (?, 'rnd', ?, ?)", self.artifact(), tokens(self.rng), status)

    def do_update_position(self):
        row = self.pick("SELECT id FROM positions ORDER BY id")
        if row is None:
            return self.do_insert_position()
        what = self.rng.choice(["tokens", "status", "artifact_id", "all"])
        if what == "tokens":
            self.d.execute("UPDATE positions SET tokens = ? WHERE id = ?", tokens(self.rng), row[0])
        elif what == "status":
            self.d.execute("UPDATE positions SET status = ? WHERE id = ?",
                           self.rng.choice(["open", "closed", "settled"]), row[0])
        elif what == "artifact_id":
            self.d.execute("UPDATE positions SET artifact_id = ? WHERE id = ?",
                           self.artifact(), row[0])
        else:
            self.d.execute("UPDATE positions SET artifact_id = ?, tokens = ?, status = ? "
                           "WHERE id = ?", self.artifact(), tokens(self.rng),
                           self.rng.choice(["open", "closed"]), row[0])

    def do_delete_position(self):
        row = self.pick("SELECT id FROM positions ORDER BY id")
        if row is None:
            return self.do_insert_position()
        self.d.execute("DELETE FROM positions WHERE id = ?", row[0])

    # markets
    def price(self):
        """Mostly in [0, 1]; sometimes none, or out of range (clamped by the formula)."""
        if self.rng.random() < 0.25:
            return self.rng.choice([None, D("1.5"), D("-0.25")])
        return D(self.rng.randint(0, 1000)) / 1000

    def do_market(self):
        aid = self.artifact()
        if not self.d.rows("SELECT 1 FROM markets WHERE artifact_id = ?", aid):
            self.d.execute("INSERT INTO markets (artifact_id, price) VALUES (?, ?)", aid,
                           self.price())
            return
        action = self.rng.choice(["update", "update", "delete", "move"])
        if action == "update":
            self.d.execute("UPDATE markets SET price = ? WHERE artifact_id = ?", self.price(), aid)
        elif action == "delete":
            self.d.execute("DELETE FROM markets WHERE artifact_id = ?", aid)
        else:
            free = self.pick("SELECT id FROM artifacts WHERE id NOT IN "
                             "(SELECT artifact_id FROM markets) ORDER BY id")
            if free:
                self.d.execute("UPDATE markets SET artifact_id = ? WHERE artifact_id = ?",
                               free[0], aid)

    # bounties
    def expiry(self):
        now = datetime.now(timezone.utc)
        if self.soon is None:
            self.soon = now + timedelta(seconds=1)
        return self.rng.choice([None, None, now + timedelta(days=30), now - timedelta(days=1),
                                self.soon])

    def do_insert_bounty(self):
        offered = tokens(self.rng)
        paid = self.rng.choice([D(0), (offered / 3).quantize(D("0.001"))])
        status = self.rng.choice(["open"] * 4 + ["claimed", "cancelled", "expired"])
        self.d.execute("INSERT INTO token_bounties (artifact_id, tokens_offered, tokens_paid, "
                       "status, expires_at) VALUES (?, ?, ?, ?, ?)",
                       self.artifact(), offered, paid, status, self.expiry())

    def do_update_bounty(self):
        row = self.pick("SELECT id, tokens_offered FROM token_bounties ORDER BY id")
        if row is None:
            return self.do_insert_bounty()
        what = self.rng.choice(["pay", "status", "expires", "move", "delete"])
        if what == "pay":
            offered = amount(row[1])
            self.d.execute("UPDATE token_bounties SET tokens_paid = ? WHERE id = ?",
                           (offered * self.rng.randint(0, 4) / 4).quantize(D("0.001")), row[0])
        elif what == "status":
            self.d.execute("UPDATE token_bounties SET status = ? WHERE id = ?",
                           self.rng.choice(["open", "claimed", "cancelled", "expired"]), row[0])
        elif what == "expires":
            self.d.execute("UPDATE token_bounties SET expires_at = ? WHERE id = ?",
                           self.expiry(), row[0])
        elif what == "move":
            self.d.execute("UPDATE token_bounties SET artifact_id = ? WHERE id = ?",
                           self.artifact(), row[0])
        else:
            self.d.execute("DELETE FROM token_bounties WHERE id = ?", row[0])

    # spends, written directly
    def do_insert_spend(self):
        self.d.execute("INSERT INTO resource_allocations (artifact_id, tokens, kind, agent_id, "
                       "overdraft) VALUES (?, ?, 'direct', 'rnd', ?)", self.artifact(),
                       tokens(self.rng) / 100, False)

    def do_change_spend(self):
        row = self.pick("SELECT id FROM resource_allocations WHERE id NOT IN (SELECT "
                        "reverses_id FROM resource_allocations WHERE reverses_id IS NOT NULL) "
                        "AND reverses_id IS NULL ORDER BY id")
        if row is None:
            return self.do_insert_spend()
        if self.rng.random() < 0.5:
            self.d.execute("DELETE FROM resource_allocations WHERE id = ?", row[0])
        else:
            self.d.execute("UPDATE resource_allocations SET tokens = ? WHERE id = ?",
                           tokens(self.rng) / 100, row[0])

    # claims, written directly
    def reward(self):
        return D(self.rng.randint(0, 1000)) / 1000

    def do_insert_claim(self):
        now = datetime.now(timezone.utc)
        status = self.rng.choice(["done", "done", "active", "released"])
        if status == "active":
            free = self.pick("SELECT id FROM artifacts WHERE id NOT IN (SELECT artifact_id "
                             "FROM claims WHERE status = 'active') ORDER BY id")
            aid = free[0]
        else:
            aid = self.artifact()
        self.d.execute("INSERT INTO claims (artifact_id, agent_id, status, claimed_at, "
                       "lease_expires_at, finished_at, reward) VALUES (?, 'rnd', ?, ?, ?, ?, ?)",
                       aid, status, now, now + timedelta(hours=1),
                       None if status == "active" else now,
                       self.reward() if status == "done" and self.rng.random() < 0.8 else None)

    def do_update_claim(self):
        row = self.pick("SELECT id, status FROM claims ORDER BY id")
        if row is None:
            return self.do_insert_claim()
        what = self.rng.choice(["finish", "reward", "release", "delete"])
        if what == "finish":
            self.d.execute("UPDATE claims SET status = 'done', reward = ? WHERE id = ?",
                           self.reward(), row[0])
        elif what == "reward":
            self.d.execute("UPDATE claims SET reward = ? WHERE id = ?", self.reward(), row[0])
        elif what == "release":
            self.d.execute("UPDATE claims SET status = 'released' WHERE id = ?", row[0])
        else:
            self.d.execute("DELETE FROM claims WHERE id = ?", row[0])

    # holds, written directly: some expiring within the second
    def do_insert_hold(self, aid=None):
        now = datetime.now(timezone.utc)
        expires = now + (timedelta(seconds=1) if self.rng.random() < 0.3
                         else timedelta(minutes=30))
        self.d.execute("INSERT INTO holds (artifact_id, tokens, agent_id, status, created_at, "
                       "expires_at) VALUES (?, ?, 'rnd', ?, ?, ?)", aid or self.artifact(),
                       tokens(self.rng) / 100,
                       self.rng.choice(["active"] * 3 + ["voided", "settled"]), now, expires)

    def do_change_hold(self):
        row = self.pick("SELECT id FROM holds ORDER BY id")
        if row is None:
            return self.do_insert_hold()
        what = self.rng.choice(["void", "tokens", "expires", "delete", "move"])
        if what == "void":
            self.d.execute("UPDATE holds SET status = 'voided' WHERE id = ?", row[0])
        elif what == "tokens":
            self.d.execute("UPDATE holds SET tokens = ? WHERE id = ?", tokens(self.rng) / 100,
                           row[0])
        elif what == "expires":
            self.d.execute("UPDATE holds SET expires_at = ? WHERE id = ?",
                           datetime.now(timezone.utc) - timedelta(seconds=1), row[0])
        elif what == "move":
            self.d.execute("UPDATE holds SET artifact_id = ? WHERE id = ?", self.artifact(),
                           row[0])
        else:
            self.d.execute("DELETE FROM holds WHERE id = ?", row[0])

    # artifacts, some with rows of every kind in the same transaction
    def do_insert_artifact(self):
        self.created += 1
        aid = f"new-{self.tag}-{self.created:03d}"
        self.d.execute("INSERT INTO artifacts (id, type, title) VALUES (?, 'hypothesis', 'r')", aid)
        for _ in range(self.rng.randint(0, 3)):
            self.d.execute("INSERT INTO positions (artifact_id, agent_id, tokens, status) "
                           "VALUES (?, 'rnd', ?, 'open')", aid, tokens(self.rng))
        if self.rng.random() < 0.5:
            now = datetime.now(timezone.utc)
            self.d.execute("INSERT INTO resource_allocations (artifact_id, tokens, kind, "
                           "agent_id, overdraft) VALUES (?, ?, 'direct', 'rnd', ?)", aid,
                           tokens(self.rng) / 100, False)
            self.d.execute("INSERT INTO claims (artifact_id, agent_id, status, claimed_at, "
                           "lease_expires_at, finished_at, reward) VALUES "
                           "(?, 'rnd', 'done', ?, ?, ?, 0.5)", aid, now, now, now)
            self.do_insert_hold(aid)

    def do_delete_artifact(self):
        childless = " AND ".join(f"id NOT IN (SELECT artifact_id FROM {t})" for t in CHILD_TABLES)
        row = self.pick(f"SELECT id FROM artifacts WHERE {childless} ORDER BY id")
        if row:
            self.d.execute("DELETE FROM artifacts WHERE id = ?", row[0])

    def do_retype_artifact(self):
        self.d.execute("UPDATE artifacts SET type = ? WHERE id = ?",
                       self.rng.choice(["hypothesis", "analysis", "experiment"]), self.artifact())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_direct_writes_keep_every_balance_exact(db_kind, db_url, cli, allocator, seed):
    """Another service's inserts, updates and deletes of every source table, committed in
    random-sized transactions (a few rolled back): after each one `balances-exact` is ok
    and the readers agree with the source rows; then a bounty that expires lowers the
    budget with no write at all."""
    generate(cli, db_url, 60, seed)
    rng = random.Random(seed)
    with Direct(db_kind, db_url) as direct:
        writer = RandomWriter(direct, rng, str(seed))
        for number in range(40):
            writer.soon = None
            done = [writer.op() for _ in range(rng.randint(1, 6))]
            rolled_back = rng.random() < 0.1
            direct.rollback() if rolled_back else direct.commit()
            context = f"seed {seed}, transaction {number} {done}" + (
                " (rolled back)" if rolled_back else "")
            assert_readers_match_sources(db_kind, db_url, allocator, context)
            assert balances_check(allocator, context) == [], context

        # A bounty big enough to top the ranking, expiring in a second.
        target = "new-expiring"
        direct.execute("INSERT INTO artifacts (id, type) VALUES (?, 'hypothesis')", target)
        direct.commit()
        soon = datetime.now(timezone.utc) + timedelta(seconds=1)
        direct.execute("INSERT INTO token_bounties (artifact_id, tokens_offered, expires_at) "
                       "VALUES (?, 1000000, ?)", target, soon)
        direct.execute("INSERT INTO positions (artifact_id, agent_id, tokens) VALUES (?, 'x', 50)",
                       target)
        direct.commit()
    before = budget_json(cli, db_url, target)
    assert (before["bounty"], before["budget"]) == (1000000, D(1000005))
    assert rank_json(cli, db_url, "--limit", "1")[0]["artifact_id"] == target
    time.sleep(max(0.0, (soon - datetime.now(timezone.utc)).total_seconds()) + 0.1)

    after = budget_json(cli, db_url, target)  # no write since the bounty expired
    terms = expected(source_rows(db_kind, db_url), datetime.now(timezone.utc))
    assert (after["demand"], after["bounty"], after["budget"]) == (50, 0, D(5))
    assert after["budget"] == terms[target]["budget"]
    valid = [aid for aid in terms if not terms[aid]["invalid"]]
    by_budget = sorted(valid, key=lambda aid: (-terms[aid]["budget"], aid))[:5]
    assert [r["artifact_id"] for r in rank_json(cli, db_url, "--limit", "5")] == by_budget
    assert_readers_match_sources(db_kind, db_url, allocator, "after the expiry")
    _, checks = audit_json(cli, db_url)
    assert checks["balances-exact"]["rows"] == []


def test_a_new_artifact_and_its_rows_in_one_transaction(db_kind, db_url, cli, allocator):
    """The smallest case of the random writes: an artifact inserted in the same
    transaction as its position, a spend, a done claim and a hold counts each once
    (PostgreSQL defers the artifact's and the position's triggers to the commit, while
    those of the spend, claim and hold run at once)."""
    now = datetime.now(timezone.utc)
    write(db_kind, db_url,
          "INSERT INTO artifacts (id, type) VALUES ('a1', 'hypothesis')",
          "INSERT INTO positions (artifact_id, agent_id, tokens) VALUES ('a1', 'x', 100)",
          "INSERT INTO resource_allocations (artifact_id, tokens) VALUES ('a1', 2)",
          ("INSERT INTO claims (artifact_id, agent_id, status, claimed_at, lease_expires_at, "
           "finished_at, reward) VALUES ('a1', 'x', 'done', ?, ?, ?, 0.5)", (now, now, now)),
          ("INSERT INTO holds (artifact_id, tokens, status, created_at, expires_at) "
           "VALUES ('a1', 3, 'active', ?, ?)", (now, now + timedelta(hours=1))))
    a1 = budget_json(cli, db_url, "a1")
    assert (a1["demand"], a1["spent"], a1["held"], a1["available"]) == (100, 2, 3, 5)
    assert balances_check(allocator) == []


def test_a_spend_file_adds_to_each_balance_once_and_keeps_the_triggers(
        db_kind, db_url, cli, allocator, tmp_path):
    """A spend file adds each chunk's new lines to their balances and the totals at once
    (on SQLite in place of the row triggers, which are back afterwards): lines on one
    artifact, a replay, refusals, a sum past 64 bits on SQLite and a rolled-back atomic
    file leave every balance and total exact, and another service's spend afterwards
    still counts in both."""
    edge = 2**63 // 10**6 - 1  # tokens: one more million of them is past 64 bits of micro
    write(db_kind, db_url,
          "INSERT INTO artifacts (id, type) VALUES ('a1', 'hypothesis'), ('a2', 'analysis'), "
          "('big', 'hypothesis')",
          "INSERT INTO token_bounties (artifact_id, tokens_offered) VALUES ('a1', 100), ('a2', 10)",
          f"INSERT INTO resource_allocations (artifact_id, tokens) VALUES ('big', {edge})",
          "INSERT INTO resource_allocations (artifact_id, tokens) VALUES ('a2', 0.5)")
    spends = tmp_path / "spends.csv"
    spends.write_text("artifact_id,amount,key,allow_overdraft\n"
                      "a1,1.5,k1,\na1,2.25,k2,\na2,3,k3,\na1,1.5,k1,\na2,8,,\nnone,1,,\n"
                      "big,1,,true\nbig,1000000,,true\n")
    summary = cli("spend", "--file", spends, "--format", "json", "--db", db_url).json()
    assert (summary["recorded"], summary["replayed"], summary["refused"],
            summary["invalid"]) == (5, 1, 1, 1)
    write(db_kind, db_url, "INSERT INTO resource_allocations (artifact_id, tokens) "
                           "VALUES ('a1', 0.25)")
    failing = tmp_path / "failing.csv"
    failing.write_text("artifact_id,amount\na1,1\na2,100\n")
    assert cli("spend", "--file", failing, "--atomic", "--db", db_url).exit_code == 3

    assert (budget_json(cli, db_url, "a1")["spent"], budget_json(cli, db_url, "a2")["spent"]
            ) == (4, D("3.5"))
    assert_readers_match_sources(db_kind, db_url, allocator, "after the spend files")
    assert balances_check(allocator) == []


def test_an_expired_bounty_is_no_breach(db_kind, db_url, cli):
    """A stored bounty past its `next_expiry` is summed again by the readers, so the
    balance is not wrong: `balances-exact` stays ok (and rebuild finds nothing to mend)."""
    soon = datetime.now(timezone.utc) + timedelta(seconds=1)
    write(db_kind, db_url,
          "INSERT INTO artifacts (id, type) VALUES ('a1', 'hypothesis')",
          ("INSERT INTO token_bounties (artifact_id, tokens_offered, expires_at) "
           "VALUES ('a1', 5, ?)", (soon,)))
    assert budget_json(cli, db_url, "a1")["bounty"] == 5
    time.sleep(max(0.0, (soon - datetime.now(timezone.utc)).total_seconds()) + 0.1)
    assert budget_json(cli, db_url, "a1")["bounty"] == 0
    code, checks = audit_json(cli, db_url)
    assert checks["balances-exact"]["rows"] == [] and code == 0
    rebuilt = cli("db", "rebuild-balances", "--db", db_url)
    assert rebuilt.stderr == "rebuilt the balances of 1 artifacts; 0 differed\n"


def pending_rows(db_kind, db_url) -> list[str]:
    """The artifact ids of `pending_demand`, in the order their rows were appended."""
    with Direct(db_kind, db_url) as direct:
        rows = [row[0] for row in direct.rows("SELECT artifact_id FROM pending_demand ORDER BY id")]
        direct.rollback()
    return rows


def stored_demand(db_kind, db_url, artifact_id) -> int:
    """The demand stored in an artifact's balance, in micro-tokens."""
    with Direct(db_kind, db_url) as direct:
        (demand,), = direct.rows("SELECT demand FROM artifact_balances WHERE artifact_id = ?",
                                 artifact_id)
        direct.rollback()
    return int(demand)


@pytest.mark.parametrize("batch", ["default", 1])
def test_positions_make_their_artifact_pending_until_a_fold(db_kind, db_url, cli, allocator,
                                                             monkeypatch, batch):
    """Another service's position writes leave the balance as it was and append the
    artifact to `pending_demand` (a closed position, counted in no demand, appends
    nothing); every reader sums a pending artifact's demand again, so budgets, rankings
    and the audit are exact before any fold. `alloc snapshot` folds every pending
    artifact (its rows taken a batch at a time), and an agent's `next --claim` folds some
    too: no row is left, and the stored balance equals its recomputation."""
    from scidex_alloc.budgets import folding

    if batch != "default":
        monkeypatch.setattr(folding, "FOLD_BATCH", batch)
    write(db_kind, db_url,
          "INSERT INTO artifacts (id, type) VALUES ('a1', 'hypothesis'), ('a2', 'hypothesis')",
          "INSERT INTO markets (artifact_id, price) VALUES ('a1', 0.5), ('a2', 0.5)",
          "INSERT INTO positions (artifact_id, agent_id, tokens) VALUES ('a2', 'x', 10), "
          "('a1', 'w', 0), ('a2', 'w', 0)")
    assert sorted(set(pending_rows(db_kind, db_url))) == ["a1", "a2"]
    assert cli("snapshot", "--db", db_url).exit_code == 0
    assert pending_rows(db_kind, db_url) == []
    write(db_kind, db_url,
          "INSERT INTO positions (artifact_id, agent_id, tokens, status) VALUES "
          "('a1', 'x', 100, 'open'), ('a2', 'y', 30, 'closed')")
    assert pending_rows(db_kind, db_url) == ["a1"]
    assert stored_demand(db_kind, db_url, "a1") == 0
    assert budget_json(cli, db_url, "a1")["demand"] == 100
    assert [r["artifact_id"] for r in rank_json(cli, db_url, "--limit", "1")] == ["a1"]
    assert_readers_match_sources(db_kind, db_url, allocator, "pending")
    assert balances_check(allocator) == []

    assert cli("snapshot", "--db", db_url).exit_code == 0
    assert pending_rows(db_kind, db_url) == []
    assert stored_demand(db_kind, db_url, "a1") == 100_000_000
    write(db_kind, db_url, "UPDATE positions SET status = 'closed' WHERE artifact_id = 'a1'")
    assert pending_rows(db_kind, db_url) in (["a1", "a1"], ["a1"])  # per row; per statement
    assert budget_json(cli, db_url, "a1")["demand"] == 0
    assert [r["artifact_id"] for r in rank_json(cli, db_url, "--limit", "1")] == ["a2"]
    assert cli("next", "--claim", "--agent", "t", "--db", db_url).exit_code == 0
    assert pending_rows(db_kind, db_url) == []
    assert stored_demand(db_kind, db_url, "a1") == 0
    assert_readers_match_sources(db_kind, db_url, allocator, "folded")
    assert balances_check(allocator) == []


only_postgresql = pytest.mark.parametrize("db_kind", ["postgresql"], indirect=True)


def waiting_for_locks(db_url, count, finished=lambda: False, timeout=30):
    """Return once `count` sessions wait for a lock (or `finished()`)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(db_url, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            if finished() or watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'").fetchone()[0] >= count:
                return
            time.sleep(0.02)
    raise AssertionError(f"never {count} sessions waiting for a lock")


@only_postgresql
def test_bounties_of_two_concurrent_transactions_both_count(db_url, cli, allocator):
    """Two services add a bounty to the same artifact at once; the first one's commit
    waits (its other balance row is held by a third writer) while holding the artifact's
    balance, so the second one's trigger waits for it. Both bounties count."""
    write("postgresql", db_url,
          "INSERT INTO artifacts (id, type) VALUES ('a', 'hypothesis'), ('b', 'hypothesis')")
    holder = psycopg.connect(db_url)  # a spend written directly: b's balance row is held
    holder.execute("INSERT INTO resource_allocations (artifact_id, tokens) VALUES ('b', 1)")

    def first():
        write("postgresql", db_url,
              "INSERT INTO token_bounties (artifact_id, tokens_offered) VALUES ('a', 7)",
              "INSERT INTO markets (artifact_id, price) VALUES ('b', 0.5)")

    def second():
        write("postgresql", db_url,
              "INSERT INTO token_bounties (artifact_id, tokens_offered) VALUES ('a', 5)")

    with ThreadPoolExecutor(2) as pool:
        firsts = pool.submit(first)
        waiting_for_locks(db_url, 1)
        seconds = pool.submit(second)
        waiting_for_locks(db_url, 2, seconds.done)
        holder.commit()
        holder.close()
        firsts.result(), seconds.result()
    assert budget_json(cli, db_url, "a")["bounty"] == 12
    assert balances_check(allocator) == []


@only_postgresql
def test_folds_never_wait_for_each_other_nor_lose_a_position(db_url, cli, allocator):
    """A fold takes only the pending rows it sees, with SKIP LOCKED: a second fold while
    the first is open passes its rows by instead of waiting, and a position committed
    after a fold took the rows keeps its own row, so it is summed by the next fold. The
    readers are exact throughout."""
    from scidex_alloc.budgets import folding
    from scidex_alloc.storage.schema import utcnow

    write("postgresql", db_url,
          "INSERT INTO artifacts (id, type) VALUES ('a', 'hypothesis'), ('b', 'hypothesis')",
          "INSERT INTO positions (artifact_id, agent_id, tokens) VALUES ('a', 'x', 5)")
    late = psycopg.connect(db_url)  # another service's transaction, not yet committed
    late.execute("INSERT INTO positions (artifact_id, agent_id, tokens) VALUES ('b', 'x', 7)")
    with allocator.engine.connect() as first:
        with first.begin():
            assert folding.fold_pending(first, utcnow()) == 1  # a's row, locked until commit
            write("postgresql", db_url,
                  "INSERT INTO positions (artifact_id, agent_id, tokens) VALUES ('b', 'y', 1)")
            second = cli("snapshot", "--db", db_url)  # folds b's committed row, skips a's
            assert second.exit_code == 0, second.stderr
            late.commit()
            late.close()
        assert pending_rows("postgresql", db_url) == ["b"]  # the late position's row
    assert budget_json(cli, db_url, "b")["demand"] == 8
    assert balances_check(allocator) == []
    assert cli("snapshot", "--db", db_url).exit_code == 0
    assert pending_rows("postgresql", db_url) == []
    assert [stored_demand("postgresql", db_url, aid) for aid in "ab"] == [5_000_000, 8_000_000]


# --------------------------------------------------------------------------- 2. hostile values

TARGET = "hyp-bad"
DEMAND, BOUNTY, SPENT, PRICE = (f"{n} is not a finite number" for n in ("demand", "bounty",
                                                                        "spent", "price"))
BAD_POSITION = "INSERT INTO positions (artifact_id, agent_id, tokens) VALUES ('hyp-bad', 'bad', {})"
BAD_BOUNTY = ("INSERT INTO token_bounties (artifact_id, tokens_offered, tokens_paid) "
              "VALUES ('hyp-bad', {}, {})")
BAD_SPEND = ("INSERT INTO resource_allocations (artifact_id, tokens, agent_id) "
             "VALUES ('hyp-bad', {}, 'bad')")
BAD_PRICE = "UPDATE markets SET price = {} WHERE artifact_id = 'hyp-bad'"
DELETE = {"position": "DELETE FROM positions WHERE agent_id = 'bad'",
          "bounty": "DELETE FROM token_bounties WHERE artifact_id = 'hyp-bad'",
          "spend": "DELETE FROM resource_allocations WHERE agent_id = 'bad'",
          "price": "DELETE FROM markets WHERE artifact_id = 'hyp-bad'"}
# Each case: per database, the statements that write the bad row, which row it is, and
# the problem it causes.
HOSTILE = {
    "text-tokens": ({"sqlite": [BAD_POSITION.format("'abc'")]}, "position", DEMAND),
    "nan-tokens": ({"postgresql": [BAD_POSITION.format("'NaN'")]}, "position", DEMAND),
    "tokens-updated-to-nonfinite": (
        {"sqlite": [BAD_POSITION.format(5), "UPDATE positions SET tokens = -9e999 "
                                            "WHERE agent_id = 'bad'"],
         "postgresql": [BAD_POSITION.format(5), "UPDATE positions SET tokens = 'NaN' "
                                                "WHERE agent_id = 'bad'"]}, "position", DEMAND),
    "infinite-offer": ({"sqlite": [BAD_BOUNTY.format("9e999", 0)],
                        "postgresql": [BAD_BOUNTY.format("'NaN'", 0)]}, "bounty", BOUNTY),
    "text-paid": ({"sqlite": [BAD_BOUNTY.format(5, "'x'")],
                   "postgresql": [BAD_BOUNTY.format(5, "'NaN'")]}, "bounty", BOUNTY),
    "bad-spend": ({"sqlite": [BAD_SPEND.format("'lots'")],
                   "postgresql": [BAD_SPEND.format("'NaN'")]}, "spend", SPENT),
    "nan-price": ({"postgresql": [BAD_PRICE.format("'NaN'")]}, "price", PRICE),
    "infinite-price": ({"sqlite": [BAD_PRICE.format("9e999")],
                        "postgresql": [BAD_PRICE.format("'Infinity'")]}, "price", PRICE),
    "text-price": ({"sqlite": [BAD_PRICE.format("'high'")],
                    "postgresql": [BAD_PRICE.format("'-Infinity'")]}, "price", PRICE),
    "huge-tokens": ({"sqlite": [BAD_POSITION.format("1e300")],
                     "postgresql": [BAD_POSITION.format("1e17")]}, "position",
                    "demand exceeds 9000000000 tokens"),
    "sum-past-64-bits": ({kind: [BAD_POSITION.format(9e12), BAD_POSITION.format(9e12)]
                          for kind in ("sqlite", "postgresql")}, "position",
                         "demand exceeds 9000000000 tokens"),
}


@pytest.mark.parametrize("db_kind, case", [(kind, case) for case, (statements, _, _)
                                           in HOSTILE.items() for kind in statements],
                         indirect=["db_kind"])
def test_hostile_values_never_fail_a_write_or_a_reader(db_kind, db_url, cli, allocator, case):
    """NaN, infinite and text amounts and prices, written directly: the writes succeed, the
    readers list the artifact with its problem, the balance stays exact through further
    writes, and deleting the bad row makes the artifact valid again."""
    statements, row, problem = HOSTILE[case]  # each database's way to store the value
    generate(cli, db_url, 30, 5)
    write(db_kind, db_url, "INSERT INTO artifacts (id, type) VALUES ('hyp-bad', 'hypothesis')")
    write(db_kind, db_url, "INSERT INTO markets (artifact_id, price) VALUES ('hyp-bad', 0.5)",
          "INSERT INTO positions (artifact_id, agent_id, tokens) VALUES ('hyp-bad', 'a', 10)")
    before = {r["artifact_id"]: r for r in rank_json(cli, db_url)}

    write(db_kind, db_url, *statements[db_kind])
    write(db_kind, db_url,  # a valid write to the invalid artifact
          "INSERT INTO positions (artifact_id, agent_id, tokens) VALUES ('hyp-bad', 'more', 2)")
    rows = rank_json(cli, db_url)
    assert (rows[-1]["artifact_id"], rows[-1]["problem"], rows[-1]["remaining"]) == (
        TARGET, problem, None)
    assert {r["artifact_id"]: {**r, "rank": None} for r in rows[:-1]} == {
        aid: {**r, "rank": None} for aid, r in before.items() if aid != TARGET}
    assert budget_json(cli, db_url, TARGET)["problem"] == problem
    queue = cli("next", "--limit", "100", "-f", "json", "--db", db_url)
    assert queue.exit_code == 0, queue.stderr
    assert TARGET not in [entry["artifact_id"] for entry in queue.json()]
    _, checks = audit_json(cli, db_url)
    assert checks["balances-exact"]["rows"] == []
    assert TARGET in json.dumps(checks["amounts-valid"]["rows"])
    assert_readers_match_sources(db_kind, db_url, allocator, case)

    write(db_kind, db_url, DELETE[row],
          "DELETE FROM positions WHERE agent_id = 'more'",
          "INSERT INTO markets (artifact_id, price) SELECT 'hyp-bad', 0.5 WHERE NOT EXISTS "
          "(SELECT 1 FROM markets WHERE artifact_id = 'hyp-bad')")
    assert rank_json(cli, db_url) == list(before.values())
    code, checks = audit_json(cli, db_url)
    assert checks["balances-exact"]["rows"] == [] and code == 0, checks


# --------------------------------------------------------------------------- 3. hand edits

HAND_EDITS = {  # what is done to the balances, and the row the audit must show
    "changed": ("UPDATE artifact_balances SET demand = demand + 1 "
                "WHERE artifact_id = 'hyp-0000001'",
                {"artifact_id": "hyp-0000001", "differs": "demand"}),
    "missing": ("DELETE FROM artifact_balances WHERE artifact_id = 'hyp-0000001'",
                {"artifact_id": "hyp-0000001", "differs": "row"}),
    "extra": ("INSERT INTO artifact_balances (artifact_id, type) VALUES ('ghost', 'hypothesis')",
              {"artifact_id": "ghost", "differs": "row"}),
}


@pytest.mark.parametrize("summed", ["wrong", "every"])
@pytest.mark.parametrize("edit", list(HAND_EDITS))
def test_audit_catches_a_balance_changed_by_hand_and_rebuild_mends_it(
        db_kind, db_url, cli, monkeypatch, edit, summed):
    """Surgery on artifact_balances (or a bad restore) is what `balances-exact` is for:
    it names the artifact, `alloc db rebuild-balances` counts it and mends it, whether it
    sums again only the wrong balances (while they are few of all) or every one."""
    from scidex_alloc.budgets import balances as balances_module

    monkeypatch.setattr(balances_module, "RESUM_FRACTION", 1 if summed == "wrong" else 10**9)
    generate(cli, db_url, 60, 7)
    statement, shown_row = HAND_EDITS[edit]
    original = budget_json(cli, db_url, "hyp-0000001")
    write(db_kind, db_url, statement)
    if edit == "changed":  # the readers read the balance: a micro-token more demand
        assert budget_json(cli, db_url, "hyp-0000001")["demand"] == original["demand"] + MICRO

    code, checks = audit_json(cli, db_url)
    assert code == 6
    assert checks["balances-exact"]["rows"] == [shown_row]
    assert [name for name, c in checks.items() if not c["ok"]] == ["balances-exact"]
    rebuilt = cli("db", "rebuild-balances", "--db", db_url)
    assert (rebuilt.exit_code, rebuilt.stderr) == (
        0, "rebuilt the balances of 60 artifacts; 1 differed\n")
    assert audit_json(cli, db_url)[0] == 0
    assert budget_json(cli, db_url, "hyp-0000001") == original
    again = cli("db", "rebuild-balances", "--db", db_url)
    assert again.stderr == "rebuilt the balances of 60 artifacts; 0 differed\n"


def test_pending_rows_deleted_by_hand_are_caught_and_mended(db_kind, db_url, cli, allocator):
    """Deleting `pending_demand` rows by hand leaves a balance's out-of-date demand as if it
    were folded: `balances-exact` names the artifact, and `alloc db rebuild-balances`
    mends it. A fold drops the rows of an artifact that is gone."""
    generate(cli, db_url, 60, 7)
    write(db_kind, db_url,
          "INSERT INTO positions (artifact_id, agent_id, tokens) VALUES ('hyp-0000001', 'x', 5)",
          "DELETE FROM pending_demand")
    code, checks = audit_json(cli, db_url)
    assert code == 6
    assert checks["balances-exact"]["rows"] == [{"artifact_id": "hyp-0000001",
                                                 "differs": "demand"}]
    rebuilt = cli("db", "rebuild-balances", "--db", db_url)
    assert rebuilt.stderr == "rebuilt the balances of 60 artifacts; 1 differed\n"
    assert audit_json(cli, db_url)[0] == 0

    write(db_kind, db_url, "INSERT INTO pending_demand (artifact_id) VALUES ('ghost')")
    assert cli("snapshot", "--db", db_url).exit_code == 0
    assert pending_rows(db_kind, db_url) == []
    assert balances_check(allocator) == []


# --------------------------------------------------------------------------- 4. alloc load


def load(cli, db_url, tmp_path, what, text):
    path = tmp_path / f"{what}-{abs(hash(text))}.csv"
    path.write_text(text)
    return cli("load", what, path, "--db", db_url)


@pytest.mark.parametrize("summed", ["touched", "every"])
def test_loads_keep_the_balances_exact_and_a_refused_load_changes_nothing(
        db_kind, db_url, cli, allocator, tmp_path, monkeypatch, summed):
    """`alloc load` suspends the triggers and sums its artifacts set-based: afterwards the
    balances are exact, whether it sums again only the balances of the artifacts its rows
    name or (when they are many of all) every balance; a refused load leaves them (and the
    triggers) as they were."""
    from scidex_alloc.budgets import balances as balances_module

    monkeypatch.setattr(balances_module, "RESUM_FRACTION", 1 if summed == "touched" else 10**9)
    generate(cli, db_url, 20, 4)
    loads = {
        "artifacts": "id,type\nl1,hypothesis\nl2,analysis\nl3,hypothesis\n",
        "markets": "artifact_id,price\nl1,0.8\nl2,0.25\n",
        "positions": "artifact_id,agent_id,tokens,status\nl1,a,100.5,open\nl1,b,7,closed\n"
                     "l2,a,40,open\nhyp-0000001,a,3.25,open\nl3,c,1,settled\n",
        "bounties": "artifact_id,tokens_offered,tokens_paid,status,expires_at\n"
                    "l1,100,25,open,2099-01-01 00:00:00\nl2,50,0,open,2000-01-01 00:00:00\n"
                    "l3,70,0,cancelled,\nhyp-0000001,9.5,0.5,open,\n",
    }
    for what, text in loads.items():
        result = load(cli, db_url, tmp_path, what, text)
        assert result.exit_code == 0, result.stderr
        assert balances_check(allocator, what) == []
        assert_readers_match_sources(db_kind, db_url, allocator, what)
    assert (budget_json(cli, db_url, "l1")["demand"], budget_json(cli, db_url, "l1")["bounty"]) \
        == (D("100.5"), 75)

    refused = {
        "a bad row": ("positions", "artifact_id,tokens\nl1,5\nl3,12abc\n"),
        "paid beyond the offer": ("bounties", "artifact_id,tokens_offered,tokens_paid\n"
                                              "l3,5,0\nl3,10,20\n"),
        "beyond the limit": ("positions", "artifact_id,tokens\n" + "l3,1000000000\n" * 10),
        "an unknown artifact": ("bounties", "artifact_id,tokens_offered\nl3,5\nnope,5\n"),
    }
    for why, (what, text) in refused.items():
        stored = stored_balances(db_kind, db_url)
        result = load(cli, db_url, tmp_path, what, text)
        assert result.exit_code == 2, (why, result.stderr)
        assert stored_balances(db_kind, db_url) == stored, why
        # The triggers still keep the balances.
        write(db_kind, db_url, "INSERT INTO positions (artifact_id, agent_id, tokens) "
                               "VALUES ('l3', 'after', 2)")
        assert balances_check(allocator, why) == []
        assert_readers_match_sources(db_kind, db_url, allocator, why)
    assert budget_json(cli, db_url, "l3")["demand"] == 8


# --------------------------------------------------------------------------- 5. totals

RETRIED_ERRORS = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure,
                  sqlite3.OperationalError)


def committed(direct: Direct, write, attempts: int = 50) -> None:
    """`write()`, then commit; after a deadlock or a busy database, rolled back and again."""
    for _attempt in range(attempts):
        try:
            write()
            direct.commit()
            return
        except RETRIED_ERRORS:
            direct.rollback()
            time.sleep(0.02)
    raise AssertionError("a writer never committed")



def totals_rows(db_kind, db_url) -> int:
    with Direct(db_kind, db_url) as direct:
        [(count,)] = direct.rows("SELECT count(*) FROM balance_totals")
        direct.rollback()
    return count


def test_totals_fold_their_rows_while_many_writers_append(db_kind, db_url, cli, allocator):
    """Eight writers commit 1,600 changes to balances one by one, so that the rows of
    differences are folded many times, by several writers at once: the totals stay
    exactly the balances' sums, and few rows remain."""
    from scidex_alloc.budgets.totals import COMPACT_EVERY

    generate(cli, db_url, 40, 3)
    ids = [aid for aid, _ in source_rows(db_kind, db_url)["artifacts"]]
    start = threading.Barrier(8)

    def writer(i):
        rng = random.Random(i)
        start.wait()
        with Direct(db_kind, db_url) as direct:
            for _ in range(200):
                committed(direct, lambda: direct.execute(
                    "INSERT INTO positions (artifact_id, agent_id, tokens) VALUES (?, ?, ?)",
                    rng.choice(ids), f"w{i}", tokens(rng)))

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(writer, i) for i in range(8)]:
            future.result()
    assert balances_check(allocator) == []
    assert_readers_match_sources(db_kind, db_url, allocator, "after the writers")
    assert totals_rows(db_kind, db_url) < COMPACT_EVERY + 10


def test_audit_catches_totals_changed_by_hand_and_rebuild_mends_them(db_kind, db_url, cli,
                                                                    allocator):
    generate(cli, db_url, 30, 5)
    before = allocator.pipeline().types
    write(db_kind, db_url, "UPDATE balance_totals SET budget_micro = budget_micro + 1 "
                           "WHERE type = 'hypothesis'")
    assert [t.budget - b.budget for t, b in zip(allocator.pipeline().types, before)
            if t.type == "hypothesis"] == [MICRO]
    code, checks = audit_json(cli, db_url)
    assert code == 6 and checks["totals-exact"]["rows"] == [{"type": "hypothesis"}]
    assert [name for name, c in checks.items() if not c["ok"]] == ["totals-exact"]
    assert cli("db", "rebuild-balances", "--db", db_url).exit_code == 0
    assert audit_json(cli, db_url)[0] == 0
    assert allocator.pipeline().types == before


# --------------------------------------------------------------------------- 6. 16 writers

def test_sixteen_concurrent_writers(db_kind, db_url, cli, allocator, alloc_proc):
    """Spenders (`alloc spend`), agents claiming and finishing work (`alloc next --claim`,
    `alloc done`) and other services writing positions, all at once on the same few
    artifacts: afterwards every balance is exact and spent equals the log."""
    generate(cli, db_url, 40, 6)
    hot = [r["artifact_id"] for r in rank_json(cli, db_url, "--by", "remaining", "--limit", "6")]
    env = {"SCIDEX_BUSY_TIMEOUT": "60"}
    start = threading.Barrier(16)

    def spender(i):
        start.wait()
        for k in range(2):
            result = alloc_proc("spend", hot[(i + k) % len(hot)], "0.01", "--agent", f"s{i}",
                                "--key", f"s{i}-{k}", "--db", db_url, env=env)
            assert result.returncode in (0, 3), result.stderr

    def agent(i):
        start.wait()
        result = alloc_proc("next", "--claim", "--agent", f"c{i}", "--limit", "2", "-f", "json",
                            "--db", db_url, env=env)
        assert result.returncode == 0, result.stderr
        for k, claim in enumerate(json.loads(result.stdout)):
            finished = alloc_proc("done", claim["claim_id"], "--reward", f"0.{i}{k}",
                                  "--db", db_url, env=env)
            assert finished.returncode == 0, finished.stderr

    def service(i):
        rng = random.Random(i)
        start.wait()
        with Direct(db_kind, db_url) as direct:
            def change():
                for aid in rng.sample(hot, rng.randint(1, 3)):
                    mine = direct.rows("SELECT id FROM positions WHERE agent_id = ? ORDER BY id",
                                       f"p{i}")
                    action = rng.choice(["insert", "insert", "update", "close", "delete"])
                    if action == "insert" or not mine:
                        direct.execute("INSERT INTO positions (artifact_id, agent_id, tokens) "
                                       "VALUES (?, ?, ?)", aid, f"p{i}", tokens(rng))
                    elif action == "update":
                        direct.execute("UPDATE positions SET tokens = ?, artifact_id = ? "
                                       "WHERE id = ?", tokens(rng), aid, mine[-1][0])
                    elif action == "close":
                        direct.execute("UPDATE positions SET status = 'closed' WHERE id = ?",
                                       mine[0][0])
                    else:
                        direct.execute("DELETE FROM positions WHERE id = ?", mine[0][0])

            for _ in range(12):
                committed(direct, change)

    workers = [(spender, i) for i in range(6)] + [(agent, i) for i in range(5)] + [
        (service, i) for i in range(5)]
    with ThreadPoolExecutor(len(workers)) as pool:
        for future in [pool.submit(work, i) for work, i in workers]:
            future.result()

    code, checks = audit_json(cli, db_url)
    assert checks["balances-exact"]["rows"] == []
    assert checks["totals-exact"]["rows"] == []
    assert checks["spent-matches-log"]["rows"] == []
    log = cli("log", "-f", "json", "--db", db_url).json()
    assert any((e["agent"] or "").startswith("s") for e in log)  # the spenders spent
    assert any(status == "done" for _, status, _ in source_rows(db_kind, db_url)["claims"])
    for row in rank_json(cli, db_url):
        assert D(str(row["spent"])) == sum(
            (D(str(e["tokens"])) for e in log if e["artifact_id"] == row["artifact_id"]), D(0))
    assert_readers_match_sources(db_kind, db_url, allocator, "after the writers")


# --------------------------------------------------------------------------- 7. upgrade


def migrate_to(db_url, how: str, revision: str):
    """Alembic `upgrade` or `downgrade` to `revision`, on alloc's own engine."""
    from alembic import command
    from alembic.config import Config

    with Allocator.open(db_url) as opened, opened.engine.begin() as connection:
        config = Config()
        config.set_main_option("script_location", "scidex_alloc.storage:migrations")
        config.attributes["connection"] = connection
        getattr(command, how)(config, revision)


def data_at_0004(db_kind, db_url):
    """Rows of every kind, written with no balances to keep."""
    now = datetime.now(timezone.utc)
    bad = "'abc'" if db_kind == "sqlite" else "'NaN'"
    write(db_kind, db_url,
          "INSERT INTO artifacts (id, type) VALUES ('u1', 'hypothesis'), ('u2', 'analysis'), "
          "('u3', 'hypothesis'), ('u4', 'experiment'), ('u5', 'hypothesis')",
          "INSERT INTO markets (artifact_id, price) VALUES ('u1', 0.3), ('u2', NULL), ('u4', 0.9)",
          "INSERT INTO positions (artifact_id, agent_id, tokens, status) VALUES "
          "('u1', 'a', 120.5, 'open'), ('u1', 'b', 30, 'closed'), ('u2', 'a', 80, 'open'), "
          f"('u3', 'a', 15, 'open'), ('u5', 'a', {bad}, 'open'), ('u5', 'b', 4, 'open')",
          ("INSERT INTO token_bounties (artifact_id, tokens_offered, tokens_paid, status, "
           "expires_at) VALUES ('u1', 40, 10, 'open', ?), ('u1', 99, 0, 'open', ?), "
           "('u2', 25, 0, 'open', NULL), ('u3', 60, 0, 'cancelled', NULL)",
           (now + timedelta(days=3), now - timedelta(days=3))),
          "INSERT INTO resource_allocations (artifact_id, tokens, agent_id) VALUES "
          "('u1', 2.5, 'x'), ('u2', 1, 'x'), ('u2', 0.25, 'x')",
          ("INSERT INTO claims (artifact_id, agent_id, status, claimed_at, lease_expires_at, "
           "finished_at, reward) VALUES ('u1', 'x', 'done', ?, ?, ?, 0.75), "
           "('u1', 'y', 'done', ?, ?, ?, NULL), ('u2', 'x', 'active', ?, ?, NULL, NULL), "
           "('u3', 'x', 'released', ?, ?, ?, NULL)",
           (now, now, now) * 2 + (now, now) + (now, now, now)))


@pytest.mark.parametrize("start", ["created at 0004", "downgraded to 0004"])
def test_upgrade_from_0004_sums_the_existing_rows(db_kind, empty_db_url, cli, allocator_for,
                                                  start):
    """A database of revision 0004 holding data (rows of every kind, some invalid) gets
    exact balances from `alloc db upgrade`, and its triggers keep them afterwards."""
    db_url = empty_db_url
    if start == "created at 0004":
        if db_kind == "sqlite":
            open(db_url, "w").close()
        migrate_to(db_url, "upgrade", "0004")
    else:
        assert cli("db", "upgrade", "--db", db_url).exit_code == 0
        generate(cli, db_url, 30, 9)
        migrate_to(db_url, "downgrade", "0004")
    assert cli("db", "current", "--db", db_url).stdout.startswith("0004 (behind ")
    data_at_0004(db_kind, db_url)

    result = cli("db", "upgrade", "--db", db_url)
    assert result.exit_code == 0, result.stderr
    allocator = allocator_for(db_url)
    assert balances_check(allocator) == []
    assert_readers_match_sources(db_kind, db_url, allocator, "upgraded")
    u1 = budget_json(cli, db_url, "u1")
    assert (u1["demand"], u1["bounty"], u1["spent"]) == (D("120.5"), 30, D("2.5"))
    assert budget_json(cli, db_url, "u5")["problem"] == DEMAND
    write(db_kind, db_url, "INSERT INTO positions (artifact_id, agent_id, tokens) "
                           "VALUES ('u3', 'after', 5)")
    assert budget_json(cli, db_url, "u3")["demand"] == 20
    assert balances_check(allocator) == []


def test_upgrade_from_the_previous_revision_leaves_the_balances_as_they_are(
        db_kind, empty_db_url, cli, allocator_for):
    """An upgrade that crosses no revision changing what a balance holds makes the totals,
    indexes and triggers again but does not sum the balances again: rows written before
    it stay exact, and a balance edited by hand stays wrong for `audit` to report and
    `rebuild-balances` to mend."""
    db_url = empty_db_url
    assert cli("db", "upgrade", "--db", db_url).exit_code == 0
    generate(cli, db_url, 30, 9)
    migrate_to(db_url, "downgrade", "0007")
    write(db_kind, db_url,
          "INSERT INTO positions (artifact_id, agent_id, tokens) "
          "SELECT id, 'late', 7 FROM artifacts WHERE type = 'hypothesis'",
          "UPDATE artifact_balances SET demand_invalid = 1 "
          "WHERE artifact_id = (SELECT min(artifact_id) FROM artifact_balances)")

    result = cli("db", "upgrade", "--db", db_url)
    assert result.exit_code == 0, result.stderr
    allocator = allocator_for(db_url)
    wrong = {c.name: [row["artifact_id"] for row in c.rows] for c in allocator.audit()
             if c.name in ("balances-exact", "totals-exact")}
    first = min(row.artifact_id for row in allocator.rank())
    assert wrong == {"balances-exact": [first], "totals-exact": []}
    assert cli("db", "rebuild-balances", "--db", db_url).exit_code == 0
    assert balances_check(allocator) == []
    assert_readers_match_sources(db_kind, db_url, allocator, "rebuilt")


def test_upgrade_makes_the_explored_index_cover_the_queue_scans(db_kind, empty_db_url, cli):
    """Revision 0009 replaces the explored artifacts' narrow index with one that covers
    what the queue's scans of them read; a downgrade puts the narrow one back."""
    from sqlalchemy import inspect

    from scidex_alloc.budgets.balances import EXPLORED_COLUMNS

    def explored_columns():
        with Allocator.open(empty_db_url) as opened:
            found = {ix["name"]: ix["column_names"]
                     for ix in inspect(opened.engine).get_indexes("artifact_balances")}
        return found["ix_artifact_balances_explored"]

    assert cli("db", "upgrade", "--db", empty_db_url).exit_code == 0
    generate(cli, empty_db_url, 30, 9)
    assert explored_columns() == list(EXPLORED_COLUMNS)
    migrate_to(empty_db_url, "downgrade", "0008")
    assert explored_columns() == ["artifact_id"]
    result = cli("db", "upgrade", "--db", empty_db_url)
    assert result.exit_code == 0, result.stderr
    assert explored_columns() == list(EXPLORED_COLUMNS)


@pytest.fixture
def allocator_for():
    opened = []

    def open_(db_url):
        opened.append(Allocator.open(db_url))
        return opened[-1]

    yield open_
    for allocator in opened:
        allocator.close()
