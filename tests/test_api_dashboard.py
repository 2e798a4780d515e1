"""The dashboard's API (history, activity, agents, claims, spends) against a real
`alloc serve`, on SQLite and PostgreSQL: its numbers against the CLI's or a plain
recomputation from `alloc log`, and every response as the OpenAPI document describes it."""

import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime
from urllib.parse import quote

import jsonschema
import pytest

from scidex_alloc.timeparse import bucket_start
from tests.conftest import Served
from tests.pgserver import free_port

KINDS = ("debate", "analysis", "extraction", "validation", "other")
EVERYTHING = "since=2000-01-01"


@pytest.fixture
def api(served):
    """The served API with its OpenAPI document; `get` checks each answer against it."""
    _, served.openapi = served.get("/openapi.json")

    def get(path: str, status: int = 200):
        code, body = served.get(path)
        assert code == status, body
        route = next(r for r in served.openapi["paths"]
                     if _matches(r, path.split("?")[0]))
        schema = served.openapi["paths"][route]["get"]["responses"][str(code)]["content"][
            "application/json"]["schema"]
        jsonschema.validate(body, {**schema, "components": served.openapi["components"]})
        return body
    served.checked = get
    return served


def _matches(route: str, path: str) -> bool:
    if "{artifact_id}" not in route:
        return route == path
    head, tail = route.split("{artifact_id}")
    return path.startswith(head) and path.endswith(tail) and len(path) > len(head + tail) - 1


@pytest.fixture
def busy(api, cli, db_url):
    """Claims (live, done with rewards), a hold, spends of every kind and a reversal."""
    top = cli("rank", "--limit", "6", "-f", "json", "--db", db_url).json()
    ids = [r["artifact_id"] for r in top]
    claimed = cli("next", "--claim", "--agent", "ada", "--limit", "3", "-f", "json",
                  "--db", db_url).json()
    for claim, reward in zip(claimed[:2], ("0.25", "1")):
        assert cli("done", claim["claim_id"], "--reward", reward, "--db", db_url).exit_code == 0
    assert cli("hold", ids[3], "2.5", "--agent", "bob", "--db", db_url).exit_code == 0
    spent = [cli("spend", ids[4], "1.5", "--kind", kind, "--agent", "bob", "-f", "json",
                 "--db", db_url).json()["id"] for kind in ("debate", "tea")]
    assert cli("spend", "--reverse", spent[0], "--agent", "bob", "--db", db_url).exit_code == 0
    return api


def log_rows(cli, db_url):
    return cli("log", "-f", "json", "--db", db_url).json()


def test_history_matches_the_cli_and_takes_ids_with_slashes(api, cli, db_url, tmp_path):
    top = cli("rank", "--limit", "1", "-f", "json", "--db", db_url).json()[0]["artifact_id"]
    body = api.checked(f"/api/market/resource-budgets/{quote(top, safe='')}/history")
    expected = cli("history", top, "-f", "json", "--db", db_url).json()
    assert body["artifact_id"] == top and body["every"] == "hour"
    assert body["points"] == expected and len(expected) == 1
    assert api.checked(f"/api/market/resource-budgets/{top}/history?every=week") == {
        "artifact_id": top, "every": "week", "points": []}
    (tmp_path / "a.csv").write_text("id,type,title\n10.1000/xyz,paper,A DOI\n")
    assert cli("load", "artifacts", tmp_path / "a.csv", "--db", db_url).exit_code == 0
    body = api.checked("/api/market/resource-budgets/10.1000%2Fxyz/history")
    assert body == {"artifact_id": "10.1000/xyz", "every": None, "points": []}
    missing = api.checked("/api/market/resource-budgets/nope/history", 404)
    assert missing == {"error": "unknown artifact 'nope'"}


