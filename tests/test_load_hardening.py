"""Input files at their worst: values of the wrong JSON type, duplicated columns, text
beyond its limit, pathological JSON, and databases that fail mid-load. Each is refused
with exit 2 (or reported as a database error, exit 1) and writes nothing."""

import json
import random
import sqlite3
import subprocess
import sys
import time

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

from scidex_alloc import limits
from tests.pgserver import admin_connection, throwaway_database

LONG_ID = "a" * (limits.ARTIFACT_ID + 1)


def jsonl(path, *records) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


def load(cli, db, table, path):
    return cli("load", table, path, "--db", db)


def artifact_ids(cli, db) -> list[str]:
    return sorted(row["artifact_id"] for row in cli("rank", "-f", "json", "--db", db).json())


def rank_row(cli, db, artifact_id):
    return cli("budget", artifact_id, "-f", "json", "--db", db).json()


@pytest.fixture
def funded(db_url, cli, tmp_path):
    """Artifact a1 with a budget of 100 tokens."""
    assert load(cli, db_url, "artifacts", jsonl(tmp_path / "a.jsonl",
                {"id": "a1", "type": "hypothesis"})).exit_code == 0
    assert load(cli, db_url, "positions", jsonl(tmp_path / "p.jsonl",
                {"artifact_id": "a1", "tokens": "1000"})).exit_code == 0
    return db_url


def refused(result, *expected: str) -> None:
    """Exit 2, nothing on stdout, no traceback, and each expected text on stderr."""
    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr and "Error:" not in result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr


# -- values of the wrong JSON type -------------------------------------------------


@pytest.mark.parametrize("record,message", [
    ({"id": "x", "type": "hypothesis", "title": {"a": 1}}, "title must be text"),
    ({"id": "y", "type": ["hypothesis"], "title": True}, "type must be text"),
    ({"id": 7, "type": "hypothesis"}, "id must be text"),
    ({"id": "z", "type": "hypothesis", "title": 1.5}, "title must be text"),
    ({"id": "z", "type": "hypothesis", "created_at": 20260101}, "created_at must be"),
])
def test_load_refuses_non_text_values(db_url, cli, tmp_path, record, message):
    result = load(cli, db_url, "artifacts", jsonl(tmp_path / "a.jsonl", record))
    refused(result, f"line 1: {message}", "nothing was loaded")
    assert artifact_ids(cli, db_url) == []


@pytest.mark.parametrize("table,record,message", [
    ("positions", {"artifact_id": "a1", "tokens": 5, "agent_id": 7}, "agent_id must be text"),
    ("positions", {"artifact_id": ["a1"], "tokens": 5}, "artifact_id must be text"),
    ("positions", {"artifact_id": "a1", "tokens": 5, "status": True}, "status must be text"),
    ("markets", {"artifact_id": "a1", "price": 0.5, "updated_at": 1}, "updated_at must be"),
    ("bounties", {"artifact_id": "a1", "tokens_offered": 5, "expires_at": 1}, "expires_at must be"),
])
def test_every_table_refuses_values_of_the_wrong_type(funded, cli, tmp_path, table, record,
                                                      message):
    result = load(cli, funded, table, jsonl(tmp_path / "t.jsonl", record))
    refused(result, f"line 1: {message}")
    assert rank_row(cli, funded, "a1")["demand"] == 1000


def test_json_numbers_and_numeric_strings_are_the_same_amount(funded, cli, tmp_path):
    path = jsonl(tmp_path / "p.jsonl", {"artifact_id": "a1", "tokens": 12.5},
                 {"artifact_id": "a1", "tokens": "7.5"}, {"artifact_id": "a1", "tokens": 80})
    assert load(cli, funded, "positions", path).exit_code == 0
    assert rank_row(cli, funded, "a1")["demand"] == 1100
    for table, record in (("positions", {"artifact_id": "a1", "tokens": True}),
                          ("markets", {"artifact_id": "a1", "price": False})):
        refused(load(cli, funded, table, jsonl(tmp_path / "b.jsonl", record)),
                "must be a number")
    spends = jsonl(tmp_path / "s.jsonl", {"artifact_id": "a1", "amount": 1.5},
                   {"artifact_id": "a1", "amount": "2.5"},
                   {"artifact_id": "a1", "amount": True},
                   {"artifact_id": "a1", "amount": 1, "kind": 5})
    result = cli("spend", "--file", spends, "-f", "json", "--db", funded)
    summary = result.json()
    assert summary["recorded"] == 2
    assert [(f["line"], f["message"]) for f in summary["failures"]] == [
        (3, "amount must be a number"), (4, "kind must be text")]
    assert rank_row(cli, funded, "a1")["spent"] == 4


