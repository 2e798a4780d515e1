"""PostgreSQL for the test harness (tests/conftest.py) and the benchmarks (bench/): a
private server started from the system's binaries, and databases created and dropped on it.

initdb and pg_ctl run as the `postgres` user when we are root (they refuse root), with
trust authentication on 127.0.0.1 and a free port. The cluster lives in `root`: kept
between runs when it is a persistent directory (the benchmarks cache their databases in
bench/.data/pg), created afresh when it is empty; a ThrowawayServer's is removed when it
stops, even if the process that started it is killed.
"""

from __future__ import annotations

import glob
import os
import pwd
import queue
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psycopg
from sqlalchemy.engine import make_url

PG_USER = "postgres"
# A throwaway cluster needs no durability; its time zone is far from UTC, since alloc must
# not depend on the server's zone.
THROWAWAY_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                      "max_connections": "200", "timezone": "Pacific/Kiritimati"}
# Waits for end of file on stdin, then stops the server and removes its directory.
_WATCHDOG = 'cat >/dev/null; "$1" -D "$2" -m immediate -w stop >/dev/null 2>&1; rm -rf "$3"'
CONNECT_TIMEOUT = 10  # seconds


class PgUnavailable(Exception):
    """No server can be started or reached; the message says why."""


def find_bindir() -> Path | None:
    """The directory of initdb and pg_ctl: `pg_config --bindir`, else the newest
    /usr/lib/postgresql/*/bin."""
    candidates = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                 timeout=30)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass

    def version(path: str):
        return tuple(int(p) for p in Path(path).parent.name.split(".") if p.isdigit())

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    for candidate in candidates:
        bindir = Path(candidate)
        if (bindir / "pg_ctl").is_file() and (bindir / "initdb").is_file():
            return bindir
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateServer:
    """A PostgreSQL cluster in `root` (created on first use), running while started."""

    def __init__(self, root: Path, settings: dict[str, str], bindir: Path | None = None):
        self.bindir = bindir or find_bindir()
        if self.bindir is None:
            raise PgUnavailable("no PostgreSQL server binaries (initdb, pg_ctl) found via "
                                "pg_config --bindir or /usr/lib/postgresql/*/bin")
        self.root = Path(root).absolute()
        self.settings = settings
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.as_root = os.geteuid() == 0
        self.port: int | None = None
        self.running = False

    def process_options(self) -> dict:
        """Popen options for server commands: as `postgres` under root, without PG* variables."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        options = dict(env=env, cwd=self.root)
        if self.as_root:
            entry = pwd.getpwnam(PG_USER)
            env["HOME"] = str(self.root)
            options.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
        return options

    def run(self, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=timeout, **self.process_options())

    def start(self) -> str:
        """Start the server (making the cluster first if there is none); its admin URL."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            try:
                entry = pwd.getpwnam(PG_USER)
            except KeyError:
                raise PgUnavailable(f"running as root and there is no {PG_USER!r} system user "
                                    "to run the PostgreSQL server as") from None
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.root.chmod(0o700)
        if not (self.data / "PG_VERSION").exists():
            shutil.rmtree(self.data, ignore_errors=True)
            out = self.run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", PG_USER,
                           "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
            if out.returncode != 0:
                raise PgUnavailable(f"initdb failed (exit {out.returncode}):\n"
                                    f"{out.stdout[-2000:]}{out.stderr[-2000:]}")
        settings = " ".join(f"-c {k}={v}" for k, v in self.settings.items())
        last = ""
        for _attempt in range(3):  # the free port may be taken between probing and binding
            self.port = free_port()
            options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 {settings}"
            out = self.run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l",
                           str(self.log), "-o", options, "-w", "-t", "120", "start")
            if out.returncode == 0:
                self.running = True
                return self.admin_url
            last = (f"pg_ctl start failed (exit {out.returncode}): {out.stdout}{out.stderr}\n"
                    f"--- tail of {self.log}:\n{self._tail()}")
        raise PgUnavailable(last)

    def _tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def admin_url(self) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/postgres"

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self.running = False
            try:
                self.run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                         "-t", "300", "stop")
            except (OSError, subprocess.SubprocessError):
                pass