def test_activity_sums_the_log_by_kind_type_and_day(busy, cli, db_url):
    body = busy.checked(f"/api/market/activity?{EVERYTHING}")
    assert body["every"] == "day" and body["kinds"] == list(KINDS)
    types = {r["artifact_id"]: r["type"] for r in
             cli("rank", "-f", "json", "--db", db_url).json()}
    log = log_rows(cli, db_url)
    kinds = {e["id"]: e["kind"] for e in log}
    by_type, by_day = defaultdict(lambda: defaultdict(float)), defaultdict(lambda: defaultdict(float))
    for entry in log:
        kind = kinds[entry["reverses"]] if entry["reverses"] else entry["kind"]
        kind = kind if kind in KINDS[:4] else "other"
        day = bucket_start(datetime.fromisoformat(entry["created_at"]), "day").isoformat()
        for totals in (by_type[types[entry["artifact_id"]]], by_day[day]):
            totals[kind] += entry["tokens"]
            totals["total"] += entry["tokens"]
    for rows, key, expected in ((body["by_type"], "type", by_type),
                                (body["over_time"], "bucket", by_day)):
        assert [r[key] for r in rows] == sorted(expected)
        for row in rows:
            for kind in (*KINDS, "total"):
                assert row[kind] == pytest.approx(expected[row[key]][kind], abs=1e-6)
    # The reversed debate nets out; the unknown kind is "other"; the default window is recent.
    recent = busy.checked("/api/market/activity")["over_time"]
    assert recent[-1]["debate"] == pytest.approx(0, abs=1e-9)
    assert recent[-1]["other"] == pytest.approx(1.5, abs=1e-9)
    typed = busy.checked(f"/api/market/activity?{EVERYTHING}&type=hypothesis&every=week")
    assert [r["type"] for r in typed["by_type"]] in ([], ["hypothesis"])


def test_agents_summarise_claims_holds_and_spending(busy, cli, db_url):
    agents = {a["agent"]: a for a in busy.checked("/api/market/agents?limit=1000")}
    ada, bob = agents["ada"], agents["bob"]
    assert (ada["live_claims"], ada["stale_claims"], ada["investigations"]) == (1, 0, 2)
    assert ada["mean_reward"] == pytest.approx(0.625, abs=1e-9)
    assert (bob["holds"], bob["held"], bob["investigations"]) == (1, 2.5, 0)
    assert bob["mean_reward"] is None
    spent = defaultdict(float)
    for entry in log_rows(cli, db_url):
        spent[entry["agent"]] += entry["tokens"]
    for agent in agents.values():
        assert agent["spent"] == pytest.approx(spent[agent["agent"]], abs=1e-6)
    first = busy.checked("/api/market/agents?limit=2")
    assert [a["agent"] for a in first] in (["bob", "ada"], ["ada", "bob"])
    assert busy.checked("/api/market/agents?limit=2&offset=1")[0] == first[1]
    # Of one type: only what was spent on its artifacts.
    by_type = defaultdict(lambda: defaultdict(float))
    for entry in log_rows(cli, db_url):
        kind = cli("budget", entry["artifact_id"], "-f", "json", "--db", db_url).json()["type"]
        by_type[kind][entry["agent"]] += entry["tokens"]
    for kind, spent_on in by_type.items():
        typed = busy.checked(f"/api/market/agents?type={kind}&limit=1000")
        assert {a["agent"] for a in typed} >= set(spent_on) - {None}
        for agent in typed:
            assert agent["spent"] == pytest.approx(spent_on[agent["agent"]], abs=1e-6)


