"""Concurrent writers: claims close once, claimers and spenders are not blocked by loads,
lock waits end after SCIDEX_BUSY_TIMEOUT, and deadlocks are retried -- on real
connections held open next to real `alloc` processes."""

import json
import re
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from scidex_alloc.storage.transactions import WRITE_ATTEMPTS

ARTIFACT = "hyp-0000033"
OTHER = "hyp-0000035"  # after ARTIFACT in id order
SPEND_FILE = f"artifact_id,amount,agent\n{ARTIFACT},0.5,x\n{OTHER},0.25,x\n"
LOCKED = ("alloc: database error: the database is locked "
          "(waited {}s; raise SCIDEX_BUSY_TIMEOUT to wait longer)\n")
only_postgresql = pytest.mark.parametrize("db_kind", ["postgresql"], indirect=True)


@pytest.fixture
def generated(db_url, cli):
    """`alloc generate --artifacts 50`: hyp-0000033 has a budget of about 519 tokens."""
    assert cli("generate", "--artifacts", "50", "--db", db_url).exit_code == 0
    return db_url


def connect(db_kind, db_url):
    """A connection of another writer, outside alloc (SQLite: transactions begin when
    the test says BEGIN; PostgreSQL: at the first statement)."""
    if db_kind == "sqlite":
        return sqlite3.connect(db_url, isolation_level=None, timeout=60)
    return psycopg.connect(db_url)


def start(*args):
    """`alloc ARGS` as a separate process, running while the test holds locks."""
    return subprocess.Popen([sys.executable, "-m", "scidex_alloc", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process, timeout=60):
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stdout, stderr


def wait_until_blocked(db_kind, db_url, timeout=30):
    """Return once an alloc session waits for a lock (PostgreSQL), or after a moment
    (SQLite cannot tell: its tests do not depend on when the other writer ends)."""
    if db_kind == "sqlite":
        time.sleep(1)
        return
    deadline = time.monotonic() + timeout
    with psycopg.connect(db_url, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            if watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'scidex-alloc' AND wait_event_type = 'Lock'"
            ).fetchone()[0]:
                return
            time.sleep(0.02)
    raise AssertionError("alloc never waited for the lock")


def claim_one(cli, db):
    result = cli("next", "--claim", "--agent", "z", "-f", "json", "--db", db)
    assert result.exit_code == 0, result.stderr
    return result.json()[0]["claim_id"]


def stored_claim(db_kind, db_url, claim_id):
    with connect(db_kind, db_url) as connection:
        return connection.execute(
            f"SELECT status, reward FROM claims WHERE id = {int(claim_id)}").fetchone()


# --------------------------------------------------------------------------- closing a claim


def test_parallel_done_closes_a_claim_once(db_kind, generated, cli, alloc_proc):
    claim_id = claim_one(cli, generated)
    calls = [("done", claim_id, "--reward", f"0.{i}", "-f", "json", "--db", generated)
             for i in range(1, 9)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda args: alloc_proc(*args), calls))
    winners = [r for r in results if r.returncode == 0]
    losers = [r for r in results if r.returncode != 0]
    assert len(winners) == 1, [r.stdout for r in winners]
    assert {(r.returncode, r.stdout, r.stderr) for r in losers} == {
        (2, "", f"alloc: claim {claim_id} is done, not active\n")}
    status, reward = stored_claim(db_kind, generated, claim_id)
    assert status == "done"
    assert float(reward) == json.loads(winners[0].stdout)["reward"]


@pytest.mark.parametrize("command", ["done", "release"])
def test_a_close_waiting_for_a_concurrent_close_reports_it(db_kind, generated, cli, command):
    claim_id = claim_one(cli, generated)
    with connect(db_kind, generated) as other:
        if db_kind == "sqlite":
            other.execute("BEGIN IMMEDIATE")
        other.execute(f"UPDATE claims SET status = 'released' WHERE id = {claim_id}")
        process = start(command, claim_id, "--db", generated)
        wait_until_blocked(db_kind, generated)
        other.commit()
        assert finish(process) == (2, "", f"alloc: claim {claim_id} is released, not active\n")
    assert stored_claim(db_kind, generated, claim_id)[0] == "released"


# --------------------------------------------------------------------------- writers of positions


