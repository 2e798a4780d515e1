"""Where the database is, and how to open it: URL resolution, SQLite pragmas, PostgreSQL options."""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError
from sqlalchemy.pool import QueuePool

from scidex_alloc.errors import DatabaseError, UsageError

ENV_DB = "SCIDEX_DB"
ENV_BUSY_TIMEOUT = "SCIDEX_BUSY_TIMEOUT"
DEFAULT_BUSY_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10  # seconds to reach a PostgreSQL server before giving up
LOCK_TIMEOUT = "55P03"  # PostgreSQL's SQLSTATE for a lock wait beyond lock_timeout
FILE_IDENTITY = "file_identity"  # a SQLite connection's record: (st_dev, st_ino) it opened
# Idle connections an engine keeps: one per concurrent caller of the server (its request
# threads under 8 keep-alive clients), so that no request pays a connect.
IDLE_CONNECTIONS = 8
# SQLite's worker threads for sorts larger than its page cache (index builds, an upgrade or
# rebuild summing every balance): one per core, up to four.
SORT_THREADS = min(os.cpu_count() or 1, 4)


def default_path() -> Path:
    """The embedded database used when neither --db nor SCIDEX_DB is given."""
    from platformdirs import user_data_path

    return user_data_path("scidex-alloc") / "alloc.db"


@dataclass(frozen=True)
class Target:
    url: URL
    is_default: bool

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def sqlite_path(self) -> Path | None:
        db = self.url.database
        if not self.is_sqlite or not db or db == ":memory:":
            return None
        return Path(db)

    def masked(self) -> str:
        return self.url.render_as_string(hide_password=True)


def resolve(db: str | None) -> Target:
    """--db beats $SCIDEX_DB beats the default file; each is a URL or a SQLite path."""
    value = db or os.environ.get(ENV_DB)
    if not value:
        return Target(make_url(f"sqlite:///{default_path()}"), is_default=True)
    if "://" not in value:
        return Target(make_url(f"sqlite:///{Path(value).expanduser().absolute()}"), False)
    try:
        url = make_url(value)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise UsageError("{db} is neither a database URL nor a path", "db") from None
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    elif backend != "sqlite":
        raise UsageError(f"unsupported database {backend!r}: use a SQLite path or a postgresql:// URL")
    return Target(url, is_default=False)


def busy_timeout() -> float:
    raw = os.environ.get(ENV_BUSY_TIMEOUT)
    if raw is None:
        return DEFAULT_BUSY_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise UsageError(f"{ENV_BUSY_TIMEOUT} must be a number of seconds from 0 to 86400")
    return value


def engine_for(target: Target) -> Engine:
    if target.is_sqlite:
        return _sqlite_engine(target)
    # JIT compilation costs ~250 ms on every run of the ranking statement and saves less.
    # Times without a zone mean UTC everywhere, also as text that `alloc load` copies in.
    # No column is hstore: skip looking its type up on connect (three round trips).
    # Lock waits end after the busy timeout, as on SQLite.
    options = f"-c jit=off -c timezone=UTC -c lock_timeout={_lock_timeout_ms()}"
    return create_engine(
        target.url,
        use_native_hstore=False,
        pool_size=IDLE_CONNECTIONS,
        connect_args={"connect_timeout": CONNECT_TIMEOUT, "application_name": "scidex-alloc",
                      "options": options},
    )


def _lock_timeout_ms() -> int:
    """The busy timeout as PostgreSQL's lock_timeout, where 0 would mean "wait forever":
    "no wait" becomes its smallest wait, 1 ms, as on SQLite a zero timeout fails at once."""
    return max(1, round(busy_timeout() * 1000))


