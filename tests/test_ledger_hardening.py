"""The ledger at its edges: amounts it can hold exactly in every unit, overdrafts judged
at the moment of spending, and amounts written only in ASCII."""

import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from scidex_alloc.allocator import Allocator
from scidex_alloc.storage.schema import exchange_rates, resource_allocations, token_bounties, utcnow

D = Decimal


@pytest.fixture
def funded(db_url, cli, tmp_path):
    """a1 with budget 100 (demand 1000, no market), a2 with budget 10, b1 with no budget."""
    (tmp_path / "a.csv").write_text("id,type\na1,hypothesis\na2,analysis\nb1,gap\n")
    (tmp_path / "p.csv").write_text("artifact_id,tokens\na1,1000\na2,100\n")
    assert cli("load", "artifacts", tmp_path / "a.csv", "--db", db_url).exit_code == 0
    assert cli("load", "positions", tmp_path / "p.csv", "--db", db_url).exit_code == 0
    return db_url


def write(db, table, **values):
    """Insert one row directly, as another exchange service would."""
    engine = Allocator.open(db).engine
    with engine.begin() as connection:
        connection.execute(table.insert().values(**values))
    engine.dispose()


def log_rows(db) -> list:
    engine = Allocator.open(db).engine
    with engine.connect() as connection:
        rows = connection.execute(select(resource_allocations).order_by(resource_allocations.c.id)
                                  ).all()
    engine.dispose()
    return rows


def spend(cli, db, *args):
    return cli("spend", *map(str, args), "--format", "json", "--db", db)


