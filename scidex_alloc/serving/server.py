"""The `alloc serve` process: the API (api.py) under uvicorn, in one process or in workers,
on a socket bound beforehand; Ctrl-C ends it as interrupted, and uvicorn's messages
become `alloc: ` lines."""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading

from fastapi import FastAPI

from scidex_alloc.allocator import Allocator
from scidex_alloc.errors import AllocError
from scidex_alloc.serving import api, metrics


def bind(host: str, port: int) -> socket.socket:
    """The listening address, bound before uvicorn starts: a taken port or a bad host is
    one clear error (exit 1), and no other process can take the port in between."""
    sock = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as error:
        if sock is not None:
            sock.close()
        raise AllocError(f"cannot serve on {_address(host, port)}: {error.strerror or error}"
                         ) from None
    return sock


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def serve(allocator: Allocator, sock: socket.socket, workers: int = 1) -> None:
    """Serve on a bound socket until interrupted (KeyboardInterrupt, once the server has
    stopped); a failure to start is raised as one error with its reason."""
    where = _address(*sock.getsockname()[:2])
    try:
        with _CtrlC() as ctrl_c:
            if workers > 1:
                failure = _serve_workers(allocator, sock, workers, ctrl_c)
            else:
                failure = _serve_one(allocator, sock, ctrl_c)
    finally:
        sock.close()
    if ctrl_c.seen:
        raise KeyboardInterrupt
    if failure is not None:
        raise AllocError(f"cannot serve on {where}: {failure}")


def _serve_one(allocator: Allocator, sock: socket.socket, ctrl_c: _CtrlC) -> str | None:
    """One uvicorn server in this process; why it did not start, if it did not, from
    what uvicorn logged first."""
    import uvicorn

    config = uvicorn.Config(api.create_app(allocator), log_config=None, log_level="warning",
                            access_log=False)
    server = uvicorn.Server(config)
    ctrl_c.stops(server)
    messages = _OneLineLog(server)
    logger = logging.getLogger("uvicorn")
    logger.addHandler(messages)
    propagate, logger.propagate = logger.propagate, False
    try:
        server.run(sockets=[sock])
    except SystemExit:  # uvicorn exits when the application fails to start
        pass
    finally:
        logger.removeHandler(messages)
        logger.propagate = propagate
    if server.started or ctrl_c.seen:
        return None
    return messages.held[0] if messages.held else "the server did not start"


def _serve_workers(allocator: Allocator, sock: socket.socket, workers: int,
                   ctrl_c: _CtrlC) -> str | None:
    """`workers` uvicorn processes on the one socket, each opening the database anew
    (worker_app), their metrics shared through a private directory removed at the end."""
    import os
    import shutil
    import tempfile

    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    from scidex_alloc.storage.database import ENV_DB

    class Supervisor(Multiprocess):
        def handle_int(self) -> None:  # uvicorn's stops the workers and returns
            ctrl_c.seen = True
            super().handle_int()

    shared = tempfile.mkdtemp(prefix="alloc-metrics-")
    os.environ[ENV_DB] = allocator.target.url.render_as_string(hide_password=False)
    os.environ[metrics.MULTIPROCESS_DIR] = shared
    config = uvicorn.Config("scidex_alloc.serving.server:worker_app", factory=True,
                            workers=workers, log_config=WORKER_LOGGING, access_log=False)
    try:
        supervisor = Supervisor(config, sockets=[sock])  # takes Ctrl-C from here on
        if not ctrl_c.seen:
            supervisor.run()
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
        return "a worker failed to start"
    return None


def worker_app() -> FastAPI:
    """The application of one of several workers (`alloc serve --workers N`), each in its
    own process: over the database that $SCIDEX_DB names, as the parent set it. A worker
    that cannot open it (removed since) says why in one line and exits as failing to
    start, which stops the server; uvicorn would start it again and again otherwise."""
    from uvicorn.config import STARTUP_FAILURE

    try:
        allocator = Allocator.open()
    except AllocError as error:
        logging.getLogger("uvicorn.error").error(str(error))
        sys.exit(STARTUP_FAILURE)
    return api.create_app(allocator)


class _CtrlC:
    """Ctrl-C (SIGINT) from the start of `serve` until the server has stopped: noted, for
    `serve` to end as interrupted, and the server, once there is one, asked to stop, as
    uvicorn's own handler does while it serves. After that, SIGINT is ignored, so that the
    same signal, which uvicorn raises again as it stops, cannot kill the exiting process.
    Python's handler would raise KeyboardInterrupt wherever the signal landed, in an import
    or the event loop's setup too, where CPython may turn it into another error or, once
    it has passed through code run by exec(), end the process by the signal even though
    the CLI caught it."""

    def __init__(self) -> None:
        self.seen = False
        self.server = None
        self.watching = threading.current_thread() is threading.main_thread()  # signals reach only it

    def __enter__(self) -> _CtrlC:
        if self.watching:
            self.previous = signal.signal(signal.SIGINT, self._note)
        return self

    def __exit__(self, *exc_info) -> None:
        if self.watching:
            signal.signal(signal.SIGINT, signal.SIG_IGN if self.seen else self.previous)

    def _note(self, sig, frame) -> None:
        self.seen = True
        if self.server is not None:
            self.server.should_exit = True

    def stops(self, server) -> None:
        """From now on Ctrl-C stops `server`; one already noted stops it before it serves."""
        self.server = server
        if self.seen:
            server.should_exit = True


def _one_line(record: logging.LogRecord) -> str:
    """Of a traceback uvicorn logs as text, the last line: the exception itself."""
    lines = record.getMessage().strip().splitlines() or [""]
    return " ".join(lines[-1].split())


class OneLine(logging.Handler):
    """A log record as one `alloc: ` line (the workers' and their supervisor's)."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(f"alloc: {_one_line(record)}\n")


class _OneLineLog(OneLine):
    """uvicorn's warnings and errors as one `alloc: ` line each, without tracebacks; until
    the server has started they are held back, to become the reason it could not."""

    def __init__(self, server):
        super().__init__(logging.WARNING)
        self.server = server
        self.held: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.server.started:
            super().emit(record)
        else:
            self.held.append(_one_line(record))


# uvicorn's warnings and errors, in the parent and in each worker, as one line each.
WORKER_LOGGING = {
    "version": 1, "disable_existing_loggers": False,
    "handlers": {"one_line": {"()": OneLine, "level": "WARNING"}},
    "loggers": {name: {"handlers": ["one_line"], "level": "WARNING", "propagate": False}
                for name in ("uvicorn", "uvicorn.error")},
}
