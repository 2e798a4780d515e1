"""Reading and validating CSV or JSON Lines files for `alloc load`.

Each row becomes a tuple in the file's column order, or a problem with its line number.
A CSV line whose every value is plainly valid (a plain number, an ISO timestamp in the
form the database stores) is matched by one regular expression and kept as written;
any other line gets the full per-value checks. Both give the same stored rows.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import numbers
import re
from pathlib import Path
from typing import IO, Callable, Iterator

from scidex_alloc.errors import UsageError
from scidex_alloc.loading.columns import RowError, Spec, columns_for, validate
from scidex_alloc.loading.results import RowProblem


class JsonNumber:
    """A number from a JSON line as written: exact, usable wherever a number is, and
    never taken for text (an id of 7 or a date of 20260101 is a mistake, not a string)."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __str__(self) -> str:
        return self.text


numbers.Number.register(JsonNumber)


def detect_format(path: str, given: str | None) -> str:
    if given is not None:
        return given
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if path == "-":
        raise UsageError("reading from stdin needs --format csv or --format jsonl")
    raise UsageError(f"cannot tell the format of {path!r} from its extension: use --format csv|jsonl")


def records(stream: IO[bytes], fmt: str,
            plain_for: Callable[[list[str]], re.Pattern | None] | None = None,
            ) -> Iterator[tuple[int, dict | tuple | str]]:
    """(line number, record) pairs: a record is a dict of raw values or a problem message,
    or, for a CSV line that the pattern `plain_for(header)` matches, its values as written.

    Undecodable bytes become lone surrogates, so a bad byte spoils only its own line.
    """
    lines = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="\n")
    try:
        if fmt == "csv":
            yield from _csv_records(lines, plain_for)
        else:
            yield from _jsonl_records(lines)
    finally:
        if not stream.closed:  # the caller owns the stream: leave it open
            lines.detach()


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _csv_records(lines: Iterator[str], plain_for) -> Iterator[tuple[int, dict | tuple | str]]:
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise UsageError(f"line 1: unreadable header ({error})") from None
    if not header:
        raise UsageError("the file is empty: a CSV file needs a header row")
    if not _is_utf8("".join(header)):
        raise UsageError("line 1: the header is not valid UTF-8")
    header = [name.strip() for name in header]
    twice = _repeated(header)
    if twice is not None:
        raise UsageError(f"line 1: the header names column {twice!r} twice")
    plain = plain_for(header) if plain_for is not None else None
    line = reader.line_num
    for text in lines:
        line += 1
        match = plain.fullmatch(text) if plain is not None else None
        if match is not None:
            yield line, match.groups()
            continue
        # Any other record is the csv module's to read: it may run over several lines.
        reader = csv.reader(itertools.chain((text,), lines), strict=True)
        try:
            values = next(reader)
        except csv.Error as error:
            yield line, str(error)
            return
        start, line = line, line + reader.line_num - 1
        if not values:
            continue
        if not _is_utf8("".join(values)):
            yield start, "is not valid UTF-8"
        elif len(values) != len(header):
            yield start, f"has {len(values)} fields, the header has {len(header)}"
        else:
            yield start, dict(zip(header, values))


def _repeated(names: list[str]) -> str | None:
    """The first name that appears twice, if any."""
    seen: set[str] = set()
    return next((name for name in names if name in seen or seen.add(name)), None)


class _RepeatedKey(ValueError):
    pass


def _object(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object, refused when a key repeats (json would keep the last value)."""
    record = dict(pairs)
    if len(record) != len(pairs):
        raise _RepeatedKey(_repeated([key for key, _ in pairs]))
    return record


# One decoder for every line: json.loads with options builds a new one per call.
_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_float=JsonNumber,
                            parse_int=JsonNumber)


def _jsonl_records(lines: Iterator[str]) -> Iterator[tuple[int, dict | str]]:
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        if not _is_utf8(raw):
            yield number, "is not valid UTF-8"
            continue
        try:
            record = _DECODER.decode(raw)
        except _RepeatedKey as error:
            yield number, f"has the key {error.args[0]!r} twice"
            continue
        except ValueError as error:
            yield number, f"is not valid JSON ({error.msg})"
            continue
        except RecursionError:
            yield number, "is not valid JSON (nested too deeply)"
            continue
        if not isinstance(record, dict):
            yield number, "is not a JSON object"
            continue
        yield number, record


class Rows:
    """A file's rows checked for one table. Iterating gives (line, values in `columns`
    order) for the rows that pass; the others go to `problems`, and reading stops once
    it holds `max_problems`. `columns` is known once the first row is read."""

    def __init__(self, spec: Spec, stream: IO[bytes], fmt: str, problems: list[RowProblem],
                 max_problems: int):
        self.spec = spec
        self.columns: tuple[str, ...] | None = None
        self.problems = problems
        self.max_problems = max_problems
        self._records = records(stream, fmt, self._plain_line)

    def __iter__(self) -> Iterator[tuple[int, tuple]]:
        for line, record in self._records:
            if isinstance(record, tuple):
                yield line, record
                continue
            if isinstance(record, str):
                problem = record
            else:
                if self.columns is None:
                    self.columns = columns_for(self.spec, list(record))
                try:
                    values = validate(self.spec, self.columns, record)
                except RowError as error:
                    problem = str(error)
                else:
                    yield line, values
                    continue
            self.problems.append(RowProblem(line, problem))
            if len(self.problems) >= self.max_problems:
                return

    def _plain_line(self, header: list[str]) -> re.Pattern | None:
        """Lines that need no per-value check, when the header names every column once
        and the table has no check across columns."""
        self.columns = columns_for(self.spec, header)
        if self.spec.row_check is not None or tuple(header) != self.columns:
            return None
        fields = self.spec.fields
        return re.compile(",".join(fields[name].plain for name in self.columns) + r"\r?\n?")
