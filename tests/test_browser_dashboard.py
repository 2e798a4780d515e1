"""The dashboard's research panels and one artifact's page in the system's Chromium, checked
against the API's own numbers on both databases, at a desktop and a phone width."""

import json
import re
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.test_browser import browser  # noqa: F401 (the module's browser fixture)

DOCS = Path(__file__).resolve().parent.parent / "docs"
WIDTHS = (1300, 390)
ROWS = 20  # scidex_alloc.options.DASHBOARD_ROWS: the page's rows per panel
SPENDS = 23  # more than a page of the artifact's spend log
OVERVIEW_PANELS = 5
ARTIFACT_PANELS = 5


def run(cli, db_url, *args):
    result = cli(*args, "--format", "json", "--db", db_url)
    assert result.exit_code == 0, result.stderr
    return result.json()


@pytest.fixture
def market(served, cli, db_url, tmp_path):
    """Research under way: live, stale and finished claims, a hold, spends of every kind
    (one of them reversed) on the artifact whose page is checked, and spends on an artifact
    of each other type; returns the artifact."""
    done = run(cli, db_url, "next", "--claim", "--agent", "agent-lab")[0]
    run(cli, db_url, "done", done["claim_id"], "--reward", "0.75")
    artifact = done["artifact_id"]
    run(cli, db_url, "next", "--claim", "--agent", "agent-lab", "--reserve", "4", "--lease", "45m")
    run(cli, db_url, "next", "--claim", "--agent", "agent-slow", "--lease", "1s")
    run(cli, db_url, "hold", artifact, "2.5", "--agent", "agent-lab")
    lines = [{"artifact_id": artifact, "amount": f"0.{n + 1:02d}", "agent": "agent-lab",
              "kind": ("debate", "analysis", "extraction", "validation", "survey")[n % 5],
              "note": f"step {n}"} for n in range(SPENDS)]
    for n, type_ in enumerate(("hypothesis", "experiment", "knowledge_gap")):
        other = api(served, f"/api/market/resource-budgets?type={type_}&limit=1")[0]["artifact_id"]
        lines += [{"artifact_id": other, "amount": str(n + k + 1), "kind": kind, "agent": "agent-lab"}
                  for k, kind in enumerate(("debate", "analysis", "extraction", "validation")[n:])]
    spends = tmp_path / "spends.jsonl"
    spends.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = cli("spend", "--file", spends, "--db", db_url)
    assert result.exit_code == 0, result.stderr
    first = api(served, f"/api/market/spends?artifact_id={artifact}&limit=1000")[-1]
    run(cli, db_url, "spend", "--reverse", first["id"])
    time.sleep(1.1)  # agent-slow's lease runs out: a stale claim
    return artifact


def api(served, path):
    status, body = served.get(path)
    assert status == 200, body
    return body


def open_page(browser, url, width):  # noqa: F811
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors, requests = [], []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))
    page.goto(url)
    page.wait_for_selector("body[data-ready='true']", state="attached", timeout=20_000)
    assert errors == []
    assert page.query_selector(".error:not(:empty)") is None, page.inner_text(".error:not(:empty)")
    page.requests = requests
    return page


def numbers(element, fields):
    return {name: (None if element.get_attribute(f"data-{name}") is None
                   else float(element.get_attribute(f"data-{name}"))) for name in fields}


def cells(row):
    return {cell.get_attribute("data-field"): cell.get_attribute("data-value")
            for cell in row.query_selector_all("td[data-field]")}


def same(shown, expected, fields):
    for name in fields:
        value, want = shown[name], expected[name]
        if want is None:
            assert value is None, (name, value)
        elif isinstance(want, bool):
            assert value == str(want).lower(), (name, value)
        elif isinstance(want, (int, float)):
            assert float(value) == pytest.approx(float(want), abs=1e-9), (name, value, want)
        else:
            assert value == want, (name, value, want)


def stacked(page, chart, key):
    return {group.get_attribute(key): {bar.get_attribute("data-kind"): float(bar.get_attribute("data-value"))
                                       for bar in group.query_selector_all("rect[data-kind]")}
            for group in page.query_selector_all(f"#{chart} g[{key}]")}


