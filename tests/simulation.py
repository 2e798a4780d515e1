"""A seeded simulation of holds, spends and the work queue, in the spirit of TigerBeetle's
VOPR: from a seed, a random workload runs against one real database through the real `alloc`
commands, and after every step the database must agree with a simple in-memory model.

The workload: spends (with and without keys, replays, overdrafts), holds (keys, replays,
TTLs of 1-3 s so that they expire), settlements (for less, the same, more, replays), voids,
`next --claim --reserve`, `done --spend`, `release`, renewals, time passing, writes by
"another service" through the raw driver (a position inserted or closed, a spend row
inserted), and crashes: an `alloc` process killed with SIGKILL at a random moment, and on
PostgreSQL the server stopped immediately (mid-command or between steps) and restarted.

After each step: the database's holds, spend log, claims and positions equal the model's
(a crashed step may have happened or not, but never in part: the database must equal the
model before it or after it); `alloc holds --all`, `alloc log` and `alloc rank` (held,
available) agree with the model; spent + held <= budget wherever no overdraft entry exists
and no position was closed under the holds; `alloc audit` passes every check.

Time is the real clock (alloc has no clock a test could move), so no step starts within
GUARD seconds before a hold or lease expires, and each step's outcome is predicted at every
instant its run spanned where the model's state changes (an expiry): any of those outcomes
is accepted. The workload itself is drawn from the seed before the run: a failing seed runs
the same steps again (only a crash's timing may fall differently).

    python -m tests.simulation --db sqlite|postgresql --seeds 1-200 --steps 100

For PostgreSQL it starts a private server (tests/pgserver.py), with synchronous commits so
that an immediate stop loses nothing that was acknowledged.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Callable

D = Decimal
MICRO = D("0.000001")
CENT = D("0.01")
GUARD = 0.4  # seconds: no step starts this close before an expiry
SETTLE_TIME = timedelta(milliseconds=20)  # waited past an expiry the guard waits out
STEP_TIMEOUT = 120  # seconds an `alloc` process may take
# Each artifact's positions: budgets 100, 50 and 7.5 tokens (price 0.5, share 0.1).
POSITIONS = {"a1": (D(800), D(200)), "a2": (D(400), D(100)), "a3": (D(60), D(15))}
ARTIFACTS = tuple(POSITIONS)
AGENTS = ("ag1", "ag2", "ag3")
UNIT, RATE = "llm", D(1000)  # a second unit: 1000 llm per token
RESERVES = (D(1), D("2.5"), D(5), D(20))
NEW_POSITIONS = (D(50), D("120.5"), D(300), D(1000))
BASE_UNIT = "tokens"
RANDOMS = 10  # random numbers drawn for each step
# Step kinds and their weights. `restart` stops PostgreSQL immediately between steps (on
# SQLite it is a crash of an alloc process instead, so a seed's steps are the same on both).
WEIGHTS = {
    "spend": 9, "spend-replay": 3, "hold": 10, "hold-replay": 3, "settle": 9, "void": 4,
    "claim": 6, "renew": 2, "done": 5, "release": 2, "sleep": 3, "insert-position": 2,
    "close-position": 2, "insert-spend": 2, "crash": 5, "restart": 2,
}
CRASHABLE = ("spend", "hold", "settle", "void", "claim", "done", "release")


class SimulationFailure(AssertionError):
    pass


def now() -> datetime:
    return datetime.now(timezone.utc)


def frac(u: float) -> D:
    """A random number as a Decimal in [0, 1), to 1e-3."""
    return D(int(u * 1000)) / 1000


def cents(value: D) -> D:
    return max(CENT, value.quantize(CENT, ROUND_DOWN))


def pick(items, u: float):
    items = list(items)
    return items[min(int(u * len(items)), len(items) - 1)]


def rate_of(unit: str) -> D:
    return RATE if unit == UNIT else D(1)


def number(text: str) -> str:
    """A Decimal as alloc's AMOUNT argument."""
    return format(text.normalize(), "f")


# --------------------------------------------------------------------------- the model


@dataclass
class Hold:
    artifact: str
    tokens: D
    unit: str
    units: D
    status: str  # active, settled or voided: as stored (expired = active past expires_at)
    expires_at: datetime
    claim_id: int | None = None
    key: str | None = None
    spend_id: int | None = None

    def row(self):
        return (self.artifact, self.tokens, self.unit, self.units, self.status, self.claim_id,
                self.expires_at, self.key)

    def live(self, t: datetime) -> bool:
        return self.status == "active" and self.expires_at > t


@dataclass
class Entry:
    artifact: str
    tokens: D
    unit: str
    units: D
    overdraft: bool
    key: str | None = None
    hold_id: int | None = None

    def row(self):
        return (self.artifact, self.tokens, self.unit, self.units, self.overdraft, self.key,
                self.hold_id)


@dataclass
class Claim:
    artifact: str
    agent: str
    status: str  # active, done, released or expired (taken over after its lease ran out)
    lease: datetime

    def row(self):
        return (self.artifact, self.agent, self.status, self.lease)

    def live(self, t: datetime) -> bool:
        return self.status == "active" and self.lease > t


@dataclass
class Position:
    artifact: str
    tokens: D
    status: str

    def row(self):
        return (self.artifact, self.tokens, self.status)