@only_postgresql
def test_claims_and_spends_pass_an_uncommitted_load_of_positions(generated, cli, alloc_proc):
    with psycopg.connect(generated) as loader:
        loader.execute("INSERT INTO positions (artifact_id, agent_id, tokens) "
                       "SELECT id, 'loader', 1 FROM artifacts")  # KEY SHARE on every artifact
        claimed = alloc_proc("next", "--claim", "--agent", "z", "--limit", "3", "-f", "json",
                             "--db", generated, timeout=60)
        assert claimed.returncode == 0, claimed.stderr
        assert len(json.loads(claimed.stdout)) == 3
        spent = alloc_proc("spend", ARTIFACT, "0.01", "--db", generated, timeout=60,
                           env={"SCIDEX_BUSY_TIMEOUT": "10"})
        assert (spent.returncode, spent.stderr) == (0, "")
        loader.rollback()


# --------------------------------------------------------------------------- lock timeouts


def hold_artifact_lock(db_kind, connection):
    """Another writer holds what a spend of ARTIFACT needs: its row, or SQLite's write lock."""
    if db_kind == "sqlite":
        connection.execute("BEGIN IMMEDIATE")
    else:
        connection.execute("SELECT id FROM artifacts WHERE id = %s FOR UPDATE", (ARTIFACT,))


@pytest.mark.parametrize("seconds", ["2", "0"])
def test_a_held_lock_times_out_after_the_busy_timeout(db_kind, generated, alloc_proc, seconds):
    with connect(db_kind, generated) as other:
        hold_artifact_lock(db_kind, other)
        began = time.monotonic()
        result = alloc_proc("spend", ARTIFACT, "0.01", "--db", generated, timeout=60,
                            env={"SCIDEX_BUSY_TIMEOUT": seconds})
        waited = time.monotonic() - began
        other.rollback()
    assert (result.returncode, result.stdout, result.stderr) == (1, "", LOCKED.format(seconds))
    assert float(seconds) <= waited < float(seconds) + 15


@only_postgresql
@pytest.mark.parametrize("seconds, lock_timeout", [("2", "2s"), ("0", "1ms"), ("0.25", "250ms"),
                                                   (None, "30s")])
