"""The command line itself: version, completion, interrupts, debugging, error wording."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from scidex_alloc import __version__
from scidex_alloc.allocator import Allocator
from scidex_alloc.errors import UsageError


@pytest.fixture
def sqlite_db(tmp_path, cli):
    path = tmp_path / "cli.db"
    assert cli("db", "upgrade", "--db", path).exit_code == 0
    return path


def test_version(cli):
    result = cli("--version")
    assert (result.exit_code, result.stdout, result.stderr) == (0, f"alloc {__version__}\n", "")


def test_without_a_command_help_goes_to_stderr_with_exit_2(cli):
    for args in ((), ("db",), ("snapshots",)):
        result = cli(*args)
        assert result.exit_code == 2 and result.stdout == ""
        assert result.stderr.startswith("Usage: alloc")


def test_shell_completion_is_offered(cli, alloc_proc):
    assert "--install-completion" in cli("--help").stdout
    completed = alloc_proc(env={"_ALLOC_COMPLETE": "complete_bash", "COMP_WORDS": "alloc rank --by ",
                                "COMP_CWORD": "3"})
    assert completed.stdout.split() == ["budget", "remaining", "demand", "available"]


# Also while the server is still starting: the "serving" line comes before its event loop.
@pytest.mark.parametrize("after", [0, 0.02, 0.04, 0.06, 0.08, 0.1])
def test_ctrl_c_exits_130_with_one_line(sqlite_db, after):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "scidex_alloc", "serve", "--port", str(port), "--db", str(sqlite_db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "serving" in server.stderr.readline()
        time.sleep(after)
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=60)
    finally:
        server.kill()
    assert (server.returncode, stderr) == (130, "alloc: interrupted\n")


@pytest.mark.parametrize("when", ["starting", "serving"])
def test_ctrl_c_stops_every_worker_and_exits_130(sqlite_db, when):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "scidex_alloc", "serve", "--workers", "2", "--port", str(port),
         "--db", str(sqlite_db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "serving" in server.stderr.readline()
        if when == "serving":
            deadline = time.monotonic() + 60
            while not _answers(base):
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=60)
    finally:
        server.kill()
    assert (server.returncode, stderr.splitlines()[-1]) == (130, "alloc: interrupted")
    assert "Traceback" not in stderr
    assert not _answers(base)


def test_a_worker_that_cannot_open_the_database_stops_the_server_with_exit_1(sqlite_db):
    """The file is removed once the server has opened it, before its workers open it:
    each says why in one line, and the server stops instead of starting them forever."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "scidex_alloc", "serve", "--workers", "2", "--port", str(port),
         "--db", str(sqlite_db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "serving" in server.stderr.readline()
        sqlite_db.unlink()
        _, stderr = server.communicate(timeout=60)
    finally:
        server.kill()
    assert server.returncode == 1
    assert f"alloc: no database at {sqlite_db}" in stderr
    assert stderr.splitlines()[-1] == f"alloc: cannot serve on 127.0.0.1:{port}: a worker failed to start"
    assert "Traceback" not in stderr


def _answers(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_an_unexpected_error_is_one_line_or_with_scidex_debug_its_traceback(
        cli, sqlite_db, monkeypatch):
    def broken(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(Allocator, "rates", broken)
    plain = cli("rates", "--db", sqlite_db)
    assert (plain.exit_code, plain.stderr) == (1, "alloc: error: RuntimeError: boom\n")
    debug = cli("rates", "--db", sqlite_db, env={"SCIDEX_DEBUG": "1"})
    assert debug.exit_code == 1
    assert debug.stderr.startswith("Traceback") and "in broken" in debug.stderr
    assert debug.stderr.endswith("RuntimeError: boom\nalloc: error: RuntimeError: boom\n")


@pytest.mark.parametrize("args, param, worded", [
    (("rank",), "limit", "--limit"),
    (("rank",), "type_", "--type"),
    (("budget", "x"), "artifact_id", "ARTIFACT_ID"),
    (("rates", "set", "u", "1"), "units_per_token", "UNITS_PER_TOKEN"),
    (("rank",), "nothing_like_it", "nothing_like_it"),
])
def test_usage_errors_name_the_invoked_command_s_flags(cli, sqlite_db, monkeypatch, args, param,
                                                       worded):
    def refuse(self, *args, **kwargs):
        raise UsageError("{" + param + "} is wrong", param)

    for method in ("rank", "budget", "set_rate"):
        monkeypatch.setattr(Allocator, method, refuse)
    result = cli(*args, "--db", sqlite_db)
    assert (result.exit_code, result.stderr) == (2, f"alloc: {worded} is wrong\n")


def test_usage_errors_name_the_api_s_query_parameters(monkeypatch, sqlite_db):
    from fastapi.testclient import TestClient

    from scidex_alloc.serving.api import create_app

    def refuse(self, type_=None, **kwargs):
        raise UsageError("invalid {type_}: no such thing", "type_")

    monkeypatch.setattr(Allocator, "rank", refuse)
    with TestClient(create_app(Allocator.open(str(sqlite_db)))) as client:
        response = client.get("/api/market/resource-budgets?type=x")
    assert (response.status_code, response.json()) == (422, {"error": "invalid type: no such thing"})
