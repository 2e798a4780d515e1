"""Throwaway copies of a benchmark database, for the cases that write to it (9, 10, 14, 15),
so that the cached databases stay as generated and the other cases are unaffected.

SQLite: the file is copied with the backup API (consistent even with a WAL beside it) into
the run's temporary directory. PostgreSQL: `CREATE DATABASE copy TEMPLATE main`, a file
copy inside the server, dropped at the end.
"""

from __future__ import annotations

import os
import sqlite3
import time

import psycopg

from bench.datasets import Database
from tests import pgserver


def make(backend, db: Database, tag: str, ctx) -> Database:
    """A copy of `db` named after `tag`; dropped by `drop` (SQLite: with the run's tmp dir)."""
    started = time.perf_counter()
    if backend.kind == "sqlite":
        path = ctx.tmp / f"copy-{tag}.db"
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        src, dst = sqlite3.connect(db.url), sqlite3.connect(path)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode = WAL")  # as alloc leaves its databases
        finally:
            src.close()
            dst.close()
        copy = Database(backend.kind, str(path), db.artifacts, {})
    else:
        name = f"bench_copy_{tag}_{os.getpid()}"
        source = db.url.rsplit("/", 1)[1].split("?")[0]
        with pgserver.admin_connection(backend.admin_url) as admin:
            _drop_stale(admin)
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            for attempt in range(20):  # autovacuum may be connected to the source for a moment
                try:
                    admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
                    break
                except psycopg.errors.ObjectInUse:
                    if attempt == 19:
                        raise
                    time.sleep(0.5)
        copy = Database(backend.kind, pgserver.database_url(backend.admin_url, name),
                        db.artifacts, {"name": name})
    ctx.log(f"{backend.kind}: copied the {db.artifacts:,}-artifact database for {tag} "
            f"in {time.perf_counter() - started:.1f}s")
    return copy


def _drop_stale(admin) -> None:
    """Copies left by a bench run that was killed (its process id is gone)."""
    names = [r[0] for r in admin.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE 'bench\\_copy\\_%'")]
    for name in names:
        pid = name.rsplit("_", 1)[-1]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def drop(backend, copy: Database) -> None:
    if backend.kind == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(copy.url + suffix)
            except FileNotFoundError:
                pass
    else:
        pgserver.drop_database(backend.admin_url, copy.record["name"])


def seed_claims(backend, db: Database, every: int, unless: int | None = None) -> int:
    """Completed investigations (`done` claims with rewards from 0 to 1) of every `every`-th
    artifact by id, except every `unless`-th (already seeded), inserted set-based with the
    balance triggers on; how many."""
    pg = backend.kind == "postgresql"
    at = "TIMESTAMPTZ '2026-01-01 00:00:00+00'" if pg else "'2026-01-01 00:00:00.000000'"
    mod = "%%" if pg else "%"  # psycopg's placeholders take % for themselves
    skip = f" AND rn {mod} {unless} <> 0" if unless else ""
    backend.execute(db, f"""
        INSERT INTO claims (artifact_id, agent_id, status, claimed_at, lease_expires_at,
                            finished_at, reward)
        SELECT id, 'bench-seed', 'done', {at}, {at}, {at}, (rn * 7919 {mod} 1001) / 1000.0
        FROM (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM artifacts) AS numbered
        WHERE rn {mod} {every} = 0{skip}""")
    if pg:
        vacuum(db, "claims", "artifact_balances")
    return backend.scalar(db, "SELECT count(*) FROM claims WHERE status = 'done'")


def vacuum(db: Database, *tables: str) -> None:
    """PostgreSQL: what autovacuum would do after a burst of writes (visibility map, stats)."""
    with psycopg.connect(db.url, autocommit=True) as conn:
        for table in tables:
            conn.execute(f"VACUUM ANALYZE {table}")


def engine(db: Database):
    from scidex_alloc.storage import database

    return database.engine_for(database.resolve(db.url))


def drop_balance_triggers(db: Database) -> None:
    """The copy without the triggers that keep artifact_balances (the package's own DDL)."""
    from scidex_alloc.budgets import ddl

    eng = engine(db)
    try:
        with eng.begin() as conn:
            ddl.drop_triggers(conn)
    finally:
        eng.dispose()


def downgrade(db: Database, revision: str) -> str:
    """Take the schema back to `revision` with the package's own Alembic scripts."""
    from alembic import command

    from scidex_alloc.storage import migrate

    eng = engine(db)
    try:
        with eng.begin() as conn:
            command.downgrade(migrate._config(conn), revision)
        with eng.connect() as conn:
            return migrate.current(conn)
    finally:
        eng.dispose()


def close_claims(backend, db: Database):
    """Undo what one `alloc next --claim` wrote: its active claims (they add to no balance)."""
    return lambda: backend.execute(db, "DELETE FROM claims WHERE status = 'active'")
