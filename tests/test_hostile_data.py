"""Data other services can write that no valid budget can come from: NaN or infinite
prices and amounts, text in amount columns (SQLite), and totals beyond MAX_TOTAL.

Every reader keeps working: such an artifact is listed last with its `problem`, skipped by
next, plan and snapshot, refused by spend, and named by `alloc audit`; the other artifacts
are unaffected.
"""

import json
import sqlite3

import jsonschema
import psycopg
import pytest
from fastapi.testclient import TestClient

from scidex_alloc.allocator import Allocator
from scidex_alloc.loading import importer
from scidex_alloc.serving.api import create_app

TARGET = "hyp-bad"

# Each case: what it writes, per database, for TARGET (which has one open position of 10
# tokens and a market at 0.5 first); and the problem it causes.
CASES = {
    "nan-price": ({"sqlite": "UPDATE markets SET price = 'NaN' WHERE artifact_id = 'hyp-bad'",
                   "postgresql": "UPDATE markets SET price = 'NaN' WHERE artifact_id = 'hyp-bad'"},
                  "price is not a finite number"),
    "infinite-price": ({"sqlite": "UPDATE markets SET price = 9e999 WHERE artifact_id = 'hyp-bad'",
                        "postgresql": "UPDATE markets SET price = '-Infinity' "
                                      "WHERE artifact_id = 'hyp-bad'"},
                       "price is not a finite number"),
    "bad-tokens": ({"sqlite": "UPDATE positions SET tokens = 'abc' WHERE artifact_id = 'hyp-bad'",
                    "postgresql": "UPDATE positions SET tokens = 'NaN' "
                                  "WHERE artifact_id = 'hyp-bad'"},
                   "demand is not a finite number"),
    "infinite-tokens": ({"sqlite": "UPDATE positions SET tokens = -9e999 "
                                   "WHERE artifact_id = 'hyp-bad'",
                         "postgresql": "UPDATE positions SET tokens = 'NaN' "
                                       "WHERE artifact_id = 'hyp-bad'"},
                        "demand is not a finite number"),
    "bad-bounty": ({"sqlite": "INSERT INTO token_bounties (artifact_id, tokens_offered, "
                              "tokens_paid, status) VALUES ('hyp-bad', 5, 'x', 'open')",
                    "postgresql": "INSERT INTO token_bounties (artifact_id, tokens_offered, "
                                  "tokens_paid, status) VALUES ('hyp-bad', 5, 'NaN', 'open')"},
                   "bounty is not a finite number"),
    "bad-spent": ({"sqlite": "INSERT INTO resource_allocations (artifact_id, tokens, overdraft) "
                             "VALUES ('hyp-bad', 'lots', 0)",
                   "postgresql": "INSERT INTO resource_allocations (artifact_id, tokens, overdraft)"
                                 " VALUES ('hyp-bad', 'NaN', false)"},
                  "spent is not a finite number"),
    # 9,300 valid positions of 1e9 tokens: SQLite's integer SUM overflowed at ~9.22e12.
    "huge-total": ({kind: "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                          "WHERE i < 9300) INSERT INTO positions (artifact_id, agent_id, tokens, "
                          "status) SELECT 'hyp-bad', 'whale', 1000000000, 'open' FROM n"
                    for kind in ("sqlite", "postgresql")},
                   "demand exceeds 9000000000 tokens"),
}


# An amount that is not a finite number, as each database can hold one.
BAD_AMOUNT = {"sqlite": "'x'", "postgresql": "'NaN'"}


