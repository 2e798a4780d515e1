"""Holds: budget reserved before work whose cost is known only afterwards, then settled,
voided or left to expire; the queue's reserving claims; spend, rank, budget and the API
seeing `held` and `available`; audit's checks on holds; and parallel holders, spenders and
claimers that never take more than a budget. Through the real entry points, on SQLite
and PostgreSQL."""

import json
import os
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import jsonschema
import psycopg
import pytest
from fastapi.testclient import TestClient

from scidex_alloc import errors
from scidex_alloc.allocator import Allocator
from scidex_alloc.serving.api import create_app
from tests.test_concurrency import PROCESSES, in_parallel
from tests.test_hostile_data import execute

D = Decimal
HOLD_KEYS = ["id", "artifact_id", "tokens", "unit", "units", "rate", "agent", "status",
             "expires_at", "replayed", "available", "claim_id"]
SPEND_KEYS = ["id", "artifact_id", "tokens", "unit", "units", "rate", "kind", "agent",
              "replayed", "spent", "remaining", "hold_id", "available"]
LIST_KEYS = ["id", "artifact_id", "tokens", "unit", "units", "agent", "status", "created_at",
             "expires_at", "claim_id", "spend_id", "note"]


# --------------------------------------------------------------------------- helpers


def load(cli, db, tmp_path, budgets: dict[str, int]) -> str:
    """Artifacts with exactly these budgets (10 committed tokens per budget token at the
    default price)."""
    (tmp_path / "holds_a.csv").write_text(
        "id,type\n" + "".join(f"{a},hypothesis\n" for a in budgets))
    (tmp_path / "holds_p.csv").write_text(
        "artifact_id,tokens\n" + "".join(f"{a},{b * 10}\n" for a, b in budgets.items()))
    assert cli("load", "artifacts", tmp_path / "holds_a.csv", "--db", db).exit_code == 0
    assert cli("load", "positions", tmp_path / "holds_p.csv", "--db", db).exit_code == 0
    return db


@pytest.fixture
def funded(db_url, cli, tmp_path):
    """a1 and a2, each with a budget of exactly 100 tokens."""
    return load(cli, db_url, tmp_path, {"a1": 100, "a2": 100})


@pytest.fixture
def lone(db_url, cli, tmp_path):
    """a1 alone, with a budget of exactly 100 tokens: the queue can only offer it."""
    return load(cli, db_url, tmp_path, {"a1": 100})


def exact(text: str):
    return json.loads(text, parse_float=D)


def run(cli, db, *args):
    """`alloc COMMAND --db DB ARGS...` (options first, so ARGS may end with `-- -1`)."""
    return cli(args[0], "--db", db, *args[1:])


def ok(cli, db, *args):
    """`alloc ARGS -f json` succeeds: its JSON, amounts as exact Decimals."""
    result = run(cli, db, args[0], "-f", "json", *args[1:])
    assert result.exit_code == 0, (args, result.stderr)
    assert result.stderr == ""
    return exact(result.stdout)


def written(cli, db):
    """Everything a hold, settle, void, spend, done or release could write."""
    return (ok(cli, db, "holds", "--all"), ok(cli, db, "log"), ok(cli, db, "claims"),
            ok(cli, db, "claims", "--expired"))


def refused(cli, db, code, *args) -> str:
    """`alloc ARGS` fails with `code`: one line on stderr, nothing on stdout, nothing
    written. Its message."""
    before = written(cli, db)
    result = run(cli, db, *args)
    assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith("alloc: ") and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.endswith("\n") and "Traceback" not in result.stderr
    assert written(cli, db) == before, f"{args} wrote something"
    return result.stderr


def budget(cli, db, artifact_id):
    return ok(cli, db, "budget", artifact_id)


def hold(cli, db, *args):
    return ok(cli, db, "hold", *args)


def audit(cli, db) -> tuple[int, dict]:
    """Audit's exit code and its checks by name."""
    result = cli("audit", "-f", "json", "--db", db)
    report = exact(result.stdout)
    assert result.exit_code == (0 if report["ok"] else 6), result.stderr
    return result.exit_code, {check["name"]: check for check in report["checks"]}


def assert_clean(cli, db):
    code, checks = audit(cli, db)
    assert code == 0, [c for c in checks.values() if not c["ok"]]


def wait_past(instant: str) -> None:
    """Sleep until just past an ISO instant that alloc printed."""
    delay = (datetime.fromisoformat(instant) - datetime.now(timezone.utc)).total_seconds()
    time.sleep(max(delay, 0) + 0.1)


def entry_hold_id(db_kind, db_url, spend_id):
    """The hold_id column of a spend-log entry, as stored."""
    sql = f"SELECT hold_id FROM resource_allocations WHERE id = {int(spend_id)}"
    if db_kind == "sqlite":
        connection = sqlite3.connect(db_url)
        try:
            return connection.execute(sql).fetchone()[0]
        finally:
            connection.close()
    with psycopg.connect(db_url) as connection:
        return connection.execute(sql).fetchone()[0]


# --------------------------------------------------------------------------- hold / settle / void


