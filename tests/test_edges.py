"""Edge inputs through the real entry points, on SQLite and PostgreSQL: out-of-range
numbers and dates, the server's socket and routes, read-only and vanishing files."""

import contextlib
import json
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from scidex_alloc.errors import DATABASE
from tests.pgserver import free_port

HUGE = "99999999999999999999"


def refused(result, code, text=""):
    """One `alloc: ` line on stderr with the exit code, nothing on stdout."""
    assert (result.exit_code, result.stdout) == (code, ""), result
    assert result.stderr.startswith("alloc: ") and result.stderr.count("\n") == 1, result
    assert text in result.stderr, result


@pytest.fixture
def small(db_url, cli):
    assert cli("generate", "--artifacts", "20", "--db", db_url).exit_code == 0
    return db_url


@pytest.mark.parametrize("args, code, text", [
    (("log", "--since", "0001-01-01T00:00:00+01:00"), 2, "--since"),
    (("history", "--top", "3", "--until", "9999-12-31T23:59:59-01:00"), 2, "--until"),
    (("done", HUGE), 4, f"no claim with id {HUGE}"),
    (("release", "9223372036854775808"), 4, "no claim with id 9223372036854775808"),
    (("spend", "--reverse", HUGE), 4, f"no spend with id {HUGE}"),
    (("rank", "--limit", HUGE), 2, "--limit must be from 1 to 1000000000"),
    (("rank", "--limit", "1000000001", "--format", "csv"), 2, "--limit"),
    (("log", "--limit", HUGE), 2, "--limit"),
    (("next", "--limit", HUGE), 2, "--limit"),
    (("history", "--top", HUGE), 2, "--top must be from 1"),
    (("next", "--lease", "9" * 5000 + "s"), 2, "--lease must be"),
    (("snapshots", "prune", "--keep", "9" * 5000 + "d"), 2, "--keep must be"),
    (("generate", "--seed", HUGE), 2, "--seed must be from 0"),
    (("generate", "--artifacts", HUGE), 2, "--artifacts must be from 1"),
    (("plan", "--pool", "100", "--cap", "10", "--min", "20"), 2,
     "--min 20 is larger than --cap 10"),
])
def test_out_of_range_values_are_refused_before_any_output(small, cli, args, code, text):
    refused(cli(*args, "--db", small), code, text)


def test_generate_out_of_range_creates_no_database(tmp_path, cli):
    path = tmp_path / "new.db"
    refused(cli("generate", "--seed", "-1", "--db", path), 2, "--seed")
    assert not path.exists()


def test_a_url_with_a_bad_port_is_a_usage_error_without_the_password(cli):
    result = cli("rank", "--db", "postgresql://u:s3cret@h:abc/x")
    refused(result, 2, "--db is neither a database URL nor a path")
    assert "s3cret" not in result.stderr


@pytest.fixture
def taken_port():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("where", ["taken", "256.1.1.1"])
def test_serve_on_a_taken_port_or_a_bad_host_is_one_line_exit_1(db_url, alloc_proc, taken_port,
                                                                  where):
    args = ("--port", taken_port) if where == "taken" else ("--host", where)
    result = alloc_proc("serve", *args, "--db", db_url, timeout=60)
    assert (result.returncode, result.stdout) == (1, "")
    expected = f"127.0.0.1:{taken_port}" if where == "taken" else f"{where}:8000"
    assert result.stderr.startswith(f"alloc: cannot serve on {expected}: ")
    assert result.stderr.count("\n") == 1, result.stderr


def head(served, path):
    request = urllib.request.Request(served.base + path, method="HEAD")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.headers["content-type"], response.read()


def test_api_takes_ids_with_slashes_refuses_nul_and_answers_head(served, db_url, cli, tmp_path):
    (tmp_path / "a.csv").write_text("id,type\ndoi:10.1/abc,paper\n")
    assert cli("load", "artifacts", tmp_path / "a.csv", "--db", db_url).exit_code == 0
    status, body = served.get("/api/market/resource-budgets/doi:10.1%2Fabc")
    assert (status, body["artifact_id"]) == (200, "doi:10.1/abc")
    assert served.get("/api/market/resource-budgets?type=%00") == (
        422, {"error": "invalid type: must not contain a NUL character"})
    assert served.get("/api/market/resource-budgets/%00") == (
        404, {"error": "unknown artifact '\\x00'"})
    assert head(served, "/healthz") == (200, "application/json", b"")
    assert head(served, "/")[:2] == (200, "text/html; charset=utf-8")
    with pytest.raises(urllib.error.HTTPError) as refused_post:
        urllib.request.urlopen(urllib.request.Request(served.base + "/healthz", method="POST"))
    assert refused_post.value.code == 405


