"""`alloc audit`: the ledger's invariants and the data problems other services can write.

Each check is one set-based query returning the offending rows.
"""

from __future__ import annotations

from sqlalchemy import String, and_, cast, func, or_, select
from sqlalchemy.engine import Connection

from scidex_alloc.budgets import queries
from scidex_alloc.formula import Params
from scidex_alloc.ledger.results import AuditCheck
from scidex_alloc.storage import sql
from scidex_alloc.storage.schema import (
    artifacts,
    markets,
    positions,
    resource_allocations,
    token_bounties,
    utcnow,
)
from scidex_alloc.storage.sql import IsFinite

SHOWN = 50
log = resource_allocations


def run(connection: Connection, params: Params) -> list[AuditCheck]:
    checks = [
        ("spent-matches-log", "every artifact's spent equals the sum of its log", _spent_mismatch),
        ("no-silent-overdraft", "no entry overspent its budget at the time without --allow-overdraft",
         _silent_overdraft),
        ("reversed-once", "no spend is reversed twice, and reversals cancel exactly", _bad_reversals),
        ("unique-keys", "idempotency keys are unique", _duplicate_keys),
        ("non-negative-tokens", "no negative amount outside reversals", _negative_tokens),
        ("prices-in-range", "market prices lie in [0, 1]", _bad_prices),
        ("artifacts-exist", "every row points at an existing artifact", _orphans),
        ("bounties-within-offer", "no bounty is paid beyond its offer", _overpaid_bounties),
        ("amounts-valid", "every amount and price is a finite number, and every artifact's "
         "totals lie within the limit", _invalid_amounts),
        ("balances-exact", "every artifact's maintained balance equals its recomputation from "
         "the source tables (mend with alloc db rebuild-balances)", _balance_mismatch),
    ]
    return [AuditCheck(name, text, check(connection, params)) for name, text, check in checks]


def _rows(connection: Connection, stmt) -> list[dict]:
    return [dict(row._mapping) for row in connection.execute(stmt.limit(SHOWN))]


def _spent_mismatch(connection, params):
    by_log = (
        select(log.c.artifact_id,
               sql.AmountSum(sql.Summand(sql.MicroTokens(log.c.tokens), log.c.tokens))
               .label("total"))
        .group_by(log.c.artifact_id).subquery()
    )
    budgets = queries.budget_select(params, utcnow()).subquery()
    return _rows(connection, select(budgets.c.artifact_id, budgets.c.spent, by_log.c.total)
                 .join(by_log, by_log.c.artifact_id == budgets.c.artifact_id)
                 .where(budgets.c.spent != by_log.c.total))


def _silent_overdraft(connection, params):
    """Entries not flagged overdraft that took their artifact's spent (its log summed up to
    and including them, in id order) above the budget recorded with them. An entry without
    a recorded budget (another service wrote it) is judged as it always was: against
    today's budget, when its artifact is overspent today and none of its entries is flagged."""
    # SQLite's TOTAL, unlike its SUM, never fails on overflow (see sql.amount_sum).
    running_sum = func.total if connection.dialect.name == "sqlite" else func.sum
    running = select(
        log.c.id, log.c.artifact_id, log.c.tokens, log.c.overdraft, log.c.budget_at_spend,
        running_sum(sql.MicroTokens(log.c.tokens)).over(
            partition_by=log.c.artifact_id, order_by=log.c.id, rows=(None, 0)).label("spent"),
    ).subquery()
    budgets = queries.budget_select(params, utcnow()).subquery()
    flagged = select(log.c.artifact_id).where(log.c.overdraft.is_(True))
    recorded = running.c.budget_at_spend.is_not(None)
    at_spend = sql.MicroTokens(running.c.budget_at_spend)
    judged = func.coalesce(at_spend, budgets.c.budget)
    stmt = (select(running.c.id, running.c.artifact_id, at_spend.label("budget_at_spend"),
                   judged.label("budget"), running.c.spent)
            .outerjoin(budgets, budgets.c.artifact_id == running.c.artifact_id)
            .where(running.c.overdraft.is_(False), running.c.tokens > 0, IsFinite(running.c.spent),
                   running.c.spent > judged,
                   or_(recorded, and_(budgets.c.remaining < 0,
                                      running.c.artifact_id.not_in(flagged))))
            .order_by(running.c.id))

    tokens = queries.tokens_from_micro
    return [{"id": r["id"], "artifact_id": r["artifact_id"],
             "budget_at_spend": tokens(r["budget_at_spend"]), "budget": tokens(r["budget"]),
             "spent": tokens(r["spent"])} for r in _rows(connection, stmt)]


