"""The test harness itself: both databases are really there, empty or upgraded."""

from pathlib import Path

import psycopg


def test_db_url_is_upgraded_to_head(db_url, cli):
    result = cli("db", "current", "--db", db_url)
    assert result.exit_code == 0, result.stderr
    assert "up to date" in result.stdout


def test_empty_db_url_has_no_tables(db_kind, empty_db_url):
    if db_kind == "sqlite":
        assert not Path(empty_db_url).exists()
        return
    with psycopg.connect(empty_db_url) as connection:
        tables = connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    assert tables == []