def test_claims_by_status_with_lease_countdown(busy, cli, db_url):
    live = busy.checked("/api/market/claims")
    assert len(live) == 1 and live[0]["agent"] == "ada" and live[0]["status"] == "active"
    assert 0 < live[0]["seconds_left"] <= 1800 and live[0]["stale"] is False
    done = busy.checked("/api/market/claims?status=done&agent=ada")
    assert sorted(c["reward"] for c in done) == [0.25, 1]
    assert all(c["seconds_left"] is None and c["finished_at"] for c in done)
    every = busy.checked("/api/market/claims?status=all")
    assert [c["id"] for c in every] == sorted((c["id"] for c in every), reverse=True)
    assert busy.checked("/api/market/claims?status=stale") == []
    one = busy.checked(f"/api/market/claims?status=all&artifact_id={quote(live[0]['artifact_id'])}")
    assert [c["id"] for c in one] == [live[0]["id"]]


def test_spends_page_the_log_newest_first(busy, cli, db_url):
    log = log_rows(cli, db_url)
    assert busy.checked("/api/market/spends?limit=5&offset=1") == log[::-1][1:6]
    bob = busy.checked("/api/market/spends?agent=bob")
    assert bob == [e for e in log[::-1] if e["agent"] == "bob"] and len(bob) == 3
    assert busy.checked("/api/market/spends?kind=tea") == [e for e in log if e["kind"] == "tea"]
    artifact = log[0]["artifact_id"]
    assert busy.checked(f"/api/market/spends?artifact_id={artifact}&limit=1000") == [
        e for e in log[::-1] if e["artifact_id"] == artifact]


@pytest.mark.parametrize("path", [
    "/api/market/activity?every=month", "/api/market/activity?since=yesterday",
    "/api/market/activity?since=2026-02-01&until=2026-01-01",
    "/api/market/resource-budgets/x/history?every=minute",
    "/api/market/agents?limit=0", "/api/market/agents?offset=-1",
    "/api/market/claims?status=expired", "/api/market/claims?limit=1001",
    "/api/market/spends?limit=ten", "/api/market/spends?kind=" + "k" * 65,
    "/api/market/activity?type=" + "t" * 201,
])
def test_bad_parameters_are_422(api, path, db_url):
    body = api.checked(path, 422)
    assert set(body) == {"error"} and db_url not in body["error"]


def test_summing_reads_are_never_stale(api, cli, db_url):
    """The server keeps its sums between calls, but a write or an expiry is seen at once."""
    before = api.checked("/api/market/pipeline")["totals"]
    assert api.checked("/api/market/pipeline")["totals"] == before
    top = cli("rank", "--limit", "1", "-f", "json", "--db", db_url).json()[0]["artifact_id"]
    assert cli("spend", top, "2", "--agent", "cy", "--db", db_url).exit_code == 0
    after = api.checked("/api/market/pipeline")["totals"]
    assert after["spent"] == pytest.approx(before["spent"] + 2, abs=1e-6)
    assert cli("hold", top, "1", "--agent", "cy", "--ttl", "2s", "--db", db_url).exit_code == 0
    cy = next(a for a in api.checked("/api/market/agents") if a["agent"] == "cy")
    assert (cy["holds"], cy["held"], cy["spent"]) == (1, 1, 2)
    time.sleep(2.2)  # the hold runs out; nothing is written
    cy = next(a for a in api.checked("/api/market/agents") if a["agent"] == "cy")
    assert (cy["holds"], cy["held"]) == (0, 0)


