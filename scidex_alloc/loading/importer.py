"""`alloc load` and `alloc generate`: rows bulk-inserted in the caller's transaction.

A file's values are checked row by row (reader.py) and rows stream into the database
a batch of lines at a time as they are read, so on PostgreSQL the server inserts while
we parse. The database's own constraints check references and keys; only when it
refuses a chunk, or after a bad row, are the chunk's rows looked up set-based (which
referenced artifacts exist, which keys are taken) to name the lines at fault. After the
first bad row nothing more is inserted, and the transaction is rolled back.
"""

from __future__ import annotations

from contextlib import contextmanager
from itertools import chain
from operator import itemgetter
from typing import IO, Callable, Iterator

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from scidex_alloc.budgets import bulkwrites, queries, totals
from scidex_alloc.errors import UsageError
from scidex_alloc.formula import MAX_TOTAL
from scidex_alloc.loading import reader
from scidex_alloc.loading.columns import SPECS
from scidex_alloc.loading.results import LoadReport, RowProblem
from scidex_alloc.storage import bulk, database
from scidex_alloc.storage.schema import artifacts, utcnow

# Rows to a savepoint; their distinct keys, looked up at once when the database refuses
# the chunk, stay within bulk.MAX_SQLITE_VARIABLES.
CHUNK = 30_000
MAX_PROBLEMS = 1000  # past this, a file is plainly wrong: stop reading
LOADED_TOTALS = {"positions": "demand", "bounties": "bounty"}  # what a load can push too far
MAX_TOUCHED = 100_000  # artifacts a load keeps the ids of, to sum only their balances again


def load(connection: Connection, what: str, stream: IO[bytes], fmt: str,
         progress: Callable[[int], None] | None = None) -> LoadReport:
    """Load a whole file in the caller's write transaction, which is rolled back when any
    row is bad or a total would go beyond MAX_TOTAL: either every row lands or none does."""
    with bulk.paused_cycle_collection(), _refused_as_usage(connection, what):
        already = _already_beyond_limit(connection, what)
        bulkwrites.suspend(connection)
        report, touched = _insert_file(connection, what, stream, fmt, progress)
        if not report.ok:
            connection.rollback()  # the triggers' suspension with the rest
            return report
        bulkwrites.resume(connection, utcnow(), touched)
        _check_totals(connection, what, already, touched)
    return report


def populate(connection: Connection, batches) -> dict[str, int]:
    """Bulk-insert (table, columns, rows) batches in the caller's transaction; counts per
    table."""
    counts: dict[str, int] = {}
    bulkwrites.suspend(connection)
    for name, columns, rows in batches:
        bulk.insert_rows(connection, artifacts.metadata.tables[name], columns, rows)
        counts[name] = counts.get(name, 0) + len(rows)
    bulkwrites.resume(connection, utcnow())
    return counts


def _insert_file(connection: Connection, what: str, stream: IO[bytes], fmt: str,
                 progress: Callable[[int], None] | None) -> tuple[LoadReport, set[str] | None]:
    """Check and insert every row; after the first bad one only check, naming each. Also
    the ids of the artifacts the rows belong to, while at most MAX_TOUCHED (else None, as
    for new artifacts, whose balances are yet to be made)."""
    spec = SPECS.get(what)
    if spec is None:
        raise UsageError(f"cannot load {what!r}: choose one of {', '.join(SPECS)}")
    table = artifacts.metadata.tables[spec.table]
    report = LoadReport(what)
    rows = reader.Rows(spec, stream, fmt, report.problems, MAX_PROBLEMS)
    batches = rows.batches()
    seen: set[str] = set()
    touched: set[str] | None = set() if "artifact_id" in table.c else None
    while len(report.problems) < MAX_PROBLEMS:
        chunk: list[tuple[int, tuple]] = []
        if report.problems:
            for _ in _kept(batches, chunk):
                pass
            report.problems += _faults(connection, spec, table, rows.columns, chunk, seen)
        else:
            _insert_chunk(connection, spec, table, rows, batches, chunk, seen, report)
        if not chunk:
            break
        if touched is not None:
            at = rows.columns.index("artifact_id")
            touched.update(values[at] for _, values in chunk)
            if len(touched) > MAX_TOUCHED:
                touched = None
        if progress is not None:
            progress(len(chunk))
    if report.problems:
        report.problems.sort(key=lambda problem: problem.line)
        del report.problems[MAX_PROBLEMS:]
        report.loaded = 0
    elif spec.serial_id and rows.columns and "id" in rows.columns:
        bulk.advance_sequence(connection, table)
    return report, touched


