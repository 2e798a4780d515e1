"""Smoke test of the benchmark suite (bench/): the small mode runs on SQLite and reports
every case. No timing is asserted; the real numbers are in docs/benchmarks.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_small_mode_runs_every_case(tmp_path):
    report = tmp_path / "benchmarks.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--sizes", "small", "--db", "sqlite", "--out", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sys.path.insert(0, str(ROOT))
    from bench.context import CASES

    text = report.read_text()
    for number, name in CASES.items():
        assert name in result.stdout, f"case {number} missing from the printed table"
        assert name in text, f"case {number} missing from the report"
    assert "## Machine" in text and "SQLite" in text
    assert "NOTE:" not in result.stdout, result.stdout  # results of alloc and floors agree