def execute(db_url: str, db_kind: str, *statements: str) -> None:
    """Write directly, as another exchange service would."""
    if db_kind == "sqlite":
        connection = sqlite3.connect(db_url)
        with connection:
            for statement in statements:
                connection.execute(statement)
        connection.close()
        return
    with psycopg.connect(db_url, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


def rank(cli, db_url, *args):
    result = cli("rank", "--format", "json", *args, "--db", db_url)
    assert result.exit_code == 0, result.stderr
    return result.json()


@pytest.fixture
def data(db_url, db_kind, cli):
    """A generated database plus TARGET, whose budget is valid until a case writes to it."""
    assert cli("generate", "--artifacts", "40", "--seed", "5", "--db", db_url).exit_code == 0
    execute(db_url, db_kind,
            "INSERT INTO artifacts (id, type, title) VALUES ('hyp-bad', 'hypothesis', 'x')",
            "INSERT INTO markets (artifact_id, price) VALUES ('hyp-bad', 0.5)",
            "INSERT INTO positions (artifact_id, agent_id, tokens, status) "
            "VALUES ('hyp-bad', 'a1', 10, 'open')")
    before = {row["artifact_id"]: row for row in rank(cli, db_url)}
    del before[TARGET]
    return before


@pytest.fixture(params=list(CASES))
def case(request, data, db_url, db_kind):
    """Apply one case; (its expected problem, the other artifacts' rows before it)."""
    statements, problem = CASES[request.param]
    execute(db_url, db_kind, statements[db_kind])
    return problem, data


def _without_rank(row: dict) -> dict:
    return {key: value for key, value in row.items() if key != "rank"}


@pytest.mark.parametrize("by", ["budget", "remaining", "demand", "available"])
def test_rank_lists_the_invalid_artifact_last_and_the_others_unchanged(cli, db_url, case, by):
    problem, before = case
    rows = rank(cli, db_url, "--by", by)
    assert rows[-1]["artifact_id"] == TARGET
    assert rows[-1]["problem"] == problem
    assert rows[-1]["remaining"] is None and rows[-1]["available"] is None
    assert list(rows[-1]) == list(rows[0])  # the same keys: `problem`, then the holds' two
    assert list(rows[0])[-3:] == ["problem", "held", "available"]
    valid = rows[:-1]
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    assert {r["artifact_id"]: _without_rank(r) for r in valid} == {
        k: _without_rank(v) for k, v in before.items()}
    assert all(r["problem"] is None for r in valid)


def test_rank_tables_and_csv_show_unknown_terms(cli, db_url, case):
    problem, _ = case
    csv = cli("rank", "--format", "csv", "--db", db_url)
    assert csv.exit_code == 0, csv.stderr
    header, *lines = csv.stdout.splitlines()
    assert header.endswith(",remaining,problem,held,available")
    assert lines[-1].startswith(f"{len(lines)},{TARGET},")
    assert lines[-1].endswith(f",{problem},0,")  # nothing held; available: empty
    assert lines[-1].split(",")[-4] == ""  # remaining: empty
    table = cli("rank", "--db", db_url)
    assert table.exit_code == 0, table.stderr
    assert problem in table.stdout and TARGET in table.stdout


def test_budget_shows_why_there_is_no_budget(cli, db_url, case):
    problem, _ = case
    result = cli("budget", TARGET, "--format", "json", "--db", db_url)
    assert result.exit_code == 0, result.stderr
    detail = result.json()
    assert detail["problem"] == problem and detail["remaining"] is None
    assert detail["in_units"]["llm-tokens"]["remaining"] is None
    table = cli("budget", TARGET, "--db", db_url)
    assert table.exit_code == 0, table.stderr
    assert f"{TARGET} has no valid budget: {problem}" in table.stdout


def test_next_plan_and_snapshot_skip_the_invalid_artifact(cli, db_url, case):
    _, before = case
    with_budget = {k for k, v in before.items() if v["remaining"] > 0}
    queue = cli("next", "--limit", "1000", "--format", "json", "--db", db_url)
    assert queue.exit_code == 0, queue.stderr
    assert {r["artifact_id"] for r in queue.json()} == with_budget
    plan = cli("plan", "--pool", "1000", "--format", "json", "--db", db_url)
    assert plan.exit_code == 0, plan.stderr
    assert {r["artifact_id"] for r in plan.json()} == with_budget
    snapshot = cli("snapshot", "--format", "json", "--db", db_url)
    assert snapshot.exit_code == 0, snapshot.stderr
    assert snapshot.json()["recorded"] == len(before)
    claimed = cli("next", "--claim", "--agent", "a1", "--limit", "1000", "--format", "json",
                  "--db", db_url)
    assert claimed.exit_code == 0, claimed.stderr
    assert {r["artifact_id"] for r in claimed.json()} == with_budget


def test_spend_is_refused_unless_overdraft_is_allowed(cli, db_url, case, tmp_path):
    problem, _ = case
    refused = cli("spend", TARGET, "1", "--db", db_url)
    assert refused.exit_code == 3 and refused.stdout == ""
    assert refused.stderr == (f"alloc: {TARGET} has no valid budget: {problem}; "
                              "see alloc audit\n")
    batch = tmp_path / "spends.csv"
    batch.write_text(f"artifact_id,amount\n{TARGET},1\n")
    summary = cli("spend", "--file", batch, "--format", "json", "--db", db_url)
    assert summary.exit_code == 3 and summary.json()["refused"] == 1
    allowed = cli("spend", TARGET, "1", "--allow-overdraft", "--format", "json", "--db", db_url)
    assert allowed.exit_code == 0, allowed.stderr
    assert allowed.json()["tokens"] == 1
    log = cli("log", TARGET, "--format", "json", "--db", db_url).json()
    assert log[-1]["overdraft"] is True


def test_audit_names_the_invalid_data(cli, db_url, case):
    problem, _ = case
    result = cli("audit", "--format", "json", "--db", db_url)
    assert result.exit_code == 6, result.stderr
    checks = {c["name"]: c for c in result.json()["checks"]}
    rows = checks["amounts-valid"]["rows"]
    assert not checks["amounts-valid"]["ok"]
    assert {"artifact_id": TARGET, "problem": problem} in rows
    if "exceeds" not in problem:  # the row itself, with its value as text
        assert any(r.get("artifact_id") == TARGET and "value" in r for r in rows)
    broken = {name for name, c in checks.items() if not c["ok"]}
    assert broken == {"amounts-valid"}
    assert cli("audit", "--db", db_url).exit_code == 6


def test_api_lists_and_counts_the_invalid_artifact(db_url, case):
    problem, before = case
    allocator = Allocator.open(db_url)
    with TestClient(create_app(allocator)) as client:
        openapi = client.get("/openapi.json").json()

        def check(path, response):
            assert response.status_code == 200, response.text
            schema = openapi["paths"][path]["get"]["responses"]["200"]["content"][
                "application/json"]["schema"]
            jsonschema.validate(response.json(), {**schema, "components": openapi["components"]})
            return response.json()

        listed = check("/api/market/resource-budgets",
                       client.get("/api/market/resource-budgets", params={"limit": 1000}))
        assert listed[-1]["artifact_id"] == TARGET and listed[-1]["problem"] == problem
        one = check("/api/market/resource-budgets/{artifact_id}",
                    client.get(f"/api/market/resource-budgets/{TARGET}"))
        assert one["problem"] == problem and one["budget"] in (None, listed[-1]["budget"])
        pipeline = check("/api/market/pipeline", client.get("/api/market/pipeline"))
        hypotheses = next(t for t in pipeline["types"] if t["type"] == "hypothesis")
        assert hypotheses["invalid"] == 1 and pipeline["totals"]["invalid"] == 1
        assert pipeline["totals"]["artifacts"] == len(before) + 1
        expected = sum(r["demand"] for r in before.values() if r["type"] == "hypothesis")
        assert hypotheses["demand"] == pytest.approx(expected, abs=1e-6)
        assert client.get("/").status_code == 200
    allocator.engine.dispose()


def test_a_readers_report_page_embeds_valid_json(cli, db_url, case, tmp_path):
    page = tmp_path / "report.html"
    result = cli("report", "--html", page, "--db", db_url)
    assert result.exit_code == 0, result.stderr
    text = page.read_text()
    embedded = text.split("const EMBEDDED = ", 1)[1].split(";\n", 1)[0]
    assert json.loads(embedded)["pipeline"]["totals"]["invalid"] == 1


def test_spending_cannot_take_spent_beyond_the_limit(cli, db_url, data, tmp_path):
    spends = tmp_path / "spends.csv"
    spends.write_text("artifact_id,amount,allow_overdraft\n"
                      + f"{TARGET},1000000000,true\n" * 10)
    result = cli("spend", "--file", spends, "--format", "json", "--db", db_url)
    assert result.exit_code == 2
    summary = result.json()
    assert summary["recorded"] == 9 and summary["invalid"] == 1
    assert summary["failures"][0]["line"] == 11
    assert "would exceed the maximum 9000000000 tokens" in summary["failures"][0]["message"]
    row = cli("budget", TARGET, "--format", "json", "--db", db_url).json()
    assert row["spent"] == 9_000_000_000 and row["problem"] is None


@pytest.mark.parametrize("table,header,value", [
    (table, header, value)
    for table, header in (("positions", "artifact_id,agent_id,tokens\nhyp-bad,a9,{}\n"),
                          ("bounties", "artifact_id,tokens_offered\nhyp-bad,{}\n"),
                          ("markets", "artifact_id,price\nhyp-bad,{}\n"))
    for value in ("NaN", "-Infinity", "inf", "1e999", "abc", "99999999999", "1000000000.5")
], ids=lambda value: value if value.isalnum() or value[0] in "-0123456789" else None)
def test_load_refuses_values_that_are_not_finite_or_too_large(cli, db_url, data, tmp_path,
                                                                table, header, value):
    path = tmp_path / f"{table}.csv"
    path.write_text(header.format(value))
    before = rank(cli, db_url)
    result = cli("load", table, path, "--db", db_url)
    assert result.exit_code == 2 and result.stdout == ""
    assert "line 2:" in result.stderr and "nothing was loaded" in result.stderr
    assert rank(cli, db_url) == before


@pytest.mark.parametrize("table,header,line", [
    ("positions", "artifact_id,agent_id,tokens", "hyp-bad,whale,1000000000"),
    ("bounties", "artifact_id,tokens_offered", "hyp-bad,1000000000"),
], ids=["positions", "bounties"])
def test_load_refuses_a_file_that_takes_a_total_beyond_the_limit(cli, db_url, data, tmp_path,
                                                                 table, header, line):
    path = tmp_path / f"{table}.csv"
    path.write_text(header + "\n" + (line + "\n") * 10)
    before = rank(cli, db_url)
    result = cli("load", table, path, "--db", db_url)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("alloc: ") and "hyp-bad" in result.stderr
    assert "exceed the maximum 9000000000 tokens" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert rank(cli, db_url) == before
    path.write_text(header + "\n" + (line + "\n") * 8)
    assert cli("load", table, path, "--db", db_url).exit_code == 0


def test_an_artifact_already_beyond_the_limit_does_not_stop_a_load(cli, db_url, db_kind, data,
                                                                   tmp_path):
    """Another service took TARGET's bounty beyond the limit: a load for another artifact
    lands, and one that takes that artifact beyond the limit is refused, naming it."""
    execute(db_url, db_kind, "INSERT INTO token_bounties (artifact_id, tokens_offered, "
                             "tokens_paid, status) VALUES ('hyp-bad', 10000000000, 0, 'open')")
    other = sorted(data)[0]
    path = tmp_path / "bounties.csv"
    path.write_text(f"artifact_id,tokens_offered\n{other},5\n")
    result = cli("load", "bounties", path, "--db", db_url)
    assert result.exit_code == 0, result.stderr
    path.write_text("artifact_id,tokens_offered\n" + f"{other},1000000000\n" * 10)
    result = cli("load", "bounties", path, "--db", db_url)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (f"alloc: bounties rejected, nothing loaded: {other}'s bounty "
                             "would exceed the maximum 9000000000 tokens\n")


@pytest.mark.parametrize("ids_kept", [True, False], ids=["ids-kept", "too-many-to-keep"])
def test_positions_another_service_took_beyond_the_limit_do_not_stop_a_load(
        cli, db_url, db_kind, data, tmp_path, monkeypatch, ids_kept):
    """TARGET's positions, written by another service, are summed only when a load of a
    tenth of the artifacts or more sums every balance: that load still lands, whether or
    not it kept the ids of the artifacts it touched (past importer.MAX_TOUCHED it does not)."""
    if not ids_kept:
        monkeypatch.setattr(importer, "MAX_TOUCHED", 1)
    execute(db_url, db_kind, CASES["huge-total"][0][db_kind])
    many = sorted(data)[:len(data) // 5]
    path = tmp_path / "positions.csv"
    path.write_text("artifact_id,agent_id,tokens\n" + "".join(f"{a},a9,5\n" for a in many))
    result = cli("load", "positions", path, "--db", db_url)
    assert result.exit_code == 0, result.stderr
    # A pending artifact that the load itself takes beyond the limit still refuses it.
    victim = many[1]
    execute(db_url, db_kind, "INSERT INTO positions (artifact_id, agent_id, tokens, status) "
                             f"VALUES ('{victim}', 'whale', 8999900000, 'open')")
    path.write_text("artifact_id,agent_id,tokens\n" + "".join(
        f"{a},a9,{200000 if a == victim else 5}\n" for a in many))
    result = cli("load", "positions", path, "--db", db_url)
    assert result.exit_code == 2 and result.stderr == (
        f"alloc: positions rejected, nothing loaded: {victim}'s demand would exceed the "
        "maximum 9000000000 tokens\n")


def test_a_spend_whose_amount_is_not_finite_cannot_be_reversed(cli, db_url, db_kind, data):
    execute(db_url, db_kind, "INSERT INTO resource_allocations (id, artifact_id, tokens) "
                             f"VALUES (900001, 'hyp-bad', {BAD_AMOUNT[db_kind]})")
    result = cli("spend", "--reverse", "900001", "--db", db_url)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == ("alloc: spend 900001 has an amount that is not a finite number; "
                             "see alloc audit\n")
    assert len(cli("log", TARGET, "--format", "json", "--db", db_url).json()) == 1


@pytest.mark.parametrize("by", ["budget", "demand"])
def test_invalid_artifacts_sort_alike_on_both_databases(cli, db_url, db_kind, data, by):
    execute(db_url, db_kind,
            "INSERT INTO artifacts (id, type, title) VALUES ('hyp-bad2', 'hypothesis', 'y')",
            "INSERT INTO markets (artifact_id, price) VALUES ('hyp-bad2', 'NaN')",
            "INSERT INTO positions (artifact_id, agent_id, tokens, status) "
            "VALUES ('hyp-bad2', 'a1', 99, 'open')",
            "INSERT INTO positions (artifact_id, agent_id, tokens, status) "
            f"VALUES ('hyp-bad', 'a1', {BAD_AMOUNT[db_kind]}, 'open')")
    rows = rank(cli, db_url, "--by", by)
    # hyp-bad2 has a demand (99) but no price; hyp-bad has neither a demand nor a budget.
    expected = ["hyp-bad2", "hyp-bad"] if by == "demand" else ["hyp-bad", "hyp-bad2"]
    assert [r["artifact_id"] for r in rows[-2:]] == expected


def test_totals_at_the_limit_stay_exact(cli, db_url, data, tmp_path):
    path = tmp_path / "positions.csv"
    path.write_text("artifact_id,agent_id,tokens\n" + "hyp-bad,whale,999999997.999999\n" * 9
                    + "hyp-bad,whale,0.000009\n")
    assert cli("load", "positions", path, "--db", db_url).exit_code == 0
    row = json.loads(cli("budget", TARGET, "--format", "json", "--db", db_url).stdout,
                     parse_float=str, parse_int=str)
    assert row["problem"] is None
    assert row["demand"] == "8999999992"  # with the fixture's 10 tokens: exact


def test_pipeline_history_leaves_out_snapshots_that_are_not_finite(cli, db_url, db_kind, data):
    assert cli("snapshot", "--db", db_url).exit_code == 0
    allocator = Allocator.open(db_url)
    with TestClient(create_app(allocator)) as client:
        before = client.get("/api/market/pipeline").json()["history"]
        execute(db_url, db_kind, f"UPDATE budget_snapshots SET budget = {BAD_AMOUNT[db_kind]}, "
                                 f"remaining = {BAD_AMOUNT[db_kind]} WHERE artifact_id = 'hyp-bad'")
        response = client.get("/api/market/pipeline")
        assert response.status_code == 200
        (point,) = response.json()["history"]
        target = cli("budget", TARGET, "--format", "json", "--db", db_url).json()
        assert point["spent"] == pytest.approx(before[0]["spent"] - target["spent"], abs=1e-6)
        assert point["budget"] == pytest.approx(before[0]["budget"] - target["budget"], abs=1e-6)
    allocator.engine.dispose()