def test_hold_reports_every_key_and_replays_its_key(funded, cli):
    before = datetime.now(timezone.utc)
    placed = hold(cli, funded, "a1", "30", "--agent", "x", "--key", "k", "--note", "n")
    assert list(placed) == HOLD_KEYS
    assert {k: placed[k] for k in HOLD_KEYS if k not in ("id", "expires_at")} == {
        "artifact_id": "a1", "tokens": 30, "unit": "tokens", "units": 30, "rate": 1,
        "agent": "x", "status": "active", "replayed": False, "available": 70,
        "claim_id": None}
    lives = datetime.fromisoformat(placed["expires_at"]) - before
    assert timedelta(minutes=29, seconds=50) < lives < timedelta(minutes=30, seconds=10)
    again = hold(cli, funded, "a1", "30", "--agent", "x", "--key", "k", "--note", "n")
    assert again == {**placed, "replayed": True}
    assert [h["id"] for h in ok(cli, funded, "holds", "--all")] == [placed["id"]]
    assert budget(cli, funded, "a1")["held"] == 30
    for other in (("a1", "31"), ("a2", "30"), ("a1", "30000", "--unit", "llm-tokens")):
        assert "k" in refused(cli, funded, 5, "hold", *other, "--key", "k")


def test_hold_in_another_unit(funded, cli):
    placed = hold(cli, funded, "a1", "2500", "--unit", "llm-tokens", "--ttl", "7d")
    assert (placed["tokens"], placed["units"], placed["unit"], placed["rate"]) == (
        D("2.5"), 2500, "llm-tokens", 1000)
    assert placed["available"] == D("97.5")
    settled = ok(cli, funded, "settle", str(placed["id"]))  # the held amount, in its unit
    assert (settled["tokens"], settled["units"], settled["unit"]) == (D("2.5"), 2500,
                                                                     "llm-tokens")


def test_settle_for_less_returns_the_rest(funded, cli, db_kind):
    placed = hold(cli, funded, "a1", "30", "--agent", "x")
    settled = ok(cli, funded, "settle", str(placed["id"]), "20", "--kind", "analysis")
    assert list(settled) == SPEND_KEYS
    assert {k: settled[k] for k in SPEND_KEYS if k != "id"} == {
        "artifact_id": "a1", "tokens": 20, "unit": "tokens", "units": 20, "rate": 1,
        "kind": "analysis", "agent": "x", "replayed": False, "spent": 20, "remaining": 80,
        "hold_id": placed["id"], "available": 80}
    assert entry_hold_id(db_kind, funded, settled["id"]) == placed["id"]
    after = budget(cli, funded, "a1")
    assert (after["spent"], after["held"], after["available"]) == (20, 0, 80)
    [listed] = ok(cli, funded, "holds", "--all")
    assert (listed["status"], listed["spend_id"]) == ("settled", settled["id"])
    assert ok(cli, funded, "holds") == []
    assert [e["tokens"] for e in ok(cli, funded, "log")] == [20]
    assert_clean(cli, funded)


def test_settle_for_more_needs_available_budget(funded, cli):
    first = hold(cli, funded, "a1", "30")
    hold(cli, funded, "a1", "50")  # 80 held, 20 available
    settled = ok(cli, funded, "settle", str(first["id"]), "45")  # 15 more than held
    assert (settled["spent"], settled["available"]) == (45, 5)
    small = hold(cli, funded, "a1", "3")  # 2 available
    message = refused(cli, funded, 3, "settle", str(small["id"]), "5.000001")
    assert "available" in message
    settled = ok(cli, funded, "settle", str(small["id"]), "5")  # exactly all 2 more
    assert (settled["spent"], settled["remaining"], settled["available"]) == (50, 50, 0)
    after = budget(cli, funded, "a1")
    assert (after["spent"], after["held"], after["available"]) == (50, 50, 0)
    assert_clean(cli, funded)


def test_settling_within_the_hold_succeeds_after_the_budget_shrank(lone, cli, db_kind):
    placed = str(hold(cli, lone, "a1", "80")["id"])
    execute(lone, db_kind, "UPDATE positions SET tokens = 500")  # the budget is now 50
    after = budget(cli, lone, "a1")
    assert (after["budget"], after["held"], after["available"]) == (50, 80, -30)
    refused(cli, lone, 3, "spend", "a1", "1")
    assert_clean(cli, lone)  # the hold was granted under a budget of 100
    settled = ok(cli, lone, "settle", placed)
    assert (settled["spent"], settled["remaining"], settled["available"]) == (80, -30, -30)
    assert [e["overdraft"] for e in ok(cli, lone, "log")] == [True]  # flagged, not silent
    assert_clean(cli, lone)


def test_settling_again_replays_or_conflicts(funded, cli):
    placed = str(hold(cli, funded, "a1", "30")["id"])
    first = ok(cli, funded, "settle", placed, "20")
    assert ok(cli, funded, "settle", placed, "20") == {**first, "replayed": True}
    refused(cli, funded, 5, "settle", placed, "21")
    refused(cli, funded, 5, "settle", placed)  # the default, the held 30, is another amount
    by_default = str(hold(cli, funded, "a1", "10")["id"])
    first = ok(cli, funded, "settle", by_default)
    assert first["tokens"] == 10
    assert ok(cli, funded, "settle", by_default) == {**first, "replayed": True}
    assert ok(cli, funded, "settle", by_default, "10") == {**first, "replayed": True}
    assert len(ok(cli, funded, "log")) == 2


