"""Bounds of the whole numbers alloc accepts, declared once for the CLI, the API and the service."""

# --limit, --top and the API's offset: far beyond any real table, yet a plain SQL integer.
MAX_COUNT = 1_000_000_000
# Row ids (spends, claims) and seeds are 64-bit integers: an id beyond them cannot exist.
MAX_ID = 2**63 - 1
