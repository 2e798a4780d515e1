"""Moments and durations typed on the command line."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from scidex_alloc.errors import UsageError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+)\s*([smhdw])")
MAX_DURATION = timedelta(days=3650)
_MAX_DIGITS = len(str(int(MAX_DURATION.total_seconds())))


def iso_utc(text: str) -> datetime:
    """An ISO 8601 date or time as an aware UTC datetime; naive input is taken as UTC.
    Raises ValueError, also when the UTC instant falls outside the years 1 to 9999."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("outside the years 1 to 9999 in UTC") from None


def parse_moment(text: str, option: str) -> datetime:
    try:
        return iso_utc(text)
    except ValueError:
        raise UsageError(f"{option} {text[:40]!r} is not an ISO 8601 date or time") from None


def parse_duration(text: str, option: str) -> timedelta:
    """'90s', '30m', '2h', '7d', '1w' or combinations such as '1h30m'."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise UsageError(f"{option} {text[:40]!r} is not a duration such as 90s, 30m, 2h or 7d")
    numbers = [(n.lstrip("0") or "0", u) for n, u in parts]
    # More digits than the bound has seconds exceed it in any unit (and int() refuses 4,300).
    seconds = -1 if any(len(n) > _MAX_DIGITS for n, _ in numbers) else sum(
        int(n) * _UNITS[u] for n, u in numbers)
    if not 0 < seconds <= MAX_DURATION.total_seconds():
        raise UsageError(f"{option} must be more than 0 and at most {MAX_DURATION.days} days")
    return timedelta(seconds=seconds)


def bucket_start(moment: datetime, period: str) -> datetime:
    """The start of the hour, day or ISO week (Monday, UTC) that `moment` falls in."""
    moment = moment.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    if period == "hour":
        return moment
    day = moment.replace(hour=0)
    return day if period == "day" else day - timedelta(days=day.weekday())
