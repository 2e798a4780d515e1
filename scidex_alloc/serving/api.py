"""`alloc serve`: the read-only JSON API and the dashboard, over the same allocator service.

Responses are written with the CLI's own JSON encoder, so amounts stay exact decimals;
the Pydantic models of serving/models.py describe them for the OpenAPI document.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
from enum import Enum
from typing import Annotated

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from scidex_alloc import __version__, rendering
from scidex_alloc.allocator import Allocator
from scidex_alloc.errors import NOT_FOUND, AllocError, UsageError
from scidex_alloc.holds.results import HOLD_LIST_COLUMNS as HOLD_FIELDS
from scidex_alloc.limits import MAX_COUNT
from scidex_alloc.options import (
    CLAIM_STATUSES_SHOWN,
    MAX_PAGE_SIZE,
    PAGE_SIZE,
    SORT_KEYS,
)
from scidex_alloc.serving import dashboard, metrics
from scidex_alloc.serving.activity import KINDS as ACTIVITY_KINDS
from scidex_alloc.serving.models import (
    ERRORS,
    ActivityOut,
    AgentOut,
    BudgetOut,
    ClaimOut,
    HealthOut,
    HistoryOut,
    HoldOut,
    Period,
    PipelineOut,
    SpendOut,
)


class ExactJSON(Response):
    media_type = "application/json"

    def render(self, content) -> bytes:
        return rendering.json_value(content).encode("utf-8")


SortKey = Enum("SortKey", {key: key for key in SORT_KEYS}, type=str)
ClaimStatus = Enum("ClaimStatus", {status: status for status in CLAIM_STATUSES_SHOWN}, type=str)
Text = Annotated[str | None, Query(max_length=200)]
TypeFilter = Annotated[str | None, Query(max_length=200, description="Artifact type")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
Offset = Annotated[int, Query(ge=0, le=MAX_COUNT)]
Moment = Annotated[str | None, Query(max_length=64, description="ISO 8601; UTC when naive")]




def create_app(allocator: Allocator) -> FastAPI:
    app = FastAPI(
        title="scidex-alloc",
        version=__version__,
        description="Read-only API of the SciDEX capital-to-research pipeline: research "
                    "budgets ranked from committed capital, bounties and market prices.",
    )
    app.add_middleware(HeadAsGet)
    allocator.keep_results()
    observed = metrics.Metrics(allocator)
    app.add_middleware(metrics.Observed, metrics=observed, routes=app.router.routes)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "query")
        return ExactJSON({"error": f"invalid {where}: {first.get('msg', 'bad value')}"},
                         status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def no_route(request: Request, error: StarletteHTTPException):
        """Paths no route matches (an id with a line break, too) answer like the API does."""
        return ExactJSON({"error": str(error.detail).lower()}, status_code=error.status_code,
                         headers=error.headers)

    @app.exception_handler(AllocError)
    async def refused(request: Request, error: AllocError):
        status = 404 if error.exit_code == NOT_FOUND else 422
        text = error.worded(query_name) if isinstance(error, UsageError) else str(error)
        return ExactJSON({"error": text}, status_code=status)

    @app.exception_handler(sa_exc.SQLAlchemyError)
    async def database_down(request: Request, error: sa_exc.SQLAlchemyError):
        return ExactJSON({"error": "database unavailable"}, status_code=503)

    @app.get("/api/market/resource-budgets", response_model=list[BudgetOut], responses=ERRORS,
             summary="Artifacts ranked by research budget")
    def resource_budgets(
        type: Annotated[str | None, Query(max_length=200, description="Artifact type")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
        offset: Annotated[int, Query(ge=0, le=MAX_COUNT)] = 0,
        by: SortKey = SortKey(SORT_KEYS[0]),
    ):
        rows = allocator.rank(type_=type, limit=limit, by=by.value, offset=offset)
        return ExactJSON([rendering.as_dict(r) for r in rows])

    # Before the one-artifact route, which would take `ID/history` for an id.
    @app.get("/api/market/resource-budgets/{artifact_id:path}/history", response_model=HistoryOut,
             responses=ERRORS, summary="One artifact's budget snapshots, oldest first")
    def budget_history(artifact_id: str, every: Period | None = None, since: Moment = None,
                       until: Moment = None):
        period, points = allocator.history_series(
            artifact_id, _moment(since, "since"), _moment(until, "until"),
            None if every is None else every.value)
        return ExactJSON({"artifact_id": artifact_id, "every": period,
                          "points": [rendering.as_dict(p) for p in points]})

    # `:path`: an id may contain `/` (a DOI), sent as %2F.
    @app.get("/api/market/resource-budgets/{artifact_id:path}", response_model=BudgetOut,
             responses=ERRORS, summary="One artifact's research budget")
    def resource_budget(artifact_id: str):
        return ExactJSON(rendering.as_dict(allocator.budget(artifact_id).row))

    @app.get("/api/market/pipeline", response_model=PipelineOut, responses=ERRORS,
             summary="Committed demand, budget, spent and remaining per type and over time")
    def pipeline():
        return ExactJSON(dashboard.pipeline_data(allocator))

    @app.get("/api/market/holds", response_model=list[HoldOut], responses=ERRORS,
             summary="Live holds: budget reserved for work in progress, oldest first")
    def live_holds(
        artifact_id: Annotated[str | None, Query(max_length=200)] = None,
        agent: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
        offset: Annotated[int, Query(ge=0, le=MAX_COUNT)] = 0,
    ):
        rows = allocator.holds(artifact_id, agent=agent, limit=limit, offset=offset)
        return ExactJSON([{k: getattr(r, k) for k in HOLD_FIELDS} for r in rows])

    @app.get("/api/market/activity", response_model=ActivityOut, responses=ERRORS,
             summary="Spend log tokens by kind, per artifact type and over time")
    def research_activity(every: Period = Period("day"), type: TypeFilter = None,
                          since: Moment = None, until: Moment = None):
        found = allocator.activity(every.value, type, _moment(since, "since"),
                                   _moment(until, "until"))
        return ExactJSON({"every": found.every, "kinds": list(ACTIVITY_KINDS),
                          "by_type": found.by_type, "over_time": found.over_time})

    @app.get("/api/market/agents", response_model=list[AgentOut], responses=ERRORS,
             summary="Agents: live and stale claims, holds, investigations, spending")
    def agents(type: TypeFilter = None, limit: Limit = PAGE_SIZE, offset: Offset = 0):
        return ExactJSON([rendering.as_dict(r) for r in allocator.agents(type, limit, offset)])

    @app.get("/api/market/claims", response_model=list[ClaimOut], responses=ERRORS,
             summary="Claims on the work queue, newest first")
    def claim_list(agent: Text = None, artifact_id: Text = None,
                   status: ClaimStatus = ClaimStatus(CLAIM_STATUSES_SHOWN[0]),
                   type: TypeFilter = None, limit: Limit = PAGE_SIZE, offset: Offset = 0):
        rows = allocator.claim_page(status.value, agent, artifact_id, type, limit, offset)
        return ExactJSON([rendering.as_dict(r) for r in rows])

    @app.get("/api/market/spends", response_model=list[SpendOut], responses=ERRORS,
             summary="The spend log, newest first")
    def spends(artifact_id: Text = None, agent: Text = None,
               kind: Annotated[str | None, Query(max_length=64)] = None,
               limit: Limit = PAGE_SIZE, offset: Offset = 0):
        rows = allocator.spends(artifact_id, agent, kind, limit, offset)
        return ExactJSON([rendering.as_dict(r) for r in rows])

    @app.get("/healthz", response_model=HealthOut, responses=ERRORS, summary="Liveness")
    def healthz():
        allocator.rates()  # touches the database
        return ExactJSON({"status": "ok", "version": __version__})

    @app.get("/metrics", include_in_schema=False)
    def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(observed.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index():
        return HTMLResponse(dashboard.page(params=allocator.params))

    @app.get("/artifacts/{artifact_id:path}", response_class=HTMLResponse, include_in_schema=False)
    def artifact_page(artifact_id: str, request: Request):
        allocator.budget(artifact_id)  # an unknown artifact: 404 before any page
        depth = request.scope["raw_path"].count(b"/") - 1  # an id may be sent with a raw `/`
        return HTMLResponse(dashboard.page(params=allocator.params, artifact_id=artifact_id,
                                           depth=depth))

    return app


def _moment(text: str | None, param: str):
    from scidex_alloc.timeparse import parse_moment

    return None if text is None else parse_moment(text, param)


def query_name(param: str) -> str:
    """An allocator parameter as this API's query parameter: `type_` is `type`."""
    return param.removesuffix("_")


