"""Parallel spenders through the real entry point: never overspent, never counted twice,
and a killed batch leaves only whole lines."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from scidex_alloc.ledger.batches import SPEND_CHUNK

D = Decimal
PROCESSES = 8


@pytest.fixture
def funded(db_url, cli, tmp_path):
    """a1 has a budget of exactly 100 tokens; big has 1,000,000."""
    (tmp_path / "a.csv").write_text("id,type\na1,hypothesis\nbig,hypothesis\n")
    (tmp_path / "p.csv").write_text("artifact_id,tokens\na1,1000\nbig,10000000\n")
    assert cli("load", "artifacts", tmp_path / "a.csv", "--db", db_url).exit_code == 0
    assert cli("load", "positions", tmp_path / "p.csv", "--db", db_url).exit_code == 0
    return db_url


def in_parallel(alloc_proc, calls):
    with ThreadPoolExecutor(PROCESSES) as pool:
        return list(pool.map(lambda args: alloc_proc(*args), calls))


def test_parallel_spenders_never_overspend(funded, alloc_proc, cli):
    calls = [("spend", "a1", "7", "--agent", f"w{i}", "-f", "json", "--db", funded)
             for i in range(24)]
    results = in_parallel(alloc_proc, calls)
    ok = [r for r in results if r.returncode == 0]
    refused = [r for r in results if r.returncode == 3]
    assert len(ok) + len(refused) == len(results), [r.stderr for r in results]
    assert all("Traceback" not in r.stderr for r in results)
    reported = sum(D(str(json.loads(r.stdout)["tokens"])) for r in ok)
    assert len(ok) == 14 and reported == 98
    budget = cli("budget", "a1", "-f", "json", "--db", funded).json()
    assert D(str(budget["spent"])) == reported <= D(str(budget["budget"]))
    assert cli("audit", "--db", funded).exit_code == 0


def test_parallel_retries_of_one_key_record_one_row(funded, alloc_proc, cli):
    calls = [("spend", "a1", "5", "--key", "retry-me", "-f", "json", "--db", funded)] * PROCESSES
    results = in_parallel(alloc_proc, calls)
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    records = [json.loads(r.stdout) for r in results]
    assert len({r["id"] for r in records}) == 1
    assert sorted(r["replayed"] for r in records) == [False] + [True] * (PROCESSES - 1)
    assert len(cli("log", "-f", "json", "--db", funded).json()) == 1


def _batch(path, lines):
    path.write_text("artifact_id,amount,key,note\n" +
                    "".join(f"big,0.5,k{i},{i}\n" for i in range(1, lines + 1)))


def _log(cli, db):
    return cli("log", "-f", "json", "--db", db).json()


def test_killed_batch_leaves_only_whole_lines(funded, cli, tmp_path):
    path = tmp_path / "batch.csv"
    lines = 3 * SPEND_CHUNK
    _batch(path, lines)
    proc = subprocess.Popen([sys.executable, "-m", "scidex_alloc", "spend", "--file", path,
                             "--db", funded], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while (not cli("log", "--limit", "1", "-f", "json", "--db", funded).json()
           and time.monotonic() < deadline):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the batch finished before it could be killed"
    log = _log(cli, funded)
    assert 0 < len(log) < lines and len(log) % SPEND_CHUNK == 0
    # Chunks commit in order: exactly the first N lines, each one whole.
    assert [(e["key"], e["note"], e["tokens"]) for e in log] == \
        [(f"k{i}", str(i), 0.5) for i in range(1, len(log) + 1)]
    assert cli("audit", "--db", funded).exit_code == 0  # balances-exact among the checks
    # Running the same file again completes it without counting any line twice.
    rerun = cli("spend", "--file", path, "-f", "json", "--db", funded)
    assert rerun.json()["replayed"] == len(log)
    assert len(_log(cli, funded)) == lines


def test_killed_atomic_batch_leaves_nothing(funded, cli, tmp_path):
    path = tmp_path / "batch.csv"
    _batch(path, 300_000)
    proc = subprocess.Popen([sys.executable, "-m", "scidex_alloc", "spend", "--file", path,
                             "--atomic", "--db", funded],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the batch finished before it could be killed"
    assert _log(cli, funded) == []
    assert cli("audit", "--db", funded).exit_code == 0


@pytest.fixture
def sqlite_funded(tmp_path, cli):
    db = str(tmp_path / "locked.db")
    assert cli("db", "upgrade", "--db", db).exit_code == 0
    (tmp_path / "a.csv").write_text("id,type\na1,hypothesis\n")
    (tmp_path / "p.csv").write_text("artifact_id,tokens\na1,1000\n")
    cli("load", "artifacts", tmp_path / "a.csv", "--db", db)
    cli("load", "positions", tmp_path / "p.csv", "--db", db)
    return db


def _hold_write_lock(db):
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_sqlite_locked_by_another_writer_fails_cleanly(sqlite_funded, alloc_proc):
    holder = _hold_write_lock(sqlite_funded)
    try:
        result = alloc_proc("spend", "a1", "1", "--db", sqlite_funded,
                            env={"SCIDEX_BUSY_TIMEOUT": "0.3"})
    finally:
        holder.rollback()
        holder.close()
    assert result.returncode == 1
    assert result.stderr.startswith("alloc: database error: the database is locked")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_sqlite_writer_waits_for_the_lock_and_succeeds(sqlite_funded, cli):
    holder = _hold_write_lock(sqlite_funded)
    proc = subprocess.Popen(
        [sys.executable, "-m", "scidex_alloc", "spend", "a1", "1", "-f", "json",
         "--db", sqlite_funded],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SCIDEX_BUSY_TIMEOUT": "30"})
    time.sleep(1.5)
    assert proc.poll() is None, "the spend did not wait for the lock"
    holder.rollback()
    holder.close()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(out)["spent"] == 1
