"""Cases 10 and 16: sixteen agents working the queue at once, on a copy of the main
database.

First the Python loop without holds (claim, spend, done), one process per agent, each
with its own Allocator (bench/agent.py): investigations completed within the duration
per second, between them, and errors (none allowed: no lock timeout, no `database is
locked`). Then (case 16) the README's Python loop, which reserves with its claim and
settles its hold as it closes it, for as long: its rate against the first. Then the
README's shell loop (16 shells calling `alloc next --claim --reserve` and `alloc done
--spend`), whose rate is bounded by process start-up: two `alloc` processes per
investigation, on 2 cores. Then `alloc audit` on the result.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import time

from bench import copies, procs
from bench.context import CASES, Row, duration, size_label, top_remaining, verdict
from bench.procs import Samples, alloc_argv

AGENT = str(procs.BENCH / "agent.py")
AGENTS = 16
SECONDS = {"full": 60.0, "small": 5.0}
AMOUNT = "0.01"  # tokens spent per investigation: small, so no budget runs out
RESERVE = "0.02"  # tokens held per claim by the loops that reserve, then settle AMOUNT

SHELL_LOOP = r"""
# The README's loop, bounded by a deadline (microseconds since the epoch) instead of a count.
alloc() { %(alloc)s "$@"; }
export SCIDEX_DB=%(db)s
for n in $(seq %(agents)d); do
  ( while (( ${EPOCHREALTIME/./} < %(deadline)d )); do
      queue=$(alloc next --claim --agent "s$n" --reserve %(reserve)s --format csv) || { echo err; continue; }
      job=$(echo "$queue" | tail -n +2)
      [ -n "$job" ] || { echo empty; break; }
      claim=$(echo "$job" | rev | cut -d, -f4 | rev)
      if alloc done "$claim" --reward "0.$((RANDOM %% 10))" --spend %(amount)s --kind debate > /dev/null; then
        echo "ok $EPOCHREALTIME"
      else
        echo err
      fi
    done ) > "%(out)s/s$n.txt" 2> "%(out)s/s$n.err" &
