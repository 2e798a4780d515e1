"""How `alloc hold` and `alloc void` show a hold."""

from __future__ import annotations

import sys

from scidex_alloc.holds.results import HOLD_JSON_FIELDS
from scidex_alloc.rendering import as_dict, emit_object, json_value


def hold_record(record, fmt: str, title: str) -> None:
    data = as_dict(record)
    if fmt == "json":
        sys.stdout.write(json_value({k: data[k] for k in HOLD_JSON_FIELDS}) + "\n")
        return
    emit_object({k: data[k] for k in HOLD_JSON_FIELDS}, "table", title=title)
