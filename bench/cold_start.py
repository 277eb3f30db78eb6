"""Cold start: import + app construction of each function in a fresh process, against a floor.

The floor is a bare FastAPI + Mangum hello-world (bench/floor_app.py). Each round starts a new
interpreter per module, in interleaved order, so machine noise hits all of them alike; medians
and ratios to the floor are printed.

    uv run python bench/cold_start.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import json, resource, sys, time
t0 = time.perf_counter()
{body}
elapsed = time.perf_counter() - t0
print(json.dumps({{"ms": elapsed * 1000, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
FLOOR = "sys.path.insert(0, {bench!r}); import floor_app; floor_app.handler"
FUNCTION = "from agent_patterns_dev.gateway import load_function; load_function({name!r}).app"


def lambda_like_env() -> dict[str, str]:
    """What a function sees at INIT on Lambda: URLs set (nothing is contacted during init)."""
    env = dict(os.environ)
    env.update(
        AWS_LAMBDA_FUNCTION_NAME="bench",
        REDIS_URL="redis://127.0.0.1:6379/0",
        DATABASE_URL="postgresql://postgres@127.0.0.1:5432/postgres",
        AUTH_SECRET="bench-secret",
        POWERTOOLS_METRICS_DISABLED="true",
    )
    return env


def run_once(body: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(body=body)],
        env=lambda_like_env(),
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--functions", nargs="*", default=["llm", "search", "crawl", "streaming"])
    args = parser.parse_args()
    cases = {"floor (FastAPI+Mangum)": FLOOR.format(bench=str(ROOT / "bench"))}
    cases.update({name: FUNCTION.format(name=name) for name in args.functions})
    for body in cases.values():  # warm the .pyc cache so every case starts equal
        run_once(body)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, body in cases.items():
            samples[name].append(run_once(body))
    floor = statistics.median(s["ms"] for s in samples["floor (FastAPI+Mangum)"])
    print(f"{'module':24} {'median ms':>10} {'p90 ms':>8} {'ratio':>7} {'peak RSS MB':>12}")
    for name, runs in samples.items():
        ms = sorted(s["ms"] for s in runs)
        med = statistics.median(ms)
        p90 = ms[int(0.9 * (len(ms) - 1))]
        rss = statistics.median(s["rss_mb"] for s in runs)
        print(f"{name:24} {med:10.1f} {p90:8.1f} {med / floor:7.2f}x {rss:12.1f}")


if __name__ == "__main__":
    main()