def scrape(served) -> dict:
    """/metrics as {(name, labels): value}, parsed by prometheus-client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    status, text = served.get("/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_requests_and_equal_the_apis_totals(busy, cli, db_url):
    key = ("alloc_http_requests_total",
           (("method", "GET"), ("route", "/api/market/pipeline"), ("status", "200")))
    before = scrape(busy).get(key, 0)
    pipeline = busy.checked("/api/market/pipeline")
    busy.checked("/api/market/resource-budgets/nope/history", 404)
    found = scrape(busy)
    assert found[key] == before + 1
    assert found[("alloc_http_requests_total", (("method", "GET"), (
        "route", "/api/market/resource-budgets/{artifact_id}/history"), ("status", "404")))] == 1
    assert found[("alloc_http_request_duration_seconds_count", (
        ("method", "GET"), ("route", "/api/market/pipeline")))] == before + 1
    ranked = cli("rank", "-f", "json", "--db", db_url).json()
    for t in pipeline["types"]:
        label = (("type", t["type"]),)
        assert found[("alloc_artifacts", label)] == t["artifacts"]
        assert found[("alloc_budget_tokens", label)] == pytest.approx(t["budget"], abs=1e-6)
        assert found[("alloc_spent_tokens", label)] == pytest.approx(t["spent"], abs=1e-6)
        held = sum(r["held"] for r in ranked if r["type"] == t["type"])
        assert found[("alloc_held_tokens", label)] == pytest.approx(held, abs=1e-6)
    assert sum(found[("alloc_held_tokens", (("type", t["type"]),))]
               for t in pipeline["types"]) == pytest.approx(2.5, abs=1e-6)
    live = busy.checked("/api/market/claims?status=live&limit=1000")
    assert found[("alloc_claims_active", ())] == len(live) == 1


def test_each_request_is_one_access_log_line(api):
    api.get("/api/market/pipeline")
    api.get("/api/market/resource-budgets/a%0Ab")
    api.process.terminate()
    api.process.wait(timeout=30)
    lines = api.log.read_text().splitlines()
    pattern = r'alloc: 127\.0\.0\.1 "GET {}" {} \d+\.\dms'
    assert any(re.fullmatch(pattern.format(re.escape("/api/market/pipeline"), 200), line)
               for line in lines)
    assert any(re.fullmatch(pattern.format(re.escape("/api/market/resource-budgets/a%0Ab"),
                                           404), line) for line in lines)


def test_workers_share_one_set_of_metrics(served, db_url, tmp_path):
    """Two worker processes answer on the one port; /metrics counts the requests of both."""
    port = free_port()
    log = tmp_path / "workers.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "scidex_alloc", "serve", "--workers", "2", "--port",
             str(port), "--db", db_url], stdout=out, stderr=subprocess.STDOUT)
    workers = Served(port, process)
    try:
        deadline = time.monotonic() + 60
        while not _up(workers):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        assert len(_children(process.pid)) >= 2
        answers = [workers.get("/api/market/pipeline") for _ in range(20)]
        assert all(status == 200 for status, _ in answers)
        assert answers[0][1] == served.get("/api/market/pipeline")[1]
        key = ("alloc_http_requests_total",
               (("method", "GET"), ("route", "/api/market/pipeline"), ("status", "200")))
        assert scrape(workers)[key] == 20
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "Traceback" not in log.read_text()


def _up(server) -> bool:
    try:
        return server.get("/healthz")[0] == 200
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux's /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.isdigit() and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def test_activity_windows_compare_instants_not_text(api, cli, db_url):
    """An entry another service wrote with a zone offset counts in the window its instant
    falls in (SQLite stores the text as written)."""
    from sqlalchemy import text

    from scidex_alloc.allocator import Allocator

    top = cli("rank", "--limit", "1", "-f", "json", "--db", db_url).json()[0]["artifact_id"]
    allocator = Allocator.open(db_url)
    with allocator.engine.begin() as conn:  # 2026-01-01 11:00 UTC, two days' text away
        conn.execute(text("INSERT INTO resource_allocations (artifact_id, tokens, kind, "
                          "created_at) VALUES (:a, 4, 'debate', '2026-01-02 01:00:00+14:00')"),
                     {"a": top})
    allocator.close()
    window = "since=2026-01-01T10:00:00Z&until=2026-01-01T12:00:00Z&every=hour"
    body = api.checked(f"/api/market/activity?{window}")
    assert [(r["bucket"], r["debate"]) for r in body["over_time"]] == [
        ("2026-01-01T11:00:00+00:00", 4)]
    later = api.checked("/api/market/activity?since=2026-01-01T11:30:00Z&until=2026-01-02"
                        "&every=hour")
    assert later["over_time"] == []
