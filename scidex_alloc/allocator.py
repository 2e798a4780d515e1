"""The allocator, the library every interface calls: each method checks its arguments
(errors name them: `limit must be from 1 to ...`), opens one transaction (a read, or a
write run again when a concurrent writer made it fail) and hands it to its area, which
holds the SQL and the decisions. Usable from Python without the CLI::

    from scidex_alloc import Allocator

    with Allocator.open("sample.db") as allocator:
        for row in allocator.rank(type_="hypothesis", limit=5):
            print(row.artifact_id, row.budget)
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import IO, TYPE_CHECKING, Callable, Iterator

from sqlalchemy.engine import Engine

from scidex_alloc import limits
from scidex_alloc.budgets import queries
from scidex_alloc.errors import UsageError
from scidex_alloc.formula import Params, parse_amount
from scidex_alloc.options import (
    CLAIM_STATUSES_SHOWN,
    EXPLORATION,
    HOLD_TTL,
    LEASE,
    MAX_HOLD_TTL,
    NEXT_LIMIT,
    PAGE_SIZE,
    PIPELINE_BUCKETS,
    SORT_KEYS,
    UCB_WEIGHT,
)

# Modules one area needs are imported inside its methods: start-up is paid on every call.
from scidex_alloc.storage import database
from scidex_alloc.storage.schema import BASE_UNIT, utcnow
from scidex_alloc.storage.transactions import Transactions

if TYPE_CHECKING:
    from scidex_alloc.budgets.results import BudgetDetail, BudgetRow, Conversion, Rate
    from scidex_alloc.history.results import HistoryPoint, Mover, PlanPart, SnapshotResult
    from scidex_alloc.holds.results import HoldRecord
    from scidex_alloc.ledger.results import AuditCheck, BatchSummary, LogEntry, SpendRecord
    from scidex_alloc.loading.results import LoadReport
    from scidex_alloc.queue.results import ClaimInfo, ClaimRow, QueueEntry
    from scidex_alloc.serving.results import Activity, AgentSummary, Gauges, Pipeline


class Allocator:
    def __init__(self, engine: Engine, params: Params | None = None, target=None):
        self.engine = engine
        self.params = params or Params()
        self.target = target
        self._tx = Transactions(engine)
        self._cache = None

    @classmethod
    def open(cls, db: str | None = None, params: Params | None = None) -> "Allocator":
        """Open the database `db`, $SCIDEX_DB or the default file (made on first use)."""
        target = database.resolve(db)
        fresh_default = target.is_default and not target.sqlite_path.exists()
        allocator = cls(database.engine_for(target), params or Params.from_env(), target)
        if fresh_default:
            allocator.upgrade()
        return allocator

    def close(self) -> None:
        """Close the database's connections; the allocator is not used afterwards."""
        if self._cache is not None:
            self._cache.close()
        self.engine.dispose()

    def keep_results(self) -> None:
        """Keep the results of the summing reads (pipeline, activity, agents) and serve them
        again while they are exact: for a long-lived server (see serving/cache.py)."""
        from scidex_alloc.serving.cache import ReadCache
        sqlite = self.engine.dialect.name == "sqlite"
        path = self.target.sqlite_path if sqlite and self.target is not None else None
        if not sqlite or path is not None:
            self._cache = ReadCache(self._tx, path)

    def _summing_read(self, key: tuple, work: Callable):
        return self._tx.read(work) if self._cache is None else self._cache.read(key, work)

    def __enter__(self) -> "Allocator":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def rank(self, type_: str | None = None, limit: int | None = None, by: str = SORT_KEYS[0],
             offset: int = 0) -> Iterator[BudgetRow]:
        """Artifacts by `by` descending, ties by id; streamed, so any size fits in memory."""
        queries.check_sort_key(by)
        limits.check_count(limit, "limit")
        limits.check_type(type_)
        limits.check_offset(offset)
        return self._tx.stream(lambda conn: queries.ranked_rows(
            conn, self.params, type_, by, limit, offset))

    def budget(self, artifact_id: str) -> BudgetDetail:
        """One artifact's budget, each term, and its value in every unit."""
        from scidex_alloc.budgets import rates
        limits.check_artifact_id(artifact_id)
        return self._tx.read(lambda conn: rates.budget_detail(conn, self.params, artifact_id))

    def rates(self) -> list[Rate]:
        from scidex_alloc.budgets import rates
        return self._tx.read(rates.listing)

    def set_rate(self, unit: str, units_per_token: str) -> Rate:
        from scidex_alloc.budgets import rates
        unit = rates.checked_unit(unit)
        value = parse_amount(units_per_token, "units per token")
        now = utcnow()
        return self._tx.write_retried(lambda conn: rates.set_rate(conn, unit, value, now))

    def convert(self, amount: str, from_unit: str = BASE_UNIT, to_unit: str = "llm-tokens"
                ) -> Conversion:
        from scidex_alloc.budgets import rates
        return self._tx.read(lambda conn: rates.convert(conn, amount, from_unit, to_unit))

    def spend(self, artifact_id: str, amount: str, unit: str | None = None, kind: str | None = None,
              agent: str | None = None, note: str | None = None, key: str | None = None,
              allow_overdraft: bool = False) -> SpendRecord:
        """Record one spend, or replay the one recorded under the same key; raises on refusal."""
        from scidex_alloc.ledger import spending
        request = spending.request(0, {
            "artifact_id": artifact_id, "amount": amount, "unit": unit, "kind": kind,
            "agent": agent, "note": note, "key": key, "allow_overdraft": allow_overdraft})
        return self._tx.write_retried(lambda conn: spending.record_one(conn, self.params, request))

    def spend_file(self, stream: IO[bytes], fmt: str, atomic: bool = False,
                   progress: Callable[[int], None] | None = None) -> BatchSummary:
        """Apply a CSV or JSON Lines file of spends: a transaction per chunk of lines, or
        with `atomic` one for the whole file, in which any failed line writes nothing."""
        from scidex_alloc.ledger import batches
        return batches.apply_file(self._tx, self.params, stream, fmt, atomic, progress)

    def reverse(self, spend_id: int, agent: str | None = None, note: str | None = None
                ) -> SpendRecord:
        """Append the entry that cancels spend `spend_id`."""
        from scidex_alloc.ledger import spending
        fields = {"agent": agent, "note": note}
        agent, note = (spending.text_field(fields, name) for name in fields)
        limits.check_row_id(spend_id, "spend")
        return self._tx.write_retried(
            lambda conn: spending.reverse(conn, self.params, spend_id, agent, note))

    def log(self, artifact_id: str | None = None, since: datetime | None = None,
            limit: int | None = None) -> Iterator[LogEntry]:
        """The spend log, oldest first; streamed."""
        from scidex_alloc.ledger import spending
        limits.check_count(limit, "limit")
        if artifact_id is not None:
            limits.check_artifact_id(artifact_id)
            self._tx.read(lambda conn: queries.require_artifact(conn, artifact_id))
        return self._tx.stream(lambda conn: spending.log_entries(conn, artifact_id, since, limit))

    def audit(self) -> list[AuditCheck]:
        from scidex_alloc.ledger import audit
        return self._tx.read(lambda conn: audit.run(conn, self.params))

    def next(self, type_: str | None = None, limit: int = NEXT_LIMIT, agent: str | None = None,
             claim: bool = False, lease: timedelta = LEASE,
             ucb_weight: float | None = None, exploration: float | None = None,
             reserve: str | None = None, unit: str | None = None) -> list[QueueEntry]:
        """The best next investigations among artifacts with budget available (with
        `reserve`, at least that much, in `unit`); with `claim`, the top `limit` are leased
        to `agent`, and with `reserve` each gets a hold of it for as long as its lease."""
        from scidex_alloc.ledger import spending
        from scidex_alloc.queue import claims, scoring
        ucb_weight = UCB_WEIGHT if ucb_weight is None else ucb_weight
        exploration = EXPLORATION if exploration is None else exploration
        limits.check_count(limit, "limit")
        limits.check_type(type_)
        scoring.check_weights(ucb_weight, exploration)
        if agent is not None:
            agent = spending.text_field({"agent": agent}, "agent")
        amount = None if reserve is None else _amount(reserve, unit, "reserve")
        if not claim:
            return self._tx.read(lambda conn: claims.preview(
                conn, self.params, type_, agent, limit, ucb_weight, exploration, amount))
        if agent is None:
            raise UsageError("{claim} needs {agent}", "claim", "agent")
        if amount is not None:
            _check_ttl(lease, "lease")
        return claims.claim_top(_FoldingWrites(self._tx), self.params, type_, agent, lease,
                                limit, ucb_weight, exploration, amount)

    def done(self, claim_id: int, reward: float | None = None, spend: str | None = None,
             unit: str | None = None, kind: str | None = None) -> ClaimInfo:
        """Close a claim as a completed investigation, with its reward in [0, 1] if known,
        and settle its hold for `spend` (default: the held amount); a claim without a hold
        records `spend`, if given, as a plain spend. All or nothing."""
        from scidex_alloc.ledger import spending
        from scidex_alloc.queue import claims
        value = claims.checked_reward(reward)
        limits.check_row_id(claim_id, "claim")
        # Without a unit the amount is in the hold's, as the held amount is.
        amount = None if spend is None else (parse_amount(spend, param="spend"), _unit(unit))
        kind = spending.text_field({"kind": kind}, "kind")
        return self._tx.write_retried(lambda conn: claims.finish(
            conn, self.params, claim_id, "done", value, amount, kind))

    def release(self, claim_id: int) -> ClaimInfo:
        """Give a claim back without an outcome, and void its hold."""
        from scidex_alloc.queue import claims
        limits.check_row_id(claim_id, "claim")
        return self._tx.write_retried(lambda conn: claims.finish(
            conn, self.params, claim_id, "released", None))

    def hold(self, artifact_id: str, amount: str, unit: str | None = None,
             agent: str | None = None, ttl: timedelta = HOLD_TTL, key: str | None = None,
             note: str | None = None) -> HoldRecord:
        """Reserve `amount` of the artifact's available budget until `ttl` from now (or
        replay the hold placed under `key`); raises InsufficientBudget beyond it."""
        from scidex_alloc.holds import reserving
        from scidex_alloc.ledger import spending
        limits.check_artifact_id(artifact_id)
        units, unit = _amount(amount, unit, "amount")
        fields = {"agent": agent, "key": key, "note": note}
        agent, key, note = (spending.text_field(fields, name) for name in fields)
        _check_ttl(ttl, "ttl")
        return self._tx.write_retried(lambda conn: reserving.place(
            conn, self.params, artifact_id, units, unit, agent, ttl, key, note))

    def settle(self, hold_id: int, amount: str | None = None, unit: str | None = None,
               kind: str | None = None, note: str | None = None) -> SpendRecord:
        """Record what the held work cost (default: the held amount) as one spend entry,
        and end the hold; the same settlement again replays it."""
        from scidex_alloc.holds import reserving
        from scidex_alloc.ledger import spending
        limits.check_row_id(hold_id, "hold")
        # Without a unit the amount is in the hold's, as the held amount is.
        units = None if amount is None else parse_amount(amount, param="amount")
        unit = _unit(unit)
        fields = {"kind": kind, "note": note}
        kind, note = (spending.text_field(fields, name) for name in fields)
        return self._tx.write_retried(lambda conn: reserving.settle(
            conn, self.params, hold_id, units, unit, kind, note))

    def void(self, hold_id: int) -> HoldRecord:
        """Release a hold without spending."""
        from scidex_alloc.holds import reserving
        limits.check_row_id(hold_id, "hold")
        return self._tx.write_retried(lambda conn: reserving.void(conn, self.params, hold_id))

    def holds(self, artifact_id: str | None = None, agent: str | None = None,
              every: bool = False, limit: int | None = None, offset: int = 0
              ) -> list[HoldRecord]:
        """Live holds, oldest first; with `every`, every hold and its outcome."""
        from scidex_alloc.holds import reserving
        if artifact_id is not None:
            limits.check_artifact_id(artifact_id)
        limits.check_count(limit, "limit")
        limits.check_offset(offset)
        return self._tx.read(lambda conn: reserving.listing(
            conn, artifact_id, agent, every, utcnow(), limit, offset))

    def claims(self, agent: str | None = None, expired: bool = False) -> list[ClaimInfo]:
        from scidex_alloc.queue import claims
        return self._tx.read(lambda conn: claims.listing(conn, agent, expired))

    def snapshot(self, type_: str | None = None, every: str = "hour") -> SnapshotResult:
        """Record every artifact's budget in the current bucket, once (also when concurrent)."""
        from scidex_alloc.history import snapshots
        snapshots.check_period(every)
        limits.check_type(type_)
        now = utcnow()
        return self._tx.write_retried(
            lambda conn: snapshots.record(conn, self.params, type_, every, now))

    def history(self, artifact_id: str, since: datetime | None = None,
                until: datetime | None = None, every: str | None = None) -> list[HistoryPoint]:
        """One artifact's snapshots, oldest first, of `every` (default: its finest period)."""
        from scidex_alloc.history import snapshots
        limits.check_artifact_id(artifact_id)
        snapshots.check_window(since, until)
        return self._tx.read(lambda conn: snapshots.history(
            conn, artifact_id, since, until, every))

    def history_series(self, artifact_id: str, since: datetime | None = None,
                       until: datetime | None = None, every: str | None = None
                       ) -> tuple[str | None, list[HistoryPoint]]:
        """`history`, with the period it shows (None when the artifact has no snapshots)."""
        from scidex_alloc.history import snapshots
        limits.check_artifact_id(artifact_id)
        snapshots.check_window(since, until)
        return self._tx.read(lambda conn: snapshots.series(
            conn, artifact_id, since, until, every))

    def movers(self, type_: str | None = None, top: int = 10, since: datetime | None = None,
               until: datetime | None = None, every: str | None = None) -> list[Mover]:
        """The artifacts whose budget rose or fell most over the window."""
        from scidex_alloc.history import snapshots
        limits.check_count(top, "top")
        limits.check_type(type_)
        snapshots.check_window(since, until)
        return self._tx.read(lambda conn: snapshots.movers(
            conn, type_, top, since, until, every))

    def prune(self, keep: timedelta, every: str | None = None) -> int:
        """Delete snapshots whose bucket began more than `keep` before the current hour."""
        from scidex_alloc.history import snapshots
        if every is not None:
            snapshots.check_period(every)
        now = utcnow()
        return self._tx.write_retried(lambda conn: snapshots.prune(conn, every, keep, now))

    def plan(self, pool: str, unit: str = BASE_UNIT, type_: str | None = None,
             cap: str | None = None, minimum: str | None = None) -> list[PlanPart]:
        """Split a pool of whole units across artifacts by remaining budget. Reads only."""
        from scidex_alloc.history import planning, plans
        whole = {name: planning.whole_units(value, name)
                 for name, value in (("pool", pool), ("cap", cap), ("minimum", minimum))}
        limits.check_type(type_)
        return self._tx.read(lambda conn: plans.plan(
            conn, self.params, unit=unit, type_=type_, **whole))

    def pipeline(self, buckets: int = PIPELINE_BUCKETS) -> Pipeline:
        """Totals per artifact type, and the newest `buckets` snapshot totals over time."""
        from scidex_alloc.serving import pipeline
        return self._summing_read(("pipeline", buckets), lambda conn: pipeline.pipeline(
            conn, self.params, buckets))

    def activity(self, every: str = "day", type_: str | None = None,
                 since: datetime | None = None, until: datetime | None = None) -> Activity:
        """Spend log tokens by kind, per artifact type and per bucket of `every`, within
        [since, until); `since` defaults to ACTIVITY_BUCKETS buckets back, the current one
        included, and `until` to the end of the current bucket."""
        from scidex_alloc.history import snapshots
        from scidex_alloc.serving import activity
        snapshots.check_period(every)
        limits.check_type(type_)
        snapshots.check_window(since, until)
        now = utcnow()
        since = since or activity.default_since(now, every)
        until = until or activity.default_until(now, every)
        return self._summing_read(("activity", every, type_, since, until), lambda conn:
                                  activity.activity(conn, every, type_, since, until))

    def agents(self, type_: str | None = None, limit: int = PAGE_SIZE, offset: int = 0
               ) -> list[AgentSummary]:
        """Per agent: live and stale claims, live holds, investigations and their mean
        reward, tokens spent; most recently active first."""
        from scidex_alloc.serving import activity
        limits.check_type(type_)
        limits.check_count(limit, "limit")
        limits.check_offset(offset)
        return self._summing_read(("agents", type_, limit, offset), lambda conn:
                                  activity.agents(conn, type_, utcnow(), limit, offset))

    def claim_page(self, status: str = CLAIM_STATUSES_SHOWN[0], agent: str | None = None,
                   artifact_id: str | None = None, type_: str | None = None,
                   limit: int = PAGE_SIZE, offset: int = 0) -> list[ClaimRow]:
        """Claims that are live, stale (active, lease run out), done, or all; newest first."""
        from scidex_alloc.ledger import spending
        from scidex_alloc.queue import listing
        agent = spending.text_field({"agent": agent}, "agent")
        if status not in CLAIM_STATUSES_SHOWN:
            raise UsageError(f"{{status}} must be one of {', '.join(CLAIM_STATUSES_SHOWN)}",
                             "status")
        limits.check_type(type_)
        limits.check_count(limit, "limit")
        limits.check_offset(offset)
        if artifact_id is not None:
            limits.check_artifact_id(artifact_id)
        return self._tx.read(lambda conn: listing.page(
            conn, utcnow(), status, agent, artifact_id, type_, limit, offset))

    def spends(self, artifact_id: str | None = None, agent: str | None = None,
               kind: str | None = None, limit: int = PAGE_SIZE, offset: int = 0
               ) -> list[LogEntry]:
        """A page of the spend log, newest first."""
        from scidex_alloc.ledger import spending
        fields = {"agent": agent, "kind": kind}
        agent, kind = (spending.text_field(fields, name) for name in fields)
        limits.check_count(limit, "limit")
        limits.check_offset(offset)
        if artifact_id is not None:
            limits.check_artifact_id(artifact_id)
        return self._tx.read(lambda conn: spending.log_page(
            conn, artifact_id, agent, kind, limit, offset))

    def gauges(self) -> Gauges:
        """The pipeline's totals per type, the tokens live holds keep per type, and the
        live claims: what `/metrics` reports."""
        from scidex_alloc.serving import pipeline
        from scidex_alloc.serving.results import Gauges
        held, live = self._summing_read(("gauges",), lambda conn: pipeline.live_holds_and_claims(
            conn, utcnow()))
        return Gauges(self.pipeline().types, held, live)

    def load(self, what: str, stream: IO[bytes], fmt: str,
             progress: Callable[[int], None] | None = None) -> LoadReport:
        """Import a whole file in one transaction: either every row lands or none does."""
        from scidex_alloc.loading import importer
        return self._tx.write(lambda conn: importer.load(conn, what, stream, fmt, progress))

    def populate(self, batches) -> dict[str, int]:
        """Bulk-insert (table, columns, rows) batches in one transaction; counts per table."""
        from scidex_alloc.loading import importer
        return self._tx.write(lambda conn: importer.populate(conn, batches))

    def upgrade(self) -> str:
        """Create the schema or upgrade it to the newest revision. Not a write transaction:
        a database already at the newest revision is only read (it may be read-only)."""
        from scidex_alloc.storage import migrate
        with self.engine.begin() as conn:
            return migrate.upgrade(conn)

    def rebuild_balances(self) -> tuple[int, int]:
        """Make the maintained balances exact again from the source tables, with their
        totals, indexes and triggers (after manual surgery or a restore): how many artifacts
        there are, and how many balances were wrong."""
        from scidex_alloc.budgets import balances

        def rebuild(connection):
            now = utcnow()
            wrong = list(connection.scalars(balances.mismatches(), {"now": now}))
            return balances.mend(connection, now, wrong), len(wrong)
        return self._tx.write_retried(rebuild)

    def current(self) -> tuple[str | None, str]:
        """The database's schema revision, and the newest one this version knows."""
        from scidex_alloc.storage import migrate
        return self._tx.read(migrate.current), migrate.head()


