"""The allocator service: every decision, one transaction per operation.

Usable from Python without the CLI::

    from scidex_alloc.allocator import Allocator
    allocator = Allocator.open("sample.db")
    for row in allocator.rank(type_="hypothesis", limit=5):
        print(row.artifact_id, row.budget)
"""

from __future__ import annotations

import gc
import math
import random
import time
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import IO, TYPE_CHECKING, Callable, Iterator, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from scidex_alloc.budgets import queries
from scidex_alloc.errors import (
    USAGE,
    IdempotencyConflict,
    InsufficientBudget,
    UnknownArtifact,
    UnknownId,
    UsageError,
)
from scidex_alloc.formula import MAX_TOTAL, Params, exact, parse_amount, to_tokens
from scidex_alloc.history import plans
from scidex_alloc.ledger import spending
from scidex_alloc.limits import MAX_COUNT, MAX_ID
from scidex_alloc.options import (
    EXPLORATION,
    LEASE,
    NEXT_LIMIT,
    PIPELINE_BUCKETS,
    SORT_KEYS,
    UCB_WEIGHT,
)
from scidex_alloc.serving import pipeline

# Modules one area needs are imported inside its methods: start-up is paid on every call.
from scidex_alloc.storage import database
from scidex_alloc.storage.schema import BASE_UNIT, artifacts, exchange_rates, utcnow

if TYPE_CHECKING:
    from scidex_alloc.budgets.results import BudgetDetail, BudgetRow, Conversion, Rate
    from scidex_alloc.history.results import HistoryPoint, Mover, PlanPart, SnapshotResult
    from scidex_alloc.ledger.results import (
        AuditCheck,
        BatchSummary,
        LogEntry,
        SpendOutcome,
        SpendRecord,
    )
    from scidex_alloc.loading.results import LoadReport
    from scidex_alloc.queue.results import ClaimInfo, QueueEntry
    from scidex_alloc.serving.results import Pipeline

# Lines per transaction of `spend --file`. On SQLite a commit of 1,000 lines rewrote and
# checkpointed about as many index pages as it inserted rows; 20,000 lines share most of
# them and probe a denser, sorted id list. Their ids and keys stay well within SQLite's
# 32,766 bound parameters, and the write lock is held for about a second.
SPEND_CHUNK = 20_000
LOADED_TOTALS = {"positions": "demand", "bounties": "bounty"}  # what a load can push too far
SPEND_ERRORS = {"refused": InsufficientBudget, "unknown": UnknownArtifact,
                "conflict": IdempotencyConflict, "invalid": UsageError}
# A write transaction that a concurrent writer made fail runs again, up to this many
# attempts in all, each after a random pause of up to RETRY_PAUSE seconds times the
# attempts so far (so that the parties of a deadlock do not meet again at once).
WRITE_ATTEMPTS = 5
RETRY_PAUSE = 0.05
# PostgreSQL cancels one party of a deadlock (40P01) or of a serialization failure (40001).
RETRIED_SQLSTATES = frozenset({"40P01", "40001"})
T = TypeVar("T")


