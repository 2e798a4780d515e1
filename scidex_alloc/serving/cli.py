"""The web: serve and report."""

from __future__ import annotations

from typing import Annotated

import typer

from scidex_alloc.cli.app import (
    Db,
    open_allocator,
    usage,
)
from scidex_alloc.options import MAX_WORKERS

app = typer.Typer()


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.", min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(
        "--workers", help="Server processes answering on the port.", min=1,
        max=MAX_WORKERS)] = 1,
    db: Db = None,
):
    """Serve the read-only JSON API and the dashboard (http://HOST:PORT/)."""
    from scidex_alloc import rendering
    from scidex_alloc.serving import server

    allocator = open_allocator(ctx, db)
    sock = server.bind(host, port)
    rendering.message(f"serving {allocator.target.masked()} on http://{host}:{port}/ "
                   "(API under /api/market, docs at /docs; Ctrl-C stops)")
    server.serve(allocator, sock, workers)


@app.command()
def report(
    ctx: typer.Context,
    html: Annotated[str, typer.Option("--html", help="Write the dashboard to this file.")],
    db: Db = None,
):
    """Write the dashboard as one self-contained HTML file (for cron to publish)."""
    from pathlib import Path

    from scidex_alloc import rendering
    from scidex_alloc.serving import dashboard

    page = dashboard.report(open_allocator(ctx, db))
    try:
        Path(html).write_text(page, encoding="utf-8")
    except OSError as error:
        raise usage(f"cannot write {html}: {error.strerror}") from None
    rendering.message(f"wrote {html}")
