"""Test harness: every database test runs on SQLite and on a real PostgreSQL server.

The PostgreSQL server is the one named by $SCIDEX_TEST_PG_URL (an admin URL that may
create databases) or, without it, a private throwaway server started from the system's
binaries (`pg_config --bindir`, then /usr/lib/postgresql/*/bin) for the whole session;
tests/pgserver.py starts it and creates and drops the databases.
Without a server the PostgreSQL cases are skipped -- except under CI=true, where they fail.

Fixtures:
  db_kind       "sqlite" / "postgresql"; any test using the fixtures below runs on both
  empty_db_url  a fresh database with no tables (SQLite: a path that does not exist yet)
  db_url        a fresh database with the schema made by `alloc db upgrade` (a copy
                of one database upgraded once per session)
  cli           run the real CLI in-process: cli(*args, input=None, env=None) -> Result
  alloc_proc    run `python -m scidex_alloc` as a separate process
  pg_admin_url  the admin URL of the PostgreSQL server
"""

from __future__ import annotations

import atexit
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from tests.pgserver import (
    Copies,
    PgUnavailable,
    ThrowawayServer,
    admin_connection,
    create_database,
    disconnect_all,
    drop_database,
    find_bindir,
    free_port,
    throwaway_database,
)

ENV_PG_URL = "SCIDEX_TEST_PG_URL"


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


# --------------------------------------------------------------------------- the CLI


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


class _Output(io.StringIO):
    """Captured stdout/stderr: never a terminal."""

    def isatty(self) -> bool:
        return False