class Allocator:
    def __init__(self, engine: Engine, params: Params | None = None, target=None):
        self.engine = engine
        self.params = params or Params()
        self.target = target
        self._writer = engine.execution_options(sqlite_begin="IMMEDIATE")

    @classmethod
    def open(cls, db: str | None = None, params: Params | None = None) -> "Allocator":
        """Open the database named by --db, $SCIDEX_DB or the default file (created on first use)."""
        target = database.resolve(db)
        fresh_default = target.is_default and not target.sqlite_path.exists()
        allocator = cls(database.engine_for(target), params or Params.from_env(), target)
        if fresh_default:
            allocator.upgrade()
        return allocator

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.begin() as connection:
            yield connection

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._writer.begin() as connection:
            yield connection

    def _write_retried(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in a write transaction, and again when a concurrent writer made it
        fail: a deadlock or serialization failure, or a unique key that a concurrent insert
        took first (the re-run sees that row, and replays or looks elsewhere). Only for work
        that reads all it needs again: never a stream that was consumed."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self._write() as connection:
                    return work(connection)
            except Exception as error:
                if attempt == WRITE_ATTEMPTS or not self._retriable(error):
                    raise
            time.sleep(random.uniform(0, RETRY_PAUSE * attempt))
        raise AssertionError("unreachable")

    def _retriable(self, error: Exception) -> bool:
        integrity = (sa_exc.IntegrityError, self.engine.dialect.loaded_dbapi.IntegrityError)
        return isinstance(error, integrity) or database.sqlstate(error) in RETRIED_SQLSTATES

    # -- budgets ---------------------------------------------------------

    def rank(self, type_: str | None = None, limit: int | None = None, by: str = SORT_KEYS[0],
             offset: int = 0) -> Iterator[BudgetRow]:
        """Artifacts by `by` descending, ties by id; streamed, so any size fits in memory."""
        if by not in SORT_KEYS:
            raise UsageError(f"--by must be one of {', '.join(SORT_KEYS)}")
        _check_limit(limit)
        _check_type(type_)
        if not 0 <= offset <= MAX_COUNT:
            raise UsageError(f"invalid offset: must be from 0 to {MAX_COUNT}")
        stmt = queries.ranked(self.params, utcnow(), type_, by, limit, offset)
        return self._stream(stmt, lambda i, row: queries.budget_row(offset + i, row, self.params))

    def pipeline(self, buckets: int = PIPELINE_BUCKETS) -> Pipeline:
        """Totals per artifact type, and the newest `buckets` snapshot totals over time."""
        from scidex_alloc.history import snapshots
        from scidex_alloc.serving.results import Pipeline, PipelinePoint, TypeTotals

        total = pipeline.split_total
        with self._read() as connection:
            types = [TypeTotals(r.type, r.artifacts,
                                *(total(r, name) for name in pipeline.PIPELINE_TOTALS), r.invalid)
                     for r in connection.execute(pipeline.pipeline_by_type(self.params, utcnow()))]
            period = snapshots.finest(connection, None)
            points = [] if period is None else [
                PipelinePoint(r.bucket, *(total(r, name) for name in pipeline.SNAPSHOT_TOTALS))
                for r in connection.execute(pipeline.snapshot_totals(period, buckets))]
        return Pipeline(types, period, points)

    def _stream(self, stmt, convert: Callable) -> Iterator:
        """Rows of a read-only statement, fetched in batches inside one transaction."""
        with self._read() as connection:
            result = connection.execute(stmt.execution_options(yield_per=2000))
            for position, row in enumerate(result, start=1):
                yield convert(position, row)

    def budget(self, artifact_id: str) -> BudgetDetail:
        from scidex_alloc.budgets.results import BudgetDetail, UnitValues

        _check_artifact_id(artifact_id)
        with self._read() as connection:
            row = connection.execute(queries.one(self.params, utcnow(), artifact_id)).first()
            if row is None:
                raise UnknownArtifact(f"unknown artifact {artifact_id!r}")
            rates = connection.execute(select(exchange_rates).order_by(exchange_rates.c.unit)).all()
        budget_row = queries.budget_row(1, row, self.params)
        return BudgetDetail(
            budget_row,
            [
                UnitValues(
                    r.unit,
                    exact(r.units_per_token),
                    *(None if value is None else exact(value * r.units_per_token)
                      for value in (budget_row.budget, budget_row.spent, budget_row.remaining)),
                )
                for r in rates
            ],
        )

    # -- exchange rates --------------------------------------------------

    def rates(self) -> list[Rate]:
        from scidex_alloc.budgets.results import Rate

        with self._read() as connection:
            rows = connection.execute(select(exchange_rates).order_by(exchange_rates.c.unit)).all()
        return [Rate(BASE_UNIT, Decimal(1), None)] + [
            Rate(r.unit, exact(r.units_per_token), r.updated_at) for r in rows
        ]

    def set_rate(self, unit: str, units_per_token: str) -> Rate:
        from scidex_alloc import limits
        from scidex_alloc.budgets.results import Rate

        unit = limits.check_text(unit.strip(), "unit", limits.UNIT)
        if not unit or unit == BASE_UNIT:
            raise UsageError(f"unit must be a name of 1 to {limits.UNIT} characters other than "
                             f"{BASE_UNIT!r}")
        value = parse_amount(units_per_token, "units per token")
        now = utcnow()

        def upsert(connection: Connection) -> None:
            updated = connection.execute(
                exchange_rates.update()
                .where(exchange_rates.c.unit == unit)
                .values(units_per_token=value, updated_at=now)
            ).rowcount
            if not updated:
                connection.execute(
                    exchange_rates.insert().values(unit=unit, units_per_token=value, updated_at=now)
                )

        self._write_retried(upsert)
        return Rate(unit, value, now)

    def rate_of(self, connection: Connection, unit: str) -> Decimal:
        if unit == BASE_UNIT:
            return Decimal(1)
        rate = connection.execute(
            select(exchange_rates.c.units_per_token).where(exchange_rates.c.unit == unit)
        ).scalar()
        if rate is None:
            raise UsageError(f"unknown unit {unit!r}: see `alloc rates`")
        return exact(rate)

    def convert(self, amount: str, from_unit: str = BASE_UNIT, to_unit: str = "llm-tokens"
                ) -> Conversion:
        from scidex_alloc.budgets.results import Conversion

        with self._read() as connection:
            source = self.rate_of(connection, from_unit)
            dest = self.rate_of(connection, to_unit)
        value = parse_amount(amount, "amount", allow_zero=True)
        to_tokens(value, source, from_unit)  # within what the ledger could hold
        rate = dest / source
        return Conversion(value, from_unit, to_unit, rate.normalize(), exact(value * rate))

    # -- spending --------------------------------------------------------

    def spend(self, artifact_id: str, amount: str, unit: str | None = None, kind: str | None = None,
              agent: str | None = None, note: str | None = None, key: str | None = None,
              allow_overdraft: bool = False) -> SpendRecord:
        """Record one spend, or replay the one recorded under the same key; raises on refusal."""
        from scidex_alloc.ledger import spending

        req = spending.request(0, {
            "artifact_id": artifact_id, "amount": amount, "unit": unit, "kind": kind,
            "agent": agent, "note": note, "key": key, "allow_overdraft": allow_overdraft})
        outcome = self._apply_committed([req])[0]
        if not outcome.ok:
            raise SPEND_ERRORS[outcome.status](outcome.message)
        return outcome.record

    def spend_file(self, stream: IO[bytes], fmt: str, atomic: bool = False,
                   progress: Callable[[int], None] | None = None) -> BatchSummary:
        """Apply a CSV or JSON Lines file of spends line by line, in chunked transactions.

        Each chunk commits on its own, so a killed run leaves only whole lines; with
        `atomic` the file is one transaction and any failed line writes nothing.
        """
        from scidex_alloc.ledger.results import BatchSummary
        from scidex_alloc.loading import reader

        summary = BatchSummary(atomic=atomic)
        chunks = _chunks(reader.records(stream, fmt), SPEND_CHUNK)
        with _no_cycle_collection():
            if atomic:
                with self._write() as connection:
                    for chunk in chunks:
                        self._spend_chunk(chunk, summary, progress, connection)
                    if summary.failures:
                        connection.rollback()
                        summary.recorded = 0
                return summary
            for chunk in chunks:
                self._spend_chunk(chunk, summary, progress)
        return summary

    def _spend_chunk(self, chunk, summary, progress, connection=None) -> None:
        from scidex_alloc.ledger import spending
        from scidex_alloc.ledger.results import SpendOutcome

        outcomes, requests = [], []
        for line, fields in chunk:
            try:
                if isinstance(fields, str):
                    raise UsageError(fields)
                requests.append(spending.request(line, fields))
            except UsageError as error:
                outcomes.append(SpendOutcome(line, "invalid", USAGE, str(error)))
        if requests:
            outcomes += (spending.apply(connection, self.params, requests) if connection is not None
                         else self._apply_committed(requests))
        for outcome in sorted(outcomes, key=lambda o: o.line):
            summary.count(outcome)
        if progress is not None:
            progress(len(chunk))

    def _apply_committed(self, requests: list) -> list[SpendOutcome]:
        """Apply requests in their own transaction (retried: see _write_retried)."""
        from scidex_alloc.ledger import spending

        return self._write_retried(lambda connection: spending.apply(connection, self.params,
                                                                   requests))

    def reverse(self, spend_id: int, agent: str | None = None, note: str | None = None
                ) -> SpendRecord:
        from scidex_alloc.ledger import spending

        fields = {"agent": agent, "note": note}
        agent, note = (spending.text_field(fields, name) for name in fields)
        _check_id(spend_id, "spend")
        return self._write_retried(
            lambda connection: spending.reverse(connection, self.params, spend_id, agent, note))

    def log(self, artifact_id: str | None = None, since: datetime | None = None,
            limit: int | None = None) -> Iterator[LogEntry]:
        """The spend log, oldest first; streamed."""
        from scidex_alloc.ledger.results import LogEntry

        _check_limit(limit)
        if artifact_id is not None:
            _check_artifact_id(artifact_id)
            with self._read() as connection:
                if not connection.execute(queries.artifact_exists(artifact_id)).first():
                    raise UnknownArtifact(f"unknown artifact {artifact_id!r}")
        stmt = spending.spend_log(artifact_id, since, limit)
        return self._stream(stmt, lambda _, row: LogEntry(**row._mapping))

    def audit(self) -> list[AuditCheck]:
        from scidex_alloc.ledger import audit

        with self._read() as connection:
            return audit.run(connection, self.params)

    # -- work queue ------------------------------------------------------

    def next(self, type_: str | None = None, limit: int = NEXT_LIMIT, agent: str | None = None,
             claim: bool = False, lease: timedelta = LEASE,
             ucb_weight: float | None = None, exploration: float | None = None
             ) -> list[QueueEntry]:
        """The best next investigations; with `claim`, the top `limit` are leased to `agent`."""
        from scidex_alloc.ledger import spending
        from scidex_alloc.queue import claims

        ucb_weight = UCB_WEIGHT if ucb_weight is None else ucb_weight
        exploration = EXPLORATION if exploration is None else exploration
        _check_limit(limit)
        _check_type(type_)
        if not 0 <= ucb_weight <= 1:
            raise UsageError("--ucb-weight must be from 0 to 1")
        if not 0 <= exploration <= 1000:
            raise UsageError("--exploration must be from 0 to 1000")
        if agent is not None:
            agent = spending.text_field({"agent": agent}, "agent")
        if not claim:
            with self._read() as connection:
                scored = claims.ranked(connection, self.params, utcnow(), type_, agent,
                                         ucb_weight, exploration)
            return [claims.entry(i, s, budget, row.claim_id, row.lease_expires_at)
                    for i, (s, budget, row) in enumerate(scored[:limit], start=1)]
        if agent is None:
            raise UsageError("--claim needs --agent")
        return self._write_retried(lambda connection: claims.claim_top(
            connection, self.params, type_, agent, lease, limit, ucb_weight, exploration))

    def done(self, claim_id: int, reward: float | None = None) -> ClaimInfo:
        """Close a claim as a completed investigation, with its reward in [0, 1] if known."""
        from scidex_alloc.queue import claims

        value = None
        if reward is not None:
            if not math.isfinite(reward) or not 0 <= reward <= 1:
                raise UsageError("--reward must be a number from 0 to 1")
            value = Decimal(repr(reward)).quantize(Decimal("1e-9"))
        _check_id(claim_id, "claim")
        return self._write_retried(
            lambda connection: claims.finish(connection, claim_id, "done", value))

    def release(self, claim_id: int) -> ClaimInfo:
        """Give a claim back without an outcome."""
        from scidex_alloc.queue import claims

        _check_id(claim_id, "claim")
        return self._write_retried(
            lambda connection: claims.finish(connection, claim_id, "released", None))

    def claims(self, agent: str | None = None, expired: bool = False) -> list[ClaimInfo]:
        from scidex_alloc.queue import claims

        with self._read() as connection:
            return claims.listing(connection, agent, expired)

    # -- snapshots and plans ---------------------------------------------

    def snapshot(self, type_: str | None = None, every: str = "hour") -> SnapshotResult:
        """Record every artifact's budget in the current bucket, once: a second snapshot of
        the same bucket, even a concurrent one, inserts nothing."""
        from scidex_alloc import timeparse
        from scidex_alloc.history import snapshots
        from scidex_alloc.history.results import SnapshotResult

        snapshots.check_period(every)
        _check_type(type_)
        now = utcnow()
        bucket = timeparse.bucket_start(now, every)
        def record(connection: Connection) -> int:
            stmt = snapshots.snapshot_insert(connection.dialect.name, self.params, now,
                                           type_, every, bucket)
            return connection.execute(stmt.execution_options(preserve_rowcount=True)).rowcount

        return SnapshotResult(every, bucket, now, self._write_retried(record))

    def history(self, artifact_id: str, since: datetime | None = None,
                until: datetime | None = None, every: str | None = None) -> list[HistoryPoint]:
        """One artifact's snapshots, oldest first, of `every` (default: its finest period)."""
        from scidex_alloc.history import snapshots

        _check_artifact_id(artifact_id)
        snapshots.check_window(since, until)
        with self._read() as connection:
            return snapshots.history(connection, artifact_id, since, until, every)

    def movers(self, type_: str | None = None, top: int = 10, since: datetime | None = None,
               until: datetime | None = None, every: str | None = None) -> list[Mover]:
        """The artifacts whose budget rose or fell most over the window."""
        from scidex_alloc.history import snapshots

        _check_limit(top, "--top")
        _check_type(type_)
        snapshots.check_window(since, until)
        with self._read() as connection:
            return snapshots.movers(connection, type_, top, since, until, every)

    def prune(self, keep: timedelta, every: str | None = None) -> int:
        """Delete snapshots whose bucket began more than `keep` before the current hour."""
        from scidex_alloc import timeparse
        from scidex_alloc.history import snapshots

        if every is not None:
            snapshots.check_period(every)
        cutoff = timeparse.bucket_start(utcnow(), "hour") - keep
        return self._write_retried(
            lambda connection: connection.execute(snapshots.prune_snapshots(every, cutoff)).rowcount)

    def plan(self, pool: str, unit: str = BASE_UNIT, type_: str | None = None,
             cap: str | None = None, minimum: str | None = None) -> list[PlanPart]:
        """Split a pool of whole units across artifacts by remaining budget. Reads only."""
        from scidex_alloc.history import planning
        from scidex_alloc.history.results import PlanPart

        whole = {name: planning.whole_units(value, option) for name, value, option in (
            ("pool", pool, "--pool"), ("cap", cap, "--cap"), ("min", minimum, "--min"))}
        _check_type(type_)
        with self._read() as connection:
            self.rate_of(connection, unit)  # an unknown unit is an error
            rows = {r.artifact_id: queries.budget_row(0, r, self.params) for r in
                    connection.execute(plans.plan_candidates(self.params, utcnow(), type_))}
        parts = planning.split(whole["pool"], {k: r.remaining for k, r in rows.items()},
                               cap=whole["cap"], minimum=whole["min"])
        total = Decimal(whole["pool"]) or Decimal(1)
        return [PlanPart(p.artifact_id, rows[p.artifact_id].type, rows[p.artifact_id].remaining,
                         p.share, (p.share / total).quantize(Decimal("1e-12")))
                for p in parts]

    # -- loading ---------------------------------------------------------

    def load(self, what: str, stream: IO[bytes], fmt: str,
             progress: Callable[[int], None] | None = None) -> LoadReport:
        """Import a whole file in one transaction: either every row lands or none does."""
        from scidex_alloc.loading import importer

        try:
            with _no_cycle_collection(), self._write() as connection:
                report = importer.load(connection, what, stream, fmt, progress)
                if not report.ok:
                    connection.rollback()
                elif what in LOADED_TOTALS:
                    _check_totals(connection, what)
        except (sa_exc.IntegrityError, self.engine.dialect.loaded_dbapi.IntegrityError) as error:
            raise UsageError(f"{what} rejected, nothing loaded: {database.first_line(error)}") \
                from None
        return report

    def populate(self, batches) -> dict[str, int]:
        """Bulk-insert (table, columns, rows) batches in one transaction; counts per table."""
        from scidex_alloc.storage import bulk

        counts: dict[str, int] = {}
        with self._write() as connection:
            for name, columns, rows in batches:
                bulk.insert_rows(connection, artifacts.metadata.tables[name], columns, rows)
                counts[name] = counts.get(name, 0) + len(rows)
        return counts

    # -- schema ----------------------------------------------------------

    def upgrade(self) -> str:
        from scidex_alloc.storage import migrate

        with self.engine.begin() as connection:
            return migrate.upgrade(connection)

    def current(self) -> tuple[str | None, str]:
        from scidex_alloc.storage import migrate

        with self.engine.connect() as connection:
            return migrate.current(connection), migrate.head()


def _check_totals(connection: Connection, what: str) -> None:
    """Refuse a load that takes an artifact's total beyond MAX_TOTAL (rolled back)."""
    name = LOADED_TOTALS[what]
    found = connection.execute(queries.beyond_limit(utcnow(), name)).scalar()
    if found is not None:
        raise UsageError(f"{what} rejected, nothing loaded: {found}'s {name} would exceed "
                         f"the maximum {MAX_TOTAL.normalize():f} tokens")


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Pause the cyclic garbage collector, as it was, for a batch: each line allocates
    objects that reference counting frees with their chunk, and every collection they
    trigger also scans all objects of the imported libraries (~14 % of a batch's CPU)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _chunks(items, size: int):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _check_limit(limit: int | None, option: str = "--limit") -> None:
    """Checked before any query runs or any row is printed."""
    if limit is not None and not 1 <= limit <= MAX_COUNT:
        raise UsageError(f"{option} must be from 1 to {MAX_COUNT}")


def _check_type(type_: str | None) -> None:
    """PostgreSQL text cannot hold NUL: such a filter is invalid, not a database failure."""
    if type_ is not None and "\x00" in type_:
        raise UsageError("invalid type: must not contain a NUL character")


def _check_artifact_id(artifact_id: str) -> None:
    """An id with NUL cannot be stored, so it is unknown (PostgreSQL would refuse the query)."""
    if "\x00" in artifact_id:
        raise UnknownArtifact(f"unknown artifact {artifact_id!r}")


def _check_id(row_id: int, what: str) -> None:
    """Ids are 64-bit integers: one beyond them cannot exist (and no driver would take it)."""
    if not -MAX_ID - 1 <= row_id <= MAX_ID:
        raise UnknownId(f"no {what} with id {row_id}")
