"""A deterministic generator of realistic exchange data; `alloc generate` and sample.db use it.

The same seed and size always give the same rows. Artifacts are written in chunks with
the bulk loader, so millions of rows fit in memory.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from scidex_alloc.formula import Params, budget, clamp_price, exact

CHUNK = 10_000
AGENTS = 500  # distinct agent ids holding positions and spending
MAX_ARTIFACTS = 100_000_000
MAX_SNAPSHOT_DAYS = 366
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
PAST = datetime(2025, 6, 1, tzinfo=timezone.utc)
FAR_FUTURE = datetime(2099, 1, 1, tzinfo=timezone.utc)
LAST_SNAPSHOT = datetime(2026, 11, 1, tzinfo=timezone.utc)

TYPES = (("hypothesis", "hyp", 40), ("analysis", "ana", 25), ("knowledge_gap", "gap", 20),
         ("experiment", "exp", 15))
SUBJECTS = ("APOE4", "tau phosphorylation", "microglial TREM2", "gut microbiome", "CRISPR base editing",
            "mitochondrial fission", "sleep deprivation", "ketone bodies", "amyloid clearance",
            "synaptic pruning", "senolytics", "NAD+ precursors", "interferon signalling",
            "astrocyte reactivity", "lipid rafts", "the glymphatic system")
OUTCOMES = ("cognitive decline", "neuroinflammation", "protein aggregation", "lifespan in mice",
            "memory consolidation", "insulin resistance", "blood-brain barrier integrity",
            "dopaminergic neuron loss", "tumour growth", "muscle regeneration")
TEMPLATES = {
    "hypothesis": "{s} drives {o}",
    "analysis": "Meta-analysis of {s} and {o}",
    "knowledge_gap": "Unknown: how {s} affects {o}",
    "experiment": "Knock-down of {s} to test {o}",
}
KINDS = ("debate", "analysis", "extraction", "validation")

ARTIFACT_COLUMNS = ("id", "type", "title", "created_at")
MARKET_COLUMNS = ("artifact_id", "price", "updated_at")
POSITION_COLUMNS = ("artifact_id", "agent_id", "tokens", "status", "created_at")
BOUNTY_COLUMNS = ("artifact_id", "tokens_offered", "tokens_paid", "status", "expires_at",
                  "created_at")
SPEND_COLUMNS = ("artifact_id", "tokens", "kind", "agent_id", "note", "created_at")
SNAPSHOT_COLUMNS = ("artifact_id", "period", "bucket", "taken_at", "demand", "bounty", "price",
                    "budget", "spent", "remaining")


def _tokens(rng: random.Random, mu: float, sigma: float) -> Decimal:
    return Decimal(f"{min(rng.lognormvariate(mu, sigma), 1_000_000):.2f}") + Decimal("0.01")


def _artifact(rng: random.Random, index: int, params: Params, days: int
              ) -> dict[str, list[tuple]]:
    name, prefix, _ = rng.choices(TYPES, weights=[t[2] for t in TYPES])[0]
    artifact_id = f"{prefix}-{index:07d}"
    created = EPOCH + timedelta(minutes=index * 7 + rng.randrange(7))
    title = TEMPLATES[name].format(s=rng.choice(SUBJECTS), o=rng.choice(OUTCOMES))
    rows: dict[str, list[tuple]] = {
        "artifacts": [(artifact_id, name, title[0].upper() + title[1:], created)],
        "markets": [], "positions": [], "token_bounties": [], "resource_allocations": [],
        "budget_snapshots": [],
    }
    price = None
    if rng.random() < 0.85:
        price = Decimal(f"{min(max(rng.betavariate(2, 2), 0.01), 0.99):.3f}")
        rows["markets"].append((artifact_id, price, created + timedelta(days=rng.randrange(1, 300))))
    demand = Decimal(0)
    for _ in range(rng.choice((1, 2, 3, 4, 5, 5, 6, 7, 8, 9))):
        tokens = _tokens(rng, 4.5, 1.2)
        status = rng.choices(("open", "closed", "settled"), weights=(75, 15, 10))[0]
        demand += tokens if status == "open" else 0
        rows["positions"].append((artifact_id, f"agent-{rng.randrange(AGENTS):03d}", tokens, status,
                                  created + timedelta(hours=rng.randrange(1, 2000))))
    bounty = Decimal(0)
    if rng.random() < 0.1:
        offered = _tokens(rng, 5.0, 0.8)
        paid = exact(offered * Decimal(rng.choice((0, 0, 0, 25, 50, 100))) / 100)
        status, expires = rng.choices(
            (("open", None), ("open", FAR_FUTURE), ("open", PAST), ("claimed", None),
             ("expired", PAST)), weights=(40, 25, 15, 10, 10))[0]
        if status == "open" and expires != PAST:
            bounty = offered - paid
        rows["token_bounties"].append((artifact_id, offered, paid, status, expires, created))
    p = clamp_price(price, params)
    total = budget(demand, bounty, p, params)
    spent = Decimal(0)
    if total > 0 and rng.random() < 0.3:
        spent = exact(total * Decimal(rng.randrange(5, 60)) / 100)
        if spent > 0:
            rows["resource_allocations"].append(
                (artifact_id, spent, rng.choice(KINDS), f"agent-{rng.randrange(AGENTS):03d}",
                 "synthetic", created + timedelta(days=rng.randrange(1, 200))))
    # Daily history up to LAST_SNAPSHOT: demand and spending grew into today's values.
    for day in range(days):
        share = Decimal(day + 1) / days
        then = (exact(demand * share), exact(spent * share))
        value = budget(then[0], bounty, p, params)
        rows["budget_snapshots"].append(
            (artifact_id, "day", LAST_SNAPSHOT - timedelta(days=days - 1 - day), LAST_SNAPSHOT,
             then[0], bounty, p, value, then[1], value - then[1]))
    return rows


COLUMNS = {
    "artifacts": ARTIFACT_COLUMNS, "markets": MARKET_COLUMNS, "positions": POSITION_COLUMNS,
    "token_bounties": BOUNTY_COLUMNS, "resource_allocations": SPEND_COLUMNS,
    "budget_snapshots": SNAPSHOT_COLUMNS,
}


def batches(count: int, seed: int, params: Params | None = None, days: int = 0):
    """(table, columns, rows) in chunks of CHUNK artifacts, parents before children, with
    `days` daily snapshots per artifact."""
    params = params or Params()
    rng = random.Random(seed)
    for start in range(1, count + 1, CHUNK):
        chunk: dict[str, list[tuple]] = {name: [] for name in COLUMNS}
        for index in range(start, min(start + CHUNK, count + 1)):
            for name, rows in _artifact(rng, index, params, days).items():
                chunk[name].extend(rows)
        for name, columns in COLUMNS.items():
            if chunk[name]:
                yield name, columns, chunk[name]


def check(artifacts: int, seed: int, snapshot_days: int) -> None:
    """Refuse out-of-range values before any database is created or written."""
    from scidex_alloc.errors import UsageError
    from scidex_alloc.limits import MAX_ID

    if not 1 <= artifacts <= MAX_ARTIFACTS:
        raise UsageError(f"{{artifacts}} must be from 1 to {MAX_ARTIFACTS}", "artifacts")
    if not 0 <= seed <= MAX_ID:
        raise UsageError(f"{{seed}} must be from 0 to {MAX_ID}", "seed")
    if not 0 <= snapshot_days <= MAX_SNAPSHOT_DAYS:
        raise UsageError(f"{{snapshot_days}} must be from 0 to {MAX_SNAPSHOT_DAYS}",
                         "snapshot_days")


def generate(allocator, artifacts: int, seed: int, snapshot_days: int = 0) -> dict[str, int]:
    check(artifacts, seed, snapshot_days)
    return allocator.populate(batches(artifacts, seed, allocator.params, snapshot_days))
