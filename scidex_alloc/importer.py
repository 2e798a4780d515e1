"""`alloc load`'s decisions: check every row of a file and bulk-insert it in the caller's
transaction. Values are checked row by row (loader); the database's own constraints
check references and keys. Only when it refuses a chunk, or after a bad row, are the
chunk's rows looked up set-based (which referenced artifacts exist, which keys are
taken) to name the lines at fault. After the first bad row nothing more is inserted,
and the caller rolls the transaction back.
"""

from __future__ import annotations

from typing import IO, Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from scidex_alloc import bulk, loader
from scidex_alloc.errors import UsageError
from scidex_alloc.results import LoadReport, RowProblem
from scidex_alloc.schema import artifacts

CHUNK = 10_000
MAX_PROBLEMS = 1000  # past this, a file is plainly wrong: stop reading


def load(session: Session, what: str, stream: IO[bytes], fmt: str,
         progress: Callable[[int], None] | None = None) -> LoadReport:
    spec = loader.SPECS.get(what)
    if spec is None:
        raise UsageError(f"cannot load {what!r}: choose one of {', '.join(loader.SPECS)}")
    table = artifacts.metadata.tables[spec.table]
    report = LoadReport(what)
    rows = loader.Rows(spec, stream, fmt)
    seen: set[str] = set()
    chunk: list[tuple[int, tuple]] = []
    for line, row in rows:
        if len(report.problems) >= MAX_PROBLEMS:
            break
        if isinstance(row, str):
            report.problems.append(RowProblem(line, row))
            continue
        chunk.append((line, row))
        if len(chunk) >= CHUNK:
            _insert_chunk(session, spec, table, rows.columns, chunk, seen, report)
            chunk = []
            if progress is not None:
                progress(CHUNK)
    if chunk:
        _insert_chunk(session, spec, table, rows.columns, chunk, seen, report)
    if report.problems:
        report.loaded = 0
    elif spec.serial_id and rows.columns and "id" in rows.columns:
        bulk.advance_sequence(session, table)
    return report


def _insert_chunk(session, spec, table, columns, chunk, seen, report) -> None:
    if not report.problems:
        try:
            with session.begin_nested():
                bulk.insert_rows(session, table, columns, [row for _, row in chunk])
        except session.connection().dialect.loaded_dbapi.IntegrityError:
            report.problems += _faults(session, spec, table, columns, chunk, seen)
            if not report.problems:
                raise
        else:
            report.loaded += len(chunk)
        return
    report.problems += _faults(session, spec, table, columns, chunk, seen)


def _faults(session, spec, table, columns, chunk, seen) -> list[RowProblem]:
    """The rows of a chunk that name unknown artifacts or taken keys; `seen` collects
    the keys of rows that were checked but not inserted."""
    index = {name: i for i, name in enumerate(columns)}
    key = spec.unique or "artifact_id"
    keys = {row[index[key]] for _, row in chunk}
    if spec.unique:
        existing = set(session.scalars(select(table.c[key]).where(table.c[key].in_(keys))))
    if spec.references_artifacts:
        known = set(session.scalars(select(artifacts.c.id).where(artifacts.c.id.in_(keys))))
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
