"""Case 10's agent: the README's Python loop (claim the best next investigation, spend a
little on it, close it with a reward), one process with its own Allocator, until a
deadline; with RESERVE, the loop that reserves RESERVE with its claim and settles its
hold for AMOUNT as it closes the claim.

    python bench/agent.py DB AGENT AMOUNT [RESERVE]

Opens the allocator, prints `ready`, reads the deadline (epoch seconds) from stdin, loops
until then, and prints {"agent", "completed", "errors", "empty", "seconds", "finished"}:
errors by message, `empty` when the queue had nothing left (the README's loop stops
there), the seconds each completed investigation took and when it finished (epoch).
"""

import json
import random
import sys
import time
import traceback


def main(db, agent, amount, reserve=None):
    from scidex_alloc import Allocator

    rng = random.Random(agent)
    completed, empty, errors, seconds, finished = 0, 0, {}, [], []
    with Allocator.open(db) as allocator:
        print("ready", flush=True)
        deadline = float(sys.stdin.readline())
        while time.time() < deadline:
            started = time.perf_counter()
            try:
                jobs = allocator.next(agent=agent, claim=True, limit=1, reserve=reserve)
                if not jobs:
                    empty += 1
                    break
                job = jobs[0]
                if reserve is None:
                    allocator.spend(job.artifact_id, amount, kind="analysis", agent=agent,
                                    key=f"{agent}-{job.claim_id}")
                    allocator.done(job.claim_id, reward=round(rng.random(), 3))
                else:
                    allocator.done(job.claim_id, reward=round(rng.random(), 3), spend=amount,
                                   kind="analysis")
                completed += 1
                seconds.append(round(time.perf_counter() - started, 4))
                finished.append(round(time.time(), 3))
            except Exception as error:  # counted, reported, and the loop goes on
                lines = str(error).strip().splitlines() or [""]
                where = traceback.extract_tb(error.__traceback__)[-1]
                text = (f"{type(error).__name__}: {lines[0][:200]} (raised at "
                        f"{where.filename.rsplit('/', 1)[-1]}:{where.lineno})")
                errors[text] = errors.get(text, 0) + 1
    print(json.dumps({"agent": agent, "completed": completed, "errors": errors,
                      "empty": empty, "seconds": seconds, "finished": finished}))


if __name__ == "__main__":
    main(*sys.argv[1:])