@dataclass
class Model:
    """What the database must hold, and the budget terms that follow from it."""

    holds: dict[int, Hold] = field(default_factory=dict)
    entries: dict[int, Entry] = field(default_factory=dict)
    claims: dict[int, Claim] = field(default_factory=dict)
    positions: dict[int, Position] = field(default_factory=dict)
    shrunk: set[str] = field(default_factory=set)  # a position closed under its holds
    unjudged: set[str] = field(default_factory=set)  # has an entry without budget_at_spend

    def state(self) -> dict:
        return {name: {i: item.row() for i, item in getattr(self, name).items()}
                for name in ("holds", "entries", "claims", "positions")}

    def budget(self, artifact: str) -> D:
        demand = sum((p.tokens for p in self.positions.values()
                      if p.artifact == artifact and p.status == "open"), D(0))
        return (demand * D("0.1")).quantize(MICRO)

    def spent(self, artifact: str) -> D:
        return sum((e.tokens for e in self.entries.values() if e.artifact == artifact), D(0))

    def held(self, artifact: str, t: datetime) -> D:
        return sum((h.tokens for h in self.holds.values()
                    if h.artifact == artifact and h.live(t)), D(0))

    def available(self, artifact: str, t: datetime) -> D:
        return self.budget(artifact) - self.spent(artifact) - self.held(artifact, t)

    def overdrawn(self, artifact: str) -> bool:
        return any(e.overdraft for e in self.entries.values() if e.artifact == artifact)

    def expiries(self) -> list[datetime]:
        return sorted([h.expires_at for h in self.holds.values() if h.status == "active"] +
                      [c.lease for c in self.claims.values() if c.status == "active"])

    def hold_of_claim(self, claim_id: int) -> tuple[int, Hold] | None:
        """The claim's active hold (live or expired), as alloc finds it."""
        return next(((i, h) for i, h in self.holds.items()
                     if h.claim_id == claim_id and h.status == "active"), None)

    def entry_of_hold(self, hold_id: int) -> Entry:
        return next(e for e in self.entries.values() if e.hold_id == hold_id)


# --------------------------------------------------------------------------- the database


class Database:
    """The simulated database: its URL for alloc, raw access as "another service" has it,
    and on PostgreSQL the server to stop and start again."""

    def __init__(self, kind: str, url: str, server=None):
        self.kind, self.url, self.server = kind, url, server

    def _connect(self):
        if self.kind == "sqlite":
            return sqlite3.connect(self.url, timeout=30, isolation_level=None)
        import psycopg

        return psycopg.connect(self.url, autocommit=True)

    def query(self, sql: str, params=()) -> list[tuple]:
        """Run one statement in its own transaction (`?` placeholders): its rows, if any."""
        if self.kind == "postgresql":
            sql = sql.replace("?", "%s")
        else:  # SQLite's driver takes no Decimal: text, which NUMERIC columns convert
            params = tuple(str(p) if isinstance(p, D) else p for p in params)
        connection = self._connect()
        try:
            cursor = connection.execute(sql, params)
            return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()

    def restart(self) -> None:
        """Stop PostgreSQL at once (no checkpoint, connections cut) and start it again."""
        from sqlalchemy.engine import make_url

        from tests.pgserver import PrivateServer, database_url

        PrivateServer.stop(self.server, mode="immediate")
        PrivateServer.start(self.server)  # on another free port
        self.url = database_url(self.server.admin_url, make_url(self.url).database)

    def state(self) -> dict:
        """Holds, spend entries, claims and positions as the model writes them."""
        return {
            "holds": {r[0]: (r[1], amount(r[2]), r[3], amount(r[4]), r[5], r[6], moment(r[7]),
                             r[8]) for r in self.query(
                "SELECT id, artifact_id, tokens, unit, units, status, claim_id, expires_at, "
                "idempotency_key FROM holds")},
            "entries": {r[0]: (r[1], amount(r[2]), r[3], amount(r[4]), bool(r[5]), r[6], r[7])
                        for r in self.query(
                "SELECT id, artifact_id, tokens, unit, units, overdraft, idempotency_key, "
                "hold_id FROM resource_allocations")},
            "claims": {r[0]: (r[1], r[2], r[3], moment(r[4])) for r in self.query(
                "SELECT id, artifact_id, agent_id, status, lease_expires_at FROM claims")},
            "positions": {r[0]: (r[1], amount(r[2]), r[3]) for r in self.query(
                "SELECT id, artifact_id, tokens, status FROM positions")},
        }


def amount(value) -> D | None:
    """An amount as the driver returns it (SQLite: int or float) as an exact Decimal."""
    if value is None:
        return None
    return (D(repr(value)) if isinstance(value, float) else D(value)).quantize(MICRO)


