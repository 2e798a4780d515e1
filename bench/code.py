"""Which scidex_alloc is measured: the working tree (default) or a git revision.

`--code REV` extracts `git archive REV scidex_alloc` into bench/.data/code/SHA and puts it
first on sys.path and PYTHONPATH, so both this process and every `alloc` child import
that exact code, even while the working tree is being edited.
"""

from __future__ import annotations

import compileall
import io
import os
import subprocess
import sys
import tarfile

from bench import procs

REPO = procs.BENCH.parent


def use(rev: str | None) -> str:
    """Set up the code to measure, compiled to bytecode as an install does (without it,
    every `alloc` process would compile the package again where PYTHONDONTWRITEBYTECODE
    is set); returns a description for the report."""
    if rev is None:
        compileall.compile_dir(REPO / "scidex_alloc", quiet=1)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--",
                                "scidex_alloc"], capture_output=True, text=True).stdout.strip()
        head = _git("rev-parse", "--short", "HEAD")
        return f"working tree at {head}" + (" with uncommitted changes in scidex_alloc/"
                                             if dirty else "")
    sha = _git("rev-parse", rev)
    target = procs.BENCH / ".data" / "code" / sha[:12]
    if not (target / "scidex_alloc" / "__init__.py").exists():
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", sha,
                                  "scidex_alloc"], capture_output=True, check=True).stdout
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(target)
    compileall.compile_dir(target / "scidex_alloc", quiet=1)
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(target)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    subject = _git("log", "-1", "--format=%s", sha)
    return f"commit {sha[:7]} ({subject[:70]}), extracted to bench/.data/code/{sha[:12]}"


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                          check=True).stdout.strip()