def test_settle_refuses_voided_and_unknown_holds(funded, cli):
    placed = str(hold(cli, funded, "a1", "30")["id"])
    voided = ok(cli, funded, "void", placed)
    assert list(voided) == HOLD_KEYS
    assert (voided["status"], voided["replayed"], voided["available"]) == ("voided", False, 100)
    refused(cli, funded, 2, "settle", placed)
    refused(cli, funded, 2, "settle", placed, "5")
    refused(cli, funded, 4, "settle", "999")
    assert ok(cli, funded, "void", placed) == {**voided, "replayed": True}
    assert budget(cli, funded, "a1")["available"] == 100


def test_void_refuses_settled_and_unknown_holds(funded, cli):
    placed = str(hold(cli, funded, "a1", "30")["id"])
    ok(cli, funded, "settle", placed, "10")
    refused(cli, funded, 2, "void", placed)
    refused(cli, funded, 4, "void", "999")
    [listed] = ok(cli, funded, "holds", "--all")
    assert listed["status"] == "settled"


def test_holds_lists_live_ones_and_with_all_every_outcome(funded, cli):
    live_x = hold(cli, funded, "a1", "1", "--agent", "x", "--note", "first")["id"]
    live_y = hold(cli, funded, "a2", "2", "--agent", "y")["id"]
    voided = hold(cli, funded, "a1", "3", "--agent", "y")["id"]
    settled = hold(cli, funded, "a2", "4", "--agent", "x")["id"]
    ok(cli, funded, "void", str(voided))
    spend = ok(cli, funded, "settle", str(settled))["id"]

    def ids(*args):
        return [h["id"] for h in ok(cli, funded, "holds", *args)]

    live = ok(cli, funded, "holds")
    assert [list(h) for h in live] == [LIST_KEYS] * 2
    assert [(h["id"], h["status"], h["agent"], h["note"]) for h in live] == [
        (live_x, "active", "x", "first"), (live_y, "active", "y", None)]
    assert ids("a1") == [live_x] and ids("--agent", "y") == [live_y]
    assert ids("a2", "--agent", "x") == []
    every = ok(cli, funded, "holds", "--all")
    assert [(h["id"], h["status"], h["spend_id"]) for h in every] == [
        (live_x, "active", None), (live_y, "active", None), (voided, "voided", None),
        (settled, "settled", spend)]
    assert ids("--all", "--agent", "y") == [live_y, voided]
    assert ids("--all", "a2") == [live_y, settled]
    csv = run(cli, funded, "holds", "-f", "csv")
    assert csv.exit_code == 0
    lines = csv.stdout.splitlines()
    assert lines[0] == ",".join(LIST_KEYS) and len(lines) == 3
    table = run(cli, funded, "holds")
    assert table.exit_code == 0 and "first" in table.stdout


# --------------------------------------------------------------------------- bad input


def test_bad_input_gets_its_exit_code_and_writes_nothing(funded, cli):
    placed = str(hold(cli, funded, "a1", "5", "--key", "k")["id"])  # 95 available
    cases = [
        (2, "hold", "a1", "0"), (2, "hold", "a1", "--", "-1"), (2, "hold", "a1", "NaN"),
        (2, "hold", "a1", "1.1234567"), (2, "hold", "a1", "1e999"), (2, "hold", "a1", "inf"),
        (2, "hold", "a1", "5", "--unit", "bogus"), (4, "hold", "nope", "5"),
        (2, "hold", "a1", "5", "--ttl", "0s"), (2, "hold", "a1", "5", "--ttl", "8d"),
        (2, "hold", "a1", "5", "--ttl", "nonsense"),
        (5, "hold", "a1", "6", "--key", "k"), (5, "hold", "a2", "5", "--key", "k"),
        (5, "hold", "a1", "5000", "--unit", "llm-tokens", "--key", "k"),
        (3, "hold", "a1", "95.000001"),
        (2, "settle", placed, "NaN"), (2, "settle", placed, "1.1234567"),
        (2, "settle", placed, "--", "-1"), (2, "settle", placed, "1e999"),
        (2, "settle", placed, "5", "--unit", "bogus"), (2, "settle", "abc"),
        (3, "settle", placed, "100.000001"),  # 95.000001 beyond the hold, 95 available
        (4, "settle", "999"), (4, "void", "999"), (2, "void", "abc"),
    ]
    for code, *args in cases:
        refused(cli, funded, code, *args)
    assert hold(cli, funded, "a1", "95")["available"] == 0  # the boundary itself fits
    assert_clean(cli, funded)


