"""A private PostgreSQL server started from the system's binaries, for the benchmarks and
the test harness (tests/conftest.py) alike.

initdb and pg_ctl run as the `postgres` user when we are root (they refuse root), with
trust authentication on 127.0.0.1 and a free port. The cluster lives in `root`: kept
between runs when it is a persistent directory (the benchmarks cache their databases in
bench/.data/pg), created afresh when it is empty.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
from pathlib import Path

PG_USER = "postgres"
# The benchmarks' settings: PostgreSQL's durability defaults (fsync on), memory sized
# for a 24 GB machine as in production.
BENCH_SETTINGS = {
    "shared_buffers": "2GB",
    "effective_cache_size": "12GB",
    "work_mem": "64MB",
    "maintenance_work_mem": "1GB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "max_connections": "50",
}


class PgUnavailable(Exception):
    pass


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
