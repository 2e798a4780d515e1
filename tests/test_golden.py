"""Read commands print exactly what they printed before the code was reshaped.

The files under tests/golden/ were written from a copy of sample.db (whose data does not
depend on today's date). A change in output must be deliberate: regenerate them with
`SCIDEX_WRITE_GOLDEN=1 python -m pytest tests/test_golden.py` and review the diff.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"

FORMATS = ("table", "json", "csv")
COMMANDS = {
    **{f"rank-{by}-{fmt}": ("rank", "--by", by, "--format", fmt)
       for by in ("budget", "remaining", "demand") for fmt in FORMATS},
    "rank-hypothesis-10": ("rank", "--type", "hypothesis", "--limit", "10"),
    **{f"budget-{fmt}": ("budget", "hyp-0000033", "--format", fmt) for fmt in ("table", "json")},
    **{f"next-{fmt}": ("next", "--format", fmt) for fmt in FORMATS},
    "next-remaining-only": ("next", "--type", "hypothesis", "--ucb-weight", "0", "--limit", "20"),
    **{f"plan-{fmt}": ("plan", "--pool", "20000000", "--unit", "llm-tokens", "--cap", "2000000",
                       "--format", fmt) for fmt in FORMATS},
    **{f"history-{fmt}": ("history", "hyp-0000033", "--format", fmt) for fmt in FORMATS},
    **{f"movers-{fmt}": ("history", "--top", "10", "--format", fmt) for fmt in FORMATS},
    **{f"log-{fmt}": ("log", "--format", fmt) for fmt in FORMATS},
    **{f"audit-{fmt}": ("audit", "--format", fmt) for fmt in ("table", "json")},
    **{f"convert-{fmt}": ("convert", "2.5", "--format", fmt) for fmt in ("table", "json")},
    "convert-back": ("convert", "5000", "--from", "llm-tokens", "--to", "tokens"),
    **{f"rates-{fmt}": ("rates", "--format", fmt) for fmt in FORMATS},
}


@pytest.fixture(scope="module")
def sample_copy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("golden") / "sample.db"
    shutil.copy(ROOT / "sample.db", path)
    return path


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_read_commands_print_what_they_printed(name, sample_copy, cli):
    result = cli(*COMMANDS[name], "--db", sample_copy)
    assert result.exit_code == 0, result.stderr
    expected = GOLDEN / f"{name}.txt"
    if os.environ.get("SCIDEX_WRITE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        expected.write_text(result.stdout, encoding="utf-8")
    assert result.stdout == expected.read_text(encoding="utf-8")
