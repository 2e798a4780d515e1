"""Edge inputs through the real entry points, on SQLite and PostgreSQL: out-of-range
numbers and dates, the server's socket and routes, read-only and vanishing files."""

import socket

import pytest

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
