"""Test harness: every database test runs on SQLite and on a real PostgreSQL server.

The PostgreSQL server is the one named by $SCIDEX_TEST_PG_URL (an admin URL that may
create databases) or, without it, a private throwaway server started from the system's
binaries (`pg_config --bindir`, then /usr/lib/postgresql/*/bin) for the whole session.
Without a server the PostgreSQL cases are skipped -- except under CI=true, where they fail.

Fixtures:
  db_kind       "sqlite" / "postgresql"; any test using the fixtures below runs on both
  empty_db_url  a fresh database with no tables (SQLite: a path that does not exist yet)
  db_url        the same with the schema made by `alloc db upgrade`
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
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from bench.pgserver import PgUnavailable, PrivateServer, find_bindir, free_port

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


class ThrowawayServer(PrivateServer):
    """The shared private server (bench/pgserver.py) in a temporary directory, without
    durability, removed when the session ends -- even if pytest is killed."""

    def __init__(self, bindir: Path):
        # Directly under /tmp: pytest's own temp dirs may not be traversable by `postgres`.
        super().__init__(Path(tempfile.mkdtemp(prefix="scidex-pg-")), TEST_SETTINGS, bindir)
        self.watchdog: subprocess.Popen | None = None

    def start(self) -> str:
        url = super().start()
        # A helper process waits for our end of a pipe to close (also on SIGTERM/SIGKILL),
        # then stops the server and removes its directory.
        self.watchdog = subprocess.Popen(
            ["/bin/sh", "-c", _WATCHDOG, "watchdog", str(self.bindir / "pg_ctl"),
             str(self.data), str(self.root)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, **self.process_options(),
        )
        return url

    def stop(self) -> None:
        super().stop(mode="immediate")
        shutil.rmtree(self.root, ignore_errors=True)
        if self.watchdog is not None:
            self.watchdog.stdin.close()  # nothing left to do: it exits at once
            self.watchdog.wait(timeout=60)
            self.watchdog = None


# No durability (a throwaway cluster), and a server time zone far from UTC: alloc must
# not depend on it.
TEST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                 "max_connections": "200", "timezone": "Pacific/Kiritimati"}
# Waits for end of file on stdin, then stops the server and removes its directory.
_WATCHDOG = 'cat >/dev/null; "$1" -D "$2" -m immediate -w stop >/dev/null 2>&1; rm -rf "$3"'


def _start_server():
    """(admin_url, server_or_None); raises PgUnavailable with the reason."""
    url = os.environ.get(ENV_PG_URL)
    if url:
        try:
            with _admin_connection(url):
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


def _admin_connection(admin_url: str) -> psycopg.Connection:
    url = make_url(admin_url).set(drivername="postgresql")
    return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True,
                           connect_timeout=10)


def _database_url(admin_url: str, name: str) -> str:
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


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
    admin_url = request.getfixturevalue("pg_admin_url")
    name = f"t_{uuid.uuid4().hex[:16]}"
    with _admin_connection(admin_url) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _database_url(admin_url, name)
    finally:
        with _admin_connection(admin_url) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(empty_db_url):
    """A fresh database with the schema made by `alloc db upgrade`."""
    result = run_cli("db", "upgrade", "--db", empty_db_url)
    assert result.exit_code == 0, f"alloc db upgrade failed: {result.stderr}{result.stdout}"
    return empty_db_url


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
def served(db_url, cli):
    """`alloc serve` on a free loopback port over a generated database."""
    import time
    import urllib.request

    assert cli("generate", "--artifacts", "80", "--seed", "8", "--db", db_url).exit_code == 0
    assert cli("snapshot", "--db", db_url).exit_code == 0
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "scidex_alloc", "serve", "--port", str(port), "--db", db_url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    server = Served(port, process)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(server.base + "/healthz", timeout=2).read()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(
                    f"alloc serve did not start: {process.stdout.read()}") from None
            time.sleep(0.1)
    yield server
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
