"""Shared output: piped, tables are written without Rich, as the box Rich draws on a
terminal, with every text exactly as given; and the history chart, drawn from the same parts."""

import io
import re
import sys
from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from rich.cells import cell_len

from scidex_alloc import rendering
from scidex_alloc.history import views as history_views
from scidex_alloc.history.results import HistoryPoint


class _Stream(io.StringIO):
    encoding = "utf-8"

    def __init__(self, tty: bool = False):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def _draw(monkeypatch, tty: bool, *args, **kwargs) -> str:
    out = _Stream(tty)
    monkeypatch.setattr("sys.stdout", out)
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TTY_COMPATIBLE", "1" if tty else "0")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "400")
    rendering.draw(*args, **kwargs)
    return out.getvalue()


STYLE = re.compile("\x1b\\[[0-9;]*m")  # bold and dim: a terminal's only difference
# Words and spaces that no terminal wraps, and what Rich would otherwise read specially.
PLAIN = ["a", "word", "Meta-analysis", " ", "1,234.5", "-", "(y)", "0", "12:30:45", ":smile:",
         "[b]", "[/b]", "\\[", "é", "漢字"]
TEXT = st.lists(st.sampled_from(PLAIN), max_size=6).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    title=st.one_of(st.none(), st.just("A title"), st.just("")),
    header=st.booleans(),
    justify=st.lists(st.sampled_from(["left", "right"]), min_size=1, max_size=4),
    cells=st.lists(st.lists(TEXT, min_size=4, max_size=4), min_size=1, max_size=3),
)
def test_piped_table_is_the_box_rich_draws_on_a_terminal(title, header, justify, cells):
    columns = [rendering.Col(f"col {i}", j) for i, j in enumerate(justify)]
    rows = [row[:len(columns)] for row in cells]
    with pytest.MonkeyPatch.context() as mp:
        on_terminal = STYLE.sub("", _draw(mp, True, columns, rows, title, show_header=header))
    box_width = cell_len(on_terminal.splitlines()[-1])
    assume(title is None or len(title) <= box_width)  # Rich wraps a wider title
    with pytest.MonkeyPatch.context() as mp:
        assert _draw(mp, False, columns, rows, title, show_header=header) == on_terminal


def test_piped_cells_are_never_markup_nor_emoji_and_stay_aligned(monkeypatch):
    rows = [["[b]bold?[/b]", ":smile:"], ["漢字", "tab\there"]]
    out = _draw(monkeypatch, False, [rendering.Col("a"), rendering.Col("b")], rows, "x " * 60)
    lines = out.splitlines()
    assert lines[0] == ("x " * 60).rstrip() + " "  # a long title is not wrapped
    assert "[b]bold?[/b]" in out and ":smile:" in out and "tab here" in out
    assert len({cell_len(line) for line in lines[1:]}) == 1


def test_plain_table_is_used_only_when_piped(monkeypatch):
    for env, tty, styled in (({}, False, False), ({}, True, True),
                             ({"FORCE_COLOR": "1"}, False, True),
                             ({"FORCE_COLOR": ""}, True, False),
                             ({"TTY_COMPATIBLE": "0", "FORCE_COLOR": "1"}, True, False),
                             ({"TTY_COMPATIBLE": "1"}, False, True)):
        for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert rendering._styled(_Stream(tty)) is styled, (env, tty)


def _point(day: int, budget: str, remaining: str):
    moment = datetime(2026, 1, day)
    return HistoryPoint(moment, moment, Decimal(10), Decimal(0), Decimal("0.5"), Decimal(budget),
                        Decimal(budget) - Decimal(remaining), Decimal(remaining))


def test_history_chart_shows_an_artifact_id_as_given(monkeypatch):
    """Ids are data: brackets and colons are neither markup nor emoji codes."""
    for artifact_id in (":smile: [b]x", "a[/b]"):
        out = _Stream()
        monkeypatch.setattr("sys.stdout", out)
        history_views.history(artifact_id, [_point(1, "4", "4"), _point(2, "8", "2")], "table")
        lines = out.getvalue().splitlines()
        assert lines[0] == f"{artifact_id}: 2 snapshots, 2026-01-01 00:00 to 2026-01-02 00:00 UTC"
        assert lines[1:4] == ["budget     ▃█  8", "remaining  ▃▁  2",
                              "           scale 2 to 8 tokens"]


def test_sparkline_keeps_the_last_value_when_resampled_and_is_flat_without_a_span():
    values = [Decimal(v) for v in range(100)]
    line = history_views.sparkline(values, Decimal(0), Decimal(99), 10)
    assert len(line) == 10 and line[0] == "▁" and line[-1] == "█"
    assert history_views.sparkline([Decimal(3)] * 4, Decimal(3), Decimal(3), 10) == "▁▁▁▁"


def test_progress_and_spinner_show_nothing_off_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr("sys.stderr", _Stream(tty=False))
    with rendering.progress(io.StringIO("a,b\n"), "rows.csv") as advance:
        assert advance is None
    with rendering.spinner("working"):
        pass
    assert sys.stderr.getvalue() == ""


json_data = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.decimals(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


def _exact(value):
    """What json_value's text must read back as: numbers exact, tuples as lists."""
    if isinstance(value, (Decimal, int)) and not isinstance(value, bool):
        return Decimal(value)
    if isinstance(value, list):
        return [_exact(v) for v in value]
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    return value


@given(json_data)
def test_json_value_is_json_that_reads_back_exactly(value):
    import json

    text = rendering.json_value(value)
    assert text.isascii()
    assert _exact(json.loads(text, parse_float=Decimal, parse_int=Decimal)) == _exact(value)


def test_json_value_writes_datetimes_as_iso_text():
    moment = datetime(2026, 11, 26, 23, 0, 5)
    assert rendering.json_value({"at": moment}) == '{"at": "2026-11-26T23:00:05"}'
