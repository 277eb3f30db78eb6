"""Cold start: import + app construction of each function in a fresh process, against a floor.

The floor is a bare FastAPI + Mangum hello-world (bench/floor_app.py). Each round starts a new
interpreter per module, in interleaved order, so machine noise hits all of them alike; medians
and ratios to the floor are printed.

    uv run python bench/cold_start.py [--rounds 15]

`--deployed` measures what a deployment runs: secrets given as ARNs (REDIS_URL_SECRET_ARN,
DATABASE_URL_SECRET_ARN, AUTH_SECRET_ARN, OPENAI_API_KEY_SECRET_ARN,
ANTHROPIC_API_KEY_SECRET_ARN) served by moto's Secrets Manager, real backends (embedded Redis
and Postgres), and INIT plus the first request in the same fresh process
(bench/cold_start_probe.py, environment in bench/cold_start_deployed.py). `--request healthz`
sends shared/events/apigw_healthz.json to every function; `--request route` sends each one a
real route: llm_complete.json (the providers are a local stub), search_query.json,
crawl_start.json (to a public IP literal: no DNS here), and healthz for streaming.

    uv run python bench/cold_start.py --deployed [--request healthz|route] [--rounds 11]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "shared" / "events"
FLOOR_NAME = "floor (FastAPI+Mangum)"
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


def percentile_90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.9 * (len(ordered) - 1))]


def init_only(rounds: int, functions: list[str]) -> None:
    cases = {FLOOR_NAME: FLOOR.format(bench=str(ROOT / "bench"))}
    cases.update({name: FUNCTION.format(name=name) for name in functions})
    for body in cases.values():  # warm the .pyc cache so every case starts equal
        run_once(body)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, body in cases.items():
            samples[name].append(run_once(body))
    floor = statistics.median(s["ms"] for s in samples[FLOOR_NAME])
    print(f"{'module':24} {'median ms':>10} {'p90 ms':>8} {'ratio':>7} {'peak RSS MB':>12}")
    for name, runs in samples.items():
        ms = [s["ms"] for s in runs]
        med = statistics.median(ms)
        rss = statistics.median(s["rss_mb"] for s in runs)
        print(f"{name:24} {med:10.1f} {percentile_90(ms):8.1f} {med / floor:7.2f}x {rss:12.1f}")


def deployed_case(function: str, request: str) -> tuple[Path, str | None]:
    """The sample event a function gets first, and a body replacing the sample's (None: as is).
    Prompts and queries are unique per run, so no run is answered from an earlier run's cache."""
    if request == "healthz" or function in ("floor", "streaming"):
        return EVENTS / "apigw_healthz.json", None
    nonce = uuid.uuid4().hex[:12]
    path = EVENTS / {"llm": "llm_complete.json", "search": "search_query.json", "crawl": "crawl_start.json"}[function]
    body = json.loads(json.loads(path.read_text(encoding="utf-8"))["body"])
    if function == "llm":
        body["prompt"] = f"{body['prompt']} ({nonce})"
    elif function == "search":
        body["query"] = f"{body['query']} {nonce}"
    else:
        body["url"] = "https://93.184.215.14/"  # a public address that needs no DNS lookup
    return path, json.dumps(body)


def run_deployed(
    function: str, request: str, env: dict[str, str], *, snapstart: bool = False, importtime: bool = False
) -> dict[str, Any]:
    event, body = deployed_case(function, request)
    flags = ["-X", "importtime"] if importtime else []
    argv = [sys.executable, *flags, str(ROOT / "bench" / "cold_start_probe.py"), function, str(event)]
    argv += [body] if body is not None else []
    argv += ["--snapstart"] if snapstart else []
    out = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in out.stdout.splitlines() if line.startswith('{"probe"')]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{function}: probe failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])["probe"]
    if result["status"] >= 300:
        raise RuntimeError(f"{function}: the first request answered {result['status']}: {result}\n{out.stdout[-3000:]}")
    if importtime:
        result["importtime"] = out.stderr
    return result


