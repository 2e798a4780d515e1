"""The ledger's and the queue's decisions through the library, without the CLI, on SQLite
and PostgreSQL: what `from scidex_alloc import Allocator` promises its callers."""

import subprocess
import sys
from decimal import Decimal

import pytest

from scidex_alloc import Allocator
from scidex_alloc.errors import (
    NOT_FOUND,
    IdempotencyConflict,
    InsufficientBudget,
    UnknownArtifact,
    UsageError,
)

D = Decimal


@pytest.fixture
def allocator(db_url):
    """Budgets (price 0.5, so 0.1 x demand): a1 100, a2 10, a3 200."""
    with Allocator.open(db_url) as allocator:
        allocator.populate([
            ("artifacts", ("id", "type"), [("a1", "hypothesis"), ("a2", "analysis"),
                                           ("a3", "hypothesis")]),
            ("positions", ("artifact_id", "tokens"), [("a1", D(1000)), ("a2", D(100)),
                                                      ("a3", D(2000))]),
        ])
        yield allocator


def spent(allocator, artifact_id):
    return allocator.budget(artifact_id).row.spent


def test_a_spend_within_budget_is_recorded(allocator):
    record = allocator.spend("a1", "12.5", kind="debate", agent="bot")
    assert (record.tokens, record.spent, record.remaining) == (D("12.5"), D("12.5"), D("87.5"))
    assert not record.replayed and not record.overdraft
    assert [(e.artifact_id, e.tokens) for e in allocator.log()] == [("a1", D("12.5"))]


def test_a_spend_over_budget_is_refused_and_writes_nothing(allocator):
    with pytest.raises(InsufficientBudget, match="a2 has 10 tokens remaining, 10.5 asked"):
        allocator.spend("a2", "10.5")
    assert spent(allocator, "a2") == 0 and list(allocator.log()) == []
    record = allocator.spend("a2", "10.5", allow_overdraft=True)
    assert record.overdraft and record.remaining == D("-0.5")


def test_a_replayed_key_records_once(allocator):
    first = allocator.spend("a1", "5", key="job-1")
    again = allocator.spend("a1", "5", key="job-1")
    assert again.replayed and again.id == first.id
    assert spent(allocator, "a1") == 5 and len(list(allocator.log("a1"))) == 1


def test_a_key_used_for_another_spend_is_a_conflict(allocator):
    allocator.spend("a1", "5", key="job-1")
    with pytest.raises(IdempotencyConflict, match="job-1"):
        allocator.spend("a1", "6", key="job-1")
    assert spent(allocator, "a1") == 5


def test_a_reversal_cancels_a_spend_once(allocator):
    record = allocator.spend("a1", "7")
    reversal = allocator.reverse(record.id, note="mistake")
    assert reversal.reverses == record.id and spent(allocator, "a1") == 0
    with pytest.raises(IdempotencyConflict):
        allocator.reverse(record.id)


def test_unknown_artifacts_and_ids_are_not_found(allocator):
    with pytest.raises(UnknownArtifact):
        allocator.spend("nope", "1")
    with pytest.raises(UnknownArtifact):
        allocator.budget("nope")
    for call in (lambda: allocator.reverse(999), lambda: allocator.done(999),
                 lambda: allocator.release(2**63)):
        with pytest.raises(Exception) as caught:
            call()
        assert caught.value.exit_code == NOT_FOUND


def test_next_ranks_unexplored_artifacts_by_remaining_budget(allocator):
    allocator.spend("a3", "150")  # a3: 50 left, a1: 100, a2: 10
    entries = allocator.next()
    assert [(e.rank, e.artifact_id) for e in entries] == [(1, "a1"), (2, "a3"), (3, "a2")]
    assert [e.artifact_id for e in allocator.next(type_="hypothesis", limit=1)] == ["a1"]


def test_claim_done_and_release(allocator):
    (job,) = allocator.next(agent="bot", claim=True, limit=1)
    assert job.artifact_id == "a3" and job.claim_id is not None
    assert "a3" not in [e.artifact_id for e in allocator.next(agent="other")]
    assert [c.id for c in allocator.claims(agent="bot")] == [job.claim_id]
    done = allocator.done(job.claim_id, reward=0.5)
    assert (done.status, done.reward) == ("done", D("0.5"))
    assert {e.artifact_id: e.investigations for e in allocator.next()} == {
        "a1": 0, "a2": 0, "a3": 1}
    with pytest.raises(UsageError, match=f"claim {job.claim_id} is done, not active"):
        allocator.done(job.claim_id)
    (other,) = allocator.next(agent="bot", claim=True, limit=1)
    assert allocator.release(other.claim_id).status == "released"
    assert allocator.claims() == []


@pytest.mark.parametrize("call, message", [
    (lambda a: a.rank(limit=0), "limit must be from 1 to 1000000000"),
    (lambda a: a.rank(by="price"), "by must be one of budget, remaining, demand, available"),
    (lambda a: a.next(claim=True), "claim needs agent"),
    (lambda a: a.next(ucb_weight=2), "ucb_weight must be from 0 to 1"),
    (lambda a: a.done(1, reward=1.5), "reward must be a number from 0 to 1"),
    (lambda a: a.movers(top=0), "top must be from 1 to 1000000000"),
    (lambda a: a.snapshot(every="month"), "every must be one of hour, day, week"),
    (lambda a: a.plan("100", cap="10", minimum="20"),
     "minimum 20 is larger than cap 10: no share can be both"),
    (lambda a: a.plan("1.5"), "pool must be a whole number of units"),
])
def test_errors_name_the_parameters(allocator, call, message):
    with pytest.raises(UsageError) as caught:
        call(allocator)
    assert str(caught.value) == message
    assert caught.value.params and all(param in message for param in caught.value.params)


def test_the_window_of_history_names_both_ends(allocator):
    from datetime import datetime, timezone

    late, early = (datetime(2026, month, 1, tzinfo=timezone.utc) for month in (2, 1))
    with pytest.raises(UsageError) as caught:
        allocator.history("a1", since=late, until=early)
    assert str(caught.value) == "since is after until"
    assert caught.value.worded(lambda param: f"--{param}") == "--since is after --until"


def test_importing_the_package_does_not_load_the_database_layer():
    code = ("import sys, scidex_alloc; assert 'sqlalchemy' not in sys.modules; "
            "assert scidex_alloc.Allocator.open")
    subprocess.run([sys.executable, "-c", code], check=True)
