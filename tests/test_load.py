"""`alloc load`: bad rows are reported by line and nothing of a failed file is written."""

import pytest


def count(cli, db_url):
    return len(cli("rank", "-f", "json", "--db", db_url).json())


def test_artifacts_from_stdin_jsonl(db_url, cli):
    lines = '{"id": "x1", "type": "hypothesis"}\n\n{"id": "x2", "type": "analysis", "title": "t"}\n'
    result = cli("load", "artifacts", "-", "--format", "jsonl", "--db", db_url, input=lines)
    assert result.exit_code == 0, result.stderr
    assert "loaded 2 artifacts rows" in result.stderr
    assert count(cli, db_url) == 2


def test_stdin_needs_a_format(db_url, cli):
    result = cli("load", "artifacts", "-", "--db", db_url, input="id,type\n")
    assert result.exit_code == 2 and "--format" in result.stderr


def test_bad_rows_are_listed_and_nothing_is_written(db_url, cli, tmp_path):
    good = tmp_path / "a.csv"
    good.write_text("id,type\na,hypothesis\n")
    assert cli("load", "artifacts", good, "--db", db_url).exit_code == 0
    bad = tmp_path / "p.csv"
    bad.write_text(
        "artifact_id,tokens,status\n"
        "a,10,open\n"          # line 2 fine
        "a,12abc,open\n"       # line 3
        "missing,5,open\n"     # line 4
        "a,-1,open\n"          # line 5
        "a,5,pending\n"        # line 6
        "a,5\n"                # line 7
        "a,NaN,open\n"         # line 8
    )
    result = cli("load", "positions", bad, "--db", db_url)
    assert result.exit_code == 2
    for line in (3, 4, 5, 6, 7, 8):
        assert f"line {line}:" in result.stderr
    assert "line 2:" not in result.stderr and "nothing was loaded" in result.stderr
    rows = cli("rank", "-f", "json", "--db", db_url).json()
    assert rows[0]["demand"] == 0


def test_duplicate_artifacts_in_file_and_database(db_url, cli, tmp_path):
    first = tmp_path / "a.csv"
    first.write_text("id,type\na,hypothesis\n")
    assert cli("load", "artifacts", first, "--db", db_url).exit_code == 0
    again = tmp_path / "b.csv"
    again.write_text("id,type\nb,hypothesis\na,analysis\nb,analysis\n")
    result = cli("load", "artifacts", again, "--db", db_url)
    assert result.exit_code == 2
    assert "line 3: duplicate id 'a'" in result.stderr and "line 4: duplicate id 'b'" in result.stderr
    assert count(cli, db_url) == 1


@pytest.mark.parametrize("content,expected", [
    (b"id,type\nok,hypothesis\n\xff\xfe,bad\n", "UTF-8"),
    (b'id,type\n"unterminated,hypothesis\n', "line 2"),
    (b"id,colour\nx,red\n", "unknown column 'colour'"),
    (b"", "empty"),
])
def test_malformed_files(db_url, cli, tmp_path, content, expected):
    path = tmp_path / "f.csv"
    path.write_bytes(content)
    result = cli("load", "artifacts", path, "--db", db_url)
    assert result.exit_code == 2 and expected in result.stderr
    assert "Traceback" not in result.stderr
    assert count(cli, db_url) == 0


def test_malformed_json_lines(db_url, cli, tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text('{"id": "a", "type": "h"}\n{not json\n[1, 2]\n{"id": "b"}\n')
    result = cli("load", "artifacts", path, "--db", db_url)
    assert result.exit_code == 2
    assert "line 2:" in result.stderr and "line 3:" in result.stderr and "line 4:" in result.stderr
    assert count(cli, db_url) == 0


def test_missing_file_and_unknown_table(db_url, cli, tmp_path):
    assert cli("load", "artifacts", tmp_path / "nope.csv", "--db", db_url).exit_code == 2
    assert cli("load", "planets", tmp_path / "nope.csv", "--db", db_url).exit_code == 2


def test_bounty_paid_beyond_offered_is_rejected(db_url, cli, tmp_path):
    (tmp_path / "a.csv").write_text("id,type\na,hypothesis\n")
    cli("load", "artifacts", tmp_path / "a.csv", "--db", db_url)
    (tmp_path / "b.csv").write_text("artifact_id,tokens_offered,tokens_paid\na,10,11\n")
    result = cli("load", "bounties", tmp_path / "b.csv", "--db", db_url)
    assert result.exit_code == 2 and "line 2: tokens_paid" in result.stderr


def test_explicit_ids_keep_the_sequence_going(db_url, cli, tmp_path):
    (tmp_path / "a.csv").write_text("id,type\na,hypothesis\n")
    cli("load", "artifacts", tmp_path / "a.csv", "--db", db_url)
    (tmp_path / "p1.csv").write_text("id,artifact_id,tokens\n7,a,1\n9,a,2\n")
    assert cli("load", "positions", tmp_path / "p1.csv", "--db", db_url).exit_code == 0
    (tmp_path / "p2.csv").write_text("artifact_id,tokens\na,4\n")
    result = cli("load", "positions", tmp_path / "p2.csv", "--db", db_url)
    assert result.exit_code == 0, result.stderr
    assert cli("rank", "-f", "json", "--db", db_url).json()[0]["demand"] == 7
