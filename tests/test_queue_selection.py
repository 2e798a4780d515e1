"""`next` reads only the candidates that can reach the top of the queue: every explored
one and the unexplored ones with the most remaining budget. These tests compare it with
the pure scoring of every candidate, on random databases, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select, update

from scidex_alloc.allocator import Allocator
from scidex_alloc.queue import ranking, scoring
from scidex_alloc.storage.schema import claims, holds, positions, token_bounties, utcnow

ARTIFACTS = 120


@pytest.fixture(params=["all", "preselected", "ranked"])
def explored_reading(request, monkeypatch):
    """Explored candidates all read and scored, or (as with many) preselected: the queue's
    totals summed per investigation count, the candidates with enough available budget
    found along the remaining index where they are few, and else (always, when "ranked")
    ranked in SQL by a floating-point score; then read by id in batches (of 3 here)."""
    if request.param != "all":
        monkeypatch.setattr(ranking, "READ_EVERY_EXPLORED", 0)
        monkeypatch.setattr(ranking, "READ_BATCH", 3)
    if request.param == "ranked":
        monkeypatch.setattr(ranking, "READ_BY_REMAINING", 0)
    return request.param


@pytest.fixture
def generated(db_url, cli):
    assert cli("generate", "--artifacts", ARTIFACTS, "--seed", 3, "--db", db_url).exit_code == 0
    return db_url


def every_candidate(allocator, agent, weight, exploration, type_=None):
    """The whole queue (of `type_`), scored the plain way: every artifact with budget left
    and no live claim of another agent, its investigations counted from the claims
    themselves."""
    now = utcnow()
    with allocator.engine.connect() as connection:
        rows = connection.execute(select(claims)).all()
    investigations, rewards, taken = Counter(), Counter(), set()
    for row in rows:
        if row.status == "done":
            investigations[row.artifact_id] += 1
            rewards[row.artifact_id] += Decimal(row.reward or 0).quantize(Decimal("1e-9"))
        elif row.status == "active" and row.lease_expires_at > now and row.agent_id != agent:
            taken.add(row.artifact_id)
    candidates = [scoring.Candidate(b.artifact_id, b.remaining, investigations[b.artifact_id],
                                    Decimal(rewards[b.artifact_id]))
                  for b in allocator.rank(type_, by="remaining")
                  if b.remaining is not None and b.remaining > 0 and b.artifact_id not in taken]
    return scoring.score_all(candidates, weight, exploration)


def change_positions(connection, rng, ids):
    """Positions opened and closed on a few artifacts, written as another service would:
    those artifacts are pending, their stored demand out of date until folded."""
    opened = [{"artifact_id": rng.choice(ids), "agent_id": "y", "status": "open",
               "tokens": rng.choice([1, 80, 20_000]), "created_at": utcnow()}
              for _ in range(rng.randrange(0, 12))]
    if opened:
        connection.execute(insert(positions), opened)
    closed = rng.sample(ids, rng.randrange(0, 6))
    connection.execute(update(positions).where(positions.c.artifact_id.in_(closed))
                       .values(status="closed"))


def record_investigations(allocator, rng, others_claims):
    """Random completed investigations (with and without rewards), live claims of other
    agents and changed positions, written as another service would."""
    ids = sorted(row.artifact_id for row in allocator.rank())
    now = utcnow()
    done = [{"artifact_id": rng.choice(ids), "agent_id": "x", "status": "done",
             "claimed_at": now, "lease_expires_at": now, "finished_at": now,
             "reward": None if rng.random() < 0.2 else round(rng.random(), 3)}
            for _ in range(rng.randrange(0, 60))]
    live = [{"artifact_id": artifact_id, "agent_id": "other", "status": "active",
             "claimed_at": now, "lease_expires_at": now + timedelta(hours=1)}
            for artifact_id in rng.sample(ids, others_claims)]
    with allocator.engine.begin() as connection:
        connection.execute(delete(claims))
        for rows in (done, live):
            if rows:
                connection.execute(insert(claims), rows)
        change_positions(connection, rng, ids)


def summary(entries):
    return [(e.artifact_id, e.score, e.ucb, e.remaining) for e in entries]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32), limit=st.sampled_from([1, 3, 10, 50, 500]),
       weight=st.sampled_from([0.0, 0.3, 0.7, 1.0]), exploration=st.sampled_from([0.0, 1.4, 20.0]),
       others=st.integers(0, 10))
def test_next_equals_scoring_every_candidate(generated, explored_reading, seed, limit, weight,
                                             exploration, others):
    with Allocator.open(generated) as allocator:
        record_investigations(allocator, random.Random(seed), others)
        expected = every_candidate(allocator, "me", weight, exploration)[:limit]
        entries = allocator.next(limit=limit, agent="me", ucb_weight=weight,
                                 exploration=exploration)
    assert summary(entries) == [(s.candidate.artifact_id, s.score, s.ucb, s.candidate.remaining)
                                for s in expected]


def investigate_most(allocator, rng, share):
    """One to three completed investigations of about `share` of the artifacts, and changed
    positions, written as another service would; nothing else claimed."""
    now = utcnow()
    done = [{"artifact_id": b.artifact_id, "agent_id": "x", "status": "done",
             "claimed_at": now, "lease_expires_at": now, "finished_at": now,
             "reward": round(rng.random(), 3)}
            for b in sorted(allocator.rank(), key=lambda b: b.artifact_id)
            if rng.random() < share for _ in range(rng.randint(1, 3))]
    with allocator.engine.begin() as connection:
        connection.execute(delete(claims))
        if done:
            connection.execute(insert(claims), done)
        change_positions(connection, rng, sorted({b.artifact_id for b in allocator.rank()}))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32), share=st.sampled_from([0.3, 0.9, 0.98]),
       wanted=st.sampled_from([1, 2, 5, 20]), weight=st.sampled_from([0.0, 0.3, 0.7]),
       exploration=st.sampled_from([0.0, 1.4]), type_=st.sampled_from([None, "hypothesis"]))
def test_each_ranking_read_is_a_prefix_of_the_queue(generated, explored_reading, seed, share,
                                                    wanted, weight, exploration, type_):
    """What one ranking read returns, however far past the first `wanted` it reaches, is
    the queue's head in order (the whole queue's, or one type's): a claimer that finds its
    first choices taken goes on down that list. Explored candidates that SQL left out must
    not belong in it."""
    with Allocator.open(generated) as allocator:
        investigate_most(allocator, random.Random(seed), share)
        expected = every_candidate(allocator, "me", weight, exploration, type_)
        with allocator.engine.connect() as connection:
            scored, _ = ranking.ranked(connection, allocator.params, utcnow(), type_,
                                             "me", weight, exploration, wanted)
    assert len(scored) >= min(wanted, len(expected))
    assert [(s.candidate.artifact_id, s.score) for s, _, _ in scored] == [
        (s.candidate.artifact_id, s.score) for s in expected[:len(scored)]]


def test_a_claim_takes_the_best_candidates_in_order(generated, explored_reading):
    with Allocator.open(generated) as allocator:
        record_investigations(allocator, random.Random(5), 4)
        expected = [s.candidate.artifact_id for s in every_candidate(
            allocator, "me", scoring.UCB_WEIGHT, scoring.EXPLORATION)[:7]]
        taken = allocator.next(limit=7, agent="me", claim=True)
    assert [e.artifact_id for e in taken] == expected


@pytest.mark.parametrize("db_kind", ["postgresql"], indirect=True)
def test_a_claim_passes_by_held_artifacts_and_reads_further(generated, explored_reading):
    """Artifacts another claimer holds right now are passed by; when every unexplored
    candidate read is held, the queue reads further, still best first."""
    with Allocator.open(generated) as allocator:
        order = [s.candidate.artifact_id for s in every_candidate(allocator, "me", 1.0, 0.0)]
        held = order[:5]
        with psycopg.connect(generated) as other:
            other.execute("SELECT id FROM artifacts WHERE id = ANY(%s) FOR NO KEY UPDATE",
                          [held])
            taken = allocator.next(limit=2, agent="me", claim=True, ucb_weight=1.0,
                                   exploration=0.0)
            other.rollback()
    assert [e.artifact_id for e in taken] == order[5:7]


def test_budgets_beyond_32_bit_micro_tokens(generated, explored_reading, cli, tmp_path):
    """Available budgets and reserves above 2**31 micro-tokens (2,147.48 tokens) compare
    as what they are on both databases, in every way the queue reads its candidates."""
    (tmp_path / "a.csv").write_text("id,type\nbig-1,hypothesis\nbig-2,hypothesis\n")
    (tmp_path / "p.csv").write_text("artifact_id,tokens\nbig-1,900000\nbig-2,800000\n")
    assert cli("load", "artifacts", tmp_path / "a.csv", "--db", generated).exit_code == 0
    assert cli("load", "positions", tmp_path / "p.csv", "--db", generated).exit_code == 0
    with Allocator.open(generated) as allocator:
        record_investigations(allocator, random.Random(7), 2)
        expected = every_candidate(allocator, "me", scoring.UCB_WEIGHT, scoring.EXPLORATION)
        entries = allocator.next(limit=3, agent="me")
        reserved = allocator.next(limit=3, agent="me", reserve="50000", claim=True)
    assert summary(entries) == [(s.candidate.artifact_id, s.score, s.ucb, s.candidate.remaining)
                                for s in expected[:3]]
    able = {s.candidate.artifact_id for s in expected if s.candidate.remaining >= 50000}
    assert able and {e.artifact_id for e in reserved} == able
    assert all(e.hold_id is not None for e in reserved)


def test_stale_balances_rank_by_what_they_hold_now(generated, explored_reading):
    """Explored artifacts whose huge bounty, or hold, expired a moment ago (their balances
    not yet summed again) rank by their budget without it, in both ways the queue reads
    explored candidates: with the large bounty they keep, at the top of the queue, and
    counted in its totals."""
    with Allocator.open(generated) as allocator:
        record_investigations(allocator, random.Random(13), 2)
        with allocator.engine.connect() as connection:
            explored = sorted({row.artifact_id for row in connection.execute(
                select(claims.c.artifact_id).where(claims.c.status == "done"))})
        soon = utcnow() + timedelta(seconds=1)
        with allocator.engine.begin() as connection:
            connection.execute(insert(token_bounties), [
                {"artifact_id": artifact_id, "tokens_offered": 10**4 + i, "expires_at": None}
                for i, artifact_id in enumerate(explored)] + [
                {"artifact_id": artifact_id, "tokens_offered": 10**6, "expires_at": soon}
                for artifact_id in explored[::3]])
            connection.execute(insert(holds), [
                {"artifact_id": artifact_id, "tokens": 10**6, "status": "active",
                 "created_at": utcnow(), "expires_at": soon}
                for artifact_id in explored[1::3]])
        while utcnow() <= soon + timedelta(milliseconds=50):
            time.sleep(0.05)
        expected = every_candidate(allocator, "me", scoring.UCB_WEIGHT, scoring.EXPLORATION)
        entries = allocator.next(limit=10, agent="me")
    assert {e.artifact_id for e in entries[:2]} <= set(explored)
    assert summary(entries) == [
        (s.candidate.artifact_id, s.score, s.ucb, s.candidate.remaining) for s in expected[:10]]
