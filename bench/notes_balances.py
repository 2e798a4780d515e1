"""Prose for docs/benchmarks.md about cases 9-17 (the maintained balances, holds and the dashboard's API): how they are
measured, and what bounds each one when it misses its target. Every number comes from
the tables; this text only says what the floor of each case is and what lies above it."""

METHOD = """
## How cases 9-17 are measured (the maintained balances, holds and the dashboard's API)

- Cases that write work on a copy of the main database, dropped afterwards (SQLite: the
  backup API into the run's temporary directory; PostgreSQL: `CREATE DATABASE copy
  TEMPLATE main`), so the cached databases and the other cases are unaffected
  (`bench/copies.py`).
- **9**: `alloc next --claim --agent bench-a -f json` against `alloc budget ID -f json`,
  the per-call floor (start-up and one indexed read), interleaved, with the claim it
  writes deleted before each run. First every 100th artifact by id gets a `done` claim
  with a reward (1 %), then every 10th (10 %), inserted set-based with the triggers on
  (PostgreSQL: then `VACUUM ANALYZE`). Peak RSS is the alloc process's own (`wait4`).
- **10**: 16 processes run the Python loop without holds (`next(claim=True, limit=1)`, a
  spend of 0.01 token with a key, `done` with a reward), each with its own `Allocator`
  (`bench/agent.py`); they open their allocators first and start together, for 60 s (5 s
  in small mode). Every exception is counted as an error (busy timeouts, `database is
  locked`, refusals), then `alloc audit`. Then case 16's loop, then the README's shell
  loop runs as long (16
  shells, two `alloc` processes per investigation: `next --claim --reserve 0.02` and
  `done --spend 0.01`), then `alloc audit`. The shell loop's rate has no target:
  it is bounded by process start-up, and the detail shows the bound that the per-call
  floor's CPU time gives on this machine's cores. Rates count the investigations
  completed within the duration (the detail also gives those completed by the time the
  last iterations ended); in small mode's 5 s the shell loop may complete none, one round
  of 16 x 2 processes taking longer than that on 2 cores.
- **16**: after case 10's Python loop, on a fresh copy of its own and for as long, the
  same 16 processes run the README's Python loop, which reserves: `next(claim=True,
  limit=1, reserve="0.02")` places a hold with the lease, and `done(spend="0.01")`
  settles it for less as it closes the claim. Its rate is compared with case 10's. The
  shell loop then runs on that copy, and `alloc audit` checks each copy.
- **11**: `alloc rank --limit 50 -f json` against `alloc budget ID -f json`, on the 1M
  database, and with `--large 10000000` on a 10M one too, generated on first use and
  cached (about 25 minutes of `alloc generate` and 10 GB on SQLite; more on PostgreSQL).
- **12**: `alloc serve` (one uvicorn worker) on the main database; latencies from one
  sequential keep-alive client (`http.client`, 20 unmeasured requests first), throughput
  from `wrk -t2 -c8 --latency` on the top-50 endpoint. wrk is Debian's `wrk`; the full
  run installs it with apt-get when it is missing (as root), small mode only uses it if
  present, and otherwise the throughput row says why it was skipped.
- **17**: `alloc serve` (one uvicorn worker) on the main database, as case 12: every call
  the dashboard's overview and artifact page make (the ranked top 50, pipeline, holds,
  activity and agents with and without a type, claims, one artifact, its history, spends,
  holds and claims), each by one sequential keep-alive client, p50 and p99. The server
  keeps its summing reads' results while exact; a second row per summing call (pipeline,
  activity, agents) times the first call after a commit through the bare driver (a rate's
  time stamp touched), which sums again.
- **13**: `alloc rank -f csv` of every artifact against the very statement alloc sends
  (captured as in case 1: `artifact_balances` joined to `artifacts`), run through the
  bare driver and written with the csv module (`bench/floor.py sql ... csv`).
- **14**: `bench/writer.py` inserts positions one row per transaction through the bare
  driver (sqlite3 in autocommit with alloc's pragmas; psycopg in autocommit), into a copy
  with the balance triggers and into one without them (`ddl.drop_triggers`),
  interleaved; the time is the insert loop's. Then, on the copy with the triggers, the
  pending rows the inserts left are timed for the readers: `alloc rank --limit 50` with
  them, one `alloc next --claim` (which folds some of them), `alloc snapshot` (which
  folds the rest), and `rank --limit 50` again. One `alloc spend` process against its
  floor is case 3, whose floor's insert fires the same triggers.
- **15**: a copy taken back to the previous revision, and then to revision 0004 (before
  the balances: `alembic downgrade 0004` drops them and their triggers), with the
  package's Alembic scripts; each time `alloc db upgrade` is timed, then one `alloc
  snapshot` on the upgraded copy (PostgreSQL: after `ANALYZE artifact_balances`, as
  autovacuum would soon do), its rows deleted; repeated.
"""

MISSED = {
    9: """
**Case 9's floor is `alloc budget ID`**, one short process that makes one indexed read.
`next --claim` makes several: the best unexplored candidates along the balances'
remaining index, an aggregate of the explored ones per investigation count, then the
explored candidates that can reach the top (all of them while they are few, else those
with enough remaining budget along the remaining index, or those that SQL's
floating-point score puts near the top), which it scores exactly in Python; then it
leases the best one in a short write transaction and commits. What lies above the floor
grows with the number of investigated artifacts (the aggregate reads each one's index
entry; the detail column gives their number), not with `--limit`.
""",
    10: """
**Case 10 (16 Python agents) shares 2 cores between 16 processes.** Each investigation is
a ranking read (whose work grows with the explored candidates, as the agents complete
investigations) and three short write transactions (the lease, the spend, the close);
on SQLite the writes queue for one lock. The detail gives one investigation's p50 and
p99: 16 divided by the p50 is the rate if no agent waited for a core or a lock, and a
p99 far above the p50 says they waited (a wait past the busy timeout would be an error).
""",
    11: """
**Case 11's floor is `alloc budget ID`**: start-up and one indexed read. `rank --limit 50`
reads 50 rows along the balances' budget index instead of one and formats them; what it
costs above the floor is those rows' Python work (budget arithmetic in Decimal, JSON).
""",
    12: """
**Case 12 runs one uvicorn worker: one Python process.** Every request goes through
FastAPI, a thread of its pool, a read transaction and the JSON of up to 50 rows, on one
core, while wrk (or the sequential client) has the other. Throughput above what one
core's share allows needs more workers, which this case does not measure.
""",
    13: """
**Case 13's floor runs the same statement through the bare driver** and writes what the
driver returns with the csv module. alloc in addition builds each row's budget terms as
exact decimals and formats them for CSV: per-row Python work that the floor skips.
""",
    14: """
**Case 14's floor is the same inserts without the triggers.** Each position inserted also
appends its artifact to `pending_demand` (PostgreSQL: once per statement): one small row
at the end of a small table. Updating the balance instead would move its entries in the
four indexes on the budget and remaining keys, about as much writing again as the insert
itself, and more where commits are cheap (SQLite with synchronous NORMAL).
""",
    16: """
**Case 16's floor is case 10's loop without holds.** Reserving adds a hold row (and its
trigger summing the artifact's holds again) to the lease's transaction, and settling
turns the spend into a settlement plus an update of the hold, in the one transaction
that closes the claim; the loop saves the separate spend transaction.
""",
    15: """
**Case 15's floor is one snapshot**, a single INSERT ... SELECT that reads the balances.
The upgrade creates the table, its four indexes and the triggers, and sums every balance
once from the source tables (every position, bounty, spend and claim), which is more
reading than one snapshot does.
""",
}
