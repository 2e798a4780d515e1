"""Capture the exact statement and parameters that alloc hands to the driver.

An event listener records the first statement that matches and aborts it before it runs,
so capturing even the 1,000,000-artifact snapshot costs nothing. The floors then run the
very same SQL text with the very same parameters through the bare driver.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Callable

from sqlalchemy import event


class _Captured(Exception):
    pass


def _encode(value):
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def capture(allocator, action: Callable[[object], object], prefix: str) -> dict:
    """{"sql", "params"} of the first statement starting with `prefix` that `action` runs."""
    found: dict = {}

    def listener(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(prefix.upper()) and not found:
            found.update(sql=statement, params=_encode(parameters))
            raise _Captured()

    event.listen(allocator.engine, "before_cursor_execute", listener)
    try:
        result = action(allocator)
        if hasattr(result, "__next__"):
            list(result)
    except _Captured:
        pass
    except Exception as error:  # SQLAlchemy wraps what a listener raises
        if not found:
            raise
        if not isinstance(getattr(error, "orig", None), _Captured) and "_Captured" not in repr(error):
            raise
    finally:
        event.remove(allocator.engine, "before_cursor_execute", listener)
    if not found:
        raise RuntimeError(f"no statement starting with {prefix!r} was executed")
    return found


def write_spec(spec: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


def literal_sql(spec: dict, dialect: str) -> str:
    """The captured statement with its parameters inlined (for EXPLAIN and for the docs)."""
    params = spec["params"]

    def lit(value):
        if isinstance(value, dict) and "$decimal" in value:
            return value["$decimal"]
        if isinstance(value, dict) and "$datetime" in value:
            return "'" + value["$datetime"] + "'" + ("::timestamptz" if dialect == "postgresql" else "")
        if value is None:
            return "NULL"
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        if isinstance(value, (int, float)):
            return repr(value)
        return "'" + str(value).replace("'", "''") + "'"

    sql = spec["sql"]
    if isinstance(params, dict):
        for name in sorted(params, key=len, reverse=True):
            sql = sql.replace(f"%({name})s", lit(params[name]))
        return sql
    parts = sql.split("?")
    out = parts[0]
    for value, rest in zip(params, parts[1:]):
        out += lit(value) + rest
    return out
