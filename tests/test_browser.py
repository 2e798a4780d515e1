"""The dashboard in a real headless Chromium (the system's, driven by Playwright)."""

import os
import shutil

import pytest

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def _chromium() -> str | None:
    for candidate in (shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    if executable is None:
        reason = "the system's chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI=true: the browser test is mandatory, but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def open_dashboard(browser, url):
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.wait_for_selector("body[data-ready='true']", state="attached", timeout=20_000)
    assert errors == []
    return page


def table_numbers(page):
    rows = {}
    for row in page.query_selector_all("#top-table tbody tr"):
        rows[row.get_attribute("data-artifact-id")] = {
            cell.get_attribute("data-field"): float(cell.get_attribute("data-value"))
            for cell in row.query_selector_all("td[data-field]")}
    return rows


def chart_numbers(page):
    return {
        group.get_attribute("data-type"): {
            bar.get_attribute("data-measure"): float(bar.get_attribute("data-value"))
            for bar in group.query_selector_all("rect[data-measure]")}
        for group in page.query_selector_all("#pipeline-chart g[data-type]")}


def expected_table(rows):
    return {r["artifact_id"]: {k: float(r[k]) for k in ("budget", "spent", "remaining")}
            for r in rows}


def expected_chart(pipeline):
    return {t["type"]: {k: float(t[k]) for k in ("demand", "budget", "spent", "remaining")}
            for t in pipeline["types"]}


def test_dashboard_shows_the_databases_numbers(browser, served, tmp_path):
    page = open_dashboard(browser, served.base + "/")
    status, top = served.get("/api/market/resource-budgets?limit=15")
    assert status == 200
    assert list(table_numbers(page)) == [r["artifact_id"] for r in top]
    assert table_numbers(page) == expected_table(top)
    _, pipeline = served.get("/api/market/pipeline")
    assert chart_numbers(page) == expected_chart(pipeline)
    assert page.query_selector("#history-chart path[data-series='budget']") is not None
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    page.close()


def test_dashboard_refreshes_without_a_reload(browser, served, cli, db_url):
    page = open_dashboard(browser, served.base + "/")
    first = next(iter(table_numbers(page)))
    before = table_numbers(page)[first]["spent"]
    page.evaluate("window.marker = 'same page'")
    assert cli("spend", first, "1.25", "--db", db_url).exit_code == 0
    page.evaluate("load()")  # what the page's timer calls every 15 seconds
    page.wait_for_function(
        f"document.querySelector(\"tr[data-artifact-id='{first}'] td[data-field='spent']\")"
        f".dataset.value != '{before:g}'", timeout=10_000)
    assert table_numbers(page)[first]["spent"] == pytest.approx(before + 1.25)
    assert page.evaluate("window.marker") == "same page"
    page.close()


def test_static_report_shows_the_same_numbers(browser, served, cli, db_url, tmp_path):
    report = tmp_path / "report.html"
    result = cli("report", "--html", report, "--db", db_url)
    assert result.exit_code == 0, result.stderr
    page = open_dashboard(browser, report.as_uri())
    _, top = served.get("/api/market/resource-budgets?limit=15")
    _, pipeline = served.get("/api/market/pipeline")
    assert table_numbers(page) == expected_table(top)
    assert chart_numbers(page) == expected_chart(pipeline)
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    page.close()
