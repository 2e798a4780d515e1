"""`alloc load`'s decisions: check every row of a file and bulk-insert it in the caller's
transaction. Rows are checked in chunks with set-based look-ups (which referenced
artifacts exist, which keys are taken); after the first bad row nothing more is
inserted, and the caller rolls the transaction back.
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
    columns: tuple[str, ...] | None = None
    seen: set[str] = set()
    chunk: list[tuple[int, tuple]] = []
    for line, record in loader.records(stream, fmt):
        if len(report.problems) >= MAX_PROBLEMS:
            break
        if isinstance(record, str):
            report.problems.append(RowProblem(line, record))
            continue
        if columns is None:
            columns = loader.columns_for(spec, record)
        try:
            chunk.append((line, loader.validate(spec, columns, record)))
        except loader.RowError as error:
            report.problems.append(RowProblem(line, str(error)))
        if len(chunk) >= CHUNK:
            _insert_chunk(session, spec, table, columns, chunk, seen, report)
            chunk = []
            if progress is not None:
                progress(CHUNK)
    if chunk:
        _insert_chunk(session, spec, table, columns, chunk, seen, report)
    if report.problems:
        report.loaded = 0
    elif spec.serial_id and columns and "id" in columns:
        bulk.advance_sequence(session, table)
    return report


def _insert_chunk(session, spec, table, columns, chunk, seen, report) -> None:
    index = {name: i for i, name in enumerate(columns)}
    key = spec.unique or "artifact_id"
    keys = {row[index[key]] for _, row in chunk}
    if spec.unique:
        existing = set(session.scalars(select(table.c[key]).where(table.c[key].in_(keys))))
    if spec.references_artifacts:
        known = set(session.scalars(select(artifacts.c.id).where(artifacts.c.id.in_(keys))))
    good = []
    for line, row in chunk:
        value = row[index[key]]
        if spec.references_artifacts and value not in known:
            report.problems.append(RowProblem(line, f"unknown artifact {value!r}"))
        elif spec.unique and (value in existing or value in seen):
            report.problems.append(RowProblem(line, f"duplicate {key} {value!r}"))
        else:
            if spec.unique:
                seen.add(value)
            good.append(row)
    if not report.problems:
        bulk.insert_rows(session, table, columns, good)
        report.loaded += len(good)
