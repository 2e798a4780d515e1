"""How `alloc spend` and `alloc audit` show their results: one spend, a batch's summary,
the audit's checks."""

from __future__ import annotations

import csv
import sys

from scidex_alloc.ledger.results import SPEND_JSON_FIELDS
from scidex_alloc.rendering import Col, as_dict, draw, emit_object, json_value, message

FAILURES_SHOWN = 50  # failed lines of a batch listed one by one; the rest are counted
AUDIT_ROWS_SHOWN = 5  # rows concerned per breached check in the table; json and csv give all


def spend_record(record, fmt: str) -> None:
    data = as_dict(record)
    if fmt == "json":
        sys.stdout.write(json_value({k: data[k] for k in SPEND_JSON_FIELDS}) + "\n")
        return
    emit_object(record, "table", title="Replayed (already recorded)" if record.replayed
                else "Recorded")


def batch_summary(summary, fmt: str) -> None:
    failures = [{"line": f.line, "status": f.status, "code": f.code, "message": f.message}
                for f in summary.failures]
    if fmt == "json":
        sys.stdout.write(json_value({
            "recorded": summary.recorded, "replayed": summary.replayed,
            "refused": summary.refused, "invalid": summary.invalid,
            "atomic": summary.atomic, "failures": failures}) + "\n")
        return
    for f in failures[:FAILURES_SHOWN]:
        message(f"line {f['line']}: {f['status']}: {f['message']}")
    if len(failures) > FAILURES_SHOWN:
        message(f"... and {len(failures) - FAILURES_SHOWN} more failed lines")
    rolled_back = " (--atomic: nothing was recorded)" if summary.atomic and failures else ""
    message(f"recorded {summary.recorded}, replayed {summary.replayed}, refused {summary.refused},"
            f" invalid {summary.invalid}{rolled_back}")


def audit_report(checks, fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(json_value({
            "ok": all(c.ok for c in checks),
            "checks": [{"name": c.name, "ok": c.ok, "description": c.description, "rows": c.rows}
                       for c in checks]}) + "\n")
        return
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(("check", "ok", "row"))
        for c in checks:
            for row in c.rows or [None]:
                writer.writerow((c.name, "true" if c.ok else "false",
                                 "" if row is None else json_value(row)))
        return
    draw([Col("check"), Col("result"), Col("rows concerned")],
         [[c.name, "ok" if c.ok else f"BREACH ({len(c.rows)})",
           "; ".join(json_value(r) for r in c.rows[:AUDIT_ROWS_SHOWN])
           + (" ..." if len(c.rows) > AUDIT_ROWS_SHOWN else "")]
          for c in checks], "Audit")