def test_python_api(funded):
    allocator = Allocator.open(funded)
    try:
        placed = allocator.hold("a1", "30", agent="py", ttl=timedelta(minutes=5), key="k")
        assert (placed.tokens, placed.status, placed.available, placed.replayed) == (
            30, "active", 70, False)
        assert allocator.hold("a1", "30", agent="py", key="k").replayed
        with pytest.raises(errors.IdempotencyConflict):
            allocator.hold("a1", "31", key="k")
        with pytest.raises(errors.InsufficientBudget):
            allocator.hold("a1", "70.000001")
        with pytest.raises(errors.UsageError):
            allocator.hold("a1", "1", ttl=timedelta(days=7, seconds=1))
        with pytest.raises(errors.UsageError):
            allocator.hold("a1", "1", ttl=timedelta(0))
        with pytest.raises(errors.UnknownArtifact):
            allocator.hold("nope", "1")
        settled = allocator.settle(placed.id, "10", kind="analysis")
        assert (settled.hold_id, settled.tokens, settled.available) == (placed.id, 10, 90)
        assert allocator.settle(placed.id, "10").replayed
        with pytest.raises(errors.IdempotencyConflict):
            allocator.settle(placed.id, "11")
        with pytest.raises(errors.UnknownId):
            allocator.void(999)
        other = allocator.hold("a2", "5", agent="py")
        assert allocator.void(other.id).status == "voided"
        assert [h.status for h in allocator.holds(every=True)] == ["settled", "voided"]
        assert allocator.holds() == []
        [entry] = allocator.next(claim=True, agent="py", reserve="40", limit=1)
        assert entry.hold_id is not None
        assert [h.id for h in allocator.holds(agent="py")] == [entry.hold_id]
        closed = allocator.done(entry.claim_id, spend="15")
        assert closed.hold_id == entry.hold_id and closed.spend_id is not None
        assert allocator.holds() == []
    finally:
        allocator.close()


# --------------------------------------------------------------------------- time


def test_a_hold_past_its_ttl_stops_counting(funded, cli):
    placed = hold(cli, funded, "a1", "40", "--ttl", "1s")
    assert budget(cli, funded, "a1")["available"] == 60
    assert [h["id"] for h in ok(cli, funded, "holds")] == [placed["id"]]

    def queue_orders():
        return ([r["artifact_id"] for r in ok(cli, funded, "rank", "--by", "available",
                                              "--limit", "1")],
                [e["artifact_id"] for e in ok(cli, funded, "next", "--reserve", "61")])

    assert queue_orders() == (["a2"], ["a2"])
    wait_past(placed["expires_at"])
    assert queue_orders() == (["a1"], ["a1", "a2"])  # ties by id
    after = budget(cli, funded, "a1")
    assert (after["held"], after["available"]) == (0, 100)
    [row] = [r for r in ok(cli, funded, "rank") if r["artifact_id"] == "a1"]
    assert (row["held"], row["available"]) == (0, 100)
    assert ok(cli, funded, "holds") == []
    assert [h["status"] for h in ok(cli, funded, "holds", "--all")] == ["expired"]
    refused(cli, funded, 2, "settle", str(placed["id"]))
    refused(cli, funded, 2, "settle", str(placed["id"]), "10")
    code, checks = audit(cli, funded)
    assert code == 0 and checks["balances-exact"]["ok"]
    assert hold(cli, funded, "a1", "100")["available"] == 0  # the expired 40 is free again
    assert_clean(cli, funded)
    voided = ok(cli, funded, "void", str(placed["id"]))  # an expired hold can be voided
    assert voided["status"] == "voided"
    assert budget(cli, funded, "a1")["available"] == 0


def test_held_follows_every_change_another_service_writes(funded, cli, db_kind):
    a = hold(cli, funded, "a1", "10", "--ttl", "1h")["id"]
    b = hold(cli, funded, "a1", "20", "--ttl", "2h")["id"]
    copy = ("INSERT INTO holds (artifact_id, tokens, status, created_at, expires_at) "
            "SELECT artifact_id, {tokens}, 'active', created_at, {expires} FROM holds "
            "WHERE id = {id}")
    steps = [
        ("settled", [f"UPDATE holds SET status = 'settled' WHERE id = {a}"], 20, 0),
        ("renewed shorter", [f"UPDATE holds SET expires_at = (SELECT expires_at FROM holds "
                             f"WHERE id = {a}) WHERE id = {b}"], 20, 0),
        ("placed", [copy.format(tokens=5, expires="expires_at", id=b)], 25, 0),
        ("amount changed", [f"UPDATE holds SET tokens = 7 WHERE id > {b}"], 27, 0),
        ("moved", [f"UPDATE holds SET artifact_id = 'a2' WHERE id > {b}"], 20, 7),
        ("placed expired", [copy.format(tokens=50, expires="created_at", id=a)], 20, 7),
        ("active again", [f"UPDATE holds SET status = 'active' WHERE id = {a}"], 30, 7),
        ("deleted", [f"DELETE FROM holds WHERE id = {b}"], 10, 7),
    ]
    for step, statements, held_a1, held_a2 in steps:
        execute(funded, db_kind, *statements)
        held = (budget(cli, funded, "a1")["held"], budget(cli, funded, "a2")["held"])
        assert held == (held_a1, held_a2), step
        code, checks = audit(cli, funded)
        assert checks["balances-exact"]["ok"], (step, checks["balances-exact"])


