"""`alloc audit`: the ledger's invariants and the data problems other services can write.

Each check is one set-based query returning the offending rows.
"""

from __future__ import annotations

from sqlalchemy import String, and_, cast, func, or_, select
from sqlalchemy.engine import Connection

from scidex_alloc.budgets import queries
from scidex_alloc.budgets.balances import NOW
from scidex_alloc.formula import Params
from scidex_alloc.ledger.results import AuditCheck
from scidex_alloc.storage import sql
from scidex_alloc.storage.schema import (
    artifacts,
    holds,
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
        ("totals-exact", "the totals kept per artifact type equal the sums of the "
         "artifacts' balances (mend with alloc db rebuild-balances)", _totals_mismatch),
        ("hold-outcomes", "a settled hold has exactly one spend entry, on its artifact; an "
         "active or voided one has none", _hold_outcomes),
        ("settled-within-hold", "no settlement exceeds its hold by more than was available "
         "then", _settled_beyond_hold),
        ("holds-within-budget", "spent + held is within the budget (or the largest one a live "
         "hold was placed under) wherever no overdraft entry exists", _holds_beyond_budget),
    ]
    return [AuditCheck(name, text, check(connection, params)) for name, text, check in checks]


def _rows(connection: Connection, stmt) -> list[dict]:
    """The first rows a check's statement finds, now."""
    return [dict(row._mapping) for row in connection.execute(stmt.limit(SHOWN),
                                                             {"now": utcnow()})]


def _spent_mismatch(connection, params):
    by_log = (
        select(log.c.artifact_id,
               sql.AmountSum(sql.Summand(sql.MicroTokens(log.c.tokens), log.c.tokens))
               .label("total"))
        .group_by(log.c.artifact_id).subquery()
    )
    budgets = queries.budget_select(params).subquery()
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
    budgets = queries.budget_select(params).subquery()
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
        (holds, holds.c.tokens, None),
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
    for table in (markets, positions, token_bounties, log, holds):
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
        (holds, holds.c.tokens, holds.c.id),
        (markets, markets.c.price, markets.c.artifact_id),
    ):
        stmt = (select(key.label("id"), table.c.artifact_id, cast(column, String).label("value"))
                .where(column.is_not(None), ~IsFinite(column)).order_by(key))
        found += [{"table": table.name, "column": column.name, **row}
                  for row in _rows(connection, stmt)]
    budgets = queries.budget_select(params).subquery()
    return found + _rows(connection, select(budgets.c.artifact_id, budgets.c.problem)
                         .where(budgets.c.problem.is_not(None))
                         .order_by(budgets.c.artifact_id))


def _balance_mismatch(connection, params):
    """Artifacts whose balance row differs from the source tables summed again, and which
    of its columns differ."""
    from scidex_alloc.budgets import balances
    from scidex_alloc.storage.schema import artifact_balances

    at = {"now": utcnow()}
    ids = [row.artifact_id for row in connection.execute(balances.mismatches().limit(SHOWN),
                                                         at)]
    if not ids:
        return []
    stored = {row.artifact_id: row._mapping for row in connection.execute(
        select(artifact_balances).where(artifact_balances.c.artifact_id.in_(ids)))}
    source = balances.recomputed_all().subquery()
    expected = {row.artifact_id: row._mapping for row in connection.execute(
        select(source).where(source.c.artifact_id.in_(ids)), at)}
    found = []
    for artifact_id in ids:
        have, want = stored.get(artifact_id), expected.get(artifact_id)
        columns = ("row" if have is None or want is None else
                   ", ".join(c for c in ("type", *balances.COLUMNS) if have[c] != want[c]))
        found.append({"artifact_id": artifact_id, "differs": columns})
    return found


def _totals_mismatch(connection, params):
    """Artifact types whose kept totals differ from their balances' sums."""
    from scidex_alloc.budgets import totals

    return [{"type": row.type} for row in connection.execute(totals.mismatches().limit(SHOWN))]


