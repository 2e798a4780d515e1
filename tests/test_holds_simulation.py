"""The seeded simulation of holds, spends and the work queue (tests/simulation.py) on both
databases, for a fixed set of seeds; `python -m tests.simulation --db sqlite|postgresql
--seeds 1-200 --steps 100` runs many more. A failure names its seed and step, and the
command that runs it again."""

from decimal import Decimal

import pytest

from tests.conftest import _under_ci
from tests.pgserver import find_bindir
from tests.simulation import Database, plan, restartable_server, simulate

SEEDS = (1, 2, 3)
STEPS = 40


@pytest.fixture(scope="module")
def restartable_pg():
    """A private PostgreSQL the simulation may stop at once and start again (the session's
    server is shared, and skips synchronous commits: an immediate stop may lose them)."""
    if find_bindir() is None:
        message = "no PostgreSQL server binaries to start a private server"
        if _under_ci():
            pytest.fail(f"{message} (CI=true: PostgreSQL tests must not be skipped)",
                        pytrace=False)
        pytest.skip(message)
    server = restartable_server()
    yield server
    server.stop()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_simulation(kind, seed, request):
    server = request.getfixturevalue("restartable_pg") if kind == "postgresql" else None
    simulate(kind, seed, STEPS, server)  # raises SimulationFailure naming seed and step


def test_a_seed_draws_the_same_workload():
    assert plan(7, 50) == plan(7, 50)
    assert plan(7, 50) != plan(8, 50)


# Found by the simulation: an amount given without --unit is in the hold's unit, as the
# held amount is by default.


@pytest.fixture
def llm_funded(db_url, cli, tmp_path):
    """a1 has a budget of 100 tokens; 1000 llm are worth one token."""
    (tmp_path / "a.csv").write_text("id,type\na1,hypothesis\n")
    (tmp_path / "p.csv").write_text("artifact_id,tokens\na1,1000\n")
    for args in (("load", "artifacts", tmp_path / "a.csv"),
                 ("load", "positions", tmp_path / "p.csv"), ("rates", "set", "llm", "1000")):
        assert cli(*args, "--db", db_url).exit_code == 0
    return db_url


def _json(result):
    assert result.exit_code == 0, result.stderr
    return result.json()


def test_settle_amount_is_in_the_holds_unit(llm_funded, cli):
    db = ("--db", llm_funded)
    hold = _json(cli("hold", "a1", "6000", "--unit", "llm", "-f", "json", *db))
    entry = _json(cli("settle", hold["id"], "3000", "-f", "json", *db))
    assert (entry["unit"], Decimal(str(entry["units"])), Decimal(str(entry["tokens"]))) == \
        ("llm", 3000, 3)
    # The same settlement stated again replays it.
    assert _json(cli("settle", hold["id"], "3000", "-f", "json", *db))["replayed"] is True


def test_done_spend_is_in_the_holds_unit(llm_funded, cli):
    db = ("--db", llm_funded)
    (job,) = _json(cli("next", "--claim", "--agent", "a", "--reserve", "6000", "--unit", "llm",
                       "-f", "json", *db))
    done = _json(cli("done", job["claim_id"], "--spend", "3000", "-f", "json", *db))
    (entry,) = _json(cli("log", "-f", "json", *db))
    assert entry["id"] == done["spend_id"]
    assert (entry["unit"], Decimal(str(entry["units"])), Decimal(str(entry["tokens"]))) == \
        ("llm", 3000, 3)


# Found by the simulation: a budget that another service shrinks under holds and spends
# that alloc granted (each within the available budget of its moment) is no breach, as a
# shrinking budget is none for no-silent-overdraft.


def test_budget_shrinking_under_granted_holds_and_spends_is_no_breach(db_kind, db_url, cli,
                                                                       tmp_path):
    db = ("--db", db_url)
    (tmp_path / "a.csv").write_text("id,type\na1,hypothesis\n")
    (tmp_path / "p.csv").write_text("artifact_id,tokens\na1,500\n")
    assert cli("load", "artifacts", tmp_path / "a.csv", *db).exit_code == 0
    assert cli("load", "positions", tmp_path / "p.csv", *db).exit_code == 0
    service = Database(db_kind, db_url)
    assert cli("hold", "a1", "50", "--ttl", "10m", *db).exit_code == 0  # budget 50
    ((position,),) = service.query(
        "INSERT INTO positions (artifact_id, tokens, status) VALUES ('a1', 500, 'open') "
        "RETURNING id")
    assert cli("spend", "a1", "50", *db).exit_code == 0  # budget 100, 50 available
    service.query("UPDATE positions SET status = 'closed' WHERE id = ?", (position,))
    budget = _json(cli("budget", "a1", "-f", "json", *db))
    assert (budget["budget"], budget["spent"], budget["held"]) == (50, 50, 50)
    audit = cli("audit", "-f", "json", *db)
    assert audit.exit_code == 0, [c for c in audit.json()["checks"] if not c["ok"]]
