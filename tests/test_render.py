"""Piped tables are written without Rich: they must be the bytes Rich would write."""

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scidex_alloc import render

# Mostly plain words and spaces, and now and then what Rich treats specially: markup,
# emoji codes, wide and control characters, words longer than the table.
PLAIN = ["a", "word", "Meta-analysis", " ", " ", "  ", "1,234.5", "-", "(y)", "0"]
SPECIAL = ["12:30:45", ":smile:", ":x:", "[b]", "[/b]", "[0, 1]", "[", "]", "\\[b]", "\\[0]", "\\",
           "é", "漢", "\t", "x" * 30]
TEXT = st.lists(st.sampled_from(PLAIN * 8 + SPECIAL), max_size=8).map("".join)

class _Piped(io.StringIO):
    encoding = "utf-8"

    def isatty(self):
        return False


def _draw(monkeypatch, plain: bool, *args, **kwargs) -> str:
    out = _Piped()
    monkeypatch.setattr("sys.stdout", out)
    if not plain:
        monkeypatch.setattr(render, "_plain_table", lambda *a: None)
    try:
        render.draw(*args, **kwargs)
    except Exception as error:  # Rich refuses some markup; the plain path must too
        return f"{type(error).__name__}: {error}"
    finally:
        monkeypatch.undo()
    return out.getvalue()


@settings(max_examples=500, deadline=None)
@given(
    title=st.one_of(st.none(), st.lists(TEXT, max_size=6).map(' '.join)),
    header=st.booleans(),
    justify=st.lists(st.sampled_from(["left", "right"]), min_size=1, max_size=4),
    cells=st.lists(st.lists(TEXT, min_size=4, max_size=4), min_size=1, max_size=3),
)
def test_plain_table_is_what_rich_draws(title, header, justify, cells):
    columns = [render.Col(f"col {i}", j) for i, j in enumerate(justify)]
    rows = [row[:len(columns)] for row in cells]
    with pytest.MonkeyPatch.context() as mp:
        expected = _draw(mp, False, columns, rows, title, show_header=header)
    with pytest.MonkeyPatch.context() as mp:
        assert _draw(mp, True, columns, rows, title, show_header=header) == expected


def test_no_emoji_is_named_by_one_or_two_digits():
    from rich._emoji_codes import EMOJI

    assert not [name for name in EMOJI if name.isdigit() and len(name) <= 2]


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
        stream = _Piped()
        stream.isatty = lambda tty=tty: tty
        assert render._styled(stream) is styled, (env, tty)


@pytest.mark.parametrize("size", [391, 392, 393, 420])
def test_tables_near_the_piped_width_match_rich(size):
    columns = [render.Col("a"), render.Col("b", "right", overflow="fold")]
    rows = [["x", "word " * (size // 5) + "w" * (size % 5)], ["y", "1"]]
    title = "t " * size
    with pytest.MonkeyPatch.context() as mp:
        expected = _draw(mp, False, columns, rows, title)
    with pytest.MonkeyPatch.context() as mp:
        assert _draw(mp, True, columns, rows, title) == expected
