"""The work queue's score: a UCB bandit blended with the normalised budget. Pure, no I/O.

    ucb_i        = r_i + C * sqrt(ln(N + 1) / n_i)     (never investigated: infinite)
    ucb_norm_i   = 1 if never investigated, else ucb_i / max finite ucb
    budget_norm  = remaining_i / max remaining
    score        = W * ucb_norm + (1 - W) * budget_norm
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from scidex_alloc.errors import UsageError
from scidex_alloc.options import EXPLORATION, UCB_WEIGHT

MAX_EXPLORATION = 1000


@dataclass(frozen=True, slots=True)
class Candidate:
    artifact_id: str
    remaining: Decimal
    investigations: int
    reward_total: Decimal

    @property
    def mean_reward(self) -> float | None:
        if not self.investigations:
            return None
        return float(self.reward_total) / self.investigations


@dataclass(frozen=True, slots=True)
class Score:
    candidate: Candidate
    ucb: float | None  # None: never investigated, so unbounded
    ucb_norm: float
    budget_norm: float
    score: float


def check_weights(ucb_weight: float, exploration: float) -> None:
    """W is a share; C is any non-negative constant up to MAX_EXPLORATION."""
    if not 0 <= ucb_weight <= 1:
        raise UsageError("{ucb_weight} must be from 0 to 1", "ucb_weight")
    if not 0 <= exploration <= MAX_EXPLORATION:
        raise UsageError(f"{{exploration}} must be from 0 to {MAX_EXPLORATION}", "exploration")


def ucb(candidate: Candidate, total: int, exploration: float) -> float | None:
    if not candidate.investigations:
        return None
    bonus = exploration * math.sqrt(math.log(total + 1) / candidate.investigations)
    return candidate.mean_reward + bonus


@dataclass(frozen=True, slots=True)
class Queue:
    """What every score depends on besides its own candidate: the whole queue's completed
    investigations, its largest finite UCB and its largest remaining budget."""

    total: int
    top_ucb: float
    top_remaining: Decimal


def queue_of(candidates: list[Candidate], exploration: float) -> Queue:
    total = sum(c.investigations for c in candidates)
    finite_ucbs = [u for u in (ucb(c, total, exploration) for c in candidates) if u is not None]
    return Queue(total, max(finite_ucbs, default=0.0),
                 max((c.remaining for c in candidates), default=Decimal(0)))


def score_all(candidates: list[Candidate], weight: float = UCB_WEIGHT,
              exploration: float = EXPLORATION, queue: Queue | None = None) -> list[Score]:
    """Every candidate's score, best first: by score, then remaining budget, then id. The
    candidates are the whole queue, or, given its `queue`, some of it."""
    if not candidates:
        return []
    queue = queue or queue_of(candidates, exploration)
    scores = []
    for c in candidates:
        u = ucb(c, queue.total, exploration)
        ucb_norm = 1.0 if u is None else (u / queue.top_ucb if queue.top_ucb > 0 else 0.0)
        budget_norm = (float(c.remaining / queue.top_remaining) if queue.top_remaining > 0
                       else 0.0)
        scores.append(Score(c, u, ucb_norm, budget_norm,
                            weight * ucb_norm + (1 - weight) * budget_norm))
    # Stable sorts, least significant key first: id ascending, remaining and score descending.
    scores.sort(key=lambda s: s.candidate.artifact_id)
    scores.sort(key=lambda s: s.candidate.remaining, reverse=True)
    scores.sort(key=lambda s: s.score, reverse=True)
    return scores
