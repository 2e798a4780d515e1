"""Database set-up: the same answers on SQLite and PostgreSQL, migrations, and errors."""

import shutil
from pathlib import Path

import pytest

from tests.pgserver import throwaway_database

ROOT = Path(__file__).parent.parent


@pytest.fixture
def pg_database(pg_admin_url):
    """A fresh PostgreSQL database, dropped afterwards."""
    with throwaway_database(pg_admin_url, prefix="same") as url:
        yield url


def test_sqlite_and_postgresql_give_identical_output(pg_database, cli, tmp_path):
    sqlite = str(tmp_path / "same.db")
    for db in (sqlite, pg_database):
        assert cli("generate", "--artifacts", "600", "--seed", "11", "--db", db).exit_code == 0
        top = cli("rank", "--limit", "3", "-f", "json", "--db", db).json()
        assert cli("spend", top[2]["artifact_id"], "0.000001", "--db", db).exit_code == 0
    for args in (["rank", "-f", "json"], ["rank", "--by", "remaining", "-f", "csv"],
                 ["rank", "--type", "analysis", "--by", "demand", "--limit", "25"],
                 ["budget", top[0]["artifact_id"], "-f", "json"], ["audit", "-f", "json"]):
        on_sqlite = cli(*args, "--db", sqlite)
        on_pg = cli(*args, "--db", pg_database)
        assert on_sqlite.exit_code == on_pg.exit_code == 0
        assert on_sqlite.stdout == on_pg.stdout, args


def test_generator_is_deterministic(tmp_path, cli):
    outputs = []
    for name in ("one.db", "two.db"):
        db = str(tmp_path / name)
        cli("generate", "--artifacts", "200", "--seed", "3", "--db", db)
        outputs.append(cli("rank", "-f", "csv", "--db", db).stdout)
    assert outputs[0] == outputs[1] and outputs[0].count("\n") == 201


def test_upgrade_is_idempotent(empty_db_url, cli):
    assert cli("db", "current", "--db", empty_db_url).exit_code != 0 or \
        "none" in cli("db", "current", "--db", empty_db_url).stdout
    for _ in range(2):
        result = cli("db", "upgrade", "--db", empty_db_url)
        assert result.exit_code == 0 and "revision" in result.stderr
    assert "up to date" in cli("db", "current", "--db", empty_db_url).stdout


def test_missing_sqlite_file_is_an_error_not_a_new_database(tmp_path, cli):
    path = tmp_path / "typo.db"
    result = cli("rank", "--db", path)
    assert result.exit_code == 1 and "alloc db upgrade" in result.stderr
    assert not path.exists()


def test_database_without_schema_says_how_to_fix_it(empty_db_url, cli, db_kind):
    if db_kind == "sqlite":
        Path(empty_db_url).touch()
    result = cli("rank", "--db", empty_db_url)
    assert result.exit_code == 1
    assert "no scidex-alloc schema" in result.stderr and result.stderr.count("\n") == 1


def test_password_is_masked_in_every_message(cli):
    url = "postgresql://alice:s3cret-pw@127.0.0.1:1/nowhere"
    result = cli("rank", "--db", url)
    assert result.exit_code == 1
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert result.stderr.startswith("alloc: database error") and result.stderr.count("\n") == 1


def test_unsupported_url_is_a_usage_error(cli):
    assert cli("rank", "--db", "mysql://x@y/z").exit_code == 2


def test_default_database_is_created_on_first_use(cli, tmp_path):
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "SCIDEX_DB": None, "HOME": str(tmp_path)}
    result = cli("rank", "-f", "json", env=env)
    assert result.exit_code == 0 and result.json() == []
    assert (tmp_path / "data" / "scidex-alloc" / "alloc.db").exists()


def test_scidex_db_environment_variable(cli, tmp_path):
    db = tmp_path / "env.db"
    shutil.copy(ROOT / "sample.db", db)
    result = cli("rank", "--limit", "1", "-f", "json", env={"SCIDEX_DB": str(db)})
    assert result.exit_code == 0 and len(result.json()) == 1


def test_quick_start_through_the_console_script(alloc_proc, tmp_path):
    db = tmp_path / "sample.db"
    shutil.copy(ROOT / "sample.db", db)
    result = alloc_proc("rank", "--type", "hypothesis", "--db", db)
    assert result.returncode == 0, result.stderr
    assert "hyp-" in result.stdout and "budget" in result.stdout
    assert "\x1b[" not in result.stdout, "no colour when piped"


def test_sample_database_is_at_the_newest_revision(cli, tmp_path):
    db = tmp_path / "sample.db"
    shutil.copy(ROOT / "sample.db", db)
    assert "up to date" in cli("db", "current", "--db", db).stdout
    assert cli("audit", "--db", db).exit_code == 0
    assert len(cli("next", "--limit", "3", "-f", "json", "--db", db).json()) == 3
