"""The dashboard page: one self-contained HTML file (styles and script inline, no CDN).

Served live by `alloc serve`, where it polls the API, as the overview (`/`) or one
artifact's page (`/artifacts/{id}`); or written by `alloc report --html` with its data
embedded (the overview's pipeline and top artifacts only: the other panels are live).
"""

from __future__ import annotations

from importlib.resources import files

from scidex_alloc import rendering
from scidex_alloc.options import ACTIVITY_BUCKETS, DASHBOARD_ROWS, DASHBOARD_TOP

PLACEHOLDER = "/*ALLOC_DATA*/null"
# What the page's script is told: which artifact (none: the overview), how many rows to
# ask the API for, the activity's window in buckets, and the formula's parameters (to
# show how each term was computed).
PAGE_PLACEHOLDER = "/*ALLOC_PAGE*/null"
BASE = '<base href="./">'  # where the page's relative links and API calls start


def pipeline_data(allocator) -> dict:
    """The pipeline as plain data: per type, overall, and over time."""
    pipeline = allocator.pipeline()
    types = [rendering.as_dict(t) for t in pipeline.types]
    totals = {"type": "all", "artifacts": sum(t["artifacts"] for t in types)}
    for name in ("demand", "bounty", "budget", "spent", "remaining"):
        totals[name] = sum((t[name] for t in types), start=0)
    totals["invalid"] = sum(t["invalid"] for t in types)
    return {"types": types, "totals": totals, "period": pipeline.period,
            "history": [rendering.as_dict(p) for p in pipeline.history]}


def report(allocator) -> str:
    """The dashboard as one static page, its data embedded."""
    from scidex_alloc.storage.schema import utcnow

    return page({
        "pipeline": pipeline_data(allocator),
        "top": [rendering.as_dict(r) for r in allocator.rank(limit=DASHBOARD_TOP)],
        "generated_at": utcnow(),
    })


def page(data: dict | None = None, params=None, artifact_id: str | None = None,
         depth: int = 0) -> str:
    """The page: the overview, or with `artifact_id` that artifact's page, served `depth`
    path segments below the dashboard's root."""
    template = files("scidex_alloc.serving").joinpath("dashboard.html").read_text(encoding="utf-8")
    settings = {"artifact": artifact_id, "top": DASHBOARD_TOP, "rows": DASHBOARD_ROWS,
                "buckets": ACTIVITY_BUCKETS,
                "params": None if params is None else {
                    "research_share": params.research_share,
                    "default_price": params.default_price,
                    "multiplier_floor": params.multiplier_floor}}
    template = template.replace(PAGE_PLACEHOLDER, _script_json(settings))
    if depth:
        template = template.replace(BASE, f'<base href="{"../" * depth}">')
    if data is None:
        return template
    return template.replace(PLACEHOLDER, _script_json(data))


def _script_json(value) -> str:
    return rendering.json_value(value).replace("</", "<\\/")  # safe inside <script>
