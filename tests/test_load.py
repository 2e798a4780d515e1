"""`alloc load`: bad rows are reported by line and nothing of a failed file is written."""

import csv
import io
import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from scidex_alloc.allocator import Allocator
from scidex_alloc.loading import reader


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


def test_unknown_artifact_in_a_plain_file_is_named_by_line(db_url, cli, tmp_path):
    (tmp_path / "a.csv").write_text("id,type\na,hypothesis\n")
    cli("load", "artifacts", tmp_path / "a.csv", "--db", db_url)
    path = tmp_path / "p.csv"
    path.write_text("artifact_id,agent_id,tokens,status,created_at\n"
                    "a,x,1,open,2026-01-01 00:00:00\n"
                    "b,x,2,open,2026-01-01 00:00:00\n")
    result = cli("load", "positions", path, "--db", db_url)
    assert result.exit_code == 2 and "line 3: unknown artifact 'b'" in result.stderr
    assert "line 2:" not in result.stderr
    assert count_positions(db_url) == 0


def test_line_numbers_count_lines_inside_quoted_values(db_url, cli, tmp_path):
    path = tmp_path / "a.csv"
    path.write_text('id,type,title\na,hypothesis,"two\nlines"\nb,hypothesis,plain\n'
                    "c,,missing type\n")
    result = cli("load", "artifacts", path, "--db", db_url)
    assert result.exit_code == 2 and "line 5: type is required" in result.stderr


def count_positions(db_url) -> int:
    engine = Allocator.open(db_url).engine
    with engine.connect() as connection:
        total = connection.execute(text("SELECT COUNT(*) FROM positions")).scalar_one()
    engine.dispose()
    return total


# Values as a CSV file may write them: CSV lines the loader takes as written and lines it
# checks value by value must store exactly what the same values do from JSON Lines.
moments = st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 30),
                       timezones=st.sampled_from([None, timezone.utc,
                                                  timezone(timedelta(hours=-5, minutes=-30))]))
position_rows = st.lists(st.tuples(
    st.sampled_from(["a", "b c", "é"]),
    st.one_of(st.none(), st.sampled_from(["agent-1", " spaced", "q,uoted"])),
    st.decimals(min_value=0, max_value=10**9, places=6).map(
        lambda d: st.sampled_from([str(d), f"{d:f}", f"{d:.6f}", f"00{d:f}"])).flatmap(lambda s: s),
    st.sampled_from(["open", "closed", "settled"]),
    moments.flatmap(lambda m: st.sampled_from([
        m.isoformat(" ", "seconds"), m.isoformat(), m.isoformat("T", "seconds"),
        m.strftime("%Y-%m-%d %H:%M")])),
), min_size=1, max_size=30)


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=position_rows)
def test_csv_and_json_lines_store_the_same_rows(db_url, cli, tmp_path, rows):
    artifacts = tmp_path / "a.jsonl"
    artifacts.write_text("".join(json.dumps({"id": a, "type": "hypothesis"}) + "\n"
                                 for a in ("a", "b c", "é")))
    cli("load", "artifacts", artifacts, "--db", db_url)
    names = ("artifact_id", "agent_id", "tokens", "status", "created_at")
    as_csv = tmp_path / "p.csv"
    with as_csv.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        writer.writerows(["" if v is None else v for v in row] for row in rows)
    as_jsonl = tmp_path / "p.jsonl"
    as_jsonl.write_text("".join(json.dumps(dict(zip(names, row))) + "\n" for row in rows),
                        encoding="utf-8")
    stored = []
    for path in (as_csv, as_jsonl):
        result = cli("load", "positions", path, "--db", db_url)
        assert result.exit_code == 0, result.stderr
        stored.append(stored_positions(db_url))
    assert stored[0] == stored[1] and len(stored[0]) == len(rows)


