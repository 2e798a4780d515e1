"""A long-lived Allocator on a SQLite file keeps its connection between calls, yet always
reads the file its path names now: one replaced is read anew, one moved away is an error.

SQLite only: these are promises about a file and its path. A PostgreSQL URL names a
server, which has no file to move or replace, and its engines pool connections already."""

import os
from decimal import Decimal

import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from scidex_alloc import Allocator
from scidex_alloc.errors import UnknownArtifact
from scidex_alloc.storage import database


def sqlite_file(path, artifacts):
    """A SQLite file with the schema and these artifacts, each holding a 1000-token position."""
    path.touch()
    with Allocator.open(str(path)) as allocator:
        allocator.upgrade()
        allocator.populate([
            ("artifacts", ("id", "type"), [(a, "hypothesis") for a in artifacts]),
            ("positions", ("artifact_id", "tokens"), [(a, Decimal(1000)) for a in artifacts]),
        ])
    return path


def test_a_file_replaced_between_calls_is_read_and_written_as_it_is_now(tmp_path):
    path = sqlite_file(tmp_path / "live.db", ["a1"])
    newer = sqlite_file(tmp_path / "newer.db", ["a1", "b2"])
    with Allocator.open(str(path)) as allocator:
        assert allocator.budget("a1").row.artifact_id == "a1"
        with pytest.raises(UnknownArtifact):
            allocator.budget("b2")
        os.replace(newer, path)
        assert allocator.budget("b2").row.artifact_id == "b2"
        allocator.spend("b2", "7", kind="analysis", agent="bot", key="after-replace")
    with Allocator.open(str(path)) as reopened:
        assert reopened.budget("b2").row.spent == Decimal(7)
        assert all(check.ok for check in reopened.audit())


def test_a_file_moved_away_fails_the_next_call_until_it_is_back(tmp_path):
    path = sqlite_file(tmp_path / "live.db", ["a1"])
    away = tmp_path / "away.db"
    with Allocator.open(str(path)) as allocator:
        assert allocator.budget("a1").row.artifact_id == "a1"
        path.rename(away)
        with pytest.raises(OperationalError) as failed:
            allocator.budget("a1")
        assert database.explain(failed.value, allocator.target) == (
            "database error: unable to open database file")
        assert not path.exists(), "a new empty database was made"
        away.rename(path)
        assert allocator.budget("a1").row.artifact_id == "a1"


def test_one_connection_serves_every_call_while_the_file_stays(tmp_path):
    path = sqlite_file(tmp_path / "live.db", ["a1"])
    with Allocator.open(str(path)) as allocator:
        connects = []
        event.listen(allocator.engine, "connect", lambda *_: connects.append(1))
        for number in range(3):
            allocator.budget("a1")
            [job] = allocator.next(agent="bot", claim=True, limit=1)
            allocator.spend("a1", "1", kind="analysis", agent="bot", key=f"k{number}")
            allocator.done(job.claim_id, reward=0.5)
            assert [row.artifact_id for row in allocator.rank()] == ["a1"]
        assert len(connects) == 1


def test_concurrent_callers_keep_their_connections_until_the_file_is_replaced(tmp_path):
    """The server's threads each find an idle connection; a replaced file closes them all,
    so none keeps the old file's -wal and -shm at the path."""
    path = sqlite_file(tmp_path / "live.db", ["a1"])
    newer = sqlite_file(tmp_path / "newer.db", ["a1", "b2"])
    with Allocator.open(str(path)) as allocator:
        pool = allocator.engine.pool
        held = [allocator.engine.connect() for _ in range(3)]
        for connection in held:
            connection.close()
        assert pool.checkedin() == 3
        connects = []
        event.listen(allocator.engine, "connect", lambda *_: connects.append(1))
        for _ in range(3):
            allocator.budget("a1")
        assert connects == [] and pool.checkedin() == 3
        os.replace(newer, path)
        assert allocator.budget("b2").row.artifact_id == "b2"
        assert connects == [1] and pool.checkedin() == 1
