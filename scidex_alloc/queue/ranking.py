"""The agent work queue's ranking: the candidates that can reach its top, read from the
balances and scored exactly as the pure scoring scores every candidate (see ranked)."""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal

from sqlalchemy.engine import Connection

from scidex_alloc.budgets import queries
from scidex_alloc.formula import Params, to_micro
from scidex_alloc.holds import reserving
from scidex_alloc.queue import scoring
from scidex_alloc.queue.candidates import (
    balances_above,
    explored_by_score,
    explored_flagged,
    explored_groups,
    explored_most_available,
    explored_near,
    hidden_and_pending,
    queue_candidates,
    values,
)

# Up to this many explored candidates are all read and scored; beyond, SQL preselects them.
READ_EVERY_EXPLORED = 2000
# Candidates read by id, so many ids per statement (within every database's bound on them).
READ_BATCH = 1000
# Balances read along the remaining index to find the explored candidates with the most
# available budget; past this many, the explored artifacts' index is scanned instead.
READ_BY_REMAINING = 1000
# Bounds on how far SQL's floating-point score and remaining budget may lie from the exact.
SCORE_MARGIN = 1e-9
REMAINING_MARGIN_MICRO = 16


def ranked(connection: Connection, params: Params, now: datetime, type_: str | None,
           agent: str | None, weight: float, exploration: float, wanted: int,
           reserve: tuple[Decimal, str] | None = None) -> tuple[list[tuple], bool]:
    """(score, budget row, row), best first, of candidates (with `reserve`, an amount and
    its unit, available, or any budget) that include the first `wanted` of the queue, and
    whether more of the queue lies beyond the list's end.

    Unexplored candidates are read by available budget, the best `wanted`: one left out has
    no more available, so no better score, than any read. Explored ones are all read when
    they are few; else see _best_explored."""
    at_least = 0 if reserve is None else to_micro(
        reserving.amount_in(connection, *reserve).tokens)
    given = values(now, agent, at_least)
    has_agent = agent is not None
    hidden, pending = connection.execute(hidden_and_pending(has_agent), given).one()
    shape = (params, type_, has_agent, bool(hidden), bool(pending))
    unexplored = list(connection.execute(queue_candidates(*shape[:4], False),
                                         {**given, "count": wanted}))
    groups = connection.execute(explored_groups(*shape), given).all()
    queue, explored_complete, least = None, True, None
    if sum(g.candidates for g in groups) <= READ_EVERY_EXPLORED:
        explored = list(connection.execute(queue_candidates(*shape[:4], True), given))
    else:
        queue, explored, explored_complete, least = _best_explored(
            connection, shape, given, weight, exploration, wanted, groups, unexplored)
    by_id = {row.artifact_id: (queries.budget_row(0, row, params), row)
             for row in explored + unexplored}
    scored = [(s, *by_id[s.candidate.artifact_id])
              for s in scoring.score_all([_candidate(*pair) for pair in by_id.values()],
                                         weight, exploration, queue)]
    # Past the last of a kind read only in part, an unread candidate may rank higher; and
    # one left out for its available budget scores below `least`.
    cuts = [] if explored_complete else [_position(scored, True, wanted)]
    if len(unexplored) == wanted:
        cuts.append(_position(scored, False, wanted))
    if least is not None:
        cuts.append(sum(1 for s, _, _ in scored if s.score >= least) - 1)
    return (scored[:min(cuts) + 1], True) if cuts else (scored, False)


def _candidate(budget, row) -> scoring.Candidate:
    return scoring.Candidate(budget.artifact_id, budget.available, row.investigations,
                             rewards(row.reward_total))


def _position(scored: list[tuple], explored: bool, nth: int) -> int:
    """The position of the `nth` best read candidate that is explored (or unexplored)."""
    of_kind = [i for i, (s, _, _) in enumerate(scored)
               if bool(s.candidate.investigations) == explored]
    return of_kind[min(nth, len(of_kind)) - 1] if of_kind else len(scored) - 1


