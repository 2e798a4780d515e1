"""Tables: piped, they are written without Rich, as the box Rich draws on a terminal,
with every text exactly as given."""

import io
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from rich.cells import cell_len

from scidex_alloc import rendering


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