def _bad_reversals(connection, params):
    original = log.alias("original")
    twice = (select(log.c.reverses_id.label("spend_id"), func.count().label("reversals"))
             .where(log.c.reverses_id.is_not(None)).group_by(log.c.reverses_id)
             .having(func.count() > 1))
    wrong = (select(log.c.id.label("reversal_id"), log.c.reverses_id.label("spend_id"))
             .join(original, original.c.id == log.c.reverses_id)
             .where(or_(original.c.reverses_id.is_not(None),
                        sql.MicroTokens(log.c.tokens) != -sql.MicroTokens(original.c.tokens))))
    return _rows(connection, twice) + _rows(connection, wrong)


def _duplicate_keys(connection, params):
    return _rows(connection, select(log.c.idempotency_key.label("key"), func.count().label("rows"))
                 .where(log.c.idempotency_key.is_not(None))
                 .group_by(log.c.idempotency_key).having(func.count() > 1))


def _negative_tokens(connection, params):
    found = []
    for table, column, extra in (
        (positions, positions.c.tokens, None),
        (token_bounties, token_bounties.c.tokens_offered, None),
        (token_bounties, token_bounties.c.tokens_paid, None),
        (log, log.c.tokens, log.c.reverses_id.is_(None)),
    ):
        where = [column < 0, IsFinite(column)] + ([extra] if extra is not None else [])
        stmt = select(table.c.id, table.c.artifact_id, column.label("tokens")).where(*where)
        found += [{"table": table.name, "column": column.name, **row}
                  for row in _rows(connection, stmt)]
    return found


def _bad_prices(connection, params):
    price = markets.c.price
    return _rows(connection, select(markets.c.artifact_id, price)
                 .where(or_(price < 0, price > 1), IsFinite(price)))


def _orphans(connection, params):
    found = []
    for table in (markets, positions, token_bounties, log):
        key = table.c.id if "id" in table.c else table.c.artifact_id
        stmt = (select(key.label("id"), table.c.artifact_id)
                .outerjoin(artifacts, artifacts.c.id == table.c.artifact_id)
                .where(artifacts.c.id.is_(None)))
        found += [{"table": table.name, **row} for row in _rows(connection, stmt)]
    return found


def _overpaid_bounties(connection, params):
    b = token_bounties
    return _rows(connection, select(b.c.id, b.c.artifact_id, b.c.tokens_offered, b.c.tokens_paid)
                 .where(b.c.tokens_paid > b.c.tokens_offered, IsFinite(b.c.tokens_paid),
                        IsFinite(b.c.tokens_offered)))


def _invalid_amounts(connection, params):
    """Rows whose amount or price is not a finite number (NaN, infinite, or text on SQLite),
    shown as text, then every artifact without a valid budget and why."""
    found = []
    for table, column, key in (
        (positions, positions.c.tokens, positions.c.id),
        (token_bounties, token_bounties.c.tokens_offered, token_bounties.c.id),
        (token_bounties, token_bounties.c.tokens_paid, token_bounties.c.id),
        (log, log.c.tokens, log.c.id),
        (markets, markets.c.price, markets.c.artifact_id),
    ):
        stmt = (select(key.label("id"), table.c.artifact_id, cast(column, String).label("value"))
                .where(column.is_not(None), ~IsFinite(column)).order_by(key))
        found += [{"table": table.name, "column": column.name, **row}
                  for row in _rows(connection, stmt)]
    budgets = queries.budget_select(params, utcnow()).subquery()
    return found + _rows(connection, select(budgets.c.artifact_id, budgets.c.problem)
                         .where(budgets.c.problem.is_not(None))
                         .order_by(budgets.c.artifact_id))


def _balance_mismatch(connection, params):
    """Artifacts whose balance row differs from the source tables summed again, and which
    of its columns differ."""
    from scidex_alloc.budgets import balances
    from scidex_alloc.storage.schema import artifact_balances

    now = utcnow()
    ids = [row.artifact_id for row in connection.execute(balances.mismatches(now).limit(SHOWN))]
    if not ids:
        return []
    stored = {row.artifact_id: row._mapping for row in connection.execute(
        select(artifact_balances).where(artifact_balances.c.artifact_id.in_(ids)))}
    source = balances.recomputed_all(now).subquery()
    expected = {row.artifact_id: row._mapping for row in connection.execute(
        select(source).where(source.c.artifact_id.in_(ids)))}
    found = []
    for artifact_id in ids:
        have, want = stored.get(artifact_id), expected.get(artifact_id)
        columns = ("row" if have is None or want is None else
                   ", ".join(c for c in ("type", *balances.COLUMNS) if have[c] != want[c]))
        found.append({"artifact_id": artifact_id, "differs": columns})
    return found
