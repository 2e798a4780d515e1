"""Prose for docs/benchmarks.md, written by people; every number in the tables comes from
the run. The figures quoted here come from `bench/experiments.py`, profiles and full runs
on the same machine, at the commits they name: rerunning the suite updates the tables,
not this text."""

METHOD = """
## How it is measured

- Every time is a whole process from spawn to exit (`os.wait4`, which also gives its CPU
  time), stdout to a file, never a terminal. Peak RSS is the command's own, as GNU time
  (`/usr/bin/time -f %M`) reports it: it forks the command from its own small process,
  whereas a child forked from the bench itself would count the bench's RSS at the fork
  (Linux keeps the larger high-water mark across exec): reports made before GNU time was
  used show alloc and its floor alike at the bench's own ~50-60 MB in case 7, an upper
  bound of both. `alloc` is the
  installed console script, and the measured package is compiled to bytecode first, as an
  install leaves it (this machine sets PYTHONDONTWRITEBYTECODE, which would otherwise
  make every alloc process compile it again). Floors are `bench/floor.py` (the bare driver and the standard
  library) and `bench/naive.py`; the floors' SQL is captured from what alloc hands the
  driver (`bench/capture.py`: an event listener records the statement and its
  parameters and aborts it), so a floor runs the very same text with the very same
  parameters. Results are checked: alloc, the floor and the naive code return the same 50
  artifacts in the same order, the spend file records every line, the snapshot records
  every artifact.
- alloc and its floor run interleaved (alloc, floor, alloc, floor...), after one unmeasured
  warm-up each for the quick cases; the table shows medians, and `runs` the min-max.
- Databases come from `alloc generate --artifacts N --seed 7` (about 5 positions per
  artifact, a market for 85 %, a bounty for 10 %, spending for about 30 %), cached in
  `bench/.data/`; PostgreSQL databases get `VACUUM ANALYZE` after generation (what
  autovacuum does in production; index-only scans need the visibility map). The load
  target is an empty schema holding only the 1M artifacts; the positions file is the
  generated positions, cycled to 5,000,000 rows. The spend file charges 0.01 token to
  each of the 20,000 artifacts with the most remaining budget, 5 times each, with keys.
- Writes are undone between repetitions (spends of kind `bench` deleted, snapshots
  deleted, positions truncated), so every repetition does the same work.
- PostgreSQL is a private server (`tests/pgserver.py`, cluster in `bench/.data/pg`) with
  fsync and synchronous commit on, shared_buffers 2 GB. The machine is shared: the load
  average in the table of runs says how busy it was. The process-level CPU column of
  case 3 is less sensitive to that than wall time.
- `--sizes small` runs everything on 500 to 2,000 artifacts in well under a minute (the
  smoke test `tests/test_bench_smoke.py` runs it on SQLite); its numbers mean nothing.
"""

INDEXES = """
## Indexes and query plans

The ranking is one statement: for each artifact, correlated aggregates over the child
tables, each answered from one covering index, then ordered and limited in the database.

| index | serves | why this shape |
|---|---|---|
| `artifacts (type, id)` | `--type T` on SQLite | the type filter is a range scan that already yields ids in order; PostgreSQL prefers a sequential scan for 40 % of the rows, rightly |
| `positions (artifact_id, status, tokens)` | demand | equality on the two leading columns and `tokens` in the index: the sum is an index-only scan, the table is never read (PostgreSQL: `Heap Fetches: 0`) |
| `token_bounties (artifact_id, status, expires_at, tokens_offered, tokens_paid)` | bounty | the same: the expiry test and both amounts come from the index |
| `resource_allocations (artifact_id, tokens)` | spent | index-only sum of the spend log |
| `markets` primary key `(artifact_id)` | price | one probe per artifact (SQLite), or one hash join (PostgreSQL) |

The statement repeats the demand, bounty and spent subqueries inside `budget` and
`remaining`. That costs nothing for the top-N ranking: PostgreSQL evaluates only the two
subplans the sort key needs (SubPlans 4 and 5, 400,468 loops each) and the output
columns for the 50 rows kept (`loops=50`); SQLite likewise. Two rewrites were measured
through the driver at 1M artifacts (`python -m bench.experiments rank-variants`):
computing each aggregate once (LATERAL / a MATERIALIZED CTE) was 0.91x (PostgreSQL) and
0.78x (SQLite) the speed of the current statement, and joining GROUP BY aggregates
0.35x and 0.51x. The current shape is the fastest of the three, so no index or query
change is recommended for ranking. PostgreSQL's JIT compiled the statement on every run
(250-280 ms of a ~3 s run at 1M) and saved less than that, so alloc's sessions run with
`-c jit=off` (`database.engine_for`; measured on 015da16: 3.17 s -> 2.84 s for `alloc rank`
at 1M, 0.67 s -> 0.64 s at 100k); the plan below is the one alloc gets.
"""