done
wait
"""


def _python_loop(ctx, db, seconds: float, reserve: str | None = None) -> dict:
    """Start the agents, wait until every one has opened its allocator, then let them all
    go at once for `seconds`; with `reserve`, the loop that reserves and settles."""
    env = dict(os.environ, NO_COLOR="1")
    errs = [open(ctx.tmp / f"agent{n}.err", "wb") for n in range(AGENTS)]
    extra = [] if reserve is None else [reserve]
    agents = [subprocess.Popen([sys.executable, AGENT, db.url, f"agent-{n}", AMOUNT, *extra],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                               text=True, env=env) for n, err in enumerate(errs)]
    try:
        for agent in agents:
            line = agent.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"case 10: an agent did not start: {line!r}")
        started = time.time()
        deadline = started + seconds
        for agent in agents:
            agent.stdin.write(f"{deadline}\n")
            agent.stdin.close()
        results = [json.loads(agent.stdout.read()) for agent in agents]
        for agent in agents:
            agent.wait(timeout=seconds + 300)
        elapsed = time.time() - started
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
        for err in errs:
            err.close()
    errors: dict = {}
    for result in results:
        for text, count in result["errors"].items():
            errors[text] = errors.get(text, 0) + count
    durations = [s for r in results for s in r["seconds"]]
    return {"completed": sum(r["completed"] for r in results), "elapsed": elapsed,
            "in_time": sum(1 for r in results for t in r["finished"] if t <= deadline),
            "errors": errors, "empty": sum(r["empty"] for r in results),
            "p50": statistics.median(durations) if durations else float("nan"),
            "p99": _quantile(durations, 0.99)}


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _shell_loop(ctx, db, seconds: float) -> dict:
    out = ctx.tmp / "shell-loop"
    out.mkdir(exist_ok=True)
    started = time.time()
    deadline = started + seconds
    script = SHELL_LOOP % {"alloc": shlex.join(alloc_argv()), "db": shlex.quote(db.url),
                           "agents": AGENTS, "deadline": int(deadline * 1e6),
                           "amount": AMOUNT, "reserve": RESERVE, "out": out}
    procs.run(["bash", "-c", script])
    elapsed = time.time() - started
    lines = [line for n in range(1, AGENTS + 1)
             for line in (out / f"s{n}.txt").read_text().splitlines()]
    stderr = [line for n in range(1, AGENTS + 1)
              for line in (out / f"s{n}.err").read_text().splitlines() if line.strip()]
    finished = [float(line.split()[1]) for line in lines if line.startswith("ok ")]
    return {"completed": len(finished), "in_time": sum(1 for t in finished if t <= deadline),
            "errors": lines.count("err"),
            "empty": lines.count("empty"), "elapsed": elapsed, "stderr": stderr}


def case_agents(ctx, backend, dbs: dict) -> None:
    main = ctx.cfg.main_size
    seconds = ctx.agent_seconds or SECONDS[ctx.cfg.name]
    # Each Python loop on a copy of its own: the first's investigations would make the
    # second's queue longer to rank.
    copy = copies.make(backend, dbs[main], "agents", ctx)
    try:
        ctx.log(f"case 10 {backend.kind}: {AGENTS} Python agents for {seconds:g} s")
        py = _python_loop(ctx, copy, seconds)
        audit = _audit(ctx, copy)
    finally:
        copies.drop(backend, copy)
    copy = copies.make(backend, dbs[main], "agents", ctx)
    try:
        ctx.log(f"case 16 {backend.kind}: {AGENTS} Python agents reserving for {seconds:g} s")
        held = _python_loop(ctx, copy, seconds, RESERVE)
        ctx.log(f"case 10 {backend.kind}: {AGENTS} shell loops for {seconds:g} s")
        sh = _shell_loop(ctx, copy, seconds)
        audit_held = _audit(ctx, copy)
        # The per-call floor, on the same copy: one short alloc process.
        artifact = top_remaining(copy, 1)[0]
        floor = Samples()
        for _ in range(max(3, ctx.repeat)):
            run = procs.run(alloc_argv() + ["budget", artifact, "-f", "json", "--db", copy.url])
            floor.add(run.seconds)
            floor.cpu.append(run.cpu_seconds)
    finally:
        copies.drop(backend, copy)
    _rows(ctx, backend, seconds, py, sh, audit, floor)
    _holds_row(ctx, backend, seconds, py, held, audit_held)


def _audit(ctx, copy):
    return procs.run(alloc_argv() + ["audit", "-f", "json", "--db", copy.url], check=False,
                     stdout_path=ctx.tmp / "audit10.json")


def _failed_checks(audit) -> list[str]:
    try:
        report = json.loads(audit.stdout)
    except ValueError:
        return [audit.stderr.decode(errors="replace").strip()[-300:]]
    return [f"{c['name']} ({len(c['rows'])} rows)" for c in report["checks"] if not c["ok"]]


def _rows(ctx, backend, seconds: float, py: dict, sh: dict, audit, floor: Samples) -> None:
    main = ctx.cfg.main_size
    rate = py["in_time"] / seconds
    errors = sum(py["errors"].values())
    if errors or py["empty"]:
        ctx.notes.append(f"case 10 {backend.kind}: the Python agents met {errors} errors "
                         f"({'; '.join(f'{n}x {t}' for t, n in py['errors'].items())}) and "
                         f"{py['empty']} empty queues")
    if audit.returncode != 0:
        ctx.notes.append(f"case 10 {backend.kind}: alloc audit exited {audit.returncode} "
                         f"after the agents' loops: {', '.join(_failed_checks(audit))}")
    ctx.rows.append(Row(
        10, f"{CASES[10]}: Python loop", backend.kind, size_label(main), f"{rate:,.1f}/s", "", "",
        ">= 50/s; 0 errors; audit exit 0",
        verdict(rate >= 50 and errors == 0 and audit.returncode == 0,
             main == ctx.cfg.target_size),
        f"{py['in_time']:,} investigations completed within {seconds:g} s by {AGENTS} "
        f"processes ({py['completed']:,} when the last iterations ended, at "
        f"{py['elapsed']:.1f} s); {errors} errors; `alloc audit` after it exit "
        f"{audit.returncode}; one investigation (claim, spend, done) p50 "
        f"{py['p50'] * 1000:.0f} ms, p99 {py['p99'] * 1000:.0f} ms", rate, None))
    sh_rate = sh["in_time"] / seconds
    cores = os.cpu_count() or 1
    bound = cores / (2 * floor.cpu_median)
    if sh["errors"] or sh["stderr"]:
        ctx.notes.append(f"case 10 {backend.kind}: the shell loops met {sh['errors']} errors: "
                         f"{' / '.join(sh['stderr'][:3])[:500]}")
    ctx.rows.append(Row(
        10, f"{CASES[10]}: shell loop", backend.kind, size_label(main), f"{sh_rate:,.1f}/s",
        f"{duration(floor.median)} per call", "", "(reported)", None,
        f"{sh['in_time']:,} investigations completed within {seconds:g} s by {AGENTS} shells "
        f"({sh['completed']:,} at {sh['elapsed']:.1f} s); {sh['errors']} errors; bounded by "
        f"process start-up: 2 alloc processes per investigation (`next --claim --reserve`, "
        f"`done --spend`) at {floor.cpu_median:.3f} s "
        f"CPU each (`alloc budget ID`, the per-call floor) on {cores} cores allow "
        f"~{bound:.1f}/s", sh_rate, floor.median))


def _holds_row(ctx, backend, seconds: float, plain: dict, held: dict, audit) -> None:
    """Case 16: the loop that reserves and settles, against the loop without holds; then
    the shell loop on the same copy, and the audit of both."""
    errors = sum(held["errors"].values())
    if audit.returncode != 0:
        ctx.notes.append(f"case 16 {backend.kind}: alloc audit exited {audit.returncode} "
                         f"after the reserving loops: {', '.join(_failed_checks(audit))}")
    if errors or held["empty"]:
        ctx.notes.append(f"case 16 {backend.kind}: the reserving agents met {errors} errors "
                         f"({'; '.join(f'{n}x {t}' for t, n in held['errors'].items())}) and "
                         f"{held['empty']} empty queues")
    rate, base = held["in_time"] / seconds, plain["in_time"] / seconds
    share = rate / base if base else float("nan")
    ctx.rows.append(Row(
        16, CASES[16], backend.kind, size_label(ctx.cfg.main_size), f"{rate:,.1f}/s",
        f"{base:,.1f}/s without holds", f"{share:.0%}", ">= 80%; 0 errors; audit exit 0",
        verdict(share >= 0.8 and errors == 0 and audit.returncode == 0,
             ctx.cfg.main_size == ctx.cfg.target_size),
        f"{held['in_time']:,} investigations (claim reserving {RESERVE} tokens, done settling "
        f"{AMOUNT}) within {seconds:g} s by {AGENTS} processes, on a copy of its own; "
        f"{errors} errors; `alloc audit` after it and the shell loop exit {audit.returncode}; p50 "
        f"{held['p50'] * 1000:.0f} ms, p99 {held['p99'] * 1000:.0f} ms per investigation",
        share, None))
