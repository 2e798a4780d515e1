"""The core commands through the real entry point, on SQLite and PostgreSQL."""

import json
from decimal import Decimal
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
D = Decimal

# Expected terms of the fixture data, computed by hand from the formula.
#   h1: demand 150.5, bounty (20-5)+30 = 45 (the 2020 bounty expired), price 0.8
#   h2: demand 0.300001, the claimed bounty does not count, price 0.5
#   h3: no market: price 0.5;  h4: price 1.7 clamps to 1;  g1: -0.2 clamps to 0
#   h5/h6: prices 0.25/0.75 give equal budgets: tie broken by id
#   a1: settled position excluded, NULL price: 0.5, bounty 40-10
EXPECTED = {
    "h1": (D("150.5"), D("45"), D("0.8")),
    "h2": (D("0.300001"), D("0"), D("0.5")),
    "h3": (D("300"), D("0"), D("0.5")),
    "h4": (D("200"), D("0"), D("1")),
    "h5": (D("400"), D("0"), D("0.25")),
    "h6": (D("400"), D("0"), D("0.75")),
    "a1": (D("250"), D("30"), D("0.5")),
    "g1": (D("10"), D("0"), D("0")),
}


def by_hand(demand, bounty, price):
    uncertainty = 1 - abs(price - D("0.5")) * 2
    multiplier = D("0.5") + D("0.5") * uncertainty
    budget = ((D("0.1") * demand + bounty) * multiplier).quantize(D("0.000001"))
    return uncertainty, multiplier, budget


@pytest.fixture
def loaded(db_url, cli):
    for table, name in (("artifacts", "artifacts.csv"), ("markets", "markets.jsonl"),
                        ("positions", "positions.csv"), ("bounties", "bounties.csv")):
        result = cli("load", table, DATA / name, "--db", db_url)
        assert result.exit_code == 0, result.stderr
    return db_url


def decimals(text):
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def test_rank_json_matches_the_formula_for_every_artifact(loaded, cli):
    result = cli("rank", "--format", "json", "--db", loaded)
    assert result.exit_code == 0, result.stderr
    rows = decimals(result.stdout)
    assert {r["artifact_id"] for r in rows} == set(EXPECTED)
    for row in rows:
        assert list(row) == ["rank", "artifact_id", "type", "title", "demand", "bounty", "price",
                             "uncertainty", "multiplier", "budget", "spent", "remaining",
                             "problem", "held", "available"]
        demand, bounty, price = EXPECTED[row["artifact_id"]]
        uncertainty, multiplier, budget = by_hand(demand, bounty, price)
        assert (row["demand"], row["bounty"], row["price"]) == (demand, bounty, price)
        assert (row["uncertainty"], row["multiplier"]) == (uncertainty, multiplier)
        assert row["budget"] == budget
        assert row["spent"] == 0 and row["remaining"] == budget
    budgets = [(-r["budget"], r["artifact_id"]) for r in rows]
    assert budgets == sorted(budgets)
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    ids = [r["artifact_id"] for r in rows]
    assert ids.index("h5") + 1 == ids.index("h6"), "equal budgets break ties by id"


def test_rank_filters_limits_and_sorts(loaded, cli):
    rows = cli("rank", "--type", "hypothesis", "--limit", "3", "-f", "json", "--db", loaded).json()
    assert len(rows) == 3 and {r["type"] for r in rows} == {"hypothesis"}
    by_demand = cli("rank", "--by", "demand", "-f", "json", "--db", loaded).json()
    assert [r["artifact_id"] for r in by_demand][:3] == ["h5", "h6", "h3"]


def test_rank_csv_has_the_json_columns(loaded, cli):
    lines = cli("rank", "--format", "csv", "--db", loaded).stdout.splitlines()
    assert lines[0] == ("rank,artifact_id,type,title,demand,bounty,price,uncertainty,"
                        "multiplier,budget,spent,remaining,problem,held,available")
    assert len(lines) == 1 + len(EXPECTED)
    assert any('"Comma, and ""quotes"""' in line for line in lines)


