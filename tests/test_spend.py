"""The spend ledger through the real entry point: exactly once, never overspent."""

import json
from decimal import Decimal

import pytest

D = Decimal


@pytest.fixture
def funded(db_url, cli, tmp_path):
    """Two artifacts: a1 with budget 100 (demand 1000, price 0.5), a2 with budget 10."""
    (tmp_path / "a.csv").write_text("id,type\na1,hypothesis\na2,analysis\n")
    (tmp_path / "p.csv").write_text("artifact_id,tokens\na1,1000\na2,100\n")
    assert cli("load", "artifacts", tmp_path / "a.csv", "--db", db_url).exit_code == 0
    assert cli("load", "positions", tmp_path / "p.csv", "--db", db_url).exit_code == 0
    return db_url


def spend(cli, db, *args):
    return cli("spend", *map(str, args), "--format", "json", "--db", db)


def remaining(cli, db, artifact="a1"):
    return D(str(cli("budget", artifact, "-f", "json", "--db", db).json()["remaining"]))


def test_spend_records_and_reports(funded, cli):
    result = spend(cli, funded, "a1", "12.5", "--kind", "debate", "--agent", "bot",
                   "--note", "round 1")
    assert result.exit_code == 0, result.stderr
    record = result.json()
    assert list(record) == ["id", "artifact_id", "tokens", "unit", "units", "rate", "kind",
                            "agent", "replayed", "spent", "remaining", "hold_id", "available"]
    assert record["tokens"] == 12.5 and record["spent"] == 12.5 and record["remaining"] == 87.5
    assert record["kind"] == "debate" and record["agent"] == "bot" and not record["replayed"]
    assert remaining(cli, funded) == D("87.5")


def test_spend_in_another_unit_keeps_the_rate_of_its_day(funded, cli):
    record = spend(cli, funded, "a1", "5000", "--unit", "llm-tokens").json()
    assert (record["tokens"], record["unit"], record["units"], record["rate"]) == \
        (5, "llm-tokens", 5000, 1000)
    cli("rates", "set", "llm-tokens", "500", "--db", funded)
    log = cli("log", "a1", "-f", "json", "--db", funded).json()
    assert log[0]["rate"] == 1000 and log[0]["tokens"] == 5


def test_overspending_is_refused_with_exit_3_and_writes_nothing(funded, cli):
    result = spend(cli, funded, "a2", "10.000001")
    assert result.exit_code == 3 and "insufficient budget" in result.stderr
    assert cli("log", "-f", "json", "--db", funded).json() == []
    assert spend(cli, funded, "a2", "10").exit_code == 0
    assert remaining(cli, funded, "a2") == 0


def test_allow_overdraft_is_recorded_as_such(funded, cli):
    assert spend(cli, funded, "a2", "15", "--allow-overdraft").exit_code == 0
    log = cli("log", "-f", "json", "--db", funded).json()
    assert log[0]["overdraft"] is True
    assert remaining(cli, funded, "a2") == -5
    assert cli("audit", "--db", funded).exit_code == 0


def test_same_key_replays_and_different_payload_conflicts(funded, cli):
    first = spend(cli, funded, "a1", "3", "--key", "job-7").json()
    again = spend(cli, funded, "a1", "3", "--key", "job-7")
    assert again.exit_code == 0
    assert again.json()["replayed"] is True and again.json()["id"] == first["id"]
    assert remaining(cli, funded) == 97
    for args in (("a1", "4"), ("a2", "3"), ("a1", "3000", "--unit", "llm-tokens")):
        conflict = spend(cli, funded, *args, "--key", "job-7")
        assert conflict.exit_code == 5 and "job-7" in conflict.stderr
    assert len(cli("log", "-f", "json", "--db", funded).json()) == 1


def test_reverse_once_only(funded, cli):
    first = spend(cli, funded, "a1", "30").json()
    reversal = cli("spend", "--reverse", first["id"], "-f", "json", "--db", funded)
    assert reversal.exit_code == 0, reversal.stderr
    assert reversal.json()["tokens"] == -30 and reversal.json()["remaining"] == 100
    again = cli("spend", "--reverse", first["id"], "--db", funded)
    assert again.exit_code == 5 and "already reversed" in again.stderr
    of_reversal = cli("spend", "--reverse", reversal.json()["id"], "--db", funded)
    assert of_reversal.exit_code == 2
    assert cli("spend", "--reverse", "999999", "--db", funded).exit_code == 4
    log = cli("log", "a1", "-f", "json", "--db", funded).json()
    assert [e["reverses"] for e in log] == [None, first["id"]]
    assert cli("audit", "--db", funded).exit_code == 0


@pytest.mark.parametrize("amount", ["0", "-1", "NaN", "inf", "-inf", "1e400", "12abc", "",
                                    "0.0000001", "1e10"])