def expected_stacked(rows, key, kinds):
    return {row[key]: {kind: float(row[kind]) for kind in kinds} for row in rows}


def check_activity(page, served, every, type_=""):
    activity = api(served, f"/api/market/activity?every={every}" + (f"&type={type_}" if type_ else ""))
    kinds = activity["kinds"]
    assert kinds == ["debate", "analysis", "extraction", "validation", "other"]
    assert stacked(page, "activity-types-chart", "data-type") == expected_stacked(activity["by_type"], "type", kinds)
    assert stacked(page, "activity-time-chart", "data-bucket") == expected_stacked(activity["over_time"], "bucket", kinds)
    legend = page.inner_text("#kind-legend")
    assert all(kind in legend for kind in kinds)
    assert activity["over_time"], "the spends made now fall in the newest bucket"


AGENT_FIELDS = ("live_claims", "stale_claims", "holds", "held", "investigations", "mean_reward", "spent")
CLAIM_FIELDS = ("id", "agent", "status", "held", "reward")


def check_agents(page, served, type_=""):
    agents = api(served, f"/api/market/agents?limit={ROWS}" + (f"&type={type_}" if type_ else ""))
    rows = page.query_selector_all("#agents-table tbody tr")
    assert [row.get_attribute("data-agent") for row in rows] == [a["agent"] for a in agents]
    for row, agent in zip(rows, agents):
        same(cells(row), agent, AGENT_FIELDS)
        marked = row.query_selector("[data-stale]") is not None
        assert marked == (agent["stale_claims"] > 0)
    return agents


def check_claims(page, served, table, path):
    claims = api(served, path)
    rows = page.query_selector_all(f"#{table} tbody tr")
    assert [int(row.get_attribute("data-claim-id")) for row in rows] == [c["id"] for c in claims]
    for row, claim in zip(rows, claims):
        same(cells(row), claim, CLAIM_FIELDS)
        badge = row.query_selector("[data-stale]")
        assert (badge is not None) == claim["stale"]
        if claim["stale"]:
            assert "stale" in badge.inner_text()  # a word, not colour alone
    return claims


def shoot(page, db_kind, name, width):
    if db_kind != "sqlite":
        return
    suffix = "" if width == WIDTHS[0] else f"-{width}"
    path = DOCS / f"{name}{suffix}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_overview_panels_show_the_apis_numbers(browser, served, market, db_kind):  # noqa: F811
    html = served.get("/")[1]
    assert len(html.encode("utf-8")) < 150_000
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing from elsewhere
    for width in WIDTHS:
        page = open_page(browser, served.base + "/", width)
        check_activity(page, served, "day")
        agents = check_agents(page, served)
        assert {"agent-lab", "agent-slow"} <= {a["agent"] for a in agents}
        claims = check_claims(page, served, "claims-table", f"/api/market/claims?status=all&limit={ROWS}")
        assert any(c["stale"] for c in claims) and any(c["reward"] is not None for c in claims)
        assert page.query_selector("#claims-table .countdown") is not None
        # Every artifact id links to its page; the page scrolls only inside its panels.
        for link in page.query_selector_all("main a[href^='artifacts/']"):
            assert link.get_attribute("href") == "artifacts/" + quote(link.inner_text(), safe="")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        shoot(page, db_kind, "dashboard-agents", width)
        if width == WIDTHS[0]:
            # One refresh: one API call per panel.
            page.requests.clear()
            page.evaluate("load()")
            api_calls = [url for url in page.requests if "/api/" in url]
            assert len(api_calls) == len(set(api_calls)) == OVERVIEW_PANELS
            assert all(url.startswith(served.base) for url in page.requests)
            # The period selector redraws the activity from the API's hourly buckets.
            page.select_option("#every", "hour")
            page.wait_for_selector("#activity-span:has-text('per hour')")
            page.wait_for_timeout(300)
            check_activity(page, served, "hour")
            assert "every=hour" in page.url
            # Choosing an agent lists its claims, and the URL keeps the choice.
            page.click("#agents-table tr[data-agent='agent-slow'] button")
            page.wait_for_selector("#claims-agent:has-text('agent-slow')")
            page.wait_for_timeout(300)
            check_claims(page, served, "claims-table",
                         f"/api/market/claims?status=all&limit={ROWS}&agent=agent-slow")
            assert "agent=agent-slow" in page.url
        page.close()


