"""SQL building blocks shared by every area, compiled for each database: amounts in
micro-tokens, exact sums, finiteness checks, time comparisons and clamping.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement
from sqlalchemy.types import Boolean, NullType, Numeric

MICRO_PER_TOKEN = 1_000_000


FLOAT_MAX = "1.7976931348623157e308"
# A literal beyond the largest double, which SQLite reads as infinity.
SQLITE_INFINITY = "9e999"


class MicroTokens(FunctionElement):
    """A token amount in micro-tokens, exact on both databases."""

    type = Numeric()
    inherit_cache = True
    name = "micro"


@compiles(MicroTokens)
def _micro_default(element, compiler, **kw):
    return f"({compiler.process(element.clauses, **kw)} * {MICRO_PER_TOKEN})"


@compiles(MicroTokens, "sqlite")
def _micro_sqlite(element, compiler, **kw):
    return f"CAST(ROUND({compiler.process(element.clauses, **kw)} * {MICRO_PER_TOKEN}) AS INTEGER)"


class LaterThan(FunctionElement):
    """``a > b`` for timestamps; SQLite compares instants, not their text."""

    type = Boolean()
    inherit_cache = True
    name = "later_than"


@compiles(LaterThan)
def _later_default(element, compiler, **kw):
    a, b = element.clauses
    return f"({compiler.process(a, **kw)} > {compiler.process(b, **kw)})"


@compiles(LaterThan, "sqlite")
def _later_sqlite(element, compiler, **kw):
    a, b = element.clauses
    return f"(julianday({compiler.process(a, **kw)}) > julianday({compiler.process(b, **kw)}))"


class IsFinite(FunctionElement):
    """Whether a stored amount or price is a finite number. Other services can write NaN
    and +-Infinity on PostgreSQL, and infinity or any text on SQLite (NUMERIC affinity)."""

    type = Boolean()
    inherit_cache = True
    name = "finite"


@compiles(IsFinite)
def _finite_default(element, compiler, **kw):
    # NaN sorts above Infinity on PostgreSQL.
    value = compiler.process(element.clauses, **kw)
    return f"({value} > '-Infinity' AND {value} < 'Infinity')"


@compiles(IsFinite, "sqlite")
def _finite_sqlite(element, compiler, **kw):
    # Text and blobs sort above every number; infinity lies beyond the largest double.
    return f"({compiler.process(element.clauses, **kw)} BETWEEN -{FLOAT_MAX} AND {FLOAT_MAX})"


class Clamp01(FunctionElement):
    """A value clamped into [0, 1], evaluated once."""

    type = Numeric()
    inherit_cache = True
    name = "clamp01"


@compiles(Clamp01)
def _clamp_default(element, compiler, **kw):
    return f"greatest(0, least(1, {compiler.process(element.clauses, **kw)}))"


@compiles(Clamp01, "sqlite")
def _clamp_sqlite(element, compiler, **kw):
    return f"max(0, min(1, {compiler.process(element.clauses, **kw)}))"


class Summand(FunctionElement):
    """One row's part of a total: `amount` (micro-tokens), made infinite on SQLite when one
    of the row's `columns` is not a finite number, so that the total shows it. PostgreSQL
    needs nothing: NaN, the only non-finite value its token columns hold, propagates."""

    type = Numeric()
    inherit_cache = True
    name = "summand"


@compiles(Summand)
def _summand_default(element, compiler, **kw):
    return compiler.process(element.clauses.clauses[0], **kw)


@compiles(Summand, "sqlite")
def _summand_sqlite(element, compiler, **kw):
    amount, *columns = element.clauses.clauses
    ok = " AND ".join(compiler.process(IsFinite(column), **kw) for column in columns)
    return f"(CASE WHEN {ok} THEN {compiler.process(amount, **kw)} ELSE {SQLITE_INFINITY} END)"


class AmountSum(FunctionElement):
    """The sum of summands, 0 for no rows. SQLite's TOTAL never fails: its integer SUM
    raises on overflow, and TOTAL of whole micro-tokens is exact below 2**53."""

    type = Numeric()
    inherit_cache = True
    name = "amount_sum"


@compiles(AmountSum)
def _amount_sum_default(element, compiler, **kw):
    return f"coalesce(sum({compiler.process(element.clauses, **kw)}), 0)"


@compiles(AmountSum, "sqlite")
def _amount_sum_sqlite(element, compiler, **kw):
    return f"total({compiler.process(element.clauses, **kw)})"


def tokens(micro_amount) -> ColumnElement:
    """Micro-tokens back to tokens inside SQL (exact NUMERIC on PostgreSQL)."""
    return micro_amount / literal(Decimal("1000000.0"))


class ExactSum(FunctionElement):
    """The exact sum of whole micro-token amounts, 0 for no rows. SQLite's integer SUM
    raises on overflow, so it sums the high and the low bits apart, and `+` turns a
    total beyond 64 bits into a float (which WholeNumber tells apart)."""

    type = Numeric()
    inherit_cache = True
    name = "exact_sum"


@compiles(ExactSum)
def _exact_sum_default(element, compiler, **kw):
    return f"coalesce(sum({compiler.process(element.clauses, **kw)}), 0)"


@compiles(ExactSum, "sqlite")
def _exact_sum_sqlite(element, compiler, **kw):
    value = compiler.process(element.clauses, **kw)
    return f"(coalesce(sum(({value}) >> 20), 0) * 1048576 + coalesce(sum(({value}) & 1048575), 0))"


class WholeNumber(FunctionElement):
    """Whether a maintained total is still exact: on SQLite a sum beyond 64 bits becomes a
    float; PostgreSQL's numeric never overflows."""

    type = Boolean()
    inherit_cache = True
    name = "whole_number"


@compiles(WholeNumber)
def _whole_default(element, compiler, **kw):
    return f"({compiler.process(element.clauses, **kw)} IS NOT NULL)"


@compiles(WholeNumber, "sqlite")
def _whole_sqlite(element, compiler, **kw):
    return f"(typeof({compiler.process(element.clauses, **kw)}) = 'integer')"


class InstantKey(FunctionElement):
    """A timestamp as a value that orders instants: itself on PostgreSQL, its Julian day
    number on SQLite (whose text would order by its format). LaterThan compares either."""

    type = NullType()  # a timestamp on one database, a number on the other: read as is
    inherit_cache = True
    name = "instant_key"


@compiles(InstantKey)
def _instant_default(element, compiler, **kw):
    return compiler.process(element.clauses, **kw)


@compiles(InstantKey, "sqlite")
def _instant_sqlite(element, compiler, **kw):
    return f"julianday({compiler.process(element.clauses, **kw)})"


class WholeTokens(FunctionElement):
    """The whole tokens of a micro-token amount, truncated toward zero."""

    type = Numeric()
    inherit_cache = True
    name = "whole_tokens"


@compiles(WholeTokens)
def _whole_default(element, compiler, **kw):
    # PostgreSQL's numeric SUM never overflows: the whole amount stays in the micro part.
    return "0"


@compiles(WholeTokens, "sqlite")
def _whole_sqlite(element, compiler, **kw):
    return f"(CAST({compiler.process(element.clauses, **kw)} AS INTEGER) / {MICRO_PER_TOKEN})"


def literal_sql(connection, element) -> str:
    """An expression as SQL text with its values written in, for DDL (triggers) that
    cannot take parameters."""
    return str(element.compile(dialect=connection.dialect,
                               compile_kwargs={"literal_binds": True}))
