"""What a value may be: the longest text each column takes, in characters, the one
check of text values, what counts as a number, and the bounds of whole numbers.

Every way rows enter (load, spend, rates set, next --agent) applies the same limits, so
a row that loads can always be spent against, and every value fits an index entry on
both databases (PostgreSQL refuses index rows over about 2,700 bytes).
"""

from __future__ import annotations

import numbers

from scidex_alloc.errors import UsageError

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