def test_a_file_of_many_blocks_stores_what_json_lines_do(db_url, cli, tmp_path):
    """The reader takes lines in blocks of about reader.BLOCK characters, and matches a
    block at once when each of its lines is plain. Checked lines among plain ones, a quoted
    value whose lines fall in two blocks, an empty line, blocks of plain lines only and no
    final line end must store what JSON Lines store, and a bad value is named by its line."""
    cli("load", "artifacts", "-", "--format", "csv", "--db", db_url, input="id,type\na,h\n")
    names = ("artifact_id", "agent_id", "tokens", "status", "created_at")
    rows = [["a", f"agent-{i}", f"{i}.25", "open", "2026-01-02 03:04:05"] for i in range(6000)]
    rows[0][1] = "q,uoted"  # quoted: checked value by value
    rows[1][2] = "007"  # not plain: leading zeros
    rows[350][1] = "two\nlines"  # over two lines of one block
    rendered = [_csv_line(row) for row in rows]
    size, ends = 0, []
    for i, line in enumerate(rendered):  # where readlines(BLOCK) ends its blocks
        size += len(line)
        if size >= reader.BLOCK:
            ends.append(i)
            size = 0
    assert len(ends) >= 4 and ends[2] < 4999  # the third block is all plain lines
    rows[ends[0]][1] = "x" * 80 + "\nsecond line"  # longer than its line: still the end
    rendered[ends[0]] = _csv_line(rows[ends[0]])
    rendered.insert(ends[0] + 10, "\r\n")
    text_csv = ",".join(names) + "\r\n" + "".join(rendered).removesuffix("\r\n")
    # the header, the rows, the empty line and the second lines of two quoted values
    line = 1 + 5000 + 1 + 2
    bad = text_csv.replace("4999.25", "4999.2.5")
    result = cli("load", "positions", "-", "--format", "csv", "--db", db_url, input=bad)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == f"line {line}: tokens '4999.2.5' is not a number"
    stored = []
    for fmt, content in (("csv", text_csv), ("jsonl", "".join(
            json.dumps(dict(zip(names, row))) + "\n" for row in rows))):
        result = cli("load", "positions", "-", "--format", fmt, "--db", db_url, input=content)
        assert result.exit_code == 0, result.stderr
        stored.append(stored_positions(db_url))
    assert stored[0] == stored[1] and len(stored[0]) == len(rows)
    assert stored[0][ends[0]][1] == "x" * 80 + "\nsecond line"


def _csv_line(row) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(row)
    return out.getvalue()


def stored_positions(db_url) -> list[tuple]:
    """Every position as the database holds it (text, so 5 and 5.0 differ), then none."""
    engine = Allocator.open(db_url).engine
    with engine.begin() as connection:
        found = connection.execute(text(
            "SELECT artifact_id, agent_id, CAST(tokens AS TEXT), status, "
            "CAST(created_at AS TEXT) FROM positions ORDER BY id")).all()
        connection.execute(text("DELETE FROM positions"))
    engine.dispose()
    return [tuple(row) for row in found]


def test_a_plainly_wrong_file_stops_at_a_thousand_problems(db_url, cli, tmp_path):
    (tmp_path / "a.csv").write_text("id,type\na,hypothesis\n")
    cli("load", "artifacts", tmp_path / "a.csv", "--db", db_url)
    path = tmp_path / "p.csv"
    path.write_text("artifact_id,agent_id,tokens,status,created_at\n"
                    + "a,x,1,open,2026-01-01 00:00:00\n"
                    + "a,x,oops,open,2026-01-01 00:00:00\n"
                    + "nobody,x,1,open,2026-01-01 00:00:00\n" * 30_000)
    result = cli("load", "positions", path, "--db", db_url)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0] == "line 3: tokens 'oops' is not a number"
    assert lines[1] == "line 4: unknown artifact 'nobody'"
    assert lines[-1] == "positions: 1000 bad row(s) (980 not shown); nothing was loaded"
    assert count_positions(db_url) == 0