@contextmanager
def artifact_locked(db_kind, db_url, artifact_id):
    """Another writer holds the artifact's lock (SQLite: the database's write lock)."""
    if db_kind == "sqlite":
        holder = sqlite3.connect(db_url, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
    else:
        holder = psycopg.connect(db_url)
        holder.execute("SELECT id FROM artifacts WHERE id = %s FOR UPDATE", (artifact_id,))
    try:
        yield
    finally:
        holder.rollback()
        holder.close()


def test_a_hold_that_expires_while_its_settlement_waits_is_not_settled(lone, cli, db_kind):
    """What counts is the time the decision is made, once the artifact is locked: a
    settlement (or done) that waited past the hold's TTL finds it expired."""
    placed = hold(cli, lone, "a1", "40", "--ttl", "3s")
    [claim] = ok(cli, lone, "next", "--claim", "--agent", "A", "--lease", "3s",
                 "--reserve", "40")
    env = {**os.environ, "SCIDEX_BUSY_TIMEOUT": "60"}
    with artifact_locked(db_kind, lone, "a1"):
        waiting = [subprocess.Popen(
            [sys.executable, "-m", "scidex_alloc", *args, "-f", "json", "--db", lone],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for args in (("settle", str(placed["id"])), ("done", str(claim["claim_id"])))]
        wait_past(max(placed["expires_at"], claim["lease_expires_at"]))
        assert all(p.poll() is None for p in waiting), "did not wait for the lock"
    outputs = [proc.communicate(timeout=60) for proc in waiting]
    outcomes = [(p.args[3], p.returncode, *output) for p, output in zip(waiting, outputs)]
    assert [(command, code, out) for command, code, out, _ in outcomes] == [
        ("settle", 2, ""), ("done", 2, "")], outcomes
    assert all(err.startswith("alloc: ") and "expired" in err for *_, err in outcomes)
    assert ok(cli, lone, "log") == []
    assert [(h["status"], h["spend_id"]) for h in ok(cli, lone, "holds", "--all")] == [
        ("expired", None)] * 2
    assert [c["id"] for c in ok(cli, lone, "claims", "--expired")] == [claim["claim_id"]]
    assert budget(cli, lone, "a1")["available"] == 100
    assert_clean(cli, lone)


# --------------------------------------------------------------------------- spend


def test_spend_cannot_take_held_budget(funded, cli):
    hold(cli, funded, "a1", "70")
    message = refused(cli, funded, 3, "spend", "a1", "30.000001")
    assert "available" in message and "30 tokens available" in message
    assert ok(cli, funded, "spend", "a1", "30")["available"] == 0
    over = ok(cli, funded, "spend", "a1", "5", "--allow-overdraft")
    assert (over["spent"], over["available"]) == (35, -5)
    assert [e["overdraft"] for e in ok(cli, funded, "log")] == [False, True]
    assert_clean(cli, funded)


# --------------------------------------------------------------------------- the queue


def test_next_reserve_lists_only_artifacts_with_that_much_available(db_url, cli, tmp_path):
    db = load(cli, db_url, tmp_path, {"b1": 50, "b2": 30, "b3": 200, "b4": 10})
    hold(cli, db, "b3", "180")  # b3: 20 available
    hold(cli, db, "b4", "10")  # b4: none available

    def listed(*args):
        return {e["artifact_id"]: e["available"] for e in ok(cli, db, "next", *args)}

    assert listed() == {"b1": 50, "b2": 30, "b3": 20}
    assert listed("--reserve", "20") == {"b1": 50, "b2": 30, "b3": 20}
    assert listed("--reserve", "20.000001") == {"b1": 50, "b2": 30}
    assert listed("--reserve", "30") == {"b1": 50, "b2": 30}
    assert listed("--reserve", "31") == {"b1": 50}
    assert listed("--reserve", "30001", "--unit", "llm-tokens") == {"b1": 50}
    assert listed("--reserve", "50.000001") == {}
    refused(cli, db, 2, "next", "--reserve", "0")
    refused(cli, db, 2, "next", "--reserve", "NaN")


def test_a_reserving_claim_holds_renews_and_settles_on_done(lone, cli, db_kind):
    [claim] = ok(cli, lone, "next", "--claim", "--agent", "A", "--reserve", "30")
    assert claim["artifact_id"] == "a1" and claim["hold_id"] is not None
    assert claim["available"] == 70
    [held] = ok(cli, lone, "holds")
    assert (held["id"], held["claim_id"], held["agent"], held["tokens"]) == (
        claim["hold_id"], claim["claim_id"], "A", 30)
    assert held["expires_at"] == claim["lease_expires_at"]
    time.sleep(0.05)
    [renewed] = ok(cli, lone, "next", "--claim", "--agent", "A", "--reserve", "30")
    assert (renewed["claim_id"], renewed["hold_id"]) == (claim["claim_id"], claim["hold_id"])
    assert renewed["lease_expires_at"] > claim["lease_expires_at"]
    [held] = ok(cli, lone, "holds", "--all")
    assert held["expires_at"] == renewed["lease_expires_at"]
    assert budget(cli, lone, "a1")["available"] == 70  # renewing holds nothing more
    closed = ok(cli, lone, "done", str(claim["claim_id"]), "--spend", "12", "--reward", "0.5")
    assert closed["status"] == "done" and closed["hold_id"] == claim["hold_id"]
    assert entry_hold_id(db_kind, lone, closed["spend_id"]) == claim["hold_id"]
    [held] = ok(cli, lone, "holds", "--all")
    assert (held["status"], held["spend_id"]) == ("settled", closed["spend_id"])
    assert [e["tokens"] for e in ok(cli, lone, "log")] == [12]
    after = budget(cli, lone, "a1")
    assert (after["spent"], after["held"], after["available"]) == (12, 0, 88)
    assert_clean(cli, lone)


def test_done_without_spend_settles_the_held_amount(lone, cli):
    [claim] = ok(cli, lone, "next", "--claim", "--agent", "A", "--reserve", "25")
    closed = ok(cli, lone, "done", str(claim["claim_id"]))
    assert closed["spend_id"] is not None
    assert [(e["id"], e["tokens"]) for e in ok(cli, lone, "log")] == [(closed["spend_id"], 25)]
    assert budget(cli, lone, "a1")["available"] == 75
    refused(cli, lone, 2, "done", str(claim["claim_id"]))  # closed already
    assert_clean(cli, lone)


def test_release_voids_the_claims_hold(lone, cli):
    [claim] = ok(cli, lone, "next", "--claim", "--agent", "A", "--reserve", "25")
    ok(cli, lone, "release", str(claim["claim_id"]))
    [held] = ok(cli, lone, "holds", "--all")
    assert held["status"] == "voided"
    assert ok(cli, lone, "log") == []
    assert budget(cli, lone, "a1")["available"] == 100
    assert_clean(cli, lone)


def test_a_lapsed_lease_frees_claim_and_hold(lone, cli):
    [old] = ok(cli, lone, "next", "--claim", "--agent", "A", "--lease", "1s", "--reserve", "60")
    assert old["available"] == 40
    assert ok(cli, lone, "next", "--claim", "--agent", "B", "--reserve", "1") == []
    wait_past(old["lease_expires_at"])
    after = budget(cli, lone, "a1")
    assert (after["held"], after["available"]) == (0, 100)
    assert ok(cli, lone, "holds") == []
    assert [h["status"] for h in ok(cli, lone, "holds", "--all")] == ["expired"]
    refused(cli, lone, 2, "done", str(old["claim_id"]))
    refused(cli, lone, 2, "done", str(old["claim_id"]), "--spend", "10")
    [new] = ok(cli, lone, "next", "--claim", "--agent", "B", "--reserve", "60")
    assert new["artifact_id"] == "a1" and new["claim_id"] != old["claim_id"]
    assert new["hold_id"] not in (None, old["hold_id"]) and new["available"] == 40
    refused(cli, lone, 2, "done", str(old["claim_id"]), "--spend", "10")
    assert ok(cli, lone, "log") == []
    assert_clean(cli, lone)


def test_reserve_refuses_a_lease_beyond_the_longest_hold(lone, cli):
    refused(cli, lone, 2, "next", "--claim", "--agent", "A", "--reserve", "5", "--lease", "8d")
    [claim] = ok(cli, lone, "next", "--claim", "--agent", "A", "--reserve", "5",
                 "--lease", "7d")
    assert claim["hold_id"] is not None


# --------------------------------------------------------------------------- rank, budget, API


@pytest.fixture
def generated(db_url, cli):
    """60 generated artifacts, the 5 with most remaining mostly held."""
    assert cli("generate", "--artifacts", "60", "--seed", "5", "--db", db_url).exit_code == 0
    for row in ok(cli, db_url, "rank", "--by", "remaining", "--limit", "5"):
        hold(cli, db_url, row["artifact_id"], str(int(row["available"] * D("0.9"))))
    return db_url


def test_rank_and_budget_show_held_and_available(generated, cli):
    rows = ok(cli, generated, "rank")
    assert all(list(r)[-2:] == ["held", "available"] for r in rows)
    assert all(r["available"] == r["remaining"] - r["held"] for r in rows)
    assert sum(1 for r in rows if r["held"]) == 5
    csv = run(cli, generated, "rank", "-f", "csv").stdout.splitlines()
    assert csv[0].endswith(",held,available") and len(csv) == len(rows) + 1
    by_available = ok(cli, generated, "rank", "--by", "available")
    assert [r["artifact_id"] for r in by_available] == [
        r["artifact_id"] for r in sorted(rows, key=lambda r: (-r["available"], r["artifact_id"]))]
    by_remaining = ok(cli, generated, "rank", "--by", "remaining")
    assert [r["artifact_id"] for r in by_available] != [r["artifact_id"] for r in by_remaining]
    top = by_remaining[0]
    one = budget(cli, generated, top["artifact_id"])
    assert (one["held"], one["available"]) == (top["held"], top["available"])
    assert one["held"] > 0


def test_api_shows_held_available_and_live_holds(served, db_url, cli):
    first, second = (r["artifact_id"] for r in ok(cli, db_url, "rank", "--limit", "2"))
    mine = hold(cli, db_url, first, "1.5", "--agent", "api-x")["id"]
    theirs = hold(cli, db_url, first, "1", "--agent", "api-y")["id"]
    gone = hold(cli, db_url, second, "2", "--agent", "api-x")["id"]
    ok(cli, db_url, "void", str(gone))
    status, budgets = served.get("/api/market/resource-budgets?limit=1000")
    assert status == 200
    assert all(list(b)[-2:] == ["held", "available"] for b in budgets)
    by_id = {b["artifact_id"]: b for b in budgets}
    assert by_id[first]["held"] == 2.5 and by_id[second]["held"] == 0
    assert by_id[first]["available"] == pytest.approx(by_id[first]["remaining"] - 2.5)
    status, one = served.get(f"/api/market/resource-budgets/{first}")
    assert status == 200 and (one["held"], one["available"]) == (
        by_id[first]["held"], by_id[first]["available"])
    status, holds = served.get("/api/market/holds?agent=api-x")
    assert status == 200 and [h["id"] for h in holds] == [mine]
    assert set(holds[0]) == set(LIST_KEYS) and holds[0]["tokens"] == 1.5
    assert holds == json.loads(run(cli, db_url, "holds", "--agent", "api-x", "-f", "json").stdout)
    assert [h["id"] for h in served.get(f"/api/market/holds?artifact_id={first}")[1]] == [
        mine, theirs]
    assert served.get("/api/market/holds?limit=0")[0] == 422
    status, openapi = served.get("/openapi.json")
    assert status == 200 and "/api/market/holds" in openapi["paths"]
    schema = (openapi["paths"]["/api/market/holds"]["get"]["responses"]["200"]["content"]
              ["application/json"]["schema"])
    jsonschema.validate(holds, {**schema, "components": openapi["components"]})
    budget_schema = openapi["components"]["schemas"]["BudgetOut"]["properties"]
    assert {"held", "available"} <= set(budget_schema)


# --------------------------------------------------------------------------- audit


def _settled_without_entry(cli, db, db_kind):
    placed = hold(cli, db, "a1", "10")["id"]
    assert_clean(cli, db)
    execute(db, db_kind, f"UPDATE holds SET status = 'settled' WHERE id = {placed}")
    return "hold-outcomes", placed


def _settled_with_two_entries(cli, db, db_kind):
    placed = hold(cli, db, "a1", "10")["id"]
    ok(cli, db, "settle", str(placed))
    assert_clean(cli, db)
    execute(db, db_kind, "DROP INDEX uq_resource_allocations_hold_id",
            "INSERT INTO resource_allocations (artifact_id, tokens, overdraft, hold_id) "
            f"VALUES ('a1', 1, FALSE, {placed})")
    return "hold-outcomes", placed


def _voided_with_entry(cli, db, db_kind):
    placed = hold(cli, db, "a1", "10")["id"]
    ok(cli, db, "void", str(placed))
    assert_clean(cli, db)
    execute(db, db_kind, "INSERT INTO resource_allocations (artifact_id, tokens, overdraft, "
            f"hold_id) VALUES ('a1', 1, FALSE, {placed})")
    return "hold-outcomes", placed


def _entry_naming_no_hold(cli, db, db_kind):
    assert_clean(cli, db)
    execute(db, db_kind, "INSERT INTO resource_allocations (artifact_id, tokens, overdraft, "
            "hold_id) VALUES ('a1', 1, FALSE, 999)")
    return "hold-outcomes", 999


def _excess_never_available(cli, db, db_kind):
    placed = hold(cli, db, "a1", "10")["id"]
    ok(cli, db, "settle", str(placed), "15")
    assert_clean(cli, db)  # the excess was available, and recorded so
    execute(db, db_kind, f"UPDATE holds SET available_at_settle = NULL WHERE id = {placed}")
    return "settled-within-hold", placed


def _held_beyond_budget(cli, db, db_kind):
    placed = hold(cli, db, "a1", "10")["id"]
    ok(cli, db, "spend", "a1", "90")
    assert_clean(cli, db)  # spent + held = budget exactly
    execute(db, db_kind, "INSERT INTO holds (artifact_id, tokens, status, created_at, "
            "expires_at) SELECT artifact_id, 30, 'active', created_at, expires_at "
            f"FROM holds WHERE id = {placed}")
    return "holds-within-budget", "a1"


@pytest.mark.parametrize("corrupt", [
    _settled_without_entry, _settled_with_two_entries, _voided_with_entry,
    _entry_naming_no_hold, _excess_never_available, _held_beyond_budget,
], ids=lambda f: f.__name__.strip("_"))
def test_audit_names_hand_written_inconsistencies(lone, cli, db_kind, corrupt):
    check, named = corrupt(cli, lone, db_kind)
    code, checks = audit(cli, lone)
    assert code == 6
    failed = {name for name, c in checks.items() if not c["ok"]}
    assert check in failed, failed
    rows = checks[check]["rows"]
    assert any(named in (r.get("hold_id"), r.get("artifact_id")) for r in rows), rows


def test_a_hold_that_is_not_a_number_breaks_no_reader(lone, cli, db_kind, tmp_path):
    load(cli, lone, tmp_path, {"a2": 100})
    placed = hold(cli, lone, "a1", "10")["id"]
    hold(cli, lone, "a2", "20")
    bad = "'NaN'" if db_kind == "postgresql" else "'abc'"
    execute(lone, db_kind, f"UPDATE holds SET tokens = {bad} WHERE id = {placed}")
    rows = {r["artifact_id"]: r for r in ok(cli, lone, "rank")}
    assert rows["a1"]["problem"] == "held is not a finite number"
    assert rows["a1"]["available"] is None
    assert (rows["a2"]["problem"], rows["a2"]["held"], rows["a2"]["available"]) == (None, 20, 80)
    one = budget(cli, lone, "a1")
    assert one["problem"] == "held is not a finite number" and one["available"] is None
    listed = {h["id"]: h for h in ok(cli, lone, "holds", "--all")}
    assert listed[placed]["tokens"] is None and len(listed) == 2
    assert run(cli, lone, "holds").exit_code == 0
    assert "no valid budget" in refused(cli, lone, 3, "spend", "a1", "1")
    refused(cli, lone, 3, "hold", "a1", "1")
    assert {e["artifact_id"] for e in ok(cli, lone, "next")} == {"a2"}
    allocator = Allocator.open(lone)
    try:
        with TestClient(create_app(allocator)) as client:
            api = {b["artifact_id"]: b for b in client.get("/api/market/resource-budgets").json()}
            assert api["a1"]["problem"] == "held is not a finite number"
            response = client.get("/api/market/holds")
            assert response.status_code == 200
            assert {h["id"]: h["tokens"] for h in response.json()}[placed] is None
    finally:
        allocator.close()
    code, checks = audit(cli, lone)
    assert code == 6 and not checks["amounts-valid"]["ok"]
    assert any(r.get("id") == placed for r in checks["amounts-valid"]["rows"]), \
        checks["amounts-valid"]["rows"]


# --------------------------------------------------------------------------- concurrency


def test_parallel_holds_never_overcommit(lone, alloc_proc, cli):
    calls = [("hold", "a1", "7", "--agent", f"w{i}", "-f", "json", "--db", lone)
             for i in range(24)]
    results = in_parallel(alloc_proc, calls)
    assert all("Traceback" not in r.stderr for r in results)
    codes = sorted(r.returncode for r in results)
    assert codes == [0] * 14 + [3] * 10, [r.stderr for r in results]
    placed = [json.loads(r.stdout) for r in results if r.returncode == 0]
    assert len({h["id"] for h in placed}) == 14 and min(h["available"] for h in placed) == 2
    after = budget(cli, lone, "a1")
    assert (after["held"], after["available"]) == (98, 2)
    assert_clean(cli, lone)


def test_parallel_retries_of_one_hold_key_place_one_hold(lone, alloc_proc, cli):
    calls = [("hold", "a1", "5", "--key", "retry-me", "-f", "json", "--db", lone)] * PROCESSES
    results = in_parallel(alloc_proc, calls)
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    records = [json.loads(r.stdout) for r in results]
    assert len({r["id"] for r in records}) == 1
    assert sorted(r["replayed"] for r in records) == [False] + [True] * (PROCESSES - 1)
    assert budget(cli, lone, "a1")["held"] == 5
    assert len(ok(cli, lone, "holds", "--all")) == 1


def test_parallel_settles_and_voids_of_one_hold_end_it_once(lone, alloc_proc, cli):
    placed = str(hold(cli, lone, "a1", "30")["id"])
    settle, void = ("settle", placed, "20"), ("void", placed)
    calls = [(*call, "-f", "json", "--db", lone)
             for call in (settle, void, settle, settle, settle, void, settle, settle)]
    results = in_parallel(alloc_proc, calls)
    assert all("Traceback" not in r.stderr for r in results)
    won = {call[0] for call, r in zip(calls, results) if r.returncode == 0}
    assert len(won) == 1, [(c[0], r.returncode, r.stderr) for c, r in zip(calls, results)]
    for call, result in zip(calls, results):
        assert result.returncode == (0 if call[0] in won else 2), result.stderr
    fresh = [json.loads(r.stdout)["replayed"] for r in results if r.returncode == 0]
    assert fresh.count(False) == 1
    [listed] = ok(cli, lone, "holds", "--all")
    after = budget(cli, lone, "a1")
    if won == {"settle"}:
        assert listed["status"] == "settled" and len(ok(cli, lone, "log")) == 1
        assert (after["spent"], after["held"]) == (20, 0)
    else:
        assert listed["status"] == "voided" and ok(cli, lone, "log") == []
        assert (after["spent"], after["held"]) == (0, 0)
    assert_clean(cli, lone)


def test_parallel_holds_spends_and_claims_share_one_budget(lone, alloc_proc, cli):
    holds_ = [("hold", "a1", "7", "--agent", f"h{i}") for i in range(12)]
    spends = [("spend", "a1", "7", "--agent", f"s{i}") for i in range(12)]
    claims = [("next", "--claim", "--agent", f"c{i}", "--reserve", "7") for i in range(6)]
    calls = [(*call, "-f", "json", "--db", lone)
             for trio in zip(holds_, spends, claims + [None] * 6) for call in trio if call]
    results = in_parallel(alloc_proc, calls)
    assert all(r.returncode in (0, 3) and "Traceback" not in r.stderr for r in results), \
        [(r.returncode, r.stderr) for r in results]
    outcome = {"hold": 0, "spend": 0, "next": 0}
    for call, result in zip(calls, results):
        if result.returncode != 0:
            assert call[0] != "next", result.stderr  # no candidate is an empty list
            continue
        data = json.loads(result.stdout)
        if call[0] == "next":
            assert len(data) <= 1 and all(e["hold_id"] is not None for e in data)
            outcome["next"] += len(data)
        else:
            assert data["available"] >= 0
            outcome[call[0]] += 1
    assert outcome["next"] <= 1  # one live claim per artifact
    assert sum(outcome.values()) == 100 // 7, outcome
    after = budget(cli, lone, "a1")
    assert after["spent"] == 7 * outcome["spend"]
    assert after["held"] == 7 * (outcome["hold"] + outcome["next"])
    assert after["spent"] + after["held"] == 98 and after["available"] == 2
    assert_clean(cli, lone)