def test_type_filter_applies_to_every_panel_and_lives_in_the_url(browser, served, market):  # noqa: F811
    page = open_page(browser, served.base + "/", WIDTHS[0])
    page.select_option("#type", "analysis")  # the form submits itself: a new URL
    page.wait_for_url("**/?type=analysis")
    page.wait_for_selector("body[data-ready='true']", state="attached")
    assert page.input_value("#type") == "analysis"
    top = api(served, "/api/market/resource-budgets?limit=15&type=analysis")
    shown = [row.get_attribute("data-artifact-id") for row in page.query_selector_all("#top-table tbody tr")]
    assert shown == [r["artifact_id"] for r in top]
    assert [g.get_attribute("data-type") for g in page.query_selector_all("#pipeline-chart g[data-type]")] == ["analysis"]
    pipeline = api(served, "/api/market/pipeline")
    analysis = next(t for t in pipeline["types"] if t["type"] == "analysis")
    assert float(page.get_attribute("[data-kpi='budget']", "data-value")) == pytest.approx(float(analysis["budget"]))
    check_activity(page, served, "day", "analysis")
    check_agents(page, served, "analysis")
    check_claims(page, served, "claims-table", f"/api/market/claims?status=all&limit={ROWS}&type=analysis")
    page.close()


def test_search_box_opens_an_artifact_with_the_keyboard(browser, served, market):  # noqa: F811
    page = open_page(browser, served.base + "/", WIDTHS[0])
    page.focus("#find-id")
    page.keyboard.type("no-such-artifact")
    page.keyboard.press("Enter")
    page.wait_for_selector("#find-said:has-text('no artifact no-such-artifact')")
    page.fill("#find-id", "")
    page.keyboard.type(market)
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/artifacts/{market}")
    page.wait_for_selector("body[data-ready='true']", state="attached")
    assert page.get_attribute("#terms-table tr[data-term='budget'] td[data-field='value']", "data-value")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.tagName")
    assert focused in ("A", "INPUT", "BUTTON", "SELECT")
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.close()


def test_artifact_page_shows_the_apis_numbers(browser, served, market, db_kind):  # noqa: F811
    path = "/artifacts/" + quote(market, safe="")
    status, html = served.get(path)
    assert status == 200 and len(html.encode("utf-8")) < 150_000
    assert served.get("/artifacts/no-such-artifact")[0] == 404
    budget = api(served, f"/api/market/resource-budgets/{market}")
    history = api(served, f"/api/market/resource-budgets/{market}/history")
    assert history["points"]
    for width in WIDTHS:
        page = open_page(browser, served.base + path, width)
        terms = {row.get_attribute("data-term"): row.query_selector("td[data-field='value']").get_attribute("data-value")
                 for row in page.query_selector_all("#terms-table tr[data-term]")}
        assert list(terms) == ["demand", "bounty", "price", "uncertainty", "multiplier", "budget",
                               "spent", "remaining", "held", "available"]
        same(terms, budget, list(terms))
        for series in ("budget", "spent", "remaining"):
            dots = page.query_selector_all(f"#artifact-history-chart circle[data-series='{series}']")
            assert [float(d.get_attribute("data-value")) for d in dots] == pytest.approx(
                [float(p[series]) for p in history["points"]])
        spends = api(served, f"/api/market/spends?artifact_id={market}&limit={ROWS}")
        check_spends(page, spends)
        holds = api(served, f"/api/market/holds?artifact_id={market}&limit={ROWS}")
        assert [int(r.get_attribute("data-hold-id")) for r in page.query_selector_all("#holds-table tbody tr")] \
            == [h["id"] for h in holds] and holds
        claims = check_claims(page, served, "investigations-table",
                              f"/api/market/claims?artifact_id={market}&status=all&limit={ROWS}")
        assert any(c["reward"] == 0.75 for c in claims)
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        shoot(page, db_kind, "artifact", width)
        if width == WIDTHS[0]:
            page.requests.clear()
            page.evaluate("load()")
            api_calls = [url for url in page.requests if "/api/" in url]
            assert len(api_calls) == len(set(api_calls)) == ARTIFACT_PANELS
            # The spend log pages through the API's pages, newest first.
            page.click("#spends-next")
            page.wait_for_selector(f"#spends-page:has-text('entries {ROWS + 1} to')")
            check_spends(page, api(served, f"/api/market/spends?artifact_id={market}&limit={ROWS}&offset={ROWS}"))
            page.click("#spends-prev")
            page.wait_for_selector("#spends-page:has-text('entries 1 to')")
            check_spends(page, spends)
        page.close()