def _sqlite_engine(target: Target) -> Engine:
    path = target.sqlite_path
    if path is not None and not path.exists():
        if not target.is_default:
            raise DatabaseError(
                f"no database at {path}; create it with: alloc db upgrade --db {path}"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    timeout = busy_timeout()
    read_only = False
    if path is None:  # in memory
        engine = create_engine(target.url, connect_args={"timeout": timeout})
    else:
        import sqlite3

        uri, read_only = _sqlite_uri(path)

        def connect(record):
            # The identity is taken before the open: a file replaced meanwhile costs a
            # needless reconnect at checkout, never a connection kept to the old file.
            record.info[FILE_IDENTITY] = _file_identity(path)
            return sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)

        # Idle connections are kept (a connect costs the pragmas and a cold page cache);
        # more concurrent callers open more and close them when done. SQLite finds a file's
        # -wal and -shm by its path: an idle connection to a replaced file would keep the
        # old ones there for the new file to read. So the first checkout that finds its
        # connection stale closes every idle one with it.
        engine = create_engine(target.url, poolclass=QueuePool,
                               pool_size=IDLE_CONNECTIONS, max_overflow=-1,
                               creator=connect)

        @event.listens_for(engine, "checkout")
        def _on_checkout(_dbapi_connection, record, _proxy):
            # A file moved away or replaced is opened anew by its path (and an error if
            # gone), never read or written through a connection to the old one.
            if _file_identity(path) != record.info.get(FILE_IDENTITY):
                engine.pool.dispose()  # the idle ones; this one is closed as it is raised
                raise DisconnectionError(f"{path} is not the file this connection opened")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy (not the sqlite3 module) decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        # Switching to WAL writes the file: only when it is needed and allowed.
        if not read_only and cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute(f"PRAGMA threads = {SORT_THREADS}")
        try:  # the queue's scores use sqrt, which some SQLite builds leave out
            cursor.execute("SELECT sqrt(1)")
        except dbapi_connection.OperationalError:
            dbapi_connection.create_function("sqrt", 1, math.sqrt, deterministic=True)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        # Writers ask for IMMEDIATE: the write lock is taken before any check reads.
        mode = connection.get_execution_options().get("sqlite_begin", "")
        connection.exec_driver_sql(f"BEGIN {mode}".strip())

    return engine


def _sqlite_uri(path: Path) -> tuple[str, bool]:
    """The file's URI, and whether it opens read-only.

    `mode=rw`: a file that has vanished is an error, never a new empty database. A file
    alloc may not write (a backup, a read-only mount) opens with `mode=ro`; but SQLite
    reads a WAL file only beside its shared-memory file, so where that cannot be created
    (a read-only directory) the file opens `immutable`: it must not change meanwhile.
    """
    uri = "file:" + quote(str(path))
    if os.access(path, os.W_OK):
        return f"{uri}?mode=rw", False
    shm_possible = os.access(path.parent, os.W_OK) or Path(f"{path}-shm").exists()
    return f"{uri}?{'mode=ro' if shm_possible or not _is_wal(path) else 'immutable=1'}", True


def _file_identity(path: Path) -> tuple[int, int] | None:
    """The (device, inode) the path names now; None when it names nothing."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _is_wal(path: Path) -> bool:
    """Bytes 18 and 19 of a SQLite header are 2 in WAL mode."""
    with open(path, "rb") as file:
        return file.read(20)[18:20] == b"\x02\x02"


def first_line(error: Exception) -> str:
    """The driver's own message, one line, without SQL or parameters."""
    original = getattr(error, "orig", None) or error
    lines = str(original).strip().splitlines()
    return lines[0] if lines else type(original).__name__


def sqlstate(error: Exception) -> str | None:
    """PostgreSQL's SQLSTATE of a failure, wrapped by SQLAlchemy or raw from the driver."""
    return getattr(getattr(error, "orig", None) or error, "sqlstate", None)


def driver_errors() -> tuple[type[Exception], ...]:
    """The loaded drivers' own error classes: COPY and executemany use the drivers
    directly, so their failures reach the caller unwrapped by SQLAlchemy. A driver that
    is not loaded cannot have failed, and importing it would cost start-up time."""
    return tuple(sys.modules[name].Error for name in ("sqlite3", "psycopg") if name in sys.modules)


def explain(error: Exception, target: Target | None) -> str:
    """A one-line message for a database failure, with any password masked."""
    message = first_line(error)
    lowered = message.lower()
    if "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
        where = f" --db {target.masked()}" if target is not None and not target.is_default else ""
        message = ("the database has no scidex-alloc schema, or an older one; "
                   f"run: alloc db upgrade{where}")
    elif "database is locked" in lowered or sqlstate(error) == LOCK_TIMEOUT:
        # Readers wait too, and a writer may wait for a reader: no writer is blamed.
        message = (f"the database is locked (waited {busy_timeout():g}s; "
                   f"raise {ENV_BUSY_TIMEOUT} to wait longer)")
    elif "readonly database" in lowered or "read-only transaction" in lowered:
        where = target.masked() if target is not None else "it"
        message = f"the database is read-only: {where} can be read but not written"
    if target is not None and target.url.password:
        message = message.replace(str(target.url.password), "***")
    return f"database error: {message}"
