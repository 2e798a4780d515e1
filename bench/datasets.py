"""Benchmark databases and input files: built with the package's own generator, cached.

SQLite files live in bench/.data/sqlite/, PostgreSQL databases in the private cluster
(bench/.data/pg) or on the server given by --pg-url. A database is reused when the cache
record (bench/.data/cache.json) says it was completed with the same generator code,
size and seed; the record also keeps how long generation took, so a cached run still
reports it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from bench import procs
from tests import pgserver

DATA = procs.BENCH / ".data"
CACHE = DATA / "cache.json"
# The private PostgreSQL server's settings: PostgreSQL's durability defaults (fsync on),
# memory sized for a 24 GB machine as in production.
PG_SETTINGS = {
    "shared_buffers": "2GB",
    "effective_cache_size": "12GB",
    "work_mem": "64MB",
    "maintenance_work_mem": "1GB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "max_connections": "50",
}


def generator_tag() -> str:
    """Changes when the generator, the schema revisions or the balances' triggers (installed
    by `alloc db upgrade`) change: the cache is then rebuilt."""
    import scidex_alloc

    package = Path(scidex_alloc.__file__).parent
    digest = hashlib.sha1()
    versions = package / "storage" / "migrations" / "versions"
    balances = [package / "budgets" / name for name in ("balances.py", "bulkwrites.py", "ddl.py", "totals.py")]
    for path in [package / "loading" / "sample.py", *balances, *sorted(versions.glob("*.py"))]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:8]


def _load_cache() -> dict:
    try:
        return json.loads(CACHE.read_text())
    except (OSError, ValueError):
        return {}


def _save_cache(key: str, record: dict) -> None:
    cache = _load_cache()
    cache[key] = record
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    CACHE.write_text(json.dumps(cache, indent=2, sort_keys=True))


def _forget(key: str) -> None:
    cache = _load_cache()
    if cache.pop(key, None) is not None:
        CACHE.write_text(json.dumps(cache, indent=2, sort_keys=True))


@dataclass
class Database:
    kind: str            # "sqlite" or "postgresql"
    url: str             # what `alloc --db` takes: a SQLite path or a postgresql:// URL
    artifacts: int
    record: dict         # generation time etc.; "cached": True when reused

    @property
    def driver_url(self) -> str:
        return self.url


class Backend:
    """Where databases of one kind are made."""

    kind = ""

    def database(self, artifacts: int, seed: int, log) -> Database:
        raise NotImplementedError


class SqliteBackend(Backend):
    kind = "sqlite"

    def __init__(self):
        self.dir = DATA / "sqlite"
        self.dir.mkdir(parents=True, exist_ok=True)

    def _key(self, name: str) -> str:
        return f"sqlite:{name}"

    def database(self, artifacts: int, seed: int, log) -> Database:
        name = f"a{artifacts}_s{seed}_{generator_tag()}"
        path = self.dir / f"{name}.db"
        record = _load_cache().get(self._key(name))
        if record and path.exists():
            return Database(self.kind, str(path), artifacts, {**record, "cached": True})
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        log(f"sqlite: generating {artifacts:,} artifacts (seed {seed}) into {path.name}")
        gen = procs.run(procs.alloc_argv() + ["generate", "--db", str(path), "--artifacts",
                                              str(artifacts), "--seed", str(seed)])
        record = {"generate_s": gen.seconds, "generate_rss_kb": gen.max_rss_kb,
                  "counts": gen.stderr.decode().strip(), "built": _today(),
                  "size_bytes": path.stat().st_size}
        log(f"sqlite: generated in {gen.seconds:.1f}s: {record['counts']}")
        _save_cache(self._key(name), record)
        return Database(self.kind, str(path), artifacts, {**record, "cached": False})

    def load_target(self, source: Database, log) -> Database:
        """An empty schema with the source's artifacts only: `alloc load positions` needs them."""
        name = f"load_a{source.artifacts}_{generator_tag()}"
        path = self.dir / f"{name}.db"
        record = _load_cache().get(self._key(name))
        if record and path.exists():
            return Database(self.kind, str(path), source.artifacts, {**record, "cached": True})
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        log(f"sqlite: making the load target {path.name}")
        procs.run(procs.alloc_argv() + ["db", "upgrade", "--db", str(path)])
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("ATTACH DATABASE ? AS src", (source.url,))
        conn.execute("BEGIN")
        conn.execute("INSERT INTO artifacts SELECT * FROM src.artifacts")
        conn.execute("COMMIT")
        conn.execute("DETACH DATABASE src")
        conn.close()
        record = {"built": _today()}
        _save_cache(self._key(name), record)
        return Database(self.kind, str(path), source.artifacts, {**record, "cached": False})

    def empty_positions(self, db: Database) -> None:
        """Without the balance triggers, which would take a row each; the next `alloc load`
        makes them again and sums every balance."""
        conn = sqlite3.connect(db.url, isolation_level=None)
        for event in ("insert", "update", "delete"):
            conn.execute(f"DROP TRIGGER IF EXISTS balances_positions_{event}")
        conn.execute("DELETE FROM positions")
        conn.close()

    def execute(self, db: Database, sql: str, params=()) -> None:
        conn = sqlite3.connect(db.url, isolation_level=None, timeout=60)
        conn.execute(sql, params)
        conn.close()

    def scalar(self, db: Database, sql: str, params=()):
        conn = sqlite3.connect(db.url, timeout=60)
        try:
            return conn.execute(sql, params).fetchone()[0]
        finally:
            conn.close()

    def explain(self, db: Database, spec: dict) -> str:
        conn = sqlite3.connect(db.url)
        try:
            rows = conn.execute("EXPLAIN QUERY PLAN " + spec["sql"], spec["params"]).fetchall()
        finally:
            conn.close()
        depth = {0: 0}
        lines = []
        for node, parent, _, detail in rows:
            depth[node] = depth.get(parent, 0) + 1
            lines.append("  " * (depth[node] - 1) + detail)
        return "\n".join(lines)

    def after_writes(self, db: Database) -> None:
        pass

    def version(self) -> str:
        return sqlite3.sqlite_version


