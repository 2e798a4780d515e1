"""`alloc spend --file`: a file of spends applied line by line, in chunked transactions.

Each chunk commits on its own, so a killed run leaves only whole lines; with `atomic`
the file is one transaction and any failed line writes nothing.
"""

from __future__ import annotations

from functools import partial
from typing import IO, Callable, Iterable, Iterator

from scidex_alloc.errors import USAGE, UsageError
from scidex_alloc.formula import Params
from scidex_alloc.ledger import spending
from scidex_alloc.ledger.results import BatchSummary, SpendOutcome
from scidex_alloc.loading import reader
from scidex_alloc.storage import bulk
from scidex_alloc.storage.transactions import Transactions

# Lines per transaction. On SQLite a commit of 1,000 lines rewrote and checkpointed about
# as many index pages as it inserted rows; 20,000 lines share most of them and probe a
# denser, sorted id list. Their ids and keys stay well within SQLite's 32,766 bound
# parameters, and the write lock is held for about a second.
SPEND_CHUNK = 20_000

Apply = Callable[[list[spending.SpendRequest]], list[SpendOutcome]]


def apply_file(transactions: Transactions, params: Params, stream: IO[bytes], fmt: str,
               atomic: bool = False, progress: Callable[[int], None] | None = None
               ) -> BatchSummary:
    """Every line's outcome, counted; `progress` hears how many lines each chunk took."""
    summary = BatchSummary(atomic=atomic)
    chunks = _chunks(reader.records(stream, fmt), SPEND_CHUNK)
    with bulk.paused_cycle_collection():
        if atomic:
            with transactions.writing() as connection:
                for chunk in chunks:
                    _apply_chunk(chunk, summary, progress, partial(spending.apply, connection,
                                                                   params))
                if summary.failures:
                    connection.rollback()
                    summary.recorded = 0
            return summary

        def committed(requests: list[spending.SpendRequest]) -> list[SpendOutcome]:
            """Requests in a transaction of their own (retried: see write_retried)."""
            return transactions.write_retried(
                lambda connection: spending.apply(connection, params, requests))

        for chunk in chunks:
            _apply_chunk(chunk, summary, progress, committed)
    return summary


def _apply_chunk(chunk: list[tuple], summary: BatchSummary,
                 progress: Callable[[int], None] | None, apply: Apply) -> None:
    """Check a chunk's lines, apply the valid ones, and count every line's outcome."""
    outcomes, requests = [], []
    for line, fields in chunk:
        try:
            if isinstance(fields, str):  # the reader's word on an unreadable line
                raise UsageError(fields)
            requests.append(spending.request(line, fields))
        except UsageError as error:
            outcomes.append(SpendOutcome(line, "invalid", USAGE, str(error)))
    if requests:
        outcomes += apply(requests)
    for outcome in sorted(outcomes, key=lambda o: o.line):
        summary.count(outcome)
    if progress is not None:
        progress(len(chunk))


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