def moment(value) -> datetime:
    """A timestamp as the driver returns it (SQLite: naive UTC text) as an aware datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def db_text(t: datetime, kind: str):
    """A moment as another service writes it: naive UTC text on SQLite."""
    return str(t.replace(tzinfo=None)) if kind == "sqlite" else t


# --------------------------------------------------------------------------- outcomes


@dataclass
class Expect:
    """One outcome the model allows: an exit code, and what it changes given what was
    observed (ids and times alloc chose); `apply` raises SimulationFailure when the
    observation cannot be this outcome."""

    code: int
    apply: Callable[[Model, dict], None] | None = None
    replayed: bool = False


def refused(code: int) -> Expect:
    return Expect(code)


def replay() -> Expect:
    return Expect(0, replayed=True)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise SimulationFailure(message)


@dataclass
class Op:
    """A resolved step that runs an `alloc` command: its arguments, and its outcomes as
    the model predicts them at a given moment."""

    kind: str
    argv: list[str]
    predict: Callable[[Model, datetime], Expect]


def spend_op(m: Model, r, step: int, t: datetime) -> Op:
    artifact = pick(ARTIFACTS, r[0])
    tokens = cents(m.budget(artifact) * frac(r[1]) * D("0.6"))
    unit = UNIT if r[2] < 0.15 else BASE_UNIT
    key = f"s{step}" if r[3] < 0.5 else None
    overdraft = r[4] < 0.05
    return _spend(artifact, tokens * rate_of(unit), unit, key, overdraft)


def spend_replay_op(m: Model, r, step: int, t: datetime) -> Op:
    keyed = [e for e in m.entries.values() if e.key is not None]
    if not keyed:
        return spend_op(m, r, step, t)
    first = pick(keyed, r[0])
    units = first.units if r[1] < 0.7 else first.units + rate_of(first.unit) * CENT
    return _spend(first.artifact, units, first.unit, first.key, False)


def _spend(artifact: str, units: D, unit: str, key: str | None, overdraft: bool) -> Op:
    argv = ["spend", artifact, number(units), "--unit", unit, "--agent", "sim"]
    argv += (["--key", key] if key else []) + (["--allow-overdraft"] if overdraft else [])
    tokens = units / rate_of(unit)

    def predict(m: Model, t: datetime) -> Expect:
        if key is not None:
            first = next((e for e in m.entries.values() if e.key == key), None)
            if first is not None:
                same = (first.artifact, first.units, first.unit) == (artifact, units, unit)
                return replay() if same else refused(5)
        short = tokens > m.available(artifact, t)
        if short and not overdraft:
            return refused(3)

        def apply(m: Model, obs: dict) -> None:
            require(obs.get("entry_id") is not None and obs["entry_id"] not in m.entries,
                    f"expected a new spend entry, saw {obs}")
            m.entries[obs["entry_id"]] = Entry(artifact, tokens, unit, units, short, key)

        return Expect(0, apply)

    return Op("spend", argv, predict)


def hold_op(m: Model, r, step: int, t: datetime) -> Op:
    artifact = pick(ARTIFACTS, r[0])
    tokens = cents(m.budget(artifact) * frac(r[1]) * D("0.6"))
    unit = UNIT if r[2] < 0.15 else BASE_UNIT
    ttl = f"{1 + int(r[3] * 3)}s" if r[4] < 0.5 else "10m"
    key = f"h{step}" if r[5] < 0.7 else None
    return _hold(artifact, tokens * rate_of(unit), unit, ttl, key, pick(AGENTS, r[6]))


def hold_replay_op(m: Model, r, step: int, t: datetime) -> Op:
    keyed = [h for h in m.holds.values() if h.key is not None]
    if not keyed:
        return hold_op(m, r, step, t)
    first = pick(keyed, r[0])
    units = first.units if r[1] < 0.7 else first.units + rate_of(first.unit) * CENT
    return _hold(first.artifact, units, first.unit, "10m", first.key, "sim")


def _hold(artifact: str, units: D, unit: str, ttl: str, key: str | None, agent: str) -> Op:
    argv = ["hold", artifact, number(units), "--unit", unit, "--ttl", ttl, "--agent", agent]
    argv += ["--key", key] if key else []
    tokens = units / rate_of(unit)

    def predict(m: Model, t: datetime) -> Expect:
        if key is not None:
            first = next((h for h in m.holds.values() if h.key == key), None)
            if first is not None:
                same = (first.artifact, first.units, first.unit) == (artifact, units, unit)
                return replay() if same else refused(5)
        if tokens > m.available(artifact, t):
            return refused(3)

        def apply(m: Model, obs: dict) -> None:
            require(obs.get("hold_id") is not None and obs["hold_id"] not in m.holds,
                    f"expected a new hold, saw {obs}")
            m.holds[obs["hold_id"]] = Hold(artifact, tokens, unit, units, "active",
                                           obs["expires_at"], None, key)

        return Expect(0, apply)

    return Op("hold", argv, predict)


def _some(items: dict, r0: float, r1: float, preferred: Callable) -> int:
    """An id of `items`: mostly one that `preferred` picks out, sometimes any; rarely an
    id that does not exist."""
    if r1 < 0.04 or not items:
        return 10**9
    chosen = [i for i, item in items.items() if preferred(item)]
    return pick(chosen if chosen and r1 < 0.8 else items, r0)


def settle_op(m: Model, r, step: int, t: datetime) -> Op:
    hold_id = _some(m.holds, r[0], r[1], lambda h: h.live(t))
    hold = m.holds.get(hold_id)
    units = None
    if hold is not None and r[2] >= 0.2:  # else: the held amount, by default
        tokens = (cents(hold.tokens * frac(r[3])) if r[2] < 0.5 else hold.tokens
                  if r[2] < 0.75 else hold.tokens + cents(D(30) * frac(r[3])))
        units = tokens * rate_of(hold.unit)
    argv = ["settle", str(hold_id)] + ([number(units)] if units else [])
    if units and r[4] < 0.5:  # else in the hold's unit, by default
        argv += ["--unit", hold.unit]
    return Op("settle", argv, lambda m, t: _settle(m, t, hold_id, units))


def _settle(m: Model, t: datetime, hold_id: int, units: D | None,
            then: Callable[[Model, dict], None] | None = None) -> Expect:
    """Settling a hold for `units` of its unit (None: the held amount); `then` adds what
    else the same transaction does (a claim closed)."""
    hold = m.holds.get(hold_id)
    if hold is None:
        return refused(4)
    units = hold.units if units is None else units
    if hold.status == "settled":
        first = m.entry_of_hold(hold_id)
        return replay() if (first.units, first.unit) == (units, hold.unit) else refused(5)
    if not hold.live(t):
        return refused(2)
    tokens = units / rate_of(hold.unit)
    excess = tokens - hold.tokens
    if excess > 0 and excess > m.available(hold.artifact, t):
        return refused(3)
    overdraft = m.spent(hold.artifact) + tokens > m.budget(hold.artifact)

    def apply(m: Model, obs: dict) -> None:
        require(obs.get("entry_id") is not None and obs["entry_id"] not in m.entries,
                f"expected a new settlement entry, saw {obs}")
        m.entries[obs["entry_id"]] = Entry(hold.artifact, tokens, hold.unit, units, overdraft,
                                           None, hold_id)
        settled = m.holds[hold_id]
        settled.status, settled.spend_id = "settled", obs["entry_id"]
        if then is not None:
            then(m, obs)

    return Expect(0, apply)


def void_op(m: Model, r, step: int, t: datetime) -> Op:
    hold_id = _some(m.holds, r[0], r[1], lambda h: h.status == "active")

    def predict(m: Model, t: datetime) -> Expect:
        hold = m.holds.get(hold_id)
        if hold is None:
            return refused(4)
        if hold.status == "settled":
            return refused(2)
        if hold.status == "voided":
            return replay()

        def apply(m: Model, obs: dict) -> None:
            m.holds[hold_id].status = "voided"

        return Expect(0, apply)

    return Op("void", ["void", str(hold_id)], predict)


def claim_op(m: Model, r, step: int, t: datetime, agent: str | None = None,
             reserve: D | None = None) -> Op:
    agent = agent or pick(AGENTS, r[0])
    reserve = reserve or pick(RESERVES, r[1])  # in tokens
    lease = f"{1 + int(r[2] * 3)}s" if r[3] < 0.5 else "10m"
    unit = UNIT if r[4] < 0.2 else BASE_UNIT
    argv = ["next", "--claim", "--agent", agent, "--reserve", number(reserve * rate_of(unit)),
            "--unit", unit, "--lease", lease]

    def predict(m: Model, t: datetime) -> Expect:
        candidates = {a for a in ARTIFACTS if m.available(a, t) >= reserve and not any(
            c.artifact == a and c.agent != agent and c.live(t) for c in m.claims.values())}

        def apply(m: Model, obs: dict) -> None:
            artifact = obs.get("artifact_id")
            if artifact is None:
                require(not candidates, f"nothing claimed, but {sorted(candidates)} qualify")
                return
            require(artifact in candidates,
                    f"claimed {artifact}, not one of {sorted(candidates)}")
            own = next((i for i, c in m.claims.items()
                        if c.artifact == artifact and c.agent == agent and c.live(t)), None)
            claim_id, lease_end, hold_id = obs["claim_id"], obs["lease"], obs["hold_id"]
            held = None if own is None else m.hold_of_claim(own)
            if own is not None:  # renewed: its lease and its hold (or a new one)
                require(claim_id == own, f"{agent} renews claim {own}, saw claim {claim_id}")
                m.claims[own].lease = lease_end
                if held is not None:
                    require(hold_id == held[0], f"claim {own} keeps hold {held[0]}, saw {obs}")
                    held[1].expires_at = lease_end
                    return
            else:
                require(claim_id not in m.claims, f"expected a new claim, saw {obs}")
                for c in m.claims.values():
                    if c.artifact == artifact and c.status == "active":
                        c.status = "expired"  # its lease ran out: taken over
                m.claims[claim_id] = Claim(artifact, agent, "active", lease_end)
            require(hold_id is not None and hold_id not in m.holds,
                    f"expected a new hold for the claim, saw {obs}")
            m.holds[hold_id] = Hold(artifact, reserve, unit, reserve * rate_of(unit), "active",
                                    lease_end, claim_id)

        return Expect(0, apply)

    return Op("claim", argv, predict)


def renew_op(m: Model, r, step: int, t: datetime) -> Op:
    if not any(c.live(t) for c in m.claims.values()):
        return claim_op(m, r, step, t)
    claim_id = pick([i for i, c in m.claims.items() if c.live(t)], r[5])
    held = m.hold_of_claim(claim_id)
    return claim_op(m, r, step, t, agent=m.claims[claim_id].agent,
                    reserve=held[1].tokens if held else pick(RESERVES, r[1]))


def done_op(m: Model, r, step: int, t: datetime) -> Op:
    claim_id = _some(m.claims, r[0], r[1], lambda c: c.status == "active")
    held = m.hold_of_claim(claim_id)
    unit = BASE_UNIT if held is None else held[1].unit  # of --spend: the hold's by default
    spend = None if r[2] < 0.3 else cents(D(8) * frac(r[3])) * rate_of(unit)
    reward = f"{frac(r[4])}" if r[5] < 0.5 else None
    argv = (["done", str(claim_id)] + (["--spend", number(spend)] if spend else []) +
            (["--unit", unit] if spend and r[6] < 0.5 else []) +
            (["--reward", reward] if reward else []))

    def predict(m: Model, t: datetime) -> Expect:
        claim = m.claims.get(claim_id)
        if claim is None:
            return refused(4)
        if claim.status != "active":
            return refused(2)

        def close(m: Model, obs: dict) -> None:
            m.claims[claim_id].status = "done"

        held = m.hold_of_claim(claim_id)
        if held is not None:
            return _settle(m, t, held[0], spend, then=close)
        if spend is None:
            return Expect(0, close)
        if spend > m.available(claim.artifact, t):
            return refused(3)

        def spend_and_close(m: Model, obs: dict) -> None:
            require(obs.get("entry_id") is not None and obs["entry_id"] not in m.entries,
                    f"expected a new spend entry, saw {obs}")
            m.entries[obs["entry_id"]] = Entry(claim.artifact, spend, BASE_UNIT, spend, False)
            close(m, obs)

        return Expect(0, spend_and_close)

    return Op("done", argv, predict)


def release_op(m: Model, r, step: int, t: datetime) -> Op:
    claim_id = _some(m.claims, r[0], r[1], lambda c: c.status == "active")

    def predict(m: Model, t: datetime) -> Expect:
        claim = m.claims.get(claim_id)
        if claim is None:
            return refused(4)
        if claim.status != "active":
            return refused(2)

        def apply(m: Model, obs: dict) -> None:
            m.claims[claim_id].status = "released"
            held = m.hold_of_claim(claim_id)
            if held is not None:
                held[1].status = "voided"

        return Expect(0, apply)

    return Op("release", ["release", str(claim_id)], predict)


OPS = {"spend": spend_op, "spend-replay": spend_replay_op, "hold": hold_op,
       "hold-replay": hold_replay_op, "settle": settle_op, "void": void_op, "claim": claim_op,
       "renew": renew_op, "done": done_op, "release": release_op}


def observed(kind: str, data) -> dict:
    """What an op's JSON output says alloc chose: ids, times, and whether it replayed."""
    if kind == "claim":
        if not data:
            return {}
        (entry,) = data
        return {"artifact_id": entry["artifact_id"], "claim_id": entry["claim_id"],
                "lease": datetime.fromisoformat(entry["lease_expires_at"]),
                "hold_id": entry["hold_id"]}
    if kind in ("hold", "void"):
        return {"hold_id": data["id"], "expires_at": datetime.fromisoformat(data["expires_at"]),
                "replayed": data["replayed"]}
    if kind == "done":
        return {"entry_id": data["spend_id"]}
    if kind == "release":
        return {}
    return {"entry_id": data["id"], "replayed": data["replayed"]}  # spend, settle


