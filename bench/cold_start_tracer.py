"""What Powertools Tracer would add to INIT, in fresh interpreters, interleaved rounds, medians.

template.yaml used to turn on active X-Ray tracing while nothing was instrumented; instrumenting
means `Tracer()` at INIT, which needs aws-xray-sdk (not a dependency of this project: run it in a
throwaway environment) and, by default, patches every library X-Ray knows (botocore, httpx, ...).

    uv run --with aws-xray-sdk python bench/cold_start_tracer.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import json, sys, time
t0 = time.perf_counter()
{body}
print(json.dumps({{"ms": (time.perf_counter() - t0) * 1000}}))
"""
POWERTOOLS = "from aws_lambda_powertools import Logger, Metrics; Logger(service='bench'); Metrics(namespace='Bench')"
TRACER = "from aws_lambda_powertools import Tracer; Tracer(service='bench')"
TRACER_NO_PATCH = "from aws_lambda_powertools import Tracer; Tracer(service='bench', auto_patch=False)"
LLM = "from agent_patterns_dev.gateway import load_function; load_function('llm').handler"
# With secrets given as ARNs, INIT has loaded boto3 through Powertools parameters already, and the
# X-Ray SDK shares botocore with it.
LLM_ARNS = f"from aws_lambda_powertools.utilities import parameters; {LLM}"
CASES = {
    "Logger+Metrics (today)": POWERTOOLS,
    "+ Tracer()": f"{POWERTOOLS}; {TRACER}",
    "+ Tracer(auto_patch=False)": f"{POWERTOOLS}; {TRACER_NO_PATCH}",
    "llm INIT, URLs (today)": LLM,
    "llm INIT, URLs + Tracer()": f"{LLM}; {TRACER}",
    "llm INIT, ARNs (today)": LLM_ARNS,
    "llm INIT, ARNs + Tracer()": f"{LLM_ARNS}; {TRACER}",
}
BASELINE = {
    "+": "Logger+Metrics (today)",
    "llm INIT, URLs": "llm INIT, URLs (today)",
    "llm INIT, ARNs": "llm INIT, ARNs (today)",
}


def lambda_env() -> dict[str, str]:
    """A Lambda environment as far as Powertools can tell (it turns the Tracer off elsewhere)."""
    env = {k: v for k, v in os.environ.items() if k not in ("POWERTOOLS_TRACE_DISABLED", "AWS_SAM_LOCAL")}
    env.update(
        AWS_LAMBDA_FUNCTION_NAME="bench",
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
        REDIS_URL="redis://127.0.0.1:6379/0",
        DATABASE_URL="postgresql://postgres@127.0.0.1:5432/postgres",
        AUTH_SECRET="bench-secret",
        POWERTOOLS_METRICS_DISABLED="true",
    )
    return env


def run_once(body: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(body=body)],
        env=lambda_env(),
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["ms"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    if importlib.util.find_spec("aws_xray_sdk") is None:
        sys.exit("aws-xray-sdk is not installed: uv run --with aws-xray-sdk python bench/cold_start_tracer.py")
    for body in CASES.values():  # warm the .pyc cache
        run_once(body)
    samples: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.rounds):
        for name, body in CASES.items():
            samples[name].append(run_once(body))
    medians = {name: statistics.median(ms) for name, ms in samples.items()}
    print(f"{'INIT':28} {'median ms':>10} {'p90 ms':>8} {'added ms':>9}")
    for name, ms in samples.items():
        base = medians[next((b for prefix, b in BASELINE.items() if name.startswith(prefix)), name)]
        p90 = sorted(ms)[int(0.9 * (len(ms) - 1))]
        print(f"{name:28} {medians[name]:10.1f} {p90:8.1f} {medians[name] - base:+9.1f}")


if __name__ == "__main__":
    main()
