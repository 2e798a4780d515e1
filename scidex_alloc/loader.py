"""Reading and validating CSV or JSON Lines files for `alloc load`.

Each row becomes a tuple in the table's column order, or a problem with its line number.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Callable, Iterator

from scidex_alloc.errors import UsageError
from scidex_alloc.formula import exact, parse_amount
from scidex_alloc.schema import BOUNTY_STATUSES, POSITION_STATUSES
from scidex_alloc.timeparse import iso_utc


class RowError(ValueError):
    """One bad value in one row."""


def _text(required: bool) -> Callable:
    def check(value, column):
        if value is None or (isinstance(value, str) and value.strip() == ""):
            if required:
                raise RowError(f"{column} is required")
            return None
        if not isinstance(value, str):
            value = str(value)
        if "\x00" in value:
            raise RowError(f"{column} contains a NUL character")
        return value

    return check


def _amount(default: Decimal | None) -> Callable:
    def check(value, column):
        if value is None or value == "":
            if default is None:
                raise RowError(f"{column} is required")
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise RowError(f"{column} must be a number")
        try:
            return parse_amount(str(value), column, allow_zero=True)
        except UsageError as error:
            raise RowError(str(error)) from None

    return check


def _price(value, column):
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RowError(f"{column} must be a number")
    try:
        price = Decimal(str(value).strip())
    except InvalidOperation:
        raise RowError(f"{column} {str(value)[:40]!r} is not a number") from None
    if not price.is_finite() or abs(price) > 1_000_000:
        raise RowError(f"{column} must be a finite number")
    return exact(price)


def _choice(options: tuple[str, ...]) -> Callable:
    def check(value, column):
        if value is None or value == "":
            return options[0]
        if value not in options:
            raise RowError(f"{column} must be one of {', '.join(options)}, not {str(value)[:40]!r}")
        return value

    return check


def _timestamp(default_now: bool) -> Callable:
    def check(value, column):
        if value is None or value == "":
            return datetime.now(timezone.utc) if default_now else None
        if not isinstance(value, str):
            raise RowError(f"{column} must be an ISO 8601 timestamp")
        try:
            return iso_utc(value)
        except ValueError:
            raise RowError(f"{column} {value[:40]!r} is not an ISO 8601 timestamp") from None

    return check


def _integer(value, column):
    if value is None or value == "":
        raise RowError(f"{column} is required once the file has an id column")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise RowError(f"{column} must be a whole number") from None
    if isinstance(value, bool) or not 0 < number < 2**63:
        raise RowError(f"{column} must be a positive whole number")
    return number


def _paid_within_offer(row: dict) -> None:
    if row["tokens_paid"] > row["tokens_offered"]:
        raise RowError("tokens_paid is larger than tokens_offered")


@dataclass(frozen=True)
class Spec:
    """How one loadable table's rows are checked."""

    table: str
    checks: dict[str, Callable]
    references_artifacts: bool = True
    unique: str | None = None
    serial_id: bool = False
    row_check: Callable[[dict], None] | None = None


SPECS = {
    "artifacts": Spec(
        "artifacts",
        {"id": _text(True), "type": _text(True), "title": _text(False),
         "created_at": _timestamp(True)},
        references_artifacts=False,
        unique="id",
    ),
    "markets": Spec(
        "markets",
        {"artifact_id": _text(True), "price": _price, "updated_at": _timestamp(True)},
        unique="artifact_id",
    ),
    "positions": Spec(
        "positions",
        {"id": _integer, "artifact_id": _text(True), "agent_id": _text(False),
         "tokens": _amount(None), "status": _choice(POSITION_STATUSES),
         "created_at": _timestamp(True)},
        serial_id=True,
    ),
    "bounties": Spec(
        "token_bounties",
        {"id": _integer, "artifact_id": _text(True), "tokens_offered": _amount(None),
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


def records(stream: IO[bytes], fmt: str) -> Iterator[tuple[int, dict | str]]:
    """(line number, record) pairs; a record that cannot be read is a message instead.

    Lines are decoded one at a time, so a bad byte spoils only its own line.
    """
    lines = (raw.decode("utf-8", "surrogateescape") for raw in stream)
    if fmt == "csv":
        yield from _csv_records(lines)
    else:
        yield from _jsonl_records(lines)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _csv_records(lines: Iterator[str]) -> Iterator[tuple[int, dict | str]]:
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
    line = reader.line_num
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield line + 1, str(error)
            return
        start, line = line + 1, reader.line_num
        if not values:
            continue
        if not _is_utf8("".join(values)):
            yield start, "is not valid UTF-8"
        elif len(values) != len(header):
            yield start, f"has {len(values)} fields, the header has {len(header)}"
        else:
            yield start, dict(zip(header, values))


def _jsonl_records(lines: Iterator[str]) -> Iterator[tuple[int, dict | str]]:
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        if not _is_utf8(raw):
            yield number, "is not valid UTF-8"
            continue
        try:
            record = json.loads(raw, parse_float=str, parse_int=str)
        except ValueError as error:
            yield number, f"is not valid JSON ({error.msg})"
            continue
        if not isinstance(record, dict):
            yield number, "is not a JSON object"
            continue
        yield number, record


def columns_for(spec: Spec, first: dict) -> tuple[str, ...]:
    """The columns to insert: every known one, with id only when the file gives ids."""
    unknown = [name for name in first if name not in spec.checks]
    if unknown:
        raise UsageError(
            f"unknown column {unknown[0]!r} for {spec.table}; expected: {', '.join(spec.checks)}"
        )
    return tuple(name for name in spec.checks if name != "id" or "id" in first)


def validate(spec: Spec, columns: tuple[str, ...], record: dict) -> tuple:
    checks = spec.checks
    if not record.keys() <= checks.keys():
        unknown = next(name for name in record if name not in checks)
        raise RowError(f"unknown column {unknown!r}")
    values = tuple(checks[name](record.get(name), name) for name in columns)
    if spec.row_check is not None:
        spec.row_check(dict(zip(columns, values)))
    return values
