"""The read-only JSON API and the dashboard, over the same allocator service (`alloc serve`
runs it: see server.py).

Responses are written with the CLI's own JSON encoder, so amounts stay exact decimals;
the Pydantic models of serving/models.py describe them for the OpenAPI document.
"""

from __future__ import annotations

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