def observed_in(before: dict, after: dict) -> dict:
    """What a crashed op chose, read from the rows it added or changed."""
    def new(name):
        return [i for i in after[name] if i not in before[name]]

    entries_new = new("entries")  # more than one: the state comparison names them
    obs = {"entry_id": entries_new[0] if entries_new else None}
    holds_new = new("holds")
    if holds_new:
        obs["hold_id"] = holds_new[0]
        obs["expires_at"] = after["holds"][holds_new[0]][6]
    claims_new = new("claims") or [i for i in after["claims"] if i in before["claims"] and
                                   after["claims"][i][3] != before["claims"][i][3]]
    if claims_new:
        claim_id = claims_new[0]
        artifact, _, _, lease = after["claims"][claim_id]
        held = [i for i, h in after["holds"].items() if h[5] == claim_id and h[4] == "active"]
        obs.update(artifact_id=artifact, claim_id=claim_id, lease=lease,
                   hold_id=held[0] if held else None)
    return obs


# --------------------------------------------------------------------------- the run


def plan(seed: int, steps: int) -> list[tuple[str, tuple[float, ...]]]:
    """The workload, drawn from the seed alone: each step's kind and its random numbers."""
    rng = random.Random(seed)
    kinds, weights = zip(*WEIGHTS.items())
    return [(rng.choices(kinds, weights)[0], tuple(rng.random() for _ in range(RANDOMS)))
            for _ in range(steps)]


