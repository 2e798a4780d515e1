"""What each loadable table's columns may hold: a `Field` per column with its checks,
and the pattern a plainly valid CSV value matches, for the fast path of reader.py."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Callable

from scidex_alloc import limits
from scidex_alloc.errors import UsageError
from scidex_alloc.formula import MAX_AMOUNT, MICRO, exact, parse_amount
from scidex_alloc.storage.bulk import stored
from scidex_alloc.storage.schema import BOUNTY_STATUSES, POSITION_STATUSES
from scidex_alloc.timeparse import iso_utc


class RowError(ValueError):
    """One bad value in one row."""


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
    """A record's values in `columns` order, checked, as the database stores them."""
    fields = spec.fields
    if not record.keys() <= fields.keys():
        unknown = next(name for name in record if name not in fields)
        raise RowError(f"unknown column {unknown!r}")
    values = tuple(fields[name].check(record.get(name), name) for name in columns)
    if spec.row_check is not None:
        spec.row_check(dict(zip(columns, values)))
    return tuple(map(stored, values))  # as a plain line's values are: as stored
