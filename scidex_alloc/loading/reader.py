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
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Callable, Iterator

from scidex_alloc import limits
from scidex_alloc.errors import UsageError
from scidex_alloc.formula import MAX_AMOUNT, MICRO, exact, parse_amount
from scidex_alloc.loading.results import RowProblem
from scidex_alloc.storage.schema import BOUNTY_STATUSES, POSITION_STATUSES
from scidex_alloc.timeparse import iso_utc


class RowError(ValueError):
    """One bad value in one row."""


class JsonNumber:
    """A number from a JSON line as written: exact, usable wherever a number is, and
    never taken for text (an id of 7 or a date of 20260101 is a mistake, not a string)."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __str__(self) -> str:
        return self.text


numbers.Number.register(JsonNumber)


@dataclass(frozen=True)
class Field:
    """How one column's values are checked.

    `check` takes any value. `plain` is a regular expression with one group that matches
    only raw CSV text which `check` accepts and which the database stores exactly as
    `check`'s result (an empty optional value matches nothing and gives None).
    """

    check: Callable[[object, str], object]
    plain: str


def _optional(pattern: str, required: bool) -> str:
    return f"({pattern})" if required else f"({pattern})?"


# Raw CSV text without quotes, separators, line ends, NUL or undecodable bytes.
_CHAR = r'[^,"\r\n\x00\udc80-\udcff]'
_DECIMALS = -MICRO.as_tuple().exponent
MAX_PRICE = Decimal(1_000_000)


def _plain_number(limit: Decimal) -> str:
    """Unsigned numbers below `limit` with at most the ledger's decimals, no leading zeros."""
    digits = len(str(int(limit))) - 1
    return rf"(?:0|[1-9][0-9]{{0,{digits - 1}}})(?:\.[0-9]{{1,{_DECIMALS}}})?"


# A valid calendar day (29 February takes the full check) and time, as stored: no zone.
_DAY = ("[1-9][0-9]{3}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
        "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))")
_TIME = "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"


def _text(required: bool, limit: int) -> Field:
    def check(value, column):
        if value is None or (isinstance(value, str) and value.strip() == ""):
            if required:
                raise RowError(f"{column} is required")
            return None
        try:
            return limits.check_text(value, column, limit)
        except UsageError as error:
            raise RowError(str(error)) from None

    return Field(check, _optional(rf"(?!\s){_CHAR}{{1,{limit}}}", required))


def _amount(default: Decimal | None) -> Field:
    def check(value, column):
        if value is None or value == "":
            if default is None:
                raise RowError(f"{column} is required")
            return default
        if not limits.is_number(value):
            raise RowError(f"{column} must be a number")
        try:
            return parse_amount(str(value), column, allow_zero=True)
        except UsageError as error:
            raise RowError(str(error)) from None

    return Field(check, f"({_plain_number(MAX_AMOUNT)})")


def _check_price(value, column):
    if value is None or value == "":
        return None
    if not limits.is_number(value):
        raise RowError(f"{column} must be a number")
    try:
        price = Decimal(str(value).strip())
    except InvalidOperation:
        raise RowError(f"{column} {str(value)[:40]!r} is not a number") from None
    if not price.is_finite() or abs(price) > MAX_PRICE:
        raise RowError(f"{column} must be a finite number")
    return exact(price)


_price = Field(_check_price, f"({_plain_number(MAX_PRICE)})?")


def _choice(options: tuple[str, ...]) -> Field:
    def check(value, column):
        if value is None or value == "":
            return options[0]
        if not isinstance(value, str):
            raise RowError(f"{column} must be text")
        if value not in options:
            raise RowError(f"{column} must be one of {', '.join(options)}, not {str(value)[:40]!r}")
        return value

    return Field(check, "(" + "|".join(map(re.escape, options)) + ")")


def _timestamp(default_now: bool) -> Field:
    def check(value, column):
        if value is None or value == "":
            return datetime.now(timezone.utc) if default_now else None
        if not isinstance(value, str):
            raise RowError(f"{column} must be an ISO 8601 timestamp")
        try:
            return iso_utc(value)
        except ValueError:
            raise RowError(f"{column} {value[:40]!r} is not an ISO 8601 timestamp") from None

    return Field(check, _optional(f"{_DAY} {_TIME}", required=default_now))


def _check_integer(value, column):
    if value is None or value == "":
        raise RowError(f"{column} is required once the file has an id column")
    try:
        number = int(str(value))
    except ValueError:
        raise RowError(f"{column} must be a whole number") from None
    if not 0 < number < 2**63:
        raise RowError(f"{column} must be a positive whole number")
    return number


_integer = Field(_check_integer, "([1-9][0-9]{0,17})")  # below 2**63


def _paid_within_offer(row: dict) -> None:
    if row["tokens_paid"] > row["tokens_offered"]:
        raise RowError("tokens_paid is larger than tokens_offered")


@dataclass(frozen=True)
class Spec:
    """How one loadable table's rows are checked."""

    table: str
    fields: dict[str, Field]
    references_artifacts: bool = True
    unique: str | None = None
    serial_id: bool = False
    row_check: Callable[[dict], None] | None = None


SPECS = {
    "artifacts": Spec(
        "artifacts",
        {"id": _text(True, limits.ARTIFACT_ID), "type": _text(True, limits.TYPE),
         "title": _text(False, limits.TITLE), "created_at": _timestamp(True)},
        references_artifacts=False,
        unique="id",
    ),
    "markets": Spec(
        "markets",
        {"artifact_id": _text(True, limits.ARTIFACT_ID), "price": _price,
         "updated_at": _timestamp(True)},
        unique="artifact_id",
    ),
    "positions": Spec(
        "positions",
        {"id": _integer, "artifact_id": _text(True, limits.ARTIFACT_ID),
         "agent_id": _text(False, limits.AGENT_ID),
         "tokens": _amount(None), "status": _choice(POSITION_STATUSES),
         "created_at": _timestamp(True)},
        serial_id=True,
    ),
    "bounties": Spec(
        "token_bounties",
        {"id": _integer, "artifact_id": _text(True, limits.ARTIFACT_ID),
         "tokens_offered": _amount(None),
         "tokens_paid": _amount(Decimal(0)), "status": _choice(BOUNTY_STATUSES),
         "expires_at": _timestamp(False), "created_at": _timestamp(True)},
        serial_id=True,
        row_check=_paid_within_offer,
    ),
}


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


def columns_for(spec: Spec, names: list[str]) -> tuple[str, ...]:
    """The columns to insert: the file's in its order, then the table's others but id."""
    unknown = [name for name in names if name not in spec.fields]
    if unknown:
        raise UsageError(
            f"unknown column {unknown[0]!r} for {spec.table}; expected: {', '.join(spec.fields)}"
        )
    given = tuple(names)
    return given + tuple(name for name in spec.fields if name not in given and name != "id")


def validate(spec: Spec, columns: tuple[str, ...], record: dict) -> tuple:
    fields = spec.fields
    if not record.keys() <= fields.keys():
        unknown = next(name for name in record if name not in fields)
        raise RowError(f"unknown column {unknown!r}")
    values = tuple(fields[name].check(record.get(name), name) for name in columns)
    if spec.row_check is not None:
        spec.row_check(dict(zip(columns, values)))
    return values
