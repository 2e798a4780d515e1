"""What every benchmark case shares: the sizes of a run, the cases' names, a result row,
the run's context, and the helpers that time a command against its floor."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import procs
from bench.capture import capture, write_spec
from bench.procs import Samples


@dataclass(frozen=True)
class Config:
    name: str
    scale_sizes: tuple[int, ...]   # case 8; the largest is the main database
    naive_size: int                # case 2
    load_rows: int                 # case 5
    spend_lines: int               # case 4
    spend_targets: int             # how many artifacts the spend file charges
    repeat: int                    # default repetitions of the quick cases
    heavy_repeat: int              # default repetitions of the long cases
    warmup: bool
    target_size: int               # the size the targets are stated for
    naive_target_size: int

    @property
    def main_size(self) -> int:
        return max(self.scale_sizes)


CONFIGS = {
    "full": Config("full", (100_000, 300_000, 1_000_000), 100_000, 5_000_000, 100_000, 20_000,
                   repeat=5, heavy_repeat=3, warmup=True, target_size=1_000_000,
                   naive_target_size=100_000),
    "small": Config("small", (500, 1_000, 2_000), 2_000, 20_000, 2_000, 200,
                    repeat=1, heavy_repeat=1, warmup=False, target_size=1_000_000,
                    naive_target_size=100_000),
}

NAIVE_SPEEDUP = 100  # case 2: how many times faster than the original code rank must be
CASES = {
    1: "rank top 50 (JSON) vs the same SQL through the driver",
    2: "rank vs per-artifact queries (the original exchange code)",
    3: "one spend / one budget call vs driver + sqlalchemy.orm + typer imports",
    4: "spend --file throughput vs executemany",
    5: "load positions throughput vs COPY / executemany",
    6: "snapshot vs the bare INSERT ... SELECT",
    7: "rank --format csv over every artifact: peak memory",
    8: "rank time as the database grows",
    # Cases 9-17: the maintained balances, holds and the API (bench/balances.py, agents.py,
    # api.py, dashboard.py).
    9: "next --claim (JSON) vs one budget call, with investigated artifacts",
    10: "16 agents claiming, spending and closing in parallel",
    11: "rank --limit 50 (JSON) vs one budget call",
    12: "the API under one uvicorn worker",
    13: "rank --format csv over every artifact vs the same SQL through the driver",
    14: "another service's single-row inserts with the balance triggers vs without",
    15: "db upgrade from the previous revision, and from 0004 (before the balances), vs one snapshot",
    16: "16 agents reserving with each claim and settling as they close it, vs without holds",
    17: "the dashboard's API calls under one uvicorn worker",
    0: "database generation (alloc generate)",
}
LAST_CASE = 17


@dataclass
class Row:
    case: int
    name: str
    db: str
    size: str
    ours: str
    floor: str
    ratio: str
    target: str
    met: bool | None
    detail: str = ""
    ours_value: float | None = None
    floor_value: float | None = None


@dataclass
class Context:
    cfg: Config
    repeat: int
    heavy_repeat: int
    tmp: Path
    rows: list[Row] = field(default_factory=list)
    plans: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    databases: dict = field(default_factory=dict)

    cases: set = field(default_factory=lambda: set(range(1, LAST_CASE + 1)))
    results_path: Path | None = None
    previous: dict = field(default_factory=dict)
    kinds: set = field(default_factory=set)
    large: int | None = None  # case 11 also at this many artifacts (--large)

    def save(self) -> None:
        """Merge this run's rows into the stored results (a rerun of some cases replaces
        only their rows), so the report can be written from everything measured."""
        rows = [r for r in self.previous.get("rows", [])
                if not (r["db"] in self.kinds and (r["case"] in self.cases or r["case"] == 0))]
        rows += [vars(r) for r in self.rows]
        prefixes = tuple(f"case {c} " for c in self.cases)
        notes = [n for n in self.previous.get("notes", []) if not n.startswith(prefixes)]
        data = {"rows": rows, "plans": {**self.previous.get("plans", {}), **self.plans},
                "notes": notes + [n for n in self.notes if n not in notes],
                "startup": self.startup or self.previous.get("startup", {}),
                "runs": self.previous.get("runs", [])}
        self.merged = data
        self.results_path.write_text(json.dumps(data, indent=1))

    def all_rows(self) -> list:
        return [Row(**r) for r in getattr(self, "merged", {}).get("rows", [])] or self.rows

    def log(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def duration(value: float) -> str:
    return f"{value:.3f} s" if value < 100 else f"{value:.1f} s"


def size_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else \
        f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def verdict(ok: bool, applies: bool) -> bool | None:
    return ok if applies else None


def pair(ctx: Context, ours: list[str], floor: list[str], n: int, between=None,
         ours_out: Path | None = None, floor_out: Path | None = None, warmup: bool | None = None):
    """Run ours and the floor n times each, interleaved; (ours samples, floor samples, last runs)."""
    if warmup if warmup is not None else ctx.cfg.warmup:
        for argv, out in ((ours, ours_out), (floor, floor_out)):
            if between:
                between()
            procs.run(argv, stdout_path=out, keep_stdout=False)
    a, b = Samples(), Samples()
    last = {}
    for _ in range(n):
        for argv, samples, out, key in ((ours, a, ours_out, "ours"), (floor, b, floor_out, "floor")):
            if between:
                between()
            result = procs.run(argv, stdout_path=out)
            samples.add(result.seconds)
            samples.cpu.append(result.cpu_seconds)
            samples.rss_kb.append(result.max_rss_kb)
            last[key] = result
    return a, b, last


def rank_specs(ctx: Context, backend, db, tag: str):
    from scidex_alloc.allocator import Allocator

    allocator = Allocator.open(db.url)
    try:
        top = capture(allocator, lambda a: a.rank(type_="hypothesis", limit=50), "SELECT")
        every = capture(allocator, lambda a: a.rank(), "SELECT")
    finally:
        allocator.engine.dispose()
    return (write_spec(top, ctx.tmp / f"rank50-{backend.kind}-{tag}.json"), top,
            write_spec(every, ctx.tmp / f"rankall-{backend.kind}-{tag}.json"), every)


def top_remaining(db, limit: int) -> list[str]:
    from scidex_alloc.allocator import Allocator

    allocator = Allocator.open(db.url)
    try:
        return [r.artifact_id for r in allocator.rank(by="remaining", limit=limit)]
    finally:
        allocator.engine.dispose()
