"""Serving: the read-only HTTP API, the dashboard and the static report."""