def _hold_outcomes(connection, params):
    """Holds whose spend entries do not match their status, and entries naming a hold that
    does not exist."""
    entries = (select(log.c.hold_id, func.count().label("entries"),
                      func.min(log.c.artifact_id).label("entry_artifact"))
               .where(log.c.hold_id.is_not(None)).group_by(log.c.hold_id).subquery())
    count = func.coalesce(entries.c.entries, 0)
    wrong = (select(holds.c.id.label("hold_id"), holds.c.status, count.label("entries"))
             .outerjoin(entries, entries.c.hold_id == holds.c.id)
             .where(or_(and_(holds.c.status == "settled",
                             or_(count != 1, entries.c.entry_artifact != holds.c.artifact_id)),
                        and_(holds.c.status != "settled", count > 0)))
             .order_by(holds.c.id))
    orphans = (select(log.c.id.label("spend_id"), log.c.hold_id)
               .outerjoin(holds, holds.c.id == log.c.hold_id)
               .where(log.c.hold_id.is_not(None), holds.c.id.is_(None)).order_by(log.c.id))
    return _rows(connection, wrong) + _rows(connection, orphans)


def _settled_beyond_hold(connection, params):
    """Settlements whose excess over the hold exceeds the budget recorded as available to
    it when it was settled (none recorded: no excess was allowed)."""
    excess = sql.MicroTokens(log.c.tokens) - sql.MicroTokens(holds.c.tokens)
    allowed = func.coalesce(sql.MicroTokens(holds.c.available_at_settle), 0)
    stmt = (select(holds.c.id.label("hold_id"), log.c.id.label("spend_id"),
                   holds.c.tokens.label("held"), log.c.tokens.label("settled"),
                   holds.c.available_at_settle)
            .join(log, log.c.hold_id == holds.c.id)
            .where(IsFinite(log.c.tokens), IsFinite(holds.c.tokens), excess > 0,
                   excess > allowed)
            .order_by(holds.c.id))
    return _rows(connection, stmt)


def _holds_beyond_budget(connection, params):
    """Artifacts with live holds and no overdraft entry whose spent plus held exceeds both
    today's budget and every budget a live hold, or a spend since the first of them, was
    granted under: a budget may shrink after holds and spends were granted, each within the
    budget available then (they stand: the latest grant took spent + held to at most its
    budget, and only settling, voiding and expiry came after it)."""
    live = (select(holds.c.artifact_id,
                   func.max(sql.MicroTokens(holds.c.budget_at_hold)).label("granted"),
                   func.min(holds.c.created_at).label("since"))
            .where(holds.c.status == "active", sql.LaterThan(holds.c.expires_at, NOW))
            .group_by(holds.c.artifact_id).subquery())
    spends = (select(log.c.artifact_id,
                     func.max(sql.MicroTokens(log.c.budget_at_spend)).label("granted"))
              .join(live, live.c.artifact_id == log.c.artifact_id)
              .where(~sql.LaterThan(live.c.since, log.c.created_at))
              .group_by(log.c.artifact_id).subquery())
    budgets = queries.budget_select(params).subquery()
    flagged = select(log.c.artifact_id).where(log.c.overdraft.is_(True))
    committed = budgets.c.spent + budgets.c.held
    beyond_granted = [or_(granted.is_(None), committed > granted)  # none recorded: today's
                      for granted in (live.c.granted, spends.c.granted)]
    stmt = (select(budgets.c.artifact_id, budgets.c.budget, budgets.c.spent, budgets.c.held)
            .join(live, live.c.artifact_id == budgets.c.artifact_id)
            .outerjoin(spends, spends.c.artifact_id == budgets.c.artifact_id)
            .where(budgets.c.problem.is_(None), committed > budgets.c.budget, *beyond_granted,
                   budgets.c.artifact_id.not_in(flagged))
            .order_by(budgets.c.artifact_id))
    tokens = queries.tokens_from_micro
    return [{name: tokens(value) if name != "artifact_id" else value
             for name, value in row.items()} for row in _rows(connection, stmt)]