def _kept(batches: Iterator[list[tuple[int, tuple]]], chunk: list) -> Iterator[tuple]:
    """The values of the rows of the next batches, as they are read, until `chunk`, which
    keeps their (line, values), holds CHUNK rows or more."""
    for batch in batches:
        chunk += batch
        yield from map(itemgetter(1), batch)
        if len(chunk) >= CHUNK:
            return


def _insert_chunk(connection, spec, table, rows, batches, chunk, seen, report) -> None:
    """Insert the rows of the next batches as they are read, keeping them in `chunk`."""
    values = _kept(batches, chunk)
    first = next(values, None)  # reading the first row settles the columns
    if first is None:
        return
    try:
        with _savepoint(connection):
            bulk.insert_stored(connection, table, rows.columns, chain((first,), values))
    except connection.dialect.loaded_dbapi.IntegrityError:
        for _ in values:  # the rest of the chunk, to name the rows at fault
            pass
        report.problems += _faults(connection, spec, table, rows.columns, chunk, seen)
        if not report.problems:
            raise
    else:
        report.loaded += len(chunk)


@contextmanager
def _savepoint(connection: Connection) -> Iterator[None]:
    """A savepoint to return to when the database refuses rows. An error that ended the
    whole transaction (SQLite's full disk, a lost connection) took the savepoint with it:
    that error is raised, not the failure to return to the savepoint."""
    savepoint = connection.begin_nested()
    try:
        yield
    except BaseException as error:
        try:
            savepoint.rollback()
        except SQLAlchemyError:
            raise error from None
        raise
    savepoint.commit()


def _faults(connection, spec, table, columns, chunk, seen) -> list[RowProblem]:
    """The rows of a chunk that name unknown artifacts or taken keys; `seen` collects
    the keys of rows that were checked but not inserted."""
    index = {name: i for i, name in enumerate(columns)}
    key = spec.unique or "artifact_id"
    keys = {row[index[key]] for _, row in chunk}
    if spec.unique:
        existing = set(connection.scalars(select(table.c[key]).where(table.c[key].in_(keys))))
    if spec.references_artifacts:
        known = set(connection.scalars(select(artifacts.c.id).where(artifacts.c.id.in_(keys))))
    problems = []
    for line, row in chunk:
        value = row[index[key]]
        if spec.references_artifacts and value not in known:
            problems.append(RowProblem(line, f"unknown artifact {value!r}"))
        elif spec.unique and (value in existing or value in seen):
            problems.append(RowProblem(line, f"duplicate {key} {value!r}"))
        elif spec.unique:
            seen.add(value)
    return problems


def _already_beyond_limit(connection: Connection, what: str) -> set[str]:
    """Before a load: the artifacts beyond MAX_TOTAL, counting a pending artifact's demand
    summed again from its positions (its balance does not show it yet; the load's sums
    will)."""
    found = _beyond_limit(connection, what)
    if what == "positions":
        found.update(connection.scalars(queries.pending_beyond_limit()))
    return found


def _beyond_limit(connection: Connection, what: str) -> set[str]:
    """The artifacts whose total that loading `what` moves lies beyond MAX_TOTAL. A total
    beyond it leaves its balance without a valid budget, so while the totals (exact before
    a load and after `bulkwrites.resume`) count no such balance, none is read."""
    if what not in LOADED_TOTALS or totals.invalid(connection) == 0:
        return set()
    return set(connection.scalars(queries.beyond_limit(LOADED_TOTALS[what])))


def _check_totals(connection: Connection, what: str, already: set[str],
                  touched: set[str] | None) -> None:
    """Refuse a load that takes an artifact's total beyond MAX_TOTAL (rolled back): one of
    the artifacts it `touched` when they are known. An artifact `already` beyond it, or
    that another service's rows took there unnoticed until the load summed every balance
    (`alloc audit` names both), does not stop the load."""
    found = _beyond_limit(connection, what) - already
    if touched is not None:
        found &= touched
    if found:
        name = LOADED_TOTALS[what]
        raise UsageError(f"{what} rejected, nothing loaded: {min(found)}'s {name} would exceed "
                         f"the maximum {MAX_TOTAL.normalize():f} tokens")


@contextmanager
def _refused_as_usage(connection: Connection, what: str) -> Iterator[None]:
    """A constraint the database refused after every row was checked (a concurrent writer's
    row, say) is the file's fault: a usage error, nothing loaded."""
    try:
        yield
    except (IntegrityError, connection.dialect.loaded_dbapi.IntegrityError) as error:
        raise UsageError(f"{what} rejected, nothing loaded: {database.first_line(error)}") \
            from None
