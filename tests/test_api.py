"""The read-only HTTP API, on SQLite and PostgreSQL, checked against its OpenAPI document."""

import json
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import pytest
from fastapi.testclient import TestClient

from scidex_alloc.allocator import Allocator
from scidex_alloc.serving.api import create_app


@pytest.fixture
def client(db_url, cli):
    assert cli("generate", "--artifacts", "120", "--seed", "4", "--db", db_url).exit_code == 0
    assert cli("snapshot", "--db", db_url).exit_code == 0
    allocator = Allocator.open(db_url)
    with TestClient(create_app(allocator)) as test_client:
        test_client.db_url = db_url
        yield test_client
    allocator.engine.dispose()


@pytest.fixture
def openapi(client):
    return client.get("/openapi.json").json()


def check(openapi, path, response):
    """The response matches what the OpenAPI document promises for it."""
    content = openapi["paths"][path]["get"]["responses"][str(response.status_code)]["content"]
    schema = content["application/json"]["schema"]
    jsonschema.validate(response.json(), {**schema, "components": openapi["components"]})


def test_ranked_budgets_match_the_cli(client, cli, openapi):
    response = client.get("/api/market/resource-budgets",
                          params={"type": "hypothesis", "limit": 5})
    assert response.status_code == 200
    check(openapi, "/api/market/resource-budgets", response)
    expected = cli("rank", "--type", "hypothesis", "--limit", "5", "--format", "json",
                   "--db", client.db_url)
    assert response.json() == json.loads(expected.stdout)
    assert len(response.json()) == 5


def test_paging_and_sort_keys(client, cli):
    everything = cli("rank", "--by", "remaining", "-f", "json", "--db", client.db_url).json()
    page = client.get("/api/market/resource-budgets",
                      params={"by": "remaining", "limit": 10, "offset": 20}).json()
    assert page == everything[20:30]
    assert [r["rank"] for r in page] == list(range(21, 31))
    by_demand = client.get("/api/market/resource-budgets", params={"by": "demand"}).json()
    assert [r["demand"] for r in by_demand] == sorted((r["demand"] for r in by_demand),
                                                      reverse=True)


def test_one_artifact_and_unknown(client, cli, openapi):
    top = client.get("/api/market/resource-budgets", params={"limit": 1}).json()[0]
    one = client.get(f"/api/market/resource-budgets/{top['artifact_id']}")
    assert one.status_code == 200 and one.json() == top
    check(openapi, "/api/market/resource-budgets/{artifact_id}", one)
    missing = client.get("/api/market/resource-budgets/no-such-thing")
    assert missing.status_code == 404 and missing.json() == {
        "error": "unknown artifact 'no-such-thing'"}
    check(openapi, "/api/market/resource-budgets/{artifact_id}", missing)


def test_pipeline_totals_and_history(client, cli, openapi):
    response = client.get("/api/market/pipeline")
    assert response.status_code == 200
    check(openapi, "/api/market/pipeline", response)
    data = response.json()
    ranked = cli("rank", "-f", "json", "--db", client.db_url).json()
    for totals in data["types"]:
        mine = [r for r in ranked if r["type"] == totals["type"]]
        assert totals["artifacts"] == len(mine)
        for name in ("demand", "budget", "spent", "remaining"):
            assert totals[name] == pytest.approx(sum(r[name] for r in mine), abs=1e-6)
    assert data["totals"]["artifacts"] == len(ranked)
    assert data["period"] == "hour" and len(data["history"]) == 1
    assert data["history"][0]["budget"] == pytest.approx(sum(r["budget"] for r in ranked),
                                                         abs=1e-6)


def test_health_and_openapi(client, openapi):
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    check(openapi, "/healthz", health)
    assert openapi["info"]["title"] == "scidex-alloc"
    assert set(openapi["paths"]) >= {"/api/market/resource-budgets", "/healthz",
                                     "/api/market/resource-budgets/{artifact_id}",
                                     "/api/market/pipeline"}


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": "1e9"}, {"limit": 10**9},
                                    {"offset": -1}, {"by": "price"}, {"limit": "ten"}])
def test_invalid_parameters_get_422_json(client, openapi, params):
    response = client.get("/api/market/resource-budgets", params=params)
    assert response.status_code == 422
    assert set(response.json()) == {"error"}
    check(openapi, "/api/market/resource-budgets", response)
    assert "Traceback" not in response.text and client.db_url not in response.text


def test_nothing_writes(client):
    for path in ("/api/market/resource-budgets", "/api/market/pipeline", "/healthz"):
        assert client.post(path).status_code == 405
        assert client.delete(path).status_code == 405


def test_a_database_outage_is_a_503_without_the_url():
    url = "postgresql://alice:s3cret@127.0.0.1:1/nowhere"
    allocator = Allocator.open(url)
    with TestClient(create_app(allocator)) as test_client:
        for path in ("/healthz", "/api/market/resource-budgets", "/api/market/pipeline"):
            response = test_client.get(path)
            assert response.status_code == 503 and response.json() == {
                "error": "database unavailable"}
            assert "s3cret" not in response.text and "alice" not in response.text


def test_dashboard_page_is_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "<script>" in page.text and "http://" not in page.text.replace(
        "http://www.w3.org/2000/svg", "")
    assert "src=" not in page.text and "<link rel=\"stylesheet\"" not in page.text


def test_requests_are_served_while_spends_write(db_url, cli, alloc_proc, served):
    ranked = cli("rank", "--limit", "3", "-f", "json", "--db", db_url).json()
    spends = [("spend", ranked[i % 3]["artifact_id"], "0.01", "--db", db_url) for i in range(12)]
    with ThreadPoolExecutor(6) as pool:
        writers = [pool.submit(alloc_proc, *args) for args in spends]
        readers = [pool.submit(served.get, "/api/market/resource-budgets?limit=20")
                   for _ in range(40)]
        assert all(w.result().returncode == 0 for w in writers)
        assert all(r.result()[0] == 200 for r in readers)
    spent = sum(r["spent"] for r in served.get("/api/market/resource-budgets?limit=3")[1])
    assert spent == pytest.approx(0.12 + sum(r["spent"] for r in ranked), abs=1e-6)
