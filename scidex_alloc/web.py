"""`alloc serve`: the read-only JSON API and the dashboard, over the same allocator service.

Responses are written with the CLI's own JSON encoder, so amounts stay exact decimals;
the Pydantic models below describe them for the OpenAPI document.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc

from scidex_alloc import __version__, dashboard, render
from scidex_alloc.errors import NOT_FOUND, AllocError
from scidex_alloc.service import Allocator

MAX_LIMIT = 1000


class ExactJSON(Response):
    media_type = "application/json"

    def render(self, content) -> bytes:
        return render.json_value(content).encode("utf-8")


class SortKey(str, Enum):
    budget = "budget"
    remaining = "remaining"
    demand = "demand"


class BudgetOut(BaseModel):
    rank: int
    artifact_id: str
    type: str
    title: str | None
    demand: float | None
    bounty: float | None
    price: float | None
    uncertainty: float | None
    multiplier: float | None
    budget: float | None
    spent: float | None
    remaining: float | None
    problem: str | None


class TypeTotalsOut(BaseModel):
    type: str
    artifacts: int
    demand: float
    bounty: float
    budget: float
    spent: float
    remaining: float
    invalid: int


class PointOut(BaseModel):
    bucket: str
    budget: float
    spent: float
    remaining: float


class PipelineOut(BaseModel):
    types: list[TypeTotalsOut]
    totals: TypeTotalsOut
    period: str | None
    history: list[PointOut]


class HealthOut(BaseModel):
    status: str
    version: str


class ErrorOut(BaseModel):
    error: str


ERRORS = {404: {"model": ErrorOut}, 422: {"model": ErrorOut}, 503: {"model": ErrorOut}}


def create_app(allocator: Allocator) -> FastAPI:
    app = FastAPI(
        title="scidex-alloc",
        version=__version__,
        description="Read-only API of the SciDEX capital-to-research pipeline: research "
                    "budgets ranked from committed capital, bounties and market prices.",
    )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "query")
        return ExactJSON({"error": f"invalid {where}: {first.get('msg', 'bad value')}"},
                         status_code=422)

    @app.exception_handler(AllocError)
    async def refused(request: Request, error: AllocError):
        status = 404 if error.exit_code == NOT_FOUND else 422
        return ExactJSON({"error": str(error)}, status_code=status)

    @app.exception_handler(sa_exc.SQLAlchemyError)
    async def database_down(request: Request, error: sa_exc.SQLAlchemyError):
        return ExactJSON({"error": "database unavailable"}, status_code=503)

    @app.get("/api/market/resource-budgets", response_model=list[BudgetOut], responses=ERRORS,
             summary="Artifacts ranked by research budget")
    def resource_budgets(
        type: Annotated[str | None, Query(max_length=200, description="Artifact type")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
        offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
        by: SortKey = SortKey.budget,
    ):
        rows = allocator.rank(type_=type, limit=limit, by=by.value, offset=offset)
        return ExactJSON([render.as_dict(r) for r in rows])

    @app.get("/api/market/resource-budgets/{artifact_id}", response_model=BudgetOut,
             responses=ERRORS, summary="One artifact's research budget")
    def resource_budget(artifact_id: str):
        return ExactJSON(render.as_dict(allocator.budget(artifact_id).row))

    @app.get("/api/market/pipeline", response_model=PipelineOut, responses=ERRORS,
             summary="Committed demand, budget, spent and remaining per type and over time")
    def pipeline():
        return ExactJSON(dashboard.pipeline_data(allocator))

    @app.get("/healthz", response_model=HealthOut, responses=ERRORS, summary="Liveness")
    def healthz():
        allocator.rates()  # touches the database
        return ExactJSON({"status": "ok", "version": __version__})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index():
        return HTMLResponse(dashboard.page())

    return app


def serve(allocator: Allocator, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(create_app(allocator), host=host, port=port, log_level="warning",
                access_log=False)