class HeadAsGet:
    """Answer HEAD (load balancers' probes) as the GET it asks about, without the body;
    HEAD stays out of the OpenAPI document, and no write method is allowed."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def headers_only(message):
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


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
    return create_app(allocator)


def serve(allocator: Allocator, sock: socket.socket, workers: int = 1) -> None:
    """Serve on a bound socket until interrupted. uvicorn's own messages become `alloc: `
    lines; a failure to start is raised as one error, with what uvicorn logged first."""
    if workers > 1:
        return _serve_workers(allocator, sock, workers)
    where = _address(*sock.getsockname()[:2])
    with _CtrlC() as ctrl_c:
        import uvicorn

        config = uvicorn.Config(create_app(allocator), log_config=None,
                                log_level="warning", access_log=False)
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
            sock.close()
    if ctrl_c.seen:
        raise KeyboardInterrupt
    if not server.started:
        reason = messages.held[0] if messages.held else "the server did not start"
        raise AllocError(f"cannot serve on {where}: {reason}")


class _CtrlC:
    """Ctrl-C (SIGINT) from the start of `serve` until the server has stopped: noted, for
    the caller to end as interrupted, and the server, once there is one, asked to stop, as
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


class _OneLineLog(logging.Handler):
    """uvicorn's warnings and errors as one `alloc: ` line each, without tracebacks; until
    the server has started they are held back, to become the reason it could not."""

    def __init__(self, server):
        super().__init__(logging.WARNING)
        self.server = server
        self.held: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # Of a traceback uvicorn logs as text, the last line: the exception itself.
        lines = record.getMessage().strip().splitlines() or [""]
        text = " ".join(lines[-1].split())
        if self.server.started:
            sys.stderr.write(f"alloc: {text}\n")
        else:
            self.held.append(text)


