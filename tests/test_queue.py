"""The agent work queue through the real entry point, on SQLite and PostgreSQL."""

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from scidex_alloc.allocator import Allocator


def load(cli, db, tmp_path, artifacts, positions):
    (tmp_path / "a.csv").write_text("id,type\n" + "".join(f"{a},{t}\n" for a, t in artifacts))
    (tmp_path / "p.csv").write_text("artifact_id,tokens\n" +
                                    "".join(f"{a},{n}\n" for a, n in positions))
    assert cli("load", "artifacts", tmp_path / "a.csv", "--db", db).exit_code == 0
    assert cli("load", "positions", tmp_path / "p.csv", "--db", db).exit_code == 0


def investigate(cli, db, type_, *rewards):
    """Claim the single artifact of `type_` and finish it once per reward."""
    for reward in rewards:
        claimed = cli("next", "--claim", "--agent", "setup", "--type", type_, "-f", "json",
                      "--db", db).json()
        extra = [] if reward is None else ["--reward", str(reward)]
        assert cli("done", claimed[0]["claim_id"], *extra, "--db", db).exit_code == 0


def test_hand_computed_scores(db_url, cli, tmp_path):
    # Budgets (price 0.5, so budget = 0.1 x demand): A 100, B 50, C 200, D 10.
    load(cli, db_url, tmp_path, [("A", "ta"), ("B", "tb"), ("C", "tc"), ("D", "td")],
         [("A", 1000), ("B", 500), ("C", 2000), ("D", 100)])
    investigate(cli, db_url, "ta", 1.0, 0.5)        # n=2, r=0.75
    investigate(cli, db_url, "tb", 0.2)             # n=1, r=0.2
    investigate(cli, db_url, "td", None, None, None)  # n=3, no rewards: r=0
    # N = 6, ln(7) = 1.9459101090932196, C = sqrt(2):
    #   ucb_A = 0.75 + sqrt(2) * sqrt(ln 7 / 2) = 2.1449588341794583
    #   ucb_B = 0.2  + sqrt(2) * sqrt(ln 7 / 1) = 2.1727697022487513  (the largest)
    #   ucb_D = 0    + sqrt(2) * sqrt(ln 7 / 3) = 1.1389791186424545
    #   C was never investigated: ucb_norm 1.0
    # score = 0.7 * ucb_norm + 0.3 * remaining / 200
    expected = {
        "C": (None, 1.0, 1.0, 1.0),
        "A": (2.1449588341794583, 0.9872002688363568, 0.5, 0.8410401881854498),
        "B": (2.1727697022487513, 1.0, 0.25, 0.775),
        "D": (1.1389791186424545, 0.5242060939379104, 0.05, 0.3819442657565373),
    }
    rows = cli("next", "-f", "json", "--db", db_url).json()
    assert [r["artifact_id"] for r in rows] == ["C", "A", "B", "D"]
    for row in rows:
        ucb, ucb_norm, budget_norm, score = expected[row["artifact_id"]]
        if ucb is None:
            assert row["ucb"] is None and row["investigations"] == 0
        else:
            assert row["ucb"] == pytest.approx(ucb, abs=1e-9)
        assert row["ucb_norm"] == pytest.approx(ucb_norm, abs=1e-9)
        assert row["budget_norm"] == pytest.approx(budget_norm, abs=1e-9)
        assert row["score"] == pytest.approx(score, abs=1e-9)
    assert list(rows[0]) == ["rank", "artifact_id", "type", "title", "score", "ucb", "ucb_norm",
                             "budget_norm", "remaining", "investigations", "mean_reward",
                             "claim_id", "lease_expires_at", "available", "hold_id"]
    by_id = {r["artifact_id"]: r for r in rows}
    assert by_id["A"]["mean_reward"] == 0.75 and by_id["D"]["mean_reward"] == 0
    # W = 1: B and C tie on score 1.0, and the tie goes to the larger remaining budget.
    pure_ucb = cli("next", "--ucb-weight", "1", "-f", "json", "--db", db_url).json()
    assert [r["artifact_id"] for r in pure_ucb] == ["C", "B", "A", "D"]


def test_weight_zero_is_rank_by_remaining(db_url, cli):
    assert cli("generate", "--artifacts", "300", "--seed", "5", "--db", db_url).exit_code == 0
    ranked = cli("rank", "--by", "remaining", "-f", "json", "--db", db_url).json()
    top = ranked[0]["artifact_id"]
    assert cli("next", "--claim", "--agent", "other", "--db", db_url).exit_code == 0
    candidates = [r["artifact_id"] for r in ranked if r["remaining"] > 0 and
                  r["artifact_id"] != top]
    queue = cli("next", "--ucb-weight", "0", "--limit", "1000", "--agent", "me", "-f", "json",
                "--db", db_url).json()
    assert [r["artifact_id"] for r in queue] == candidates


