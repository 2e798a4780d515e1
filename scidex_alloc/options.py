"""Every allowed value and default of the commands and the API, declared once.

The CLI builds its choices and defaults from these, the API its query parameters and
the OpenAPI document, the allocator its keyword defaults: a change here changes all of
them. Bounds of counts and ids live in `limits.py`.
"""

from __future__ import annotations

import math
from datetime import timedelta

SORT_KEYS = ("budget", "remaining", "demand", "available")  # `rank --by` and the API's `by`, first the default
PERIODS = ("hour", "day", "week")  # snapshot periods, finest first
OUTPUT_FORMATS = ("table", "json", "csv")  # first the default
FILE_FORMATS = ("csv", "jsonl")
LOAD_TABLES = ("artifacts", "markets", "positions", "bounties")

# `alloc next`: how many to show, or to claim with --claim.
NEXT_LIMIT = 10
CLAIM_LIMIT = 1
LEASE_MINUTES = 30
LEASE = timedelta(minutes=LEASE_MINUTES)
# `alloc hold`: how long a hold lives unless settled or voided, and at most.
HOLD_TTL_MINUTES = 30
HOLD_TTL = timedelta(minutes=HOLD_TTL_MINUTES)
MAX_HOLD_TTL = timedelta(days=7)
UCB_WEIGHT = 0.7  # W: the weight of the UCB term against the budget term
EXPLORATION = math.sqrt(2)  # C: the UCB exploration constant

# The API's ranked list: rows per page by default, and at most.
PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
PIPELINE_BUCKETS = 168  # snapshot buckets in the pipeline's history (a week of hours)
DASHBOARD_TOP = 15  # rows in the dashboard's top-artifacts table
DASHBOARD_ROWS = 20  # rows per page of the dashboard's agents, claims, holds and spend log
MAX_WORKERS = 64  # `alloc serve --workers`

# The dashboard's research activity: the spend kinds shown apart (any other is "other"),
# and how many buckets of its period the window covers unless `since` is given.
SPEND_KINDS = ("debate", "analysis", "extraction", "validation")
OTHER_KIND = "other"
ACTIVITY_BUCKETS = 30
CLAIM_STATUSES_SHOWN = ("live", "stale", "done", "all")  # the API's claims `status`, first the default