def _best_explored(connection: Connection, shape: tuple, given: dict, weight: float,
                   exploration: float, wanted: int, groups, unexplored
                   ) -> tuple[scoring.Queue, list, bool, float | None]:
    """The whole queue's totals, the explored candidates that can be among its first
    `wanted`, whether every explored candidate with enough available budget to be among
    them was read, and a score every one of them reaches (None: no such bound), when
    there are too many explored candidates to read them all (`shape`: the statements'
    formula, type, whether an agent asks, whether live claims hide any artifact from it
    and whether any artifact is pending; `given`: their values; `groups`: the pool's totals per investigation count).

    The candidates the pool leaves out (stale balances), and those that may have the
    queue's largest available budget, are read in full first: with the pool's groups they
    give the totals (the best UCB of a count is that of its best reward). With the
    unexplored ones read, they also give the least score of the first `wanted`, and so the
    least available budget an explored candidate needs to reach it (its normalised UCB is
    at most 1). Where few balances have that much remaining (the remaining index finds
    them), the explored candidates among them are read in full. Else SQL ranks the pool's
    candidates with that much by a floating-point score; those within a margin of the
    `wanted`-th are read and scored exactly. Either way, any left out scores below every
    one of the first `wanted`."""
    params = shape[0]

    def read(ids) -> list:
        ordered, stmt = sorted(ids), queue_candidates(*shape[:4], True, by_ids=True)
        return [row for start in range(0, len(ordered), READ_BATCH)
                for row in connection.execute(
                    stmt, {**given, "ids": ordered[start:start + READ_BATCH]})]

    near, stale = _explored_near(connection, shape, given, _least_near(connection, shape,
                                                                      given, unexplored))
    best = read(near)
    counts = [(g.investigations, g.candidates, rewards(g.best_reward)) for g in groups] + [
        (row.investigations, 1, rewards(row.reward_total))
        for row in best if row.artifact_id in stale]
    total = sum(n * how_many for n, how_many, _ in counts)
    top_ucb = max(scoring.ucb(scoring.Candidate("", Decimal(0), n, reward), total, exploration)
                  for n, _, reward in counts)
    read_so_far = [(queries.budget_row(0, row, params), row) for row in best + unexplored]
    top_available = max(budget.available for budget, _ in read_so_far)
    queue = scoring.Queue(total, top_ucb, top_available)
    least_score, floor = _bounds(read_so_far, weight, exploration, queue, wanted)
    limit = wanted + 32
    have = {row.artifact_id for row in best}  # read in full already
    if floor is not None:
        above = _explored_above(connection, shape, floor)
        if above is not None and len(above - have) < limit:
            return queue, best + read(above - have), True, least_score
    # SQL's available budgets are micro-tokens, and may lie REMAINING_MARGIN_MICRO from the
    # exact ones: so may its scores, by that much of the budget term.
    available_factor = (1 - weight) / float(to_micro(top_available))
    margin = SCORE_MARGIN + available_factor * REMAINING_MARGIN_MICRO
    factors = {"bonus": exploration * math.sqrt(math.log(total + 1)),
               "ucb_factor": weight / top_ucb if top_ucb > 0 else 0.0,
               "available_factor": available_factor,
               "available_floor": given["at_least"] if floor is None else floor}

    def by_score(bounded: bool, **bound):
        return connection.execute(explored_by_score(*shape, bounded),
                                  {**given, **factors, **bound}).all()

    picks = by_score(False, score_limit=limit)
    complete = len(picks) < limit
    if len(picks) > wanted and picks[-1].sql_score >= picks[wanted - 1].sql_score - margin:
        picks = by_score(True, score_at_least=picks[wanted - 1].sql_score - margin)
    return (queue, best + read({row.artifact_id for row in picks} - have), complete,
            least_score)


def _least_near(connection: Connection, shape: tuple, given: dict, unexplored: list) -> int:
    """The least maintained remaining key (micro-tokens) an explored candidate without holds
    or a stale bounty needs to have the largest available budget of the queue: within a
    margin of the best unexplored candidate's (each may lie REMAINING_MARGIN_MICRO from the
    exact), or of the explored ones' largest where no candidate is unexplored."""
    if unexplored:
        return int(max(row.available for row in unexplored)) - 2 * REMAINING_MARGIN_MICRO
    most = connection.execute(explored_most_available(*shape), given).scalar_one()
    return int(most) - REMAINING_MARGIN_MICRO


def _explored_above(connection: Connection, shape: tuple, least: int) -> set[str] | None:
    """The ids of the explored artifacts whose maintained remaining key is `least` or more,
    found along the remaining index; None where the formula is not the default or such
    balances are too many to read that way."""
    params, type_ = shape[:2]
    if params != Params():
        return None
    above = connection.execute(balances_above(type_),
                               {"least": least, "count": READ_BY_REMAINING}).all()
    if len(above) >= READ_BY_REMAINING:
        return None
    return {row.artifact_id for row in above if row.investigations}


def _explored_near(connection: Connection, shape: tuple, given: dict, least: int
                   ) -> tuple[set[str], set[str]]:
    """The ids of the explored candidates that may have `least` available or more, or that
    the pool leaves out; and of those, the ones it leaves out (stale). Found along the
    indexes where they are few, else in one scan of the explored artifacts' index."""
    above = _explored_above(connection, shape, least)
    if above is None:
        near = connection.execute(explored_near(*shape), {**given, "least": least}).all()
        return {row.artifact_id for row in near}, {row.artifact_id for row in near if row.stale}
    flagged = connection.execute(explored_flagged(*shape[1:]), given).all()
    return (above | {row.artifact_id for row in flagged},
            {row.artifact_id for row in flagged if row.stale})


def _bounds(read_so_far: list, weight: float, exploration: float, queue: scoring.Queue,
            wanted: int) -> tuple[float | None, int | None]:
    """From candidates already read, (budget row, row) pairs: a score the queue's first
    `wanted` all reach (the `wanted`-th best read, less SCORE_MARGIN), and the least
    available budget, in micro-tokens as SQL computes it, an explored candidate needs to
    come within SCORE_MARGIN of that score; (None, None) when no such bound leaves any
    out. An explored candidate scores at most `weight` + (1 - `weight`) x available / the
    largest available."""
    if len(read_so_far) < wanted or weight >= 1:
        return None, None
    scores = scoring.score_all([_candidate(*pair) for pair in read_so_far], weight,
                               exploration, queue)
    least_score = scores[wanted - 1].score - SCORE_MARGIN
    share = (least_score - SCORE_MARGIN - weight) / (1 - weight)
    floor = math.floor(share * float(to_micro(queue.top_remaining))) - REMAINING_MARGIN_MICRO
    return (least_score, floor) if floor > 1 else (None, None)


def rewards(billionths) -> Decimal:
    """A maintained reward total (in billionths) as an exact Decimal."""
    return Decimal(int(billionths)).scaleb(-9)