def test_parallel_claimers_get_different_artifacts(db_url, cli, alloc_proc):
    assert cli("generate", "--artifacts", "60", "--seed", "2", "--db", db_url).exit_code == 0
    calls = [("next", "--claim", "--agent", f"a{i}", "-f", "json", "--db", db_url)
             for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda args: alloc_proc(*args), calls))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    claimed = [json.loads(r.stdout)[0]["artifact_id"] for r in results]
    assert len(set(claimed)) == 16
    live = cli("claims", "-f", "json", "--db", db_url).json()
    assert sorted(c["artifact_id"] for c in live) == sorted(claimed)


def test_an_expired_lease_frees_the_artifact(db_url, cli, tmp_path):
    load(cli, db_url, tmp_path, [("only", "hypothesis")], [("only", 100)])
    first = cli("next", "--claim", "--agent", "x", "--lease", "1s", "-f", "json", "--db", db_url)
    assert first.json()[0]["artifact_id"] == "only"
    assert cli("next", "--agent", "y", "-f", "json", "--db", db_url).json() == []
    mine = cli("next", "--agent", "x", "-f", "json", "--db", db_url).json()
    assert mine[0]["claim_id"] == first.json()[0]["claim_id"]
    time.sleep(1.2)
    assert cli("claims", "--expired", "-f", "json", "--db", db_url).json()[0]["agent"] == "x"
    second = cli("next", "--claim", "--agent", "y", "-f", "json", "--db", db_url).json()
    assert second[0]["artifact_id"] == "only"
    assert second[0]["claim_id"] != first.json()[0]["claim_id"]
    late = cli("done", first.json()[0]["claim_id"], "--db", db_url)
    assert late.exit_code == 2 and "expired" in late.stderr


def test_done_and_release_errors(db_url, cli, tmp_path):
    load(cli, db_url, tmp_path, [("a", "hypothesis"), ("b", "hypothesis")],
         [("a", 100), ("b", 50)])
    claims = cli("next", "--claim", "--agent", "x", "--limit", "2", "-f", "json",
                 "--db", db_url).json()
    first, second = claims[0]["claim_id"], claims[1]["claim_id"]
    for bad in ("1.5", "-0.1", "nan", "inf", "abc"):
        result = cli("done", first, "--reward", bad, "--db", db_url)
        assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert len(cli("claims", "-f", "json", "--db", db_url).json()) == 2, "nothing was written"
    assert cli("done", 424242, "--db", db_url).exit_code == 4
    assert cli("done", first, "--reward", "0.5", "--db", db_url).exit_code == 0
    assert cli("done", first, "--reward", "0.5", "--db", db_url).exit_code == 2
    assert cli("release", second, "--db", db_url).exit_code == 0
    assert cli("release", second, "--db", db_url).exit_code == 2
    assert cli("done", second, "--db", db_url).exit_code == 2
    assert cli("next", "--claim", "--db", db_url).exit_code == 2, "--claim needs --agent"
    assert cli("next", "--ucb-weight", "2", "--db", db_url).exit_code == 2
    assert cli("next", "--lease", "soon", "--db", db_url).exit_code == 2
    assert cli("next", "--agent", "x" * 500, "--db", db_url).exit_code == 2
    again = cli("next", "-f", "json", "--db", db_url).json()
    assert {r["artifact_id"] for r in again} == {"a", "b"}, "released and done are free again"


def test_spent_out_artifacts_leave_the_queue(db_url, cli, tmp_path):
    load(cli, db_url, tmp_path, [("a", "hypothesis"), ("b", "hypothesis")],
         [("a", 100), ("b", 50)])
    assert cli("spend", "a", "10", "--db", db_url).exit_code == 0
    assert [r["artifact_id"] for r in cli("next", "-f", "json", "--db", db_url).json()] == ["b"]


def test_python_agent_loop(db_url, cli, tmp_path):
    load(cli, db_url, tmp_path, [("a", "hypothesis"), ("b", "analysis")], [("a", 100), ("b", 50)])
    allocator = Allocator.open(db_url)
    try:
        for _ in range(2):
            (job,) = allocator.next(agent="py", claim=True, limit=1)
            allocator.spend(job.artifact_id, "1", kind="analysis", agent="py")
            allocator.done(job.claim_id, reward=0.5)
        rows = allocator.next(limit=5)
        assert {r.artifact_id for r in rows} == {"a", "b"}
        assert sum(r.investigations for r in rows) == 2
        assert all(math.isclose(r.mean_reward, 0.5) for r in rows if r.investigations)
        assert sum(allocator.budget(r.artifact_id).row.spent for r in rows) == 2
    finally:
        allocator.engine.dispose()
