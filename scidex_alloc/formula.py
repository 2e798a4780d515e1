"""The budget formula: pure functions over Decimals, no I/O.

    uncertainty = 1 - |price - 0.5| * 2
    multiplier  = floor + (1 - floor) * uncertainty        (floor 0.5 by default)
    budget      = (share * demand + bounty) * multiplier   (share 0.1 by default)
    remaining   = budget - spent
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import NamedTuple

from scidex_alloc.errors import UsageError

# The ledger's precision: amounts (and prices) are exact to 1e-6, a micro-token.
DECIMALS = 6
MICRO = Decimal(1).scaleb(-DECIMALS)
ZERO = Decimal(0)
ONE = Decimal(1)
HALF = Decimal("0.5")
# Largest single amount accepted, in any unit and in tokens after conversion: SQLite keeps
# values exact to 1e-6 below 2**53 millionths.
MAX_AMOUNT = Decimal(1_000_000_000)
# Largest absolute total (demand, bounty, spent) of one artifact with a valid budget: below
# 2**53 micro-tokens SQLite's floating-point sum of whole micro-tokens is exact.
MAX_TOTAL = Decimal(9_000_000_000)
# What an amount may look like: ASCII digits, at most one point, an optional exponent.
# Decimal() alone would also take 1_000 and digits of other scripts.
AMOUNT_PATTERN = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def plain(value: Decimal) -> str:
    """An exact decimal as people write it: 12.500000 -> 12.5, never 1E+1. (Exports call
    this for every term of every row: str() is the fast way to the digits, and the only
    one when there is no exponent.)"""
    text = str(value)
    if "E" in text:
        text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def exact(value: Decimal) -> Decimal:
    """Round to the ledger's precision, 1e-6 token, half away from zero (as PostgreSQL's round)."""
    return value.quantize(MICRO, rounding=ROUND_HALF_UP)


def to_micro(value) -> int:
    """An amount as a whole number of millionths, however the driver returned it (Decimal,
    float or int), so two amounts compare exactly."""
    return int(exact(Decimal(value)).scaleb(DECIMALS))


@dataclass(frozen=True)
class Params:
    """Formula parameters; the defaults are the exchange's."""

    research_share: Decimal = Decimal("0.1")
    default_price: Decimal = HALF
    multiplier_floor: Decimal = HALF

    @classmethod
    def from_env(cls, environ=os.environ) -> "Params":
        """Overrides from SCIDEX_RESEARCH_SHARE, SCIDEX_DEFAULT_PRICE, SCIDEX_MULTIPLIER_FLOOR."""
        values = {}
        for field, var in (
            ("research_share", "SCIDEX_RESEARCH_SHARE"),
            ("default_price", "SCIDEX_DEFAULT_PRICE"),
            ("multiplier_floor", "SCIDEX_MULTIPLIER_FLOOR"),
        ):
            raw = environ.get(var)
            if raw is None:
                continue
            try:
                value = Decimal(raw)
            except InvalidOperation:
                value = Decimal(-1)
            if not value.is_finite() or not 0 <= value <= 1:
                raise UsageError(f"{var} must be a number from 0 to 1")
            values[field] = exact(value)
        return cls(**values)


def clamp_price(price: Decimal | None, params: Params) -> Decimal:
    if price is None:
        return params.default_price
    return min(max(exact(price), ZERO), ONE)


def uncertainty(price: Decimal) -> Decimal:
    return ONE - abs(price - HALF) * 2


def multiplier(price: Decimal, params: Params) -> Decimal:
    return _multiplier(uncertainty(price), params)


def budget(demand: Decimal, bounty: Decimal, price: Decimal, params: Params) -> Decimal:
    return _budget(demand, bounty, multiplier(price, params), params)


def _multiplier(uncertainty: Decimal, params: Params) -> Decimal:
    floor = params.multiplier_floor
    return floor + (ONE - floor) * uncertainty


def _budget(demand: Decimal, bounty: Decimal, multiplier: Decimal, params: Params) -> Decimal:
    return exact((params.research_share * demand + bounty) * multiplier)


class Terms(NamedTuple):
    """Every term of one artifact's budget; None where it cannot be computed. (A tuple:
    built for every row of an export, where a frozen dataclass costs five times more.)"""

    demand: Decimal | None
    bounty: Decimal | None
    price: Decimal | None
    uncertainty: Decimal | None
    multiplier: Decimal | None
    budget: Decimal | None
    spent: Decimal | None
    remaining: Decimal | None


def terms(
    demand: Decimal | None, bounty: Decimal | None, price: Decimal | None,
    spent: Decimal | None, params: Params, price_known: bool = True,
) -> Terms:
    """The terms from the totals and the market price (None: no market). A total given as
    None, or a price not known, is invalid data: every term depending on it is None."""
    p = u = m = b = None
    if price_known:
        p = clamp_price(price, params)
        u = uncertainty(p)
        m = _multiplier(u, params)
        if demand is not None and bounty is not None:
            b = _budget(demand, bounty, m, params)
    remaining = None if b is None or spent is None else b - spent
    return Terms(demand, bounty, p, u, m, b, spent, remaining)


def parse_amount(
    text: str, what: str = "amount", allow_zero: bool = False, limit: Decimal = MAX_AMOUNT,
    param: str | None = None,
) -> Decimal:
    """An amount from user input: an ASCII number, positive, at most `limit`, at most 6
    decimals. Errors call it `what`, or name the parameter `param` that gave it."""
    name, params = (f"{{{param}}}", (param,)) if param else (what, ())
    raw = text.strip() if isinstance(text, str) else str(text)
    value = _ascii_decimal(raw)
    if value is None:
        raise UsageError(f"{name} {_show(raw)} is not a number", *params)
    if value < 0 or (value == 0 and not allow_zero):
        raise UsageError(f"{name} must be {'zero or ' if allow_zero else ''}positive, "
                         f"not {_show(raw)}", *params)
    if value > limit:
        raise UsageError(f"{name} {_show(raw)} is larger than the maximum {limit.normalize():f}",
                         *params)
    rounded = exact(value)
    if rounded != value:
        raise UsageError(f"{name} {_show(raw)} has more than {DECIMALS} decimal places",
                         *params)
    return rounded


def to_tokens(amount: Decimal, units_per_token: Decimal, unit: str) -> Decimal:
    """`amount` of `unit` in tokens, rounded to 1e-6; refused rather than stored beyond
    MAX_AMOUNT or rounded away to nothing."""
    if units_per_token <= 0:
        raise UsageError(f"unit {unit!r} has no valid rate ({plain(units_per_token)}); "
                         "set one with `alloc rates set`")
    tokens = exact(amount / units_per_token)
    if tokens > MAX_AMOUNT:
        raise UsageError(f"{plain(amount)} {unit} is {plain(tokens)} tokens, more than the "
                         f"maximum {plain(MAX_AMOUNT)} tokens")
    if tokens == 0 and amount != 0:
        raise UsageError(f"{plain(amount)} {unit} is less than 0.000001 token")
    return tokens


def _ascii_decimal(raw: str) -> Decimal | None:
    """`raw` as a Decimal if it is written as AMOUNT_PATTERN says, else None."""
    if AMOUNT_PATTERN.fullmatch(raw) is None:
        return None
    try:
        return Decimal(raw)
    except InvalidOperation:  # an exponent beyond what Decimal can represent
        return None


def _show(raw: str) -> str:
    return repr(raw if len(raw) <= 40 else raw[:37] + "...")