def run_cli(*args, input: bytes | str | None = None, env: dict | None = None) -> Result:
    """Run `alloc ARGS` through scidex_alloc.cli.run in this process, capturing its output.

    env maps variable names to values (None removes the variable) for the duration of the call.
    """
    from scidex_alloc.cli import run

    data = input.encode("utf-8") if isinstance(input, str) else (input or b"")
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    saved_env = {name: os.environ.get(name) for name in (env or {})}
    stdout, stderr = _Output(), _Output()
    try:
        for name, value in (env or {}).items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = str(value)
        sys.stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
        sys.stdout, sys.stderr = stdout, stderr
        exit_code = run([str(arg) for arg in args])
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return Result(exit_code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def alloc_proc():
    """Run the real console entry point in a separate process."""

    def run(*args, env: dict | None = None, input: str | bytes | None = None, timeout=120):
        full_env = dict(os.environ)
        for name, value in (env or {}).items():
            if value is None:
                full_env.pop(name, None)
            else:
                full_env[name] = str(value)
        if isinstance(input, bytes):
            input = input.decode("utf-8")
        return subprocess.run(
            [sys.executable, "-m", "scidex_alloc", *map(str, args)],
            input=input, capture_output=True, text=True, env=full_env, timeout=timeout,
        )

    return run


# --------------------------------------------------------------------------- PostgreSQL server


def _start_server():
    """(admin_url, server_or_None); raises PgUnavailable with the reason."""
    url = os.environ.get(ENV_PG_URL)
    if url:
        try:
            with admin_connection(url):
                pass
        except psycopg.Error as error:
            raise PgUnavailable(f"{ENV_PG_URL} server unreachable: {error}") from None
        return url, None
    bindir = find_bindir()
    if bindir is None:
        raise PgUnavailable("no PostgreSQL server binaries (initdb, pg_ctl) found via "
                            f"pg_config --bindir or /usr/lib/postgresql/*/bin; install them "
                            f"or set {ENV_PG_URL}")
    server = ThrowawayServer(bindir)
    atexit.register(server.stop)  # also on an abnormal end of the session
    try:
        url = server.start()
    except Exception:
        server.stop()
        raise
    return url, server


@pytest.fixture(scope="session")
def _pg_server():
    """The admin URL, or the reason there is no server (started at most once)."""
    try:
        url, server = _start_server()
    except PgUnavailable as error:
        yield None, str(error)
        return
    try:
        yield url, None
    finally:
        if server is not None:
            server.stop()


@pytest.fixture(scope="session")
def pg_admin_url(_pg_server) -> str:
    url, reason = _pg_server
    if url is None:
        message = f"PostgreSQL unavailable: {reason}"
        if _under_ci():
            pytest.fail(f"{message} (CI=true: PostgreSQL tests must not be skipped)",
                        pytrace=False)
        pytest.skip(message)
    return url


# --------------------------------------------------------------------------- databases


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
def db_kind(request) -> str:
    if request.param == "postgresql":
        request.getfixturevalue("pg_admin_url")  # skip or fail now if there is no server
    return request.param


@pytest.fixture
def empty_db_url(request, db_kind, tmp_path):
    """A fresh database with no tables."""
    if db_kind == "sqlite":
        path = tmp_path / "test.db"
        assert not path.exists()
        yield str(path)
        return
    with throwaway_database(request.getfixturevalue("pg_admin_url")) as url:
        yield url


def upgrade(url: str) -> None:
    result = run_cli("db", "upgrade", "--db", url)
    assert result.exit_code == 0, f"alloc db upgrade failed: {result.stderr}{result.stdout}"


# Every revision's upgrade costs about 0.25 s, more than most tests: `alloc db upgrade`
# makes one database per session and kind, and each test's db_url is a copy of it.
@pytest.fixture(scope="session")
def upgraded_sqlite(tmp_path_factory) -> Path:
    """A SQLite file made by `alloc db upgrade`, its log checkpointed into it."""
    path = tmp_path_factory.mktemp("upgraded") / "upgraded.db"
    upgrade(str(path))
    with closing(sqlite3.connect(path)) as connection:
        busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0, "the upgraded SQLite database is still in use"
    return path


@pytest.fixture(scope="session")
def upgraded_postgresql(pg_admin_url) -> Iterator[Copies]:
    """Copies, made ahead, of a PostgreSQL database made by `alloc db upgrade`."""
    name = f"upgraded_{uuid.uuid4().hex[:16]}"
    upgrade(create_database(pg_admin_url, name))
    disconnect_all(pg_admin_url, name)  # a template must have no session
    copies = Copies(pg_admin_url, name)
    yield copies
    copies.stop()
    drop_database(pg_admin_url, name)


@pytest.fixture
def db_url(request, db_kind, tmp_path):
    """A fresh database with the schema made by `alloc db upgrade` (a copy of one)."""
    if db_kind == "sqlite":
        path = tmp_path / "test.db"
        shutil.copyfile(request.getfixturevalue("upgraded_sqlite"), path)
        yield str(path)
        return
    with request.getfixturevalue("upgraded_postgresql").database() as url:
        yield url


# --------------------------------------------------------------------------- `alloc serve`


class Served:
    """A running `alloc serve` process and a tiny HTTP client for it."""

    def __init__(self, port: int, process: subprocess.Popen):
        self.base = f"http://127.0.0.1:{port}"
        self.process = process

    def get(self, path: str) -> tuple[int, object]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.base + path, timeout=30) as response:
                body = response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            body, status = error.read(), error.code
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode("utf-8", "replace")


@pytest.fixture
def served(db_url, cli, tmp_path):
    """`alloc serve` on a free loopback port over a generated database; its output (one
    access-log line per request) goes to the file `served.log`, never to a pipe that no
    one reads, which would stop the server once full."""
    import time
    import urllib.request

    assert cli("generate", "--artifacts", "80", "--seed", "8", "--db", db_url).exit_code == 0
    assert cli("snapshot", "--db", db_url).exit_code == 0
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "scidex_alloc", "serve", "--port", str(port), "--db", db_url],
            stdout=out, stderr=subprocess.STDOUT)
    server = Served(port, process)
    server.log = log
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(server.base + "/healthz", timeout=2).read()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(
                    f"alloc serve did not start: {log.read_text()}") from None
            time.sleep(0.1)
    yield server
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