def _serve_workers(allocator: Allocator, sock: socket.socket, workers: int) -> None:
    """`workers` uvicorn processes on the one socket, each opening the database anew
    (worker_app), their metrics shared through a private directory removed at the end.
    Ctrl-C ends it as interrupted, as it does one server."""
    import os
    import shutil
    import tempfile

    from scidex_alloc.storage.database import ENV_DB

    where = _address(*sock.getsockname()[:2])
    shared = tempfile.mkdtemp(prefix="alloc-metrics-")
    os.environ[ENV_DB] = allocator.target.url.render_as_string(hide_password=False)
    os.environ[metrics.MULTIPROCESS_DIR] = shared
    try:
        with _CtrlC() as ctrl_c:
            import uvicorn
            from uvicorn.config import STARTUP_FAILURE
            from uvicorn.supervisors import Multiprocess

            class Supervisor(Multiprocess):
                def handle_int(self) -> None:  # uvicorn's stops the workers and returns
                    ctrl_c.seen = True
                    super().handle_int()

            config = uvicorn.Config("scidex_alloc.serving.api:worker_app", factory=True,
                                    workers=workers, log_config=WORKER_LOGGING,
                                    access_log=False)
            supervisor = Supervisor(config, sockets=[sock])  # takes Ctrl-C from here on
            if not ctrl_c.seen:
                supervisor.run()
    finally:
        sock.close()
        shutil.rmtree(shared, ignore_errors=True)
    if ctrl_c.seen:
        raise KeyboardInterrupt
    if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
        raise AllocError(f"cannot serve on {where}: a worker failed to start")


class OneLine(logging.Handler):
    """A log record as one `alloc: ` line: of a traceback logged as text, its last line."""

    def emit(self, record: logging.LogRecord) -> None:
        lines = record.getMessage().strip().splitlines() or [""]
        sys.stderr.write(f"alloc: {' '.join(lines[-1].split())}\n")


# uvicorn's warnings and errors, in the parent and in each worker, as one line each.
WORKER_LOGGING = {
    "version": 1, "disable_existing_loggers": False,
    "handlers": {"one_line": {"()": OneLine, "level": "WARNING"}},
    "loggers": {name: {"handlers": ["one_line"], "level": "WARNING", "propagate": False}
                for name in ("uvicorn", "uvicorn.error")},
}
