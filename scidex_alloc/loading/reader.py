"""Reading and validating CSV or JSON Lines files for `alloc load`.

Each row becomes a tuple in the file's column order, or a problem with its line number.
A CSV line whose every value is plainly valid (a plain number, an ISO timestamp in the
form the database stores) is matched by one regular expression and kept as written;
any other line gets the full per-value checks. Both give the same stored rows. Lines are
read in blocks, and a block whose every line is plain is matched in one pass, without
Python's work per line.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import numbers
import re
from operator import methodcaller
from pathlib import Path
from typing import IO, Callable, Iterator

from scidex_alloc.errors import UsageError
from scidex_alloc.loading.columns import RowError, Spec, columns_for, validate
from scidex_alloc.loading.results import RowProblem

BLOCK = 1 << 16  # characters of whole lines read at once
_GROUPS = methodcaller("groups")


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


def records(stream: IO[bytes], fmt: str) -> Iterator[tuple[int, dict | str]]:
    """(line number, record) pairs: a record is a dict of raw values or a problem message.

    Undecodable bytes become lone surrogates, so a bad byte spoils only its own line.
    """
    for batch, _ in batches(stream, fmt):
        yield from batch


def batches(stream: IO[bytes], fmt: str,
            plain_for: Callable[[list[str]], str | None] | None = None,
            ) -> Iterator[tuple[list[tuple[int, dict | tuple | str]], bool]]:
    """Lists of the (line number, record) pairs of `records`, where a CSV line whose values
    the regular expression `plain_for(header)` matches is the tuple of its values as
    written; each list with whether all its records are such tuples."""
    lines = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="\n")
    try:
        if fmt == "csv":
            yield from _csv_batches(lines, plain_for)
        else:
            records = _jsonl_records(lines)
            while batch := list(itertools.islice(records, 1000)):
                yield batch, False
    finally:
        if not stream.closed:  # the caller owns the stream: leave it open
            lines.detach()


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _csv_batches(lines: io.TextIOWrapper, plain_for):
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
    pattern = plain_for(header) if plain_for is not None else None
    plain = plain_lines = None
    if pattern is not None:
        plain = re.compile(pattern + r"\r?\n?")
        # The same, on every line of a block at once (a plain value never spans lines).
        plain_lines = re.compile(rf"^{pattern}\r?$", re.M)
    line = reader.line_num
    while texts := lines.readlines(BLOCK):
        if plain_lines is not None:
            found = list(map(_GROUPS, plain_lines.finditer("".join(texts))))
            if len(found) == len(texts):  # one match a line: every line is plain
                yield list(zip(range(line + 1, line + 1 + len(texts)), found)), True
                line += len(texts)
                continue
        batch: list[tuple[int, dict | tuple | str]] = []
        rest = iter(texts)
        for text in rest:
            line += 1
            match = plain.fullmatch(text) if plain is not None else None
            if match is not None:
                batch.append((line, match.groups()))
                continue
            # Any other record is the csv module's to read: it may run over several lines.
            reader = csv.reader(itertools.chain((text,), rest, lines), strict=True)
            try:
                values = next(reader)
            except csv.Error as error:
                batch.append((line, str(error)))
                yield batch, False
                return
            start, line = line, line + reader.line_num - 1
            if not values:
                continue
            if not _is_utf8("".join(values)):
                batch.append((start, "is not valid UTF-8"))
            elif len(values) != len(header):
                batch.append((start, f"has {len(values)} fields, the header has {len(header)}"))
            else:
                batch.append((start, dict(zip(header, values))))
        yield batch, False


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
    """A file's rows checked for one table. `batches()` gives lists of (line, values in
    `columns` order) for the rows that pass; the others go to `problems`, and reading
    stops once it holds `max_problems`. `columns` is known once the first row is read."""

    def __init__(self, spec: Spec, stream: IO[bytes], fmt: str, problems: list[RowProblem],
                 max_problems: int):
        self.spec = spec
        self.columns: tuple[str, ...] | None = None
        self.problems = problems
        self.max_problems = max_problems
        self._batches = batches(stream, fmt, self._plain_values)

    def batches(self) -> Iterator[list[tuple[int, tuple]]]:
        for batch, plain in self._batches:
            if plain:
                yield batch
                continue
            good = []
            for line, record in batch:
                if isinstance(record, tuple):
                    good.append((line, record))
                    continue
                if isinstance(record, str):
                    problem = record
                else:
                    if self.columns is None:
                        self.columns = columns_for(self.spec, list(record))
                    try:
                        good.append((line, validate(self.spec, self.columns, record)))
                        continue
                    except RowError as error:
                        problem = str(error)
                self.problems.append(RowProblem(line, problem))
                if len(self.problems) >= self.max_problems:
                    yield good
                    return
            yield good

    def _plain_values(self, header: list[str]) -> str | None:
        """The regular expression of lines that need no per-value check, when the header
        names every column once and the table has no check across columns."""
        self.columns = columns_for(self.spec, header)
        if self.spec.row_check is not None or tuple(header) != self.columns:
            return None
        fields = self.spec.fields
        return ",".join(fields[name].plain for name in self.columns)