class ThrowawayServer(PrivateServer):
    """A private server in a new temporary directory, without durability, removed when it
    stops -- or, should the process that started it be killed, by a watchdog process."""

    def __init__(self, bindir: Path | None = None):
        # Directly under /tmp: pytest's own temp dirs may not be traversable by `postgres`.
        super().__init__(Path(tempfile.mkdtemp(prefix="scidex-pg-")), THROWAWAY_SETTINGS, bindir)
        self.watchdog: subprocess.Popen | None = None

    def start(self) -> str:
        url = super().start()
        # The watchdog waits for our end of a pipe to close (also on SIGTERM/SIGKILL), then
        # stops the server and removes its directory.
        self.watchdog = subprocess.Popen(
            ["/bin/sh", "-c", _WATCHDOG, "watchdog", str(self.bindir / "pg_ctl"),
             str(self.data), str(self.root)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, **self.process_options(),
        )
        return url

    def stop(self) -> None:
        super().stop(mode="immediate")
        shutil.rmtree(self.root, ignore_errors=True)
        if self.watchdog is not None:
            self.watchdog.stdin.close()  # nothing left to do: it exits at once
            self.watchdog.wait(timeout=60)
            self.watchdog = None


# --------------------------------------------------------------------------- databases


def admin_connection(admin_url: str) -> psycopg.Connection:
    """An autocommit connection to the server of `admin_url` (any SQLAlchemy driver name)."""
    url = make_url(admin_url).set(drivername="postgresql")
    return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True,
                           connect_timeout=CONNECT_TIMEOUT)


def database_url(admin_url: str, name: str) -> str:
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def database_exists(admin_url: str, name: str) -> bool:
    with admin_connection(admin_url) as admin:
        return admin.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                             (name,)).fetchone() is not None


def create_database(admin_url: str, name: str, template: str | None = None) -> str:
    """A new database `name` (replacing any of that name), empty or a copy of the database
    `template` (to which no one may be connected); its URL."""
    copy = f' TEMPLATE "{template}"' if template else ""
    with admin_connection(admin_url) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"{copy}')
    return database_url(admin_url, name)


def disconnect_all(admin_url: str, name: str) -> None:
    """End every session connected to the database `name`."""
    with admin_connection(admin_url) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))


def drop_database(admin_url: str, name: str) -> None:
    with admin_connection(admin_url) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def throwaway_database(admin_url: str, prefix: str = "t") -> Iterator[str]:
    """The URL of a new empty database with a unique name, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    url = create_database(admin_url, name)
    try:
        yield url
    finally:
        drop_database(admin_url, name)


class Copies:
    """Copies of the database `template`, each made ahead in a thread while the tests run:
    a CREATE DATABASE takes about 0.3 s of the server's time, which most tests would
    otherwise wait for."""

    def __init__(self, admin_url: str, template: str, ahead: int = 2):
        self.admin_url, self.template = admin_url, template
        self.ready: queue.Queue = queue.Queue(maxsize=ahead)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._make, name="database-copies", daemon=True)
        self.thread.start()

    def _make(self) -> None:
        while not self.stopping.is_set():
            name = f"t_{uuid.uuid4().hex[:16]}"
            try:
                made = (name, create_database(self.admin_url, name, self.template))
            except Exception as error:  # noqa: BLE001 -- handed to the test that takes it
                made = error
            self.ready.put(made)
            if isinstance(made, Exception):
                return

    @contextmanager
    def database(self) -> Iterator[str]:
        """The URL of a copy no one else uses, dropped afterwards."""
        made = self.ready.get(timeout=120)
        if isinstance(made, Exception):
            raise made
        name, url = made
        try:
            yield url
        finally:
            drop_database(self.admin_url, name)

    def stop(self) -> None:
        """Stop making copies and drop those not taken."""
        self.stopping.set()
        while self.thread.is_alive() or not self.ready.empty():
            try:
                made = self.ready.get(timeout=1)
            except queue.Empty:
                continue
            if not isinstance(made, Exception):
                drop_database(self.admin_url, made[0])