def refused(result, code=2):
    """The documented failure: its exit code, one line on stderr, nothing on stdout."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == "" and result.stderr.startswith("alloc: ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    return result.stderr


# -- 1. amounts in any unit are at most MAX_AMOUNT, so what is stored is stored exactly


def test_an_amount_too_large_in_another_unit_is_refused_on_every_retry(funded, cli):
    args = ("a1", "12345678901.234567", "--unit", "llm-tokens", "--allow-overdraft", "--key", "k")
    for _ in range(2):
        assert "larger than the maximum 1000000000" in refused(spend(cli, funded, *args))
    assert log_rows(funded) == []


@pytest.mark.parametrize("amount", ["1000000000", "999999999.999999", "123456789.123457"])
def test_the_largest_amounts_in_another_unit_replay_exactly(funded, cli, amount):
    args = ("a1", amount, "--unit", "llm-tokens", "--allow-overdraft", "--key", "k")
    first = spend(cli, funded, *args)
    assert first.exit_code == 0, first.stderr
    again = spend(cli, funded, *args)
    assert again.exit_code == 0, again.stderr
    assert again.json()["replayed"] is True and again.json()["id"] == first.json()["id"]
    assert D(str(again.json()["units"])) == D(amount)
    assert len(log_rows(funded)) == 1


def test_a_retry_replays_an_entry_another_service_wrote_without_units(funded, cli):
    write(funded, resource_allocations, artifact_id="a1", tokens=D("2.5"), idempotency_key="ext-1")
    again = spend(cli, funded, "a1", "2.5", "--key", "ext-1")
    assert again.exit_code == 0, again.stderr
    assert again.json()["replayed"] is True and again.json()["units"] == 2.5
    assert "different spend" in refused(spend(cli, funded, "a1", "2.6", "--key", "ext-1"), 5)


# -- 2. the cap holds after conversion, for spends, spend files, convert and rates


def test_a_spend_converting_beyond_the_cap_is_refused_and_writes_nothing(funded, cli):
    assert cli("rates", "set", "tiny", "0.000001", "--db", funded).exit_code == 0
    message = refused(spend(cli, funded, "a1", "1000000000", "--unit", "tiny",
                            "--allow-overdraft"))
    assert "more than the maximum 1000000000 tokens" in message
    assert spend(cli, funded, "a1", "1000", "--unit", "tiny", "--allow-overdraft").exit_code == 0
    assert [r.tokens for r in log_rows(funded)] == [D(1_000_000_000)]


def test_a_spend_file_line_converting_beyond_the_cap_is_invalid(funded, cli, tmp_path):
    assert cli("rates", "set", "tiny", "0.000001", "--db", funded).exit_code == 0
    path = tmp_path / "s.csv"
    path.write_text("artifact_id,amount,unit,allow_overdraft\n"
                    "a1,1,,false\n"
                    "a1,1000000000,tiny,true\n"
                    "a1,10000000000,llm-tokens,true\n")
    result = cli("spend", "--file", path, "-f", "json", "--db", funded)
    assert result.exit_code == 2
    summary = result.json()
    assert (summary["recorded"], summary["invalid"]) == (1, 2)
    assert [f["line"] for f in summary["failures"]] == [3, 4]
    assert "more than the maximum" in summary["failures"][0]["message"]
    assert [r.tokens for r in log_rows(funded)] == [D(1)]


def test_convert_never_gives_a_token_amount_beyond_the_cap_or_below_a_micro_token(funded, cli):
    assert cli("rates", "set", "tiny", "0.000001", "--db", funded).exit_code == 0
    assert "more than the maximum" in refused(cli("convert", "1000000000", "--from", "tiny",
                                                  "--to", "llm-tokens", "--db", funded))
    assert "less than 0.000001 token" in refused(cli("convert", "0.000001", "--from", "llm-tokens",
                                                     "--to", "tokens", "--db", funded))
    assert "larger than the maximum" in refused(cli("convert", "1000000001", "--from",
                                                    "llm-tokens", "--db", funded))
    ok = cli("convert", "1000", "--from", "tiny", "--to", "tokens", "-f", "json", "--db", funded)
    assert ok.exit_code == 0 and ok.json()["result"] == 1_000_000_000


@pytest.mark.parametrize("rate", ["0.0000001", "1000000000.5", "0", "-1"])
def test_rates_outside_their_range_are_refused(funded, cli, rate):
    refused(cli("rates", "set", "gpu-seconds", rate, "--db", funded))
    assert cli("rates", "set", "gpu-seconds", "1000000000", "--db", funded).exit_code == 0
    assert cli("rates", "set", "gpu-seconds", "0.000001", "--db", funded).exit_code == 0


def test_a_rate_of_zero_written_by_another_service_is_refused_not_divided(funded, cli):
    write(funded, exchange_rates, unit="broken", units_per_token=0)
    assert "rate" in refused(spend(cli, funded, "a1", "1", "--unit", "broken"))
    assert "rate" in refused(cli("convert", "1", "--from", "broken", "--db", funded))
    assert log_rows(funded) == []


# -- 8. an overdraft is judged at the moment of spending


def test_a_budget_that_shrinks_after_spending_is_no_overdraft(funded, cli, tmp_path):
    expires = utcnow() + timedelta(seconds=3)
    write(funded, token_bounties, artifact_id="b1", tokens_offered=D(100), expires_at=expires)
    assert spend(cli, funded, "b1", "40").exit_code == 0
    path = tmp_path / "s.csv"
    path.write_text("artifact_id,amount\nb1,20\nb1,30\n")
    assert cli("spend", "--file", path, "--db", funded).exit_code == 0
    first = log_rows(funded)[0].id
    assert cli("spend", "--reverse", first, "--db", funded).exit_code == 0
    assert spend(cli, funded, "b1", "40").exit_code == 0  # spent 90 of 100
    assert [r.budget_at_spend for r in log_rows(funded)] == [D(100)] * 5
    time.sleep(max(0.0, (expires - utcnow()).total_seconds()) + 0.5)
    assert cli("budget", "b1", "-f", "json", "--db", funded).json()["remaining"] == -90
    result = cli("audit", "-f", "json", "--db", funded)
    assert result.exit_code == 0, result.stdout


def test_a_silent_overdraft_by_another_service_is_still_caught(funded, cli):
    assert spend(cli, funded, "a2", "4").exit_code == 0
    write(funded, resource_allocations, artifact_id="a2", tokens=D(50))  # budget 10, no flag
    result = cli("audit", "-f", "json", "--db", funded)
    assert result.exit_code == 6
    check = next(c for c in result.json()["checks"] if c["name"] == "no-silent-overdraft")
    entry = log_rows(funded)[1].id
    assert check["rows"] == [{"id": entry, "artifact_id": "a2", "budget_at_spend": None,
                              "budget": 10, "spent": 54}]


def test_an_entry_beyond_the_budget_recorded_with_it_is_caught(funded, cli):
    write(funded, resource_allocations, artifact_id="a1", tokens=D(30), budget_at_spend=D(20))
    result = cli("audit", "-f", "json", "--db", funded)
    assert result.exit_code == 6
    check = next(c for c in result.json()["checks"] if c["name"] == "no-silent-overdraft")
    assert check["rows"] == [{"id": log_rows(funded)[0].id, "artifact_id": "a1",
                              "budget_at_spend": 20, "budget": 20, "spent": 30}]


def test_upgrading_keeps_earlier_entries_judged_against_todays_budget(db_kind, empty_db_url, cli):
    from alembic import command
    from alembic.config import Config

    if db_kind == "sqlite":
        Path(empty_db_url).touch()
    engine = Allocator.open(empty_db_url).engine
    with engine.begin() as connection:
        config = Config()
        config.set_main_option("script_location", "scidex_alloc.storage:migrations")
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
        connection.exec_driver_sql("INSERT INTO artifacts (id, type) VALUES ('old', 'gap')")
        connection.exec_driver_sql(
            "INSERT INTO resource_allocations (artifact_id, tokens) VALUES ('old', 5)")
    engine.dispose()
    assert "up to date" not in cli("db", "current", "--db", empty_db_url).stdout
    assert cli("db", "upgrade", "--db", empty_db_url).exit_code == 0
    assert [r.budget_at_spend for r in log_rows(empty_db_url)] == [None]
    result = cli("audit", "-f", "json", "--db", empty_db_url)
    assert result.exit_code == 6
    check = next(c for c in result.json()["checks"] if c["name"] == "no-silent-overdraft")
    assert [(r["artifact_id"], r["budget_at_spend"], r["spent"]) for r in check["rows"]] == \
        [("old", None, 5)]


def test_flagged_overdrafts_and_their_corrections_pass_the_audit(funded, cli):
    assert spend(cli, funded, "a2", "15", "--allow-overdraft").exit_code == 0
    assert spend(cli, funded, "a1", "5").exit_code == 0
    write(funded, resource_allocations, artifact_id="a1", tokens=D(500))  # silent, foreign
    assert cli("audit", "--db", funded).exit_code == 6
    foreign = log_rows(funded)[-1].id
    assert cli("spend", "--reverse", foreign, "--db", funded).exit_code == 0
    assert cli("audit", "--db", funded).exit_code == 0


# -- amounts are ASCII numbers only


@pytest.mark.parametrize("amount", ["1_000", "\u0661\u0662", "\uff11\uff12", "1__0", "1.2.3",
                                    "e5", "1e", "0x10", "1 000"])
def test_amounts_are_ascii_numbers_only(funded, cli, tmp_path, amount):
    assert "is not a number" in refused(spend(cli, funded, "a1", amount))
    assert "is not a number" in refused(cli("convert", amount, "--db", funded))
    assert "is not a number" in refused(cli("rates", "set", "gpu", amount, "--db", funded))
    for option in ("--pool", "--cap", "--min"):
        pool = () if option == "--pool" else ("--pool", "10")
        refused(cli("plan", *pool, option, amount, "--db", funded))
    path = tmp_path / "s.jsonl"
    path.write_text(f'{{"artifact_id": "a1", "amount": "{amount}"}}\n', encoding="utf-8")
    batch = cli("spend", "--file", path, "-f", "json", "--db", funded)
    assert batch.exit_code == 2 and batch.json()["invalid"] == 1
    positions = tmp_path / "p.csv"
    positions.write_text(f'artifact_id,tokens\na1,"{amount}"\n', encoding="utf-8")
    assert cli("load", "positions", positions, "--db", funded).exit_code == 2
    assert log_rows(funded) == []


@pytest.mark.parametrize("amount,tokens", [("1e3", 1000), ("2.5E-2", D("0.025")), ("+7", 7),
                                           (" 12.50 ", D("12.5")), (".5", D("0.5")), ("5.", 5)])
def test_ascii_numbers_in_every_form_are_accepted(funded, cli, amount, tokens):
    result = spend(cli, funded, "a1", amount, "--allow-overdraft")
    assert result.exit_code == 0, result.stderr
    assert D(str(result.json()["tokens"])) == tokens


def test_a_negative_amount_keeps_its_own_message(funded, cli):
    assert "positive, not '-5'" in refused(cli("convert", "--db", funded, "--", "-5"))
