"""Splitting a fixed pool across artifacts by remaining budget. Pure, no I/O.

Shares are proportional to remaining budget; a cap is enforced by water-filling (capped
artifacts are fixed at the cap and the rest of the pool is split again among the
others); shares below the minimum are dropped and redistributed; finally whole units
are handed out by largest remainder, so the parts sum exactly to the pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext

from scidex_alloc.errors import UsageError
from scidex_alloc.formula import parse_amount

MAX_UNITS = Decimal(10**15)  # the largest pool, cap or minimum of a plan
# Significant digits of the shares' arithmetic: far more than a pool of MAX_UNITS split
# by budgets of up to 9e9 tokens in micro-tokens needs, so rounding never decides a unit.
PRECISION = 60


@dataclass(frozen=True, slots=True)
class Part:
    artifact_id: str
    weight: Decimal
    share: int
    exact: Decimal  # the continuous share before rounding


def split(pool: int, weights: dict[str, Decimal], cap: int | None = None,
          minimum: int | None = None) -> list[Part]:
    """Whole-unit shares of `pool`, summing to it exactly; largest share first."""
    if pool < 0:
        raise UsageError("{pool} must not be negative", "pool")
    if cap is not None and minimum is not None and minimum > cap:
        raise UsageError(f"{{minimum}} {minimum} is larger than {{cap}} {cap}: no share can be both",
                         "minimum", "cap")
    active = {k: w for k, w in weights.items() if w > 0}
    if not active:
        if pool == 0:
            return []
        raise UsageError("no artifact has budget remaining: nothing to split the pool across")
    with localcontext() as ctx:
        ctx.prec = PRECISION
        while True:
            exact = _water_fill(pool, active, cap)
            small = [k for k, v in exact.items() if minimum is not None and v < minimum]
            if not small:
                break
            for k in small:
                del active[k]
            if not active:
                raise UsageError(f"every share falls below {{minimum}} {minimum}: lower it or "
                                 "enlarge the pool", "minimum")
        shares = _largest_remainder(pool, exact, cap)
    parts = [Part(k, active[k], shares[k], exact[k]) for k in active]
    parts.sort(key=lambda p: (-p.share, -p.weight, p.artifact_id))
    return parts


def _water_fill(pool: int, weights: dict[str, Decimal], cap: int | None) -> dict[str, Decimal]:
    if cap is not None and cap * len(weights) < pool:
        raise UsageError(f"the caps cannot absorb the pool: {len(weights)} artifacts x "
                         f"{{cap}} {cap} < {pool}", "cap")
    fixed: dict[str, Decimal] = {}
    free = dict(weights)
    while True:
        left = Decimal(pool) - sum(fixed.values())
        total = sum(free.values())
        exact = {k: left * w / total for k, w in free.items()}
        over = [k for k, v in exact.items() if cap is not None and v > cap]
        if not over:
            return {**fixed, **exact}
        for k in over:
            fixed[k] = Decimal(cap)
            del free[k]


def _largest_remainder(pool: int, exact: dict[str, Decimal], cap: int | None) -> dict[str, int]:
    shares = {k: int(v) for k, v in exact.items()}  # floor: every v is >= 0
    leftover = pool - sum(shares.values())
    order = sorted(exact, key=lambda k: (-(exact[k] - shares[k]), -exact[k], k))
    for k in order:
        if leftover == 0:
            break
        if cap is None or shares[k] < cap:
            shares[k] += 1
            leftover -= 1
    return shares


def whole_units(value: str | None, param: str) -> int | None:
    """A whole number of units, up to MAX_UNITS, given as parameter `param` (only the pool
    may be zero)."""
    if value is None:
        return None
    amount = parse_amount(value, allow_zero=param == "pool", limit=MAX_UNITS, param=param)
    if amount != amount.to_integral_value():
        raise UsageError(f"{{{param}}} must be a whole number of units", param)
    return int(amount)
