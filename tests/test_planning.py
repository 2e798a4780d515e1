"""Properties of the pool split (pure), and `alloc plan` through the entry point."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scidex_alloc.errors import UsageError
from scidex_alloc.history.planning import split

weights = st.dictionaries(
    st.text("abcdefgh", min_size=1, max_size=4),
    st.decimals(min_value=Decimal("0.000001"), max_value=10**6, places=6),
    min_size=1, max_size=30,
)


@given(weights, st.integers(0, 10**9))
def test_parts_sum_exactly_to_the_pool_and_stay_proportional(w, pool):
    parts = split(pool, w)
    assert sum(p.share for p in parts) == pool
    total = sum(w.values())
    for p in parts:
        assert abs(p.share - pool * p.weight / total) < 1


@given(weights, st.integers(0, 10**7), st.integers(1, 10**6))
def test_caps_hold_unless_they_cannot_absorb_the_pool(w, pool, cap):
    if cap * len(w) < pool:
        with pytest.raises(UsageError, match="cannot absorb"):
            split(pool, w, cap=cap)
        return
    parts = split(pool, w, cap=cap)
    assert sum(p.share for p in parts) == pool
    assert all(p.share <= cap for p in parts)
    assert all(abs(p.share - p.exact) < 1 for p in parts)
    # Water-filling: uncapped artifacts share one rate per unit of weight, and the capped
    # ones were cut down to the cap from above that rate.
    capped = [p for p in parts if p.exact == cap]
    free = [p for p in parts if p.exact < cap]
    if free:
        rate = free[0].exact / free[0].weight
        assert all(abs(q.exact / q.weight - rate) < Decimal("1e-40") for q in free)
        assert all(p.exact / p.weight <= rate for p in capped)


@given(weights, st.integers(1, 10**6), st.integers(1, 1000))
def test_minimum_drops_small_shares(w, pool, minimum):
    try:
        parts = split(pool, w, minimum=minimum)
    except UsageError:
        return
    assert sum(p.share for p in parts) == pool
    assert all(p.share >= minimum for p in parts)


def test_worked_example():
    parts = split(10, {"a": Decimal(1), "b": Decimal(1), "c": Decimal(1)})
    assert [(p.artifact_id, p.share) for p in parts] == [("a", 4), ("b", 3), ("c", 3)]
    capped = split(100, {"a": Decimal(90), "b": Decimal(5), "c": Decimal(5)}, cap=50)
    assert {p.artifact_id: p.share for p in capped} == {"a": 50, "b": 25, "c": 25}
