"""What a value may be: the longest text each column takes, in characters, the one
check of text values, what counts as a number, and the bounds of whole numbers, counts
and ids.

Every way rows enter (load, spend, rates set, next --agent) applies the same limits, so
a row that loads can always be spent against, and every value fits an index entry on
both databases (PostgreSQL refuses index rows over about 2,700 bytes).
"""

from __future__ import annotations

import numbers

from scidex_alloc.errors import UnknownArtifact, UnknownId, UsageError

ARTIFACT_ID = 200
TYPE = 64
TITLE = 2000
AGENT_ID = 200
UNIT = 64
KIND = 64
NOTE = 2000
KEY = 200

# --limit, --top and the API's offset: far beyond any real table, yet a plain SQL integer.
MAX_COUNT = 1_000_000_000
# Row ids (spends, claims) and seeds are 64-bit integers: an id beyond them cannot exist.
MAX_ID = 2**63 - 1


def check_text(value: object, name: str, limit: int) -> str:
    """`value` if it is text that can be stored: a string of valid UTF-8 without NUL,
    at most `limit` characters; raises UsageError naming the field otherwise."""
    if not isinstance(value, str):
        raise UsageError(f"{name} must be text")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"{name} is not valid UTF-8") from None
    if "\x00" in value:
        raise UsageError(f"{name} contains a NUL character")
    if len(value) > limit:
        raise UsageError(f"{name} is longer than {limit} characters")
    return value


def is_number(value: object) -> bool:
    """Numbers (also a JSON line's, see reader.JsonNumber) and text that may spell one;
    booleans are not numbers."""
    return isinstance(value, (str, numbers.Number)) and not isinstance(value, bool)


def check_count(value: int | None, param: str) -> None:
    """A limit or top-N count, checked before any query runs or any row is printed."""
    if value is not None and not 1 <= value <= MAX_COUNT:
        raise UsageError(f"{{{param}}} must be from 1 to {MAX_COUNT}", param)


def check_offset(offset: int) -> None:
    if not 0 <= offset <= MAX_COUNT:
        raise UsageError(f"invalid {{offset}}: must be from 0 to {MAX_COUNT}", "offset")


def check_type(type_: str | None) -> None:
    """PostgreSQL text cannot hold NUL: such a filter is invalid, not a database failure."""
    if type_ is not None and "\x00" in type_:
        raise UsageError("invalid type: must not contain a NUL character")


def check_artifact_id(artifact_id: str) -> None:
    """An id with NUL cannot be stored, so it is unknown (PostgreSQL would refuse the query)."""
    if "\x00" in artifact_id:
        raise UnknownArtifact(f"unknown artifact {artifact_id!r}")


def check_row_id(row_id: int, what: str) -> None:
    """An id beyond 64 bits cannot exist (and no driver would take it)."""
    if not -MAX_ID - 1 <= row_id <= MAX_ID:
        raise UnknownId(f"no {what} with id {row_id}")