class Simulation:
    """One seed's run against one database: the model, and the trace of steps so far."""

    def __init__(self, db: Database, seed: int, steps: int):
        self.db, self.seed, self.steps = db, seed, steps
        self.model = Model()
        self.step = 0
        self.trace: list[str] = []
        self.outcomes: Counter[str] = Counter()  # what the workload exercised

    # ------------------------------------------------------------------ running alloc

    def cli(self, *args: str):
        from tests.conftest import run_cli

        return run_cli(*args, "--db", self.db.url)

    def json_of(self, *args: str):
        result = self.cli(*args, "-f", "json")
        require(result.exit_code == 0, f"alloc {' '.join(args)} exited {result.exit_code}: "
                                       f"{result.stderr.strip()}")
        return json.loads(result.stdout, parse_float=D, parse_int=D)

    def failure(self, message: str) -> SimulationFailure:
        """The failure, with the seed, the step and the steps before it."""
        recent = "\n  ".join(self.trace[-12:])
        return SimulationFailure(
            f"seed {self.seed} step {self.step}: {message}\n last steps:\n  {recent}\n"
            f" replay: python -m tests.simulation --db {self.db.kind} --seeds {self.seed} "
            f"--steps {self.steps}")

    # ------------------------------------------------------------------ the steps

    def setup(self, workdir: Path) -> None:
        (workdir / "a.csv").write_text("id,type\n" + "".join(f"{a},hypothesis\n"
                                                              for a in ARTIFACTS))
        (workdir / "p.csv").write_text("artifact_id,tokens\n" + "".join(
            f"{a},{tokens}\n" for a, each in POSITIONS.items() for tokens in each))
        for args in (("db", "upgrade"), ("load", "artifacts", str(workdir / "a.csv")),
                     ("load", "positions", str(workdir / "p.csv")),
                     ("rates", "set", UNIT, str(RATE))):
            result = self.cli(*args)
            require(result.exit_code == 0, f"setup {args}: {result.stderr}")
        for i, (artifact, tokens, status) in self.db.state()["positions"].items():
            self.model.positions[i] = Position(artifact, tokens, status)
        started = time.monotonic()
        self.process(["holds"]).communicate(timeout=STEP_TIMEOUT)
        self.process_time = time.monotonic() - started

    def process(self, argv: list[str]) -> subprocess.Popen:
        """`alloc ARGV` as a separate process."""
        return subprocess.Popen(
            [sys.executable, "-m", "scidex_alloc", *argv, "-f", "json", "--db", self.db.url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self, workdir: Path) -> None:
        self.setup(workdir)
        self.check()
        for step, (kind, r) in enumerate(plan(self.seed, self.steps), start=1):
            self.step = step
            self.wait_out_expiries()
            t0 = now()
            try:
                before = copy.deepcopy(self.model)
                self.run_step(kind, r, t0)
                self.check_grants(before, now())
                self.check()
            except SimulationFailure as failure:
                raise self.failure(str(failure)) from None

    def wait_out_expiries(self) -> None:
        """Sleep past any hold or lease that would expire within GUARD seconds."""
        while True:
            t = now()
            soon = [e for e in self.model.expiries()
                    if t - SETTLE_TIME < e <= t + timedelta(seconds=GUARD)]
            if not soon:
                return
            time.sleep((max(soon) - t + SETTLE_TIME).total_seconds())

    def run_step(self, kind: str, r, t0: datetime) -> None:
        if kind in OPS:
            op = OPS[kind](self.model, r, self.step, t0)
            self.trace.append(f"{self.step}: alloc {' '.join(op.argv)}")
            self.run_op(op, t0)
        elif kind == "crash" or (kind == "restart" and self.db.kind == "sqlite"):
            self.crash(r, t0)
        elif kind == "restart":
            self.trace.append(f"{self.step}: PostgreSQL stopped immediately, restarted")
            self.outcomes["restart"] += 1
            self.db.restart()
            self.reconcile(None, [])
        elif kind == "sleep":
            seconds = 0.3 + 1.2 * r[0]
            self.outcomes["sleep"] += 1
            self.trace.append(f"{self.step}: sleep {seconds:.2f}s")
            time.sleep(seconds)
        else:
            self.direct_write(kind, r, t0)

    def moments(self, t0: datetime, t1: datetime) -> list[datetime]:
        """The instants between t0 and t1 at which the model's state may differ: t0 and
        every expiry in between."""
        return [t0] + [e for e in self.model.expiries() if t0 < e <= t1] + [t1]

    def run_op(self, op: Op, t0: datetime) -> None:
        result = self.cli(*op.argv, "-f", "json")
        t1 = now()
        expects = [op.predict(self.model, t) for t in self.moments(t0, t1)]
        codes = sorted({e.code for e in expects})
        if result.exit_code not in codes:
            raise SimulationFailure(
                f"alloc {' '.join(op.argv)} exited {result.exit_code}, expected "
                f"{' or '.join(map(str, codes))}: {result.stderr.strip()}")
        self.outcomes[f"{op.kind} exit {result.exit_code}"
                      + (" (none)" if result.stdout.strip() == "[]" else "")] += 1
        if result.exit_code != 0:
            lines = result.stderr.splitlines()
            require(result.stdout == "" and len(lines) == 1 and lines[0].startswith("alloc: "),
                    f"a refusal prints one line on stderr only: {result.stderr!r}")
            self.reconcile(None, [])
            return
        self.completed(op, result.stdout, expects)

    def completed(self, op: Op, output: str, expects: list[Expect]) -> None:
        """An op that succeeded: the model follows what its output says it did."""
        obs = observed(op.kind, json.loads(output))
        allowed = [e for e in expects if e.code == 0 and e.replayed == bool(obs.get("replayed"))]
        require(allowed, f"alloc {' '.join(op.argv)} replayed={obs.get('replayed')}, "
                         f"expected otherwise")
        self.reconcile(obs, allowed)

    def reconcile(self, obs: dict | None, expects: list[Expect],
                  maybe_nothing: bool = False) -> None:
        """Make the model one the database equals: after one of `expects` (given what was
        observed, or else read from the database), or, if `maybe_nothing` or there is no
        expected change, as it was."""
        actual = self.db.state()
        before = self.model.state()
        reasons = []
        candidates = [self.model] if maybe_nothing or not expects else []
        for expect in expects:
            if expect.apply is None:
                candidates.append(self.model)
                continue
            model = copy.deepcopy(self.model)
            try:
                expect.apply(model, obs if obs is not None else observed_in(before, actual))
            except SimulationFailure as failure:
                reasons.append(str(failure))
                continue
            candidates.append(model)
        for model in candidates:
            if model.state() == actual:
                self.model = model
                return
        raise SimulationFailure("the database does not match the model: " + "; ".join(
            reasons + [_difference(candidates[-1].state(), actual)] if candidates else reasons))

    def check_grants(self, before: Model, t: datetime) -> None:
        """Budget alloc just granted (a new hold, a spend, a settlement beyond its hold) left
        spent + held within the budget, unless flagged as an overdraft: also where another
        service shrank the budget under earlier holds (check() covers the other artifacts)."""
        m = self.model
        granted = {h.artifact for i, h in m.holds.items() if i not in before.holds}
        granted |= {e.artifact for i, e in m.entries.items() if i not in before.entries
                    and not e.overdraft and (e.hold_id is None or
                                             e.tokens > m.holds[e.hold_id].tokens)}
        for artifact in granted:
            require(m.available(artifact, t) >= 0,
                    f"{artifact}: spent + held exceeds its budget after what alloc granted")

    def crash(self, r, t0: datetime) -> None:
        """Run an op as a separate `alloc` process and SIGKILL it (or on PostgreSQL stop the
        server) after a random delay: the database shows it whole or not at all."""
        kind = pick(CRASHABLE, r[9])
        op = OPS[kind](self.model, r, self.step, t0)
        server = self.db.kind == "postgresql" and r[8] < 0.4
        # Around the time a command takes, so that some are cut short during their work.
        delay = self.process_time * (0.5 + 0.8 * r[7])
        how = "PostgreSQL stopped" if server else "SIGKILL"
        self.trace.append(f"{self.step}: alloc {' '.join(op.argv)}, {how} after {delay:.2f}s")
        process = self.process(op.argv)
        time.sleep(delay)
        if server:
            self.db.restart()
        else:
            process.send_signal(signal.SIGKILL)
        out, err = process.communicate(timeout=STEP_TIMEOUT)
        t1 = now()
        require("Traceback" not in err, f"a traceback: {err}")
        expects = [op.predict(self.model, t) for t in self.moments(t0, t1)]
        if process.returncode == 0:  # it finished first
            self.outcomes[f"crashed {op.kind}: finished first"] += 1
            self.completed(op, out, expects)
            return
        codes = {e.code for e in expects}
        require(process.returncode in codes | {-signal.SIGKILL, 1},
                f"exit {process.returncode}, expected one of {sorted(codes)}: {err.strip()}")
        if process.returncode in (-signal.SIGKILL, 1):  # cut short: all or nothing
            unchanged = self.model.state()
            self.reconcile(None, [e for e in expects if e.code == 0], maybe_nothing=True)
            happened = "nothing" if self.model.state() == unchanged else "whole"
            self.outcomes[f"crashed {op.kind}: {happened}"] += 1
        else:  # refused before it was cut short: nothing
            self.outcomes[f"crashed {op.kind}: exit {process.returncode} first"] += 1
            self.reconcile(None, [])

    def direct_write(self, kind: str, r, t: datetime) -> None:
        """Another service writes the source tables through the raw driver."""
        self.outcomes[f"service {kind}"] += 1
        m, db = self.model, self.db
        artifact = pick(ARTIFACTS, r[0])
        if kind == "insert-position":
            tokens = pick(NEW_POSITIONS, r[1])
            ((i,),) = db.query("INSERT INTO positions (artifact_id, tokens, status, created_at) "
                               "VALUES (?, ?, 'open', ?) RETURNING id",
                               (artifact, tokens, db_text(t, db.kind)))
            m.positions[i] = Position(artifact, tokens, "open")
            self.trace.append(f"{self.step}: service inserts position {i}: {artifact} {tokens}")
        elif kind == "close-position":
            open_ = [i for i, p in m.positions.items() if p.status == "open"]
            i = pick(open_, r[1]) if open_ else None
            p = m.positions.get(i)
            # An entry without a recorded budget is judged against today's budget: closing
            # below what is spent would be a breach that another service caused.
            if p is None or (p.artifact in m.unjudged and
                             m.budget(p.artifact) - p.tokens / 10 < m.spent(p.artifact)):
                self.trace.append(f"{self.step}: (no position to close)")
                return
            db.query("UPDATE positions SET status = 'closed' WHERE id = ?", (i,))
            p.status = "closed"
            m.shrunk.add(p.artifact)
            self.trace.append(f"{self.step}: service closes position {i} ({p.artifact})")
        else:  # insert-spend, within the available budget, as a careful service would
            tokens = (m.available(artifact, t) * frac(r[1])).quantize(CENT, ROUND_DOWN)
            if tokens <= 0:
                self.trace.append(f"{self.step}: (nothing available for a service spend)")
                return
            judged = r[2] < 0.5
            ((i,),) = db.query(
                "INSERT INTO resource_allocations (artifact_id, tokens, unit, units, rate, kind, "
                "agent_id, overdraft, created_at, budget_at_spend) VALUES "
                "(?, ?, 'tokens', ?, 1, 'service', 'svc', ?, ?, ?) RETURNING id",
                (artifact, tokens, tokens, False, db_text(t, db.kind),
                 m.budget(artifact) if judged else None))
            m.entries[i] = Entry(artifact, tokens, BASE_UNIT, tokens, False)
            if not judged:
                m.unjudged.add(artifact)
            self.trace.append(f"{self.step}: service inserts spend {i}: {artifact} {tokens}")
        self.reconcile(None, [])

    # ------------------------------------------------------------------ the checks

    def check(self) -> None:
        """alloc's own views agree with the model, and its audit passes."""
        m = self.model
        t_before = now()
        holds = {h["id"]: h for h in self.json_of("holds", "--all")}
        t_after = now()
        require(set(holds) == {D(i) for i in m.holds},
                f"alloc holds --all lists {sorted(holds)}, the model {sorted(m.holds)}")
        for i, hold in m.holds.items():
            shown = holds[D(i)]
            statuses = {hold.status}
            if hold.status == "active":
                statuses = ({"active"} if hold.expires_at > t_after else {"expired"}
                            if hold.expires_at <= t_before else {"active", "expired"})
            require(shown["status"] in statuses and shown["artifact_id"] == hold.artifact
                    and shown["tokens"] == hold.tokens and shown["units"] == hold.units
                    and datetime.fromisoformat(shown["expires_at"]) == hold.expires_at
                    and shown["claim_id"] == hold.claim_id
                    and shown["spend_id"] == hold.spend_id,
                    f"alloc holds --all shows hold {i} as {shown}, the model {hold}")
        log = self.json_of("log")
        require([(D(e["id"]), e["artifact_id"], e["tokens"], e["unit"], e["units"],
                  e["overdraft"], e["key"]) for e in log] ==
                [(D(i), e.artifact, e.tokens, e.unit, e.units, e.overdraft, e.key)
                 for i, e in sorted(m.entries.items())],
                f"alloc log differs from the model:\n{log}\n{m.entries}")
        t_before = now()
        ranked = {row["artifact_id"]: row for row in self.json_of("rank")}
        t_after = now()
        for artifact in ARTIFACTS:
            row = ranked[artifact]
            helds = {m.held(artifact, t) for t in self.moments(t_before, t_after)}
            require(row["budget"] == m.budget(artifact) and row["spent"] == m.spent(artifact)
                    and row["held"] in helds
                    and row["available"] == row["budget"] - row["spent"] - row["held"],
                    f"alloc rank shows {artifact} as {row}; the model: budget "
                    f"{m.budget(artifact)}, spent {m.spent(artifact)}, held one of {helds}")
            if artifact not in m.shrunk and not m.overdrawn(artifact):
                require(row["spent"] + row["held"] <= row["budget"],
                        f"{artifact}: spent + held exceeds the budget: {row}")
        audit = self.cli("audit", "-f", "json")
        if audit.exit_code != 0:
            breached = [c for c in json.loads(audit.stdout or '{"checks": []}')["checks"]
                        if not c["ok"]]
            raise SimulationFailure(f"alloc audit exited {audit.exit_code}: "
                                    f"{json.dumps(breached, default=str)} {audit.stderr}")


def _difference(expected: dict, actual: dict) -> str:
    lines = []
    for name in expected:
        for i in sorted(set(expected[name]) | set(actual[name])):
            want, have = expected[name].get(i), actual[name].get(i)
            if want != have:
                lines.append(f"{name} {i}: model {want}, database {have}")
    return "\n  ".join(["differences:"] + lines)


# --------------------------------------------------------------------------- entry points


def restartable_server():
    """A private PostgreSQL that an immediate stop loses nothing acknowledged from (the
    test harness's throwaway servers skip synchronous commits)."""
    from tests.pgserver import THROWAWAY_SETTINGS, ThrowawayServer

    server = ThrowawayServer()
    server.settings = {**THROWAWAY_SETTINGS, "synchronous_commit": "on"}
    server.start()
    return server


def simulate(kind: str, seed: int, steps: int, server=None) -> Counter[str]:
    """Run one seed on a fresh database (on `server`, for PostgreSQL): what it exercised.
    Raises SimulationFailure naming the seed and the step."""
    with tempfile.TemporaryDirectory(prefix="scidex-sim-") as workdir:
        workdir = Path(workdir)
        if kind == "sqlite":
            simulation = Simulation(Database(kind, str(workdir / "sim.db")), seed, steps)
            simulation.run(workdir)
            return simulation.outcomes
        from tests.pgserver import create_database, drop_database

        name = f"sim_{seed}_{uuid.uuid4().hex[:8]}"
        url = create_database(server.admin_url, name)
        try:
            simulation = Simulation(Database(kind, url, server), seed, steps)
            simulation.run(workdir)
            return simulation.outcomes
        finally:
            drop_database(server.admin_url, name)


def seeds_of(text: str) -> list[int]:
    """`1-200`, `7` or `1,5,9-12`."""
    seeds = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        seeds += range(int(first), int(last or first) + 1)
    return seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.simulation",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--seeds", type=seeds_of, default=seeds_of("1-10"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="also print what the workload exercised, over all seeds")
    args = parser.parse_args(argv)
    server = restartable_server() if args.db == "postgresql" else None
    failed, exercised = [], Counter()
    try:
        for seed in args.seeds:
            started = time.monotonic()
            try:
                exercised += simulate(args.db, seed, args.steps, server)
            except SimulationFailure as failure:
                failed.append(seed)
                print(f"FAIL {failure}", flush=True)
                continue
            print(f"seed {seed}: {args.steps} steps ok on {args.db} "
                  f"({time.monotonic() - started:.1f}s)", flush=True)
    finally:
        if server is not None:
            server.stop()
    if args.verbose:
        print("\n".join(f"  {name}: {count}" for name, count in sorted(exercised.items())))
    print(f"{len(args.seeds) - len(failed)} of {len(args.seeds)} seeds passed"
          + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("SCIDEX_BUSY_TIMEOUT", "30")
    sys.exit(main())
