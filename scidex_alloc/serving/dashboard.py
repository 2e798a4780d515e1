"""The dashboard page: one self-contained HTML file (styles and script inline, no CDN).

Served live by `alloc serve`, where it polls the API, or written by `alloc report --html`
with its data embedded.
"""

from __future__ import annotations

from importlib.resources import files

from scidex_alloc import rendering
from scidex_alloc.options import DASHBOARD_TOP

PLACEHOLDER = "/*ALLOC_DATA*/null"
TOP_PLACEHOLDER = "/*ALLOC_TOP*/"  # the page's script asks the API for as many rows


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


def page(data: dict | None = None) -> str:
    template = files("scidex_alloc.serving").joinpath("dashboard.html").read_text(encoding="utf-8")
    template = template.replace(TOP_PLACEHOLDER, str(DASHBOARD_TOP))
    if data is None:
        return template
    embedded = rendering.json_value(data).replace("</", "<\\/")  # safe inside <script>
    return template.replace(PLACEHOLDER, embedded)