def test_every_postgresql_session_has_the_busy_timeout(generated, monkeypatch, seconds,
                                                      lock_timeout):
    from sqlalchemy import text

    from scidex_alloc.allocator import Allocator

    if seconds is None:
        monkeypatch.delenv("SCIDEX_BUSY_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("SCIDEX_BUSY_TIMEOUT", seconds)
    engine = Allocator.open(generated).engine
    try:
        with engine.connect() as connection:
            settings = [connection.execute(text(f"SHOW {name}")).scalar()
                        for name in ("lock_timeout", "jit", "timezone")]
    finally:
        engine.dispose()
    assert settings == [lock_timeout, "off", "UTC"]


# --------------------------------------------------------------------------- deadlocks


def spends(db_url):
    with psycopg.connect(db_url) as connection:
        return connection.execute(
            "SELECT artifact_id, tokens, idempotency_key FROM resource_allocations "
            "WHERE agent_id = 'x' ORDER BY artifact_id").fetchall()


def deadlock_alloc(db_url, other):
    """Once alloc waits for a lock `other` holds, make `other` wait for one that alloc
    holds (ARTIFACT's row): PostgreSQL cancels the first waiter, alloc, and `other`
    proceeds, then lets go."""
    wait_until_blocked("postgresql", db_url)
    other.execute("SELECT id FROM artifacts WHERE id = %s FOR UPDATE", (ARTIFACT,))
    other.rollback()


@only_postgresql
def test_a_spend_file_chunk_in_a_deadlock_is_retried(generated, tmp_path):
    path = tmp_path / "spends.csv"
    path.write_text(SPEND_FILE)
    with psycopg.connect(generated) as other:
        other.execute("SELECT id FROM artifacts WHERE id = %s FOR UPDATE", (OTHER,))
        # alloc locks ARTIFACT, then waits for OTHER.
        process = start("spend", "--file", path, "--db", generated)
        deadlock_alloc(generated, other)
        code, _, stderr = finish(process)
    assert (code, stderr) == (0, "recorded 2, replayed 0, refused 0, invalid 0\n")
    assert [(a, float(t)) for a, t, _ in spends(generated)] == [
        (ARTIFACT, 0.5), (OTHER, 0.25)]


@only_postgresql
def test_a_single_spend_in_a_deadlock_is_retried(generated):
    with psycopg.connect(generated) as other:
        other.execute("INSERT INTO resource_allocations (artifact_id, tokens, idempotency_key) "
                      "VALUES (%s, 1, 'k1')", (OTHER,))
        # alloc locks ARTIFACT, then waits to learn whether the key k1 commits.
        process = start("spend", ARTIFACT, "0.5", "--key", "k1", "--agent", "x", "-f", "json",
                        "--db", generated)
        deadlock_alloc(generated, other)
        code, stdout, stderr = finish(process)
    assert (code, stderr) == (0, "")
    assert json.loads(stdout)["replayed"] is False
    assert [(a, float(t), k) for a, t, k in spends(generated)] == [(ARTIFACT, 0.5, "k1")]


def fail_writes(db_url, table, times):
    """Make the next `times` statements writing `table` fail as PostgreSQL fails the
    victim of a deadlock (odd attempts) or of a serialization failure (even ones), with
    multi-line errors; returns a function counting the attempts."""
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(f"""
            CREATE SEQUENCE attempts;
            CREATE FUNCTION fail_write() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE
              attempt bigint := nextval('attempts');
            BEGIN
              IF attempt > TG_ARGV[0]::int THEN
                RETURN NULL;
              ELSIF attempt % 2 = 1 THEN
                RAISE EXCEPTION 'deadlock detected' USING ERRCODE = 'deadlock_detected',
                  DETAIL = 'Process 1 waits for ShareLock on transaction 2.',
                  HINT = 'See server log for query details.';
              END IF;
              RAISE EXCEPTION 'could not serialize access due to concurrent update'
                USING ERRCODE = 'serialization_failure', HINT = 'Retry the transaction.';
            END $$;
            CREATE TRIGGER fail_write BEFORE INSERT OR UPDATE OR DELETE ON {table}
              FOR EACH STATEMENT EXECUTE FUNCTION fail_write('{times}');""")

    def attempts():
        with psycopg.connect(db_url, autocommit=True) as admin:
            return admin.execute("SELECT last_value FROM attempts").fetchone()[0]

    return attempts


RETRIED = {  # command -> (table it writes, arguments)
    "spend": ("resource_allocations", ["spend", ARTIFACT, "0.5", "--agent", "x"]),
    "spend --file": ("resource_allocations", ["spend", "--file", "-", "--file-format", "csv"]),
    "spend --reverse": ("resource_allocations", ["spend", "--reverse", "1"]),
    "next --claim": ("claims", ["next", "--claim", "--agent", "x"]),
    "done": ("claims", ["done", "CLAIM", "--reward", "0.5"]),
    "release": ("claims", ["release", "CLAIM"]),
    "snapshot": ("budget_snapshots", ["snapshot"]),
    "rates set": ("exchange_rates", ["rates", "set", "llm-tokens", "1200"]),
    "snapshots prune": ("budget_snapshots", ["snapshots", "prune", "--keep", "1h"]),
}


def retried_args(name, cli, db):
    args = RETRIED[name][1]
    if "CLAIM" in args:
        claim_id = claim_one(cli, db)
        args = [str(claim_id) if a == "CLAIM" else a for a in args]
    return [*args, "--db", db]


@only_postgresql
@pytest.mark.parametrize("name", list(RETRIED))
def test_deadlocks_and_serialization_failures_are_retried(generated, cli, name):
    args = retried_args(name, cli, generated)
    attempts = fail_writes(generated, RETRIED[name][0], 2)
    result = cli(*args, input=SPEND_FILE)
    assert result.exit_code == 0 and "alloc:" not in result.stderr, result.stderr
    assert attempts() == 3
    assert cli("audit", "--db", generated).exit_code == 0


@only_postgresql
@pytest.mark.parametrize("args", [["spend", ARTIFACT, "0.5"],
                                  ["spend", "--file", "-", "--file-format", "csv"]])
def test_a_deadlock_every_time_fails_after_the_last_attempt_in_one_line(generated, cli, args):
    attempts = fail_writes(generated, "resource_allocations", 1000)
    result = cli(*args, "--db", generated, input=SPEND_FILE)
    last = "deadlock detected" if WRITE_ATTEMPTS % 2 else "could not serialize access"
    assert (result.exit_code, result.stdout) == (1, "")
    assert re.fullmatch(f"alloc: database error: {last}[^\n]*\n", result.stderr)
    assert attempts() == WRITE_ATTEMPTS


@only_postgresql
@pytest.mark.parametrize("args, table", [
    (["spend", "--file", "-", "--file-format", "csv", "--atomic"], "resource_allocations"),
    (["load", "positions", "-", "--format", "csv"], "positions"),
])
def test_a_single_transaction_over_stdin_is_not_retried(generated, alloc_proc, args, table):
    attempts = fail_writes(generated, table, 1000)
    data = SPEND_FILE if "spend" in args else f"artifact_id,tokens\n{ARTIFACT},5\n"
    result = alloc_proc(*args, "--db", generated, input=data)
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", "alloc: database error: deadlock detected\n")
    assert attempts() == 1