def import_report(function: str, stderr: str, top: int = 12) -> None:
    """What `-X importtime` says a cold start imports, per phase: self time summed per top-level
    package, and the heaviest imports by cumulative time."""
    phases: dict[str, list[tuple[int, int, str]]] = {"INIT": [], "first request": []}
    phase = "INIT"
    for line in stderr.splitlines():
        if line.startswith("probe: first request"):
            phase = "first request"
        elif line.startswith("import time:") and "|" in line and "[us]" not in line:
            own, cumulative, module = (part.strip() for part in line.removeprefix("import time:").split("|"))
            phases[phase].append((int(own), int(cumulative), module))
    print(f"\n{function}: python -X importtime, by phase (ms)")
    for phase, rows in phases.items():
        per_package: dict[str, int] = {}
        for us, _, module in rows:
            root = module.split(".")[0]
            per_package[root] = per_package.get(root, 0) + us
        total = sum(per_package.values()) / 1000
        print(f"  {phase}: {len(rows)} modules, {total:.0f} ms of imports")
        ranked = sorted(per_package.items(), key=lambda kv: -kv[1])[:top]
        print("    by package (self):   " + ", ".join(f"{pkg} {us / 1000:.0f}" for pkg, us in ranked))
        heaviest = sorted(rows, key=lambda r: -r[1])[:top]
        print("    heaviest (cumulative): " + ", ".join(f"{mod} {cum / 1000:.0f}" for _, cum, mod in heaviest))


def deployed(rounds: int, functions: list[str], request: str, snapstart: bool, importtime: list[str]) -> None:
    from cold_start_deployed import deployed_services, function_environment

    with deployed_services() as (endpoint, arns, queue_url, stub_url):
        envs = {name: function_environment(endpoint, arns, queue_url, stub_url, name) for name in ["floor", *functions]}
        for function in envs:  # warm the .pyc cache (and create tenant schemas) so every case starts equal
            run_deployed(function, request, envs[function], snapstart=snapstart)
        for function in importtime:
            probe = run_deployed(function, request, envs[function], snapstart=snapstart, importtime=True)
            import_report(function, probe["importtime"])
        if rounds == 0:
            return
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in envs}
        for _ in range(rounds):
            for function, env in envs.items():
                samples[function].append(run_deployed(function, request, env, snapstart=snapstart))
    print_deployed(samples, request, snapstart, rounds)


def print_deployed(samples: dict[str, list[dict[str, float]]], request: str, snapstart: bool, rounds: int) -> None:
    """INIT and first request per function, medians and p90, ratios to the floor. The cold total
    is INIT + first request; under --snapstart it is what a restored environment runs (after-
    restore hooks + first request; Lambda's own restore time comes on top), INIT being paid when
    the version is published."""

    def cold(s: dict[str, float], function: str) -> float:
        restored = snapstart and function != "floor"  # the floor has no SnapStart hooks: it runs INIT
        return (s["hooks_ms"] if restored else s["init_ms"]) + s["first_ms"]

    def med(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(s[key] for s in runs)

    def hooks(runs: list[dict[str, float]]) -> str:
        return f"{med(runs, 'hooks_ms'):.1f}" if snapstart else ""

    floor = samples["floor"]
    floor_init = med(floor, "init_ms")
    floor_cold = statistics.median(cold(s, "floor") for s in floor)
    mode = "SnapStart simulated (hooks run, restore not included)" if snapstart else "no SnapStart"
    print(f"secrets as ARNs (moto Secrets Manager), first request: {request}, {mode}, {rounds} rounds")
    cold_label = "hooks+1st" if snapstart else "INIT+1st"
    print(
        f"{'function':24} {'INIT med':>9} {'p90':>7} {'ratio':>6}  {'hooks' if snapstart else '':>6}  {'1st req med':>11} {'p90':>7}"
        f"  {cold_label:>9} {'p90':>7} {'ratio':>6} {'RSS MB':>7}"
    )
    for function, runs in samples.items():
        init = [s["init_ms"] for s in runs]
        first = [s["first_ms"] for s in runs]
        totals = [cold(s, function) for s in runs]
        total = statistics.median(totals)
        label = FLOOR_NAME if function == "floor" else function
        print(
            f"{label:24} {med(runs, 'init_ms'):9.1f} {percentile_90(init):7.1f} {med(runs, 'init_ms') / floor_init:5.2f}x"
            f"  {hooks(runs):>6}  {med(runs, 'first_ms'):11.1f} {percentile_90(first):7.1f}"
            f"  {total:9.1f} {percentile_90(totals):7.1f} {total / floor_cold:5.2f}x {med(runs, 'rss_mb'):7.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--functions", nargs="*", default=["llm", "search", "crawl", "streaming"])
    parser.add_argument("--deployed", action="store_true", help="secrets as ARNs, INIT + first request")
    parser.add_argument("--request", choices=["healthz", "route"], default="healthz")
    parser.add_argument("--snapstart", action="store_true", help="with --deployed: run the SnapStart hooks")
    parser.add_argument("--importtime", nargs="*", default=[], metavar="FUNCTION", help="with --deployed")
    args = parser.parse_args()
    if args.deployed:
        sys.path.insert(0, str(ROOT / "bench"))
        deployed(args.rounds, args.functions, args.request, args.snapstart, args.importtime)
    else:
        init_only(args.rounds, args.functions)


if __name__ == "__main__":
    main()
