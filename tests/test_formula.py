"""Properties of the pure budget formula."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scidex_alloc.errors import UsageError
from scidex_alloc.formula import (
    Params,
    budget,
    clamp_price,
    multiplier,
    parse_amount,
    plain,
    uncertainty,
)

P = Params()
amounts = st.decimals(min_value=0, max_value=10**9, places=6, allow_nan=False, allow_infinity=False)
prices = st.decimals(min_value=0, max_value=1, places=6, allow_nan=False, allow_infinity=False)


@given(amounts, amounts, prices)
def test_budget_is_never_negative(demand, bounty, price):
    assert budget(demand, bounty, price, P) >= 0


@given(amounts, amounts, amounts, prices)
def test_budget_is_monotone_in_demand_and_bounty(demand, bounty, extra, price):
    base = budget(demand, bounty, price, P)
    assert budget(demand + extra, bounty, price, P) >= base
    assert budget(demand, bounty + extra, price, P) >= base


@given(amounts, amounts, st.decimals(min_value=0, max_value=Decimal("0.5"), places=6))
def test_budget_is_symmetric_around_half_and_largest_there(demand, bounty, offset):
    low = budget(demand, bounty, Decimal("0.5") - offset, P)
    high = budget(demand, bounty, Decimal("0.5") + offset, P)
    assert low == high <= budget(demand, bounty, Decimal("0.5"), P)


def test_worked_example():
    # (0.1 * 1000 + 50) * (0.5 + 0.5 * (1 - |0.7 - 0.5| * 2)) = 150 * 0.8 = 120
    assert uncertainty(Decimal("0.7")) == Decimal("0.6")
    assert multiplier(Decimal("0.7"), P) == Decimal("0.8")
    assert budget(Decimal(1000), Decimal(50), Decimal("0.7"), P) == Decimal(120)


def test_prices_are_clamped_and_default_to_half():
    assert clamp_price(None, P) == Decimal("0.5")
    assert clamp_price(Decimal("1.7"), P) == 1 and clamp_price(Decimal("-3"), P) == 0


def test_parameters_come_from_the_environment():
    params = Params.from_env({"SCIDEX_RESEARCH_SHARE": "0.2"})
    assert params.research_share == Decimal("0.2")
    assert budget(Decimal(100), Decimal(0), Decimal("0.5"), params) == 20
    with pytest.raises(UsageError):
        Params.from_env({"SCIDEX_MULTIPLIER_FLOOR": "2"})


@pytest.mark.parametrize("text", ["", "x", "12abc", "nan", "-inf", "1e400", "-5", "0", "1e10",
                                  "1.0000001"])
def test_parse_amount_rejects(text):
    with pytest.raises(UsageError):
        parse_amount(text)


def test_parse_amount_accepts_exact_values():
    assert parse_amount(" 12.500000 ") == Decimal("12.5")
    assert parse_amount("1e3") == 1000


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_plain_writes_the_exact_value_without_exponent_or_trailing_zeros(value):
    text = plain(value)
    assert Decimal(text) == value
    assert "E" not in text.upper() and text != "-0"
    if "." in text:
        assert not text.endswith(("0", "."))


def test_plain_examples():
    cases = {"12.500000": "12.5", "1E+1": "10", "-0.000000": "0", "0E-7": "0",
             "1947.684096": "1947.684096", "100": "100", "-3.10": "-3.1", "1E-7": "0.0000001"}
    assert {text: plain(Decimal(text)) for text in cases} == cases