def test_rank_table_is_a_rich_table(loaded, cli):
    result = cli("rank", "--type", "hypothesis", "--db", loaded)
    assert result.exit_code == 0
    assert "artifact_id" in result.stdout and "h1" in result.stdout and "┃" in result.stdout


def test_type_full_of_sql_is_only_data(loaded, cli):
    result = cli("rank", "--type", "x'; DROP TABLE artifacts; --\"", "-f", "json", "--db", loaded)
    assert result.exit_code == 0 and result.json() == []
    assert len(cli("rank", "-f", "json", "--db", loaded).json()) == len(EXPECTED)


def test_budget_of_one_artifact_with_units(loaded, cli):
    row = decimals(cli("budget", "h1", "--format", "json", "--db", loaded).stdout)
    _, _, budget = by_hand(*EXPECTED["h1"])
    assert row["budget"] == budget and row["artifact_id"] == "h1"
    assert row["in_units"]["llm-tokens"]["budget"] == budget * 1000
    table = cli("budget", "h1", "--db", loaded)
    assert table.exit_code == 0 and "multiplier" in table.stdout and "llm-tokens" in table.stdout


def test_budget_of_unknown_artifact_exits_4(loaded, cli):
    result = cli("budget", "nope", "--db", loaded)
    assert result.exit_code == 4
    assert result.stderr.strip() == "alloc: unknown artifact 'nope'"


def test_rates_convert_and_set(db_url, cli):
    rates = cli("rates", "--format", "json", "--db", db_url).json()
    assert [(r["unit"], r["units_per_token"]) for r in rates] == [("tokens", 1), ("llm-tokens", 1000)]
    converted = cli("convert", "2.5", "--format", "json", "--db", db_url).json()
    assert converted == {"amount": 2.5, "from": "tokens", "to": "llm-tokens", "rate": 1000,
                         "result": 2500}
    assert cli("rates", "set", "llm-tokens", "2000", "--db", db_url).exit_code == 0
    back = cli("convert", "5000", "--from", "llm-tokens", "--to", "tokens", "-f", "json",
               "--db", db_url).json()
    assert back["result"] == 2.5 and back["rate"] == 0.0005
    assert cli("rates", "set", "gpu-seconds", "0.5", "--db", db_url).exit_code == 0
    units = {r["unit"] for r in cli("rates", "-f", "json", "--db", db_url).json()}
    assert units == {"tokens", "llm-tokens", "gpu-seconds"}


@pytest.mark.parametrize("amount", ["abc", "12abc", "NaN", "inf", "-1", "1e400", "", "0.0000001"])
def test_bad_amounts_exit_2_with_one_line(db_url, cli, amount):
    result = cli("convert", amount, "--db", db_url)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("alloc: ")
    assert "Traceback" not in result.stderr


def test_unknown_unit_and_bad_rate(db_url, cli):
    assert cli("convert", "1", "--to", "furlongs", "--db", db_url).exit_code == 2
    assert cli("rates", "set", "llm-tokens", "-3", "--db", db_url).exit_code == 2
    assert cli("rates", "set", "tokens", "3", "--db", db_url).exit_code == 2


@pytest.mark.parametrize("args", [["rank", "--limit", "0"], ["rank", "--by", "price"],
                                  ["rank", "--limit", "x"], ["rank", "--format", "xml"],
                                  ["nosuchcommand"]])
def test_usage_errors_are_one_line_exit_2(db_url, cli, args):
    result = cli(*args, "--db", db_url)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("alloc: ")


def test_every_command_is_in_its_area():
    """`alloc` combines the areas' apps; built for one command, it holds just that one."""
    import typer

    from scidex_alloc.cli import alloc

    listed = set(typer.main.get_command(alloc()).commands)
    assert {"rank", "rates", "spend", "next", "history", "snapshots", "db", "serve"} <= listed
    for name in listed:
        assert set(typer.main.get_command(alloc(name)).commands) == {name}
