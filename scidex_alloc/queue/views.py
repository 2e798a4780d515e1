"""How `alloc next` shows the work queue."""

from __future__ import annotations

from scidex_alloc.queue.results import QUEUE_COLUMNS
from scidex_alloc.rendering import Col, cell, draw, emit_rows, message


def queue(entries, fmt: str, weight: float, claimed: bool) -> None:
    """The work queue; the table shows the two weighted components of each score."""
    if fmt != "table":
        emit_rows(entries, fmt, QUEUE_COLUMNS)
        return
    if not entries:
        message("no candidates: nothing with budget available that is not claimed by another "
                "agent")
        return
    columns = [Col(name, "right" if right else "left") for name, right in (
        ("rank", True), ("artifact_id", False), ("type", False), ("score", True),
        (f"{weight:g} x ucb_norm", True), (f"{1 - weight:g} x budget_norm", True),
        ("investigations", True), ("mean_reward", True), ("available", True), ("claim", True),
        ("lease until", False))]
    draw(columns, [[
        str(e.rank), e.artifact_id, e.type, f"{e.score:.4f}",
        f"{weight * e.ucb_norm:.4f}" + ("  (new)" if e.ucb is None else ""),
        f"{(1 - weight) * e.budget_norm:.4f}", str(e.investigations),
        cell("mean_reward", e.mean_reward), cell("available", e.available),
        cell("claim_id", e.claim_id)
        + ("" if e.hold_id is None else f" (hold {e.hold_id})"),
        cell("lease_expires_at", e.lease_expires_at),
    ] for e in entries], ("Claimed" if claimed else "Next investigations")
        + f" (score = {weight:g} x ucb_norm + {1 - weight:g} x budget_norm)")
