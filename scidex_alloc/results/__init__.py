"""Result objects the service returns and the renderer formats, one module per area.

Building a dataclass costs ~0.3 ms at import, paid on every shell call, so a command
loads only its area's module. ``from scidex_alloc.results import X`` still works: it
loads just X's area.
"""

from importlib import import_module

AREAS = {
    "budgets": ("BudgetRow", "BUDGET_COLUMNS", "UnitValues", "BudgetDetail", "Rate",
                "Conversion"),
    "spending": ("SpendRecord", "SPEND_JSON_FIELDS", "SpendOutcome", "BatchSummary", "LogEntry",
                 "LOG_COLUMNS", "AuditCheck"),
    "loading": ("RowProblem", "LoadReport"),
    "queue": ("QueueEntry", "QUEUE_COLUMNS", "ClaimInfo", "CLAIM_COLUMNS"),
    "history": ("SnapshotResult", "HistoryPoint", "HISTORY_COLUMNS", "Mover", "MOVER_COLUMNS",
                "PlanPart", "PLAN_COLUMNS", "TypeTotals", "PipelinePoint", "Pipeline"),
}
_AREA_OF = {name: area for area, names in AREAS.items() for name in names}


def __getattr__(name: str):
    area = _AREA_OF.get(name)
    if area is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{area}"), name)