# -- duplicated columns --------------------------------------------------------------


def test_a_spend_file_with_a_duplicated_column_records_nothing(funded, cli, tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("artifact_id,amount,amount\na1,1,30\n")
    result = cli("spend", "--file", path, "--db", funded)
    refused(result, "'amount'")
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("alloc: ")
    assert rank_row(cli, funded, "a1")["spent"] == 0


def test_a_load_file_with_a_duplicated_column_loads_nothing(db_url, cli, tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("id,type, type\nx,hypothesis,analysis\n")
    result = load(cli, db_url, "artifacts", path)
    refused(result, "'type'")
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("alloc: ")
    assert artifact_ids(cli, db_url) == []


def test_a_json_line_with_a_duplicated_key_is_invalid(funded, cli, tmp_path):
    spends = jsonl(tmp_path / "s.jsonl", '{"artifact_id": "a1", "amount": 1, "amount": 30}',
                   '{"artifact_id": "a1", "amount": 2}')
    summary = cli("spend", "--file", spends, "-f", "json", "--db", funded).json()
    assert summary["recorded"] == 1
    assert summary["failures"][0]["line"] == 1 and "'amount'" in summary["failures"][0]["message"]
    assert rank_row(cli, funded, "a1")["spent"] == 2
    artifacts = jsonl(tmp_path / "a.jsonl", '{"id": "b", "type": "x", "type": "y"}')
    refused(load(cli, funded, "artifacts", artifacts), "line 1:", "'type'")
    assert artifact_ids(cli, funded) == ["a1"]


# -- one set of text limits -------------------------------------------------------------


def test_an_artifact_loads_exactly_when_it_can_be_spent_against(db_url, cli, tmp_path):
    artifacts = tmp_path / "a.csv"
    artifacts.write_text(f"id,type\n{LONG_ID},hypothesis\n")
    refused(load(cli, db_url, "artifacts", artifacts),
            f"line 2: id is longer than {limits.ARTIFACT_ID} characters")
    longest = "b" * limits.ARTIFACT_ID
    artifacts.write_text(f"id,type,title\n{longest},{'t' * limits.TYPE},{'x' * limits.TITLE}\n")
    assert load(cli, db_url, "artifacts", artifacts).exit_code == 0
    positions = tmp_path / "p.csv"
    positions.write_text(f"artifact_id,agent_id,tokens\n{longest},{'g' * limits.AGENT_ID},100\n")
    assert load(cli, db_url, "positions", positions).exit_code == 0
    result = cli("spend", longest, "1", "--db", db_url)
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
@pytest.mark.parametrize("column,limit", [("id", limits.ARTIFACT_ID), ("type", limits.TYPE),
                                          ("title", limits.TITLE)])
def test_artifact_text_beyond_its_limit_is_refused(db_url, cli, tmp_path, suffix, column, limit):
    row = {"id": "x", "type": "hypothesis", "title": "t", column: "v" * (limit + 1)}
    path = tmp_path / f"a.{suffix}"
    if suffix == "csv":
        path.write_text("id,type,title\n" + ",".join(row.values()) + "\n")
    else:
        jsonl(path, row)
    refused(load(cli, db_url, "artifacts", path),
            f"line 2: {column} is longer than {limit} characters" if suffix == "csv" else
            f"line 1: {column} is longer than {limit} characters")
    assert artifact_ids(cli, db_url) == []


@pytest.mark.parametrize("table,header,row", [
    ("positions", "artifact_id,agent_id,tokens", f"a1,{'g' * (limits.AGENT_ID + 1)},1"),
    ("positions", "artifact_id,tokens", f"{LONG_ID},1"),
    ("markets", "artifact_id,price", f"{LONG_ID},0.5"),
    ("bounties", "artifact_id,tokens_offered", f"{LONG_ID},1"),
])
def test_every_table_refuses_text_beyond_its_limit(funded, cli, tmp_path, table, header, row):
    path = tmp_path / "t.csv"
    path.write_text(f"{header}\n{row}\n")
    refused(load(cli, funded, table, path), "line 2:", "is longer than 200 characters")


def test_a_long_random_type_is_refused_not_a_database_error(db_url, cli, tmp_path):
    rng = random.Random(1)
    noise = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(5000))
    path = jsonl(tmp_path / "a.jsonl", {"id": "x", "type": noise})
    refused(load(cli, db_url, "artifacts", path), f"type is longer than {limits.TYPE}")


def test_a_reversal_checks_its_agent_and_note(funded, cli):
    spent = cli("spend", "a1", "5", "-f", "json", "--db", funded).json()
    for option, limit in (("--agent", limits.AGENT_ID), ("--note", limits.NOTE)):
        result = cli("spend", "--reverse", spent["id"], option, "x" * (limit + 1), "--db", funded)
        refused(result, f"is longer than {limit} characters")
    assert rank_row(cli, funded, "a1")["spent"] == 5


def test_rates_set_checks_its_unit_like_every_text(db_url, cli):
    refused(cli("rates", "set", "bad\udcff", "2", "--db", db_url), "unit is not valid UTF-8")
    refused(cli("rates", "set", "u" * (limits.UNIT + 1), "2", "--db", db_url),
            f"{limits.UNIT} characters")
    assert cli("rates", "set", "u" * limits.UNIT, "2", "--db", db_url).exit_code == 0


# -- pathological JSON -----------------------------------------------------------------


def test_deeply_nested_json_is_an_invalid_line(funded, cli, tmp_path):
    path = jsonl(tmp_path / "deep.jsonl", "[" * 200_000)
    refused(load(cli, funded, "artifacts", path), "line 1: is not valid JSON")
    result = cli("spend", "--file", path, "--db", funded)
    refused(result, "line 1: invalid: is not valid JSON")
    assert rank_row(cli, funded, "a1")["spent"] == 0


def test_an_escaped_lone_surrogate_is_not_utf8(funded, cli, tmp_path):
    artifacts = jsonl(tmp_path / "a.jsonl", r'{"id": "x\ud800", "type": "hypothesis"}')
    refused(load(cli, funded, "artifacts", artifacts), "line 1: id is not valid UTF-8")
    assert artifact_ids(cli, funded) == ["a1"]
    spends = jsonl(tmp_path / "s.jsonl", r'{"artifact_id": "a1", "amount": 1, "note": "\ud800"}')
    refused(cli("spend", "--file", spends, "--db", funded), "note is not valid UTF-8")
    assert rank_row(cli, funded, "a1")["spent"] == 0


# -- databases that fail mid-load --------------------------------------------------------


@pytest.fixture
def own_pg_database(pg_admin_url, cli):
    """A PostgreSQL database of this test's own, with the schema, and its name."""
    with throwaway_database(pg_admin_url) as url:
        assert cli("db", "upgrade", "--db", url).exit_code == 0
        yield url, make_url(url).database


def test_a_backend_killed_mid_copy_is_one_database_error(own_pg_database, pg_admin_url, cli,
                                                         tmp_path):
    url, name = own_pg_database
    assert load(cli, url, "artifacts", jsonl(tmp_path / "a.jsonl",
                {"id": "a1", "type": "hypothesis"})).exit_code == 0
    path = tmp_path / "p.csv"
    path.write_text("artifact_id,agent_id,tokens\n"
                    + "".join(f"a1,agent-{i},1.5\n" for i in range(300_000)))
    process = subprocess.Popen(
        [sys.executable, "-m", "scidex_alloc", "load", "positions", str(path), "--db", url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with admin_connection(pg_admin_url) as c:
        deadline = time.monotonic() + 60
        while not c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name "
                "= 'scidex-alloc' AND datname = %s AND query LIKE 'COPY positions%%' "
                "AND state = 'active'", (name,)).fetchall():
            assert process.poll() is None and time.monotonic() < deadline, "no COPY to stop"
            time.sleep(0.05)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 1 and stdout == ""
    assert len(stderr.splitlines()) == 1 and stderr.startswith("alloc: database error: "), stderr


def test_a_full_disk_is_a_database_error(tmp_path, cli):
    db = tmp_path / "full.db"
    assert cli("db", "upgrade", "--db", db).exit_code == 0
    assert load(cli, db, "artifacts", jsonl(tmp_path / "a.jsonl",
                {"id": "a1", "type": "hypothesis"})).exit_code == 0
    pages = sqlite3.connect(db).execute("PRAGMA page_count").fetchone()[0]
    path = tmp_path / "p.csv"
    path.write_text("artifact_id,agent_id,tokens\n"
                    + "".join(f"a1,agent-{i},1.5\n" for i in range(20_000)))

    def no_room_to_grow(dbapi_connection, _record):  # as if the disk were full
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages + 2}")

    event.listen(Engine, "connect", no_room_to_grow)
    try:
        result = load(cli, db, "positions", path)
    finally:
        event.remove(Engine, "connect", no_room_to_grow)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == "alloc: database error: database or disk is full\n"
    assert rank_row(cli, db, "a1")["demand"] == 0