class PostgresBackend(Backend):
    kind = "postgresql"

    def __init__(self, admin_url: str, private: bool):
        self.admin_url = admin_url
        self.private = private
        url = make_url(admin_url)
        self.where = "private" if private else f"{url.host}:{url.port or 5432}"

    def _key(self, name: str) -> str:
        return f"pg:{self.where}:{name}"

    def database(self, artifacts: int, seed: int, log) -> Database:
        name = f"bench_a{artifacts}_s{seed}_{generator_tag()}"
        record = _load_cache().get(self._key(name))
        url = pgserver.database_url(self.admin_url, name)
        if record and pgserver.database_exists(self.admin_url, name):
            return Database(self.kind, url, artifacts, {**record, "cached": True})
        _forget(self._key(name))
        pgserver.create_database(self.admin_url, name)
        log(f"postgresql: generating {artifacts:,} artifacts (seed {seed}) into {name}")
        gen = procs.run(procs.alloc_argv() + ["generate", "--db", url, "--artifacts",
                                              str(artifacts), "--seed", str(seed)])
        start = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        vacuum = time.perf_counter() - start
        with psycopg.connect(url) as conn:
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        record = {"generate_s": gen.seconds, "generate_rss_kb": gen.max_rss_kb,
                  "vacuum_s": vacuum, "counts": gen.stderr.decode().strip(), "built": _today(),
                  "size_bytes": size}
        log(f"postgresql: generated in {gen.seconds:.1f}s (+ VACUUM ANALYZE {vacuum:.1f}s): "
            f"{record['counts']}")
        _save_cache(self._key(name), record)
        return Database(self.kind, url, artifacts, {**record, "cached": False})

    def load_target(self, source: Database, log) -> Database:
        name = f"bench_load_a{source.artifacts}_{generator_tag()}"
        record = _load_cache().get(self._key(name))
        url = pgserver.database_url(self.admin_url, name)
        if record and pgserver.database_exists(self.admin_url, name):
            return Database(self.kind, url, source.artifacts, {**record, "cached": True})
        _forget(self._key(name))
        pgserver.create_database(self.admin_url, name)
        log(f"postgresql: making the load target {name}")
        procs.run(procs.alloc_argv() + ["db", "upgrade", "--db", url])
        with psycopg.connect(source.url) as src, psycopg.connect(url) as dst:
            with src.cursor().copy("COPY artifacts TO STDOUT") as out, \
                    dst.cursor().copy("COPY artifacts FROM STDIN") as into:
                for block in out:
                    into.write(block)
            dst.commit()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        record = {"built": _today()}
        _save_cache(self._key(name), record)
        return Database(self.kind, url, source.artifacts, {**record, "cached": False})

    def empty_positions(self, db: Database) -> None:
        """And the dead balances a load's rebuild left, as autovacuum would between two
        loads: each run then loads into the same tables."""
        with psycopg.connect(db.url, autocommit=True) as conn:
            conn.execute("TRUNCATE positions")
            conn.execute("VACUUM artifact_balances")
            conn.execute("CHECKPOINT")

    def execute(self, db: Database, sql: str, params=()) -> None:
        with psycopg.connect(db.url, autocommit=True) as conn:
            conn.execute(sql.replace("?", "%s"), params)

    def scalar(self, db: Database, sql: str, params=()):
        with psycopg.connect(db.url) as conn:
            return conn.execute(sql.replace("?", "%s"), params).fetchone()[0]

    def explain(self, db: Database, spec: dict) -> str:
        from bench.capture import literal_sql

        with psycopg.connect(db.url, options="-c jit=off") as conn:  # as alloc's sessions
            rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) "
                                + literal_sql(spec, "postgresql")).fetchall()
        return "\n".join(r[0] for r in rows)

    def after_writes(self, db: Database) -> None:
        """Bench rows were deleted: vacuum so the cached database stays as generated."""
        with psycopg.connect(db.url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE resource_allocations")
            conn.execute("VACUUM ANALYZE budget_snapshots")

    def version(self) -> str:
        with pgserver.admin_connection(self.admin_url) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]

    def settings(self) -> dict:
        names = ("shared_buffers", "work_mem", "effective_cache_size", "fsync",
                 "synchronous_commit", "max_wal_size", "jit")
        with pgserver.admin_connection(self.admin_url) as conn:
            return {n: conn.execute(f"SHOW {n}").fetchone()[0] for n in names}


def _today() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def positions_csv(source: Database, rows: int) -> Path:
    """`rows` positions of the source SQLite database as an `alloc load positions` CSV,
    cycling through them when the database has fewer."""
    path = DATA / "files" / f"positions_{rows}_{Path(source.url).stem}.csv"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    conn = sqlite3.connect(source.url)
    written = 0
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["artifact_id", "agent_id", "tokens", "status", "created_at"])
        while written < rows:
            cursor = conn.execute("SELECT artifact_id, agent_id, tokens, status, created_at "
                                  "FROM positions ORDER BY id LIMIT ?", (rows - written,))
            for row in cursor:
                writer.writerow(row)
                written += 1
    conn.close()
    tmp.rename(path)
    return path


def spends_csv(source: Database, lines: int, targets: list[str]) -> Path:
    """`lines` small spends (0.01 token, kind `bench`, unique keys) spread over `targets`."""
    path = DATA / "files" / f"spends_{lines}_{Path(source.url).stem}.csv"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["artifact_id", "amount", "kind", "agent", "key"])
        for i in range(lines):
            writer.writerow([targets[(i * 7919) % len(targets)], "0.01", "bench",
                             f"agent-{i % 50:03d}", f"bench-{i:07d}"])
    return path