class _FoldingWrites:
    """The transactions of `next --claim`, which every agent loops on: each write ends by
    folding up to PER_WRITE pending rows (folding.fold_pending, which waits for no lock),
    so that while agents work, the pending artifacts every reader sums again stay few."""

    def __init__(self, tx: Transactions):
        self._tx = tx
        self.read = tx.read

    def write_retried(self, work: Callable):
        from scidex_alloc.budgets import folding

        def then_fold(connection):
            done = work(connection)
            folding.fold_pending(connection, utcnow(), folding.PER_WRITE)
            return done
        return self._tx.write_retried(then_fold)


def _unit(unit: str | None) -> str | None:
    from scidex_alloc.ledger import spending
    return spending.text_field({"unit": unit}, "unit")


def _amount(amount: str, unit: str | None, param: str) -> tuple[Decimal, str]:
    """An amount and its unit (default: tokens), checked; errors name `param`."""
    return parse_amount(amount, param=param), _unit(unit) or BASE_UNIT


def _check_ttl(ttl: timedelta, param: str) -> None:
    """How long a hold lives: more than 0, at most MAX_HOLD_TTL."""
    if not timedelta(0) < ttl <= MAX_HOLD_TTL:
        raise UsageError(f"{{{param}}} of a hold must be more than 0 and at most "
                         f"{MAX_HOLD_TTL.days} days", param)
