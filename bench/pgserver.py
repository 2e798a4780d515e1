"""A private PostgreSQL server for the benchmarks, started from the system's binaries.

The same approach as tests/conftest.py (initdb + pg_ctl as the `postgres` user when run
as root, trust auth on 127.0.0.1, a free port), except that the cluster lives in a
persistent directory (bench/.data/pg by default) so that the generated databases are
cached between runs, and that durability settings are PostgreSQL's defaults (fsync on),
with production-like memory settings for a 24 GB machine.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
from pathlib import Path

PG_USER = "postgres"
SETTINGS = {
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
    candidates = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=30)
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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateServer:
    """A PostgreSQL cluster in `root` (created on first use), running while started."""

    def __init__(self, root: Path, bindir: Path | None = None):
        self.bindir = bindir or find_bindir()
        if self.bindir is None:
            raise PgUnavailable("no PostgreSQL server binaries (initdb, pg_ctl) found via "
                                "pg_config --bindir or /usr/lib/postgresql/*/bin")
        self.root = Path(root).absolute()
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.as_root = os.geteuid() == 0
        self.port: int | None = None
        self.running = False

    def _options(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        options = dict(env=env, cwd=self.root)
        if self.as_root:
            entry = pwd.getpwnam(PG_USER)
            env["HOME"] = str(self.root)
            options.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
        return options

    def _run(self, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=timeout, **self._options())

    def start(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            try:
                entry = pwd.getpwnam(PG_USER)
            except KeyError:
                raise PgUnavailable(f"running as root and there is no {PG_USER!r} user") from None
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.root.chmod(0o700)
        if not (self.data / "PG_VERSION").exists():
            shutil.rmtree(self.data, ignore_errors=True)
            out = self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", PG_USER,
                            "--auth=trust", "-E", "UTF8", "--locale=C")
            if out.returncode != 0:
                raise PgUnavailable(f"initdb failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")
        # A stale postmaster.pid from a killed run: pg_ctl start copes if the pid is gone.
        settings = " ".join(f"-c {k}={v}" for k, v in SETTINGS.items())
        last = ""
        for _ in range(3):
            self.port = _free_port()
            options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 {settings}"
            out = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                            "-o", options, "-w", "-t", "120", "start")
            if out.returncode == 0:
                self.running = True
                atexit.register(self.stop)
                return self.admin_url
            last = f"pg_ctl start failed: {out.stdout}{out.stderr}\n{self._tail()}"
        raise PgUnavailable(last)

    def _tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def admin_url(self) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        if self.running:
            self.running = False
            try:
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                          "-t", "300", "stop")
            except (OSError, subprocess.SubprocessError):
                pass
