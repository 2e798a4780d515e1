"""`/metrics` in Prometheus' text format, and the access log: one ASGI middleware times
every request, counts it by method, route template and status, and writes its log line.

The gauges are read at scrape time from the allocator's summing reads (kept while exact,
see serving/cache.py). With several workers (`alloc serve --workers N`) the counters and
the histogram are prometheus-client's multiprocess values, in the private directory
that PROMETHEUS_MULTIPROC_DIR names, so a scrape served by any worker counts them all.
"""

from __future__ import annotations

import os
import sys
import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.routing import Match

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "unmatched"  # the route label of a path no route matches: never the raw path
LOGGED_TARGET = 1000  # characters of a request's path and query kept in its log line


class Metrics:
    """The metrics of one application: what requests record, and the registry a scrape reads."""

    def __init__(self, allocator):
        recording = CollectorRegistry()
        self.requests = Counter("alloc_http_requests", "HTTP requests answered.",
                                ("method", "route", "status"), registry=recording)
        self.duration = Histogram("alloc_http_request_duration_seconds",
                                  "Time to answer an HTTP request.", ("method", "route"),
                                  registry=recording)
        if os.environ.get(MULTIPROCESS_DIR):
            self.registry = CollectorRegistry()
            MultiProcessCollector(self.registry)
        else:
            self.registry = recording
        self.registry.register(Gauges(allocator))


class Gauges:
    """The pipeline's state, computed when scraped."""

    def __init__(self, allocator):
        self.allocator = allocator

    def collect(self):
        gauges = self.allocator.gauges()
        families = {name: GaugeMetricFamily(f"alloc_{name}", help_text, labels=["type"])
                    for name, help_text in (
                        ("artifacts", "Artifacts, by type."),
                        ("budget_tokens", "Research budget of the artifacts with a valid budget."),
                        ("spent_tokens", "Tokens spent from those budgets."),
                        ("held_tokens", "Tokens held by live holds."))}
        for t in gauges.types:
            families["artifacts"].add_metric([t.type], t.artifacts)
            families["budget_tokens"].add_metric([t.type], float(t.budget))
            families["spent_tokens"].add_metric([t.type], float(t.spent))
            families["held_tokens"].add_metric([t.type], float(gauges.held.get(t.type, 0)))
        yield from families.values()
        claims = GaugeMetricFamily("alloc_claims_active",
                                   "Active claims whose lease has not run out.")
        claims.add_metric([], gauges.live_claims)
        yield claims


class Observed:
    """ASGI middleware: each HTTP request counted, timed and logged on stderr as
    `alloc: CLIENT "METHOD TARGET" STATUS DURATIONms`."""

    def __init__(self, app, metrics: Metrics, routes):
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def noted(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noted)
        finally:
            elapsed = time.perf_counter() - started
            method, route = scope["method"], self.route_of(scope)
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.duration.labels(method, route).observe(elapsed)
            sys.stderr.write(f"alloc: {access_line(scope, status, elapsed)}\n")

    def route_of(self, scope) -> str:
        """The template of the route the request matched (also for a method it does not
        allow), else UNMATCHED."""
        partial = None
        for route in self.routes:
            match, _ = route.matches(scope)
            template = getattr(route, "path_format", route.path)  # {id}, not {id:path}
            if match is Match.FULL:
                return template
            if match is Match.PARTIAL and partial is None:
                partial = template
        return partial or UNMATCHED


def access_line(scope, status: int, elapsed: float) -> str:
    """The request as sent (still percent-encoded: a line break in it cannot split the
    line), other bytes escaped, at most LOGGED_TARGET characters."""
    target = scope.get("raw_path") or scope["path"].encode("utf-8")
    if scope.get("query_string"):
        target += b"?" + scope["query_string"]
    text = target.decode("ascii", "backslashreplace")
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text).replace('"', "%22")
    if len(text) > LOGGED_TARGET:
        text = text[:LOGGED_TARGET] + "..."
    client = scope.get("client") or ("-", 0)
    return f'{client[0]} "{scope["method"]} {text}" {status} {elapsed * 1000:.1f}ms'