def test_bad_amounts_exit_2_and_write_nothing(funded, cli, amount):
    result = cli("spend", "a1", amount, "--db", funded)
    assert result.exit_code == 2
    assert result.stderr.startswith("alloc: ") and result.stderr.count("\n") == 1
    assert cli("log", "-f", "json", "--db", funded).json() == []


@pytest.mark.parametrize("args,code", [
    (("nope", "1"), 4),
    (("a1", "1", "--unit", "furlongs"), 2),
    (("a1", "1", "--key", "k" * 10_000), 2),
    (("", "1"), 2),
    (("a1", "1", "--agent", "bad\udcffbytes"), 2),
    (("a1",), 2),
    ((), 2),
    (("a1", "1", "--reverse", "1"), 2),
])
def test_bad_spends_exit_with_their_code(funded, cli, args, code):
    result = cli("spend", *args, "--db", funded)
    assert result.exit_code == code, result.stderr
    assert result.stderr.startswith("alloc: ") and result.stderr.count("\n") == 1
    assert cli("log", "-f", "json", "--db", funded).json() == []


def test_batch_file_applies_line_by_line(funded, cli, tmp_path):
    path = tmp_path / "spends.csv"
    path.write_text(
        "artifact_id,amount,unit,kind,key\n"
        "a1,10,,debate,b1\n"           # 2 recorded
        "a1,10,,debate,b1\n"           # 3 replayed
        "a2,50,,analysis,\n"           # 4 refused
        "a1,abc,,,\n"                  # 5 invalid
        "zz,1,,,\n"                    # 6 unknown
        "a1,1000,llm-tokens,,\n"       # 7 recorded (1 token)
        "a1,5,,,b1\n"                  # 8 conflict
    )
    result = cli("spend", "--file", path, "-f", "json", "--db", funded)
    summary = result.json()
    assert (summary["recorded"], summary["replayed"], summary["refused"], summary["invalid"]) == \
        (2, 1, 1, 3)
    assert [f["line"] for f in summary["failures"]] == [4, 5, 6, 8]
    assert result.exit_code == 3
    assert remaining(cli, funded) == 89


def test_batch_from_stdin_jsonl_and_text_summary(funded, cli):
    lines = "\n".join(json.dumps({"artifact_id": "a1", "amount": n}) for n in ("1.5", 2, 3.25))
    result = cli("spend", "--file", "-", "--file-format", "jsonl", "--db", funded, input=lines)
    assert result.exit_code == 0, result.stderr
    assert "recorded 3, replayed 0, refused 0, invalid 0" in result.stderr
    assert remaining(cli, funded) == D("93.25")


def test_atomic_batch_is_all_or_nothing(funded, cli, tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("artifact_id,amount\na1,10\na1,20\na2,11\n")
    result = cli("spend", "--file", path, "--atomic", "--db", funded)
    assert result.exit_code == 3 and "nothing was recorded" in result.stderr
    assert cli("log", "-f", "json", "--db", funded).json() == []
    path.write_text("artifact_id,amount\na1,10\na1,20\na2,10\n")
    assert cli("spend", "--file", path, "--atomic", "--db", funded).exit_code == 0
    assert len(cli("log", "-f", "json", "--db", funded).json()) == 3


def test_batch_never_overspends_within_one_chunk(funded, cli, tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("artifact_id,amount\n" + "a2,3\n" * 5)
    summary = cli("spend", "--file", path, "-f", "json", "--db", funded).json()
    assert summary["recorded"] == 3 and summary["refused"] == 2
    assert remaining(cli, funded, "a2") == 1


def test_malformed_batch_lines(funded, cli, tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"artifact_id": "a1", "amount": 1}\n{broken\n[1]\n'
                     b'{"artifact_id": "a1", "amount": 1, "colour": "red"}\n\xff\xfe\n')
    summary = cli("spend", "--file", path, "-f", "json", "--db", funded)
    data = summary.json()
    assert data["recorded"] == 1 and data["invalid"] == 4
    assert [f["line"] for f in data["failures"]] == [2, 3, 4, 5]
    assert summary.exit_code == 2


def test_log_filters(funded, cli):
    spend(cli, funded, "a1", "1")
    spend(cli, funded, "a2", "2")
    assert [e["artifact_id"] for e in cli("log", "-f", "json", "--db", funded).json()] == \
        ["a1", "a2"]
    assert len(cli("log", "a2", "-f", "json", "--db", funded).json()) == 1
    assert cli("log", "--since", "2999-01-01", "-f", "json", "--db", funded).json() == []
    assert len(cli("log", "--since", "2000-01-01", "-f", "json", "--db", funded).json()) == 2
    assert cli("log", "--since", "yesterday", "--db", funded).exit_code == 2
    assert cli("log", "zz", "--db", funded).exit_code == 4
    assert cli("log", "--limit", "1", "-f", "csv", "--db", funded).stdout.count("\n") == 2