def test_a_late_answer_never_draws_over_a_newer_page(browser, served, market):  # noqa: F811
    """A periodic refresh of the spend log's first page that answers after a click on "older"
    must not draw the first page's rows under the second page's label."""
    page = open_page(browser, served.base + "/artifacts/" + quote(market, safe=""), WIDTHS[0])
    first_page, held = re.compile(r".*/api/market/spends\?.*offset=0$"), []

    def hold(route):  # the first request for the first page waits; later ones go through
        route.continue_() if held else held.append(route)

    page.route(first_page, hold)
    page.evaluate("() => { refresh(PANELS.spends); }")  # the first page, asked first
    deadline = time.monotonic() + 20
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(10)  # lets Playwright hand the request to `hold`
    assert held
    page.click("#spends-next")
    page.wait_for_selector(f"#spends-page:has-text('entries {ROWS + 1} to')")
    with page.expect_response(lambda response: response.url.endswith("offset=0")):
        held[0].continue_()
    page.evaluate("() => new Promise(resolve => setTimeout(resolve, 50))")  # its draw, if any, runs
    check_spends(page, api(served, f"/api/market/spends?artifact_id={market}&limit={ROWS}&offset={ROWS}"))
    assert page.inner_text("#spends-page").startswith(f"entries {ROWS + 1} to")
    page.close()


def check_spends(page, spends):
    rows = page.query_selector_all("#spends-table tbody tr")
    assert [int(r.get_attribute("data-spend-id")) for r in rows] == [s["id"] for s in spends]
    for row, spend in zip(rows, spends):
        same(cells(row), spend, ("tokens", "kind", "agent", "reverses"))


def test_an_id_with_a_slash_has_its_page(browser, served, cli, db_url, tmp_path):  # noqa: F811
    """An id with `/` (a DOI) reaches its page sent as %2F or as a raw `/`, and the page's
    API calls and links still start from the dashboard's root."""
    artifact = "doi:10.1000/xyz-1"
    rows = tmp_path / "artifacts.csv"
    rows.write_text(f"id,type,title\n{artifact},paper,A paper\n")
    assert cli("load", "artifacts", rows, "--db", db_url).exit_code == 0
    budget = api(served, "/api/market/resource-budgets/" + quote(artifact, safe=""))
    for path in ("/artifacts/" + quote(artifact, safe=""), "/artifacts/" + artifact):
        page = open_page(browser, served.base + path, WIDTHS[1])
        shown = page.get_attribute("#terms-table tr[data-term='budget'] td[data-field='value']", "data-value")
        assert float(shown) == float(budget["budget"])
        assert page.get_attribute("#back", "href") == "./?type=paper"
        page.click("#back")
        page.wait_for_url(served.base + "/?type=paper")
        page.close()


def test_static_report_leaves_out_the_live_panels_and_says_so(browser, served, cli, db_url, tmp_path):  # noqa: F811
    report = tmp_path / "report.html"
    assert cli("report", "--html", report, "--db", db_url).exit_code == 0
    page = open_page(browser, report.as_uri(), WIDTHS[1])
    assert page.is_visible("#static-note") and "alloc serve" in page.inner_text("#static-note")
    for hidden in ("#agents", "#claims", "#activity-types", "#find", "#filter"):
        assert not page.is_visible(hidden)
    assert page.query_selector_all("#top-table tbody tr") and page.query_selector("#top-table a") is None
    assert [url for url in page.requests if not url.startswith("file:")] == []
    page.close()