# Shown under "Targets missed", for each missed case (case, db) or case.
MISSED = {
    1: """
**Case 1 is bounded by alloc's start-up, not by SQL.** alloc and the floor run the same
statement (the slopes of case 8 are the same), but alloc pays a fixed cost per process
(Python, SQLAlchemy Core, Typer, the engine, compiling the statement: the intercept of
case 8) where the floor pays Python and the driver only.
""",
    2: """
**Case 2 is bounded by process start-up.** The naive code runs 4 queries for each of
40,000 hypotheses; psycopg prepares them after 5 uses, so each costs ~75 us on 127.0.0.1
(about 12 s in all). The ranking statement alone through psycopg, with nothing but Python
and the driver around it, is about 95x faster (the detail column); `alloc rank` adds its
start-up (Python, SQLAlchemy, Typer: the intercept of case 8). 100x would need the whole
process under ~0.12 s, less than case 3's floor (Python with the driver, SQLAlchemy and
Typer imported, and one query: 0.22-0.31 s). With a real network between
client and server (0.3 ms or more per round trip) the naive code takes 48 s or more and
the ratio passes 140x; on SQLite, in-process queries cost ~5 us and the naive code is
only 2-4x slower.
""",
    3: """
**Case 3 is bounded by what alloc imports and does per process beyond the floor** (the
floor already pays `sqlalchemy.orm`, which alloc no longer imports, `typer` and the
driver): SQLAlchemy's dialect for the database (~20 ms on PostgreSQL, which also
imports the other PostgreSQL drivers' dialects), the schema's tables, compiling the
statement, and on PostgreSQL the queries SQLAlchemy runs on connect.
""",
    4: """
**Case 4 is bounded by the overspend check**, which the floor does not make: every
chunk of 20,000 lines reads the budget terms of its artifacts (correlated sums over the
positions, bounties and spend log) and decides line by line in Python.
""",
    5: """
**Case 5 is bounded by the lines that need the full checks.** Plain CSV lines cost one
regular expression match each; any other line (quotes, timestamps with a zone or a `T`,
numbers with leading zeros) is parsed and checked value by value in Python.
""",
}

ANALYSIS = """
## What changed since the first full run, and what is left

The first full run (015da16) missed cases 1 (SQLite), 2, 3, 4 (SQLite) and 5. What
changed since, in product code unless marked:

1. **Loading (case 5: 2.6-3.0x -> 1.25x on SQLite, 1.10-1.28x on PostgreSQL over the
   last two full runs).** A CSV line whose values are all plain is matched by one
   regular expression, built from each column's own pattern, and stored as written;
   any other line gets the full checks, and a property test checks that both store the
   same rows on both databases. Unknown artifacts and taken keys are left to the
   database's foreign key and unique constraints: each chunk sits in a savepoint, and
   only a refused chunk is looked up to name its lines. Rows stream into COPY as they
   are read, so the server inserts while the client parses, and the cyclic garbage
   collector is paused (every row is a new tuple; each full collection scanned every
   imported library). PostgreSQL sessions run in UTC so plain timestamps mean UTC
   whatever the server's zone.
2. **Spend files (case 4 on SQLite: 13,300 -> 27,800-29,800 lines/s).** 20,000 lines per
   transaction instead of 1,000: a commit of 1,000 lines rewrote and checkpointed about
   as many index pages as it inserted rows (151 fdatasyncs for 100k lines at 1,000 a
   commit, 31 at 20,000); each chunk still commits on its own, durability settings
   unchanged. The floor now commits as often as alloc (it used 1,000 lines).
   The budget terms are read as integer micro-tokens, with no conversion per row, and
   the garbage collector is paused during a batch.
3. **Start-up (case 3: 1.28-1.50x -> 0.92-1.06x; case 1 on SQLite: 1.36x -> 1.22x).**
   The service runs on Core connections: nothing used the ORM, and importing
   `sqlalchemy.orm` cost ~40 ms a call. Result dataclasses are built per area; Typer
   converts only the invoked command; PostgreSQL connects skip the hstore type look-up
   (three round trips); piped tables are written without importing Rich. Case 8's
   fixed cost on SQLite fell from 0.34 s to 0.18 s.
4. **PostgreSQL JIT** is off in alloc's sessions (see the indexes section).
5. **The suite itself.** Floors on PostgreSQL run with alloc's session settings (the
   case 1 floor paid ~250 ms of JIT that alloc does not), and the measured package is
   compiled to bytecode first, as an install leaves it.

Left, none of it needed for a target: case 2 is bounded by its floor (above). In
spend files, binding each chunk's 20,000 ids and keys as one parameter (`json_each(?)`
on SQLite, `= ANY(%s)` on PostgreSQL) instead of one parameter each would save an
estimated 5 % (SQLAlchemy spends ~0.4 s of a 3.6 s run expanding the IN lists).
Generation (not a target) takes 73-79 s for 1M artifacts, ~31 s of it synthesising rows
in Python; creating the secondary indexes after filling a new database would save an
estimated 20-30 %.

Targets met: every case but case 2 on both databases; case 7 streams (51-59 MB for 1M
rows: the ranking is fetched in `yield_per` batches of 2,000, through a server-side
cursor on PostgreSQL) and case 8 is linear (R2 1.000 on both databases, the same slope
as the floors).
"""