def get(base: str, path: str) -> tuple[int, object]:
    """(status, decoded JSON body) of GET base+path."""
    try:
        with urllib.request.urlopen(base + path, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def serve_sqlite(tmp_path, cli):
    """`alloc serve` over a generated SQLite file: (GET function, the file's path)."""
    path = tmp_path / "api.db"
    assert cli("generate", "--artifacts", "20", "--db", path).exit_code == 0
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "scidex_alloc", "serve", "--port", str(port), "--db", path],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fetch = partial(get, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                fetch("/healthz")
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "no server"
                time.sleep(0.1)
        yield fetch, path
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_served_sqlite_file_moved_away_and_back(serve_sqlite):
    fetch, path = serve_sqlite
    page = "/api/market/resource-budgets?limit=1"
    assert fetch(page)[0] == 200
    path.rename(path.with_suffix(".away"))
    with ThreadPoolExecutor(4) as pool:  # concurrent requests, as a live server gets
        away = list(pool.map(fetch, [page] * 8))
    assert away == [(503, {"error": "database unavailable"})] * 8
    assert not path.exists(), "the server created a database file"
    path.with_suffix(".away").rename(path)
    assert fetch(page)[0] == 200
    assert fetch("/healthz")[0] == 200


@pytest.fixture
def read_only(db_url, db_kind, cli, request, tmp_path):
    """A generated database alloc may only read, and a runner of `alloc` against it.
    SQLite: its directory bind-mounted read-only in a user and mount namespace (root in
    CI could write through any chmod); PostgreSQL: read-only transactions by default."""
    assert cli("generate", "--artifacts", "20", "--snapshot-days", "3", "--db", db_url
               ).exit_code == 0
    top = cli("rank", "--limit", "1", "--format", "json", "--db", db_url).json()[0]
    prefix = []
    if db_kind == "sqlite":
        prefix = ["unshare", "-rm", "sh", "-c",
                  'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"',
                  "sh", str(tmp_path)]
    else:
        admin = sa.create_engine(request.getfixturevalue("pg_admin_url"),
                                 isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with admin.connect() as connection:
            connection.exec_driver_sql(f'ALTER DATABASE "{sa.make_url(db_url).database}" '
                                       "SET default_transaction_read_only = on")

    def run(*args):
        result = subprocess.run([*prefix, sys.executable, "-m", "scidex_alloc", *map(str, args),
                                 "--db", db_url], capture_output=True, text=True, timeout=120)
        return SimpleNamespace(exit_code=result.returncode, stdout=result.stdout,
                               stderr=result.stderr)

    run.artifact = top["artifact_id"]
    return run


@pytest.mark.parametrize("args", [
    ("rank", "--limit", "3"), ("budget", "ARTIFACT"), ("log",), ("audit",),
    ("history", "--top", "3"), ("history", "ARTIFACT"), ("next",), ("plan", "--pool", "1000"),
    ("claims",), ("rates",),
])
def test_read_commands_work_on_a_read_only_database(read_only, args):
    args = [read_only.artifact if arg == "ARTIFACT" else arg for arg in args]
    result = read_only(*args, "--format", "json")
    assert (result.exit_code, result.stderr) == (0, ""), result
    json.loads(result.stdout)


@pytest.mark.parametrize("args", [("spend", "ARTIFACT", "1"), ("snapshot",),
                                  ("next", "--claim", "--agent", "a1")])
def test_writes_to_a_read_only_database_exit_1_with_one_line(read_only, args):
    args = [read_only.artifact if arg == "ARTIFACT" else arg for arg in args]
    refused(read_only(*args), DATABASE, "the database is read-only")


def test_a_reader_of_a_locked_rollback_journal_file_blames_no_writer(tmp_path, cli, alloc_proc):
    path = tmp_path / "journal.db"
    assert cli("generate", "--artifacts", "5", "--db", path).exit_code == 0
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode = DELETE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = alloc_proc("rank", "--db", path, env={"SCIDEX_BUSY_TIMEOUT": "0.2"})
    finally:
        holder.rollback()
        holder.close()
    assert (result.returncode, result.stdout) == (DATABASE, "")
    assert result.stderr == ("alloc: database error: the database is locked (waited 0.2s; "
                             "raise SCIDEX_BUSY_TIMEOUT to wait longer)\n")


def test_a_server_that_fails_to_start_is_one_error_with_its_reason(db_url, monkeypatch):
    from scidex_alloc.allocator import Allocator
    from scidex_alloc.errors import AllocError
    from scidex_alloc.serving import api, server

    def failing_at_startup(allocator):
        app = create_app(allocator)

        @contextlib.asynccontextmanager
        async def lifespan(_app):
            raise RuntimeError("no startup today")
            yield

        app.router.lifespan_context = lifespan
        return app

    create_app = api.create_app
    monkeypatch.setattr(api, "create_app", failing_at_startup)
    sock = server.bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    allocator = Allocator.open(db_url)
    try:
        with pytest.raises(AllocError) as failed:
            server.serve(allocator, sock)
    finally:
        allocator.engine.dispose()
    assert str(failed.value) == f"cannot serve on 127.0.0.1:{port}: RuntimeError: no startup today"
    assert failed.value.exit_code == DATABASE
