"""The `agent-patterns` command."""

from __future__ import annotations

import argparse
import sys

from agent_patterns_dev.settings import dev_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent-patterns", description="Serverless backend for AI agents.")
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="serve all four functions locally on one port")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    token = sub.add_parser("token", help="print a bearer token for a tenant on the local server")
    token.add_argument("--tenant", required=True, help="tenant id: a-z, 0-9 and _, starting with a letter")
    token.add_argument("--ttl", type=int, default=30 * 86_400, help="lifetime in seconds (default 30 days)")
    crawl = sub.add_parser("crawl", help="start a crawl; --follow shows its progress live")
    crawl.add_argument("url")
    crawl.add_argument("--max-pages", type=int, default=None, help="1-100 (default 100)")
    crawl.add_argument("--follow", action="store_true", help="show live progress and a summary at the end")
    _api_options(crawl)
    cancel = sub.add_parser("cancel", help="cancel a queued or running crawl (it ends as an error, reason cancelled)")
    cancel.add_argument("run_id")
    _api_options(cancel)
    ev = sub.add_parser("events", help="print a run's events as they happen, until it ends")
    ev.add_argument("run_id")
    _api_options(ev)
    ev.add_argument("--after", help="start after this event id")
    ev.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


def _api_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--api",
        default=dev_settings().api,
        help="API base URL (default: the local dev server, or AGENT_PATTERNS_API)",
    )
    p.add_argument("--token", help="bearer or stream token (default: AGENT_PATTERNS_TOKEN)")
    p.add_argument("--tenant", default="local", help="local server only: mint a token for this tenant")


def _events(args: argparse.Namespace) -> int:
    import json

    from agent_patterns_dev.client import ApiError, follow_events, resolve_token

    token = resolve_token(args.token, args.tenant)
    try:
        for event in follow_events(args.api, args.run_id, token, after=args.after):
            if args.json:
                print(json.dumps({"id": event.id, "type": event.type, "payload": event.payload}), flush=True)
            else:
                print(f"{event.id}  {event.type:<8}  {json.dumps(event.payload)}", flush=True)
    except ApiError as exc:
        print(f"agent-patterns events: {exc}", file=sys.stderr)
        return 1
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from agent_patterns_dev.client import ApiError, cancel_crawl, resolve_token

    try:
        result = cancel_crawl(args.api, resolve_token(args.token, args.tenant), args.run_id)
    except ApiError as exc:
        print(f"agent-patterns cancel: {exc}", file=sys.stderr)
        return 1
    print(f"run {result['run_id']} {result['reason']} (status: {result['status']})")
    return 0


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = min(width, round(width * done / total)) if total else 0
    return "[" + "#" * filled + "-" * (width - filled) + f"] {done}/{total}"


def _crawl(args: argparse.Namespace) -> int:
    import time

    from agent_patterns_dev.client import ApiError, follow_events, get_crawl, resolve_token, start_crawl

    token = resolve_token(args.token, args.tenant)
    try:
        started = start_crawl(args.api, token, args.url, args.max_pages)
    except ApiError as exc:
        print(f"agent-patterns crawl: {exc}", file=sys.stderr)
        return 1
    run_id = started["run_id"]
    print(f"run {run_id} {started['status']}")
    if not args.follow:
        print(f"events: {started['events_url']}?token={started['stream_token']}")
        return 0
    began = time.monotonic()
    live = sys.stderr.isatty()
    last = None
    try:
        for event in follow_events(args.api, run_id, started["stream_token"], events_url=started["events_url"]):
            p = event.payload
            if event.type == "running" and p.get("url"):
                line = f"{_bar(int(p.get('pages_crawled', 0)), int(p.get('max_pages', 0)))}  {p['url']}"
                print(("\r\033[K" if live else "") + line, end="" if live else "\n", file=sys.stderr, flush=True)
            last = event
    except ApiError as exc:
        print(f"\nagent-patterns crawl: {exc}", file=sys.stderr)
        return 1
    if live:
        print(file=sys.stderr)
    if last is None or last.type == "error":
        message = last.payload.get("message") if last else "the stream ended without a result"
        print(f"run {run_id} failed: {message}")
        return 1
    report = get_crawl(args.api, token, run_id)
    result = report.get("result") or {}
    rows = [
        ("pages", result.get("pages_crawled", 0)),
        ("forms", result.get("forms_found", 0)),
        ("links", result.get("links_found", 0)),
        ("blocked URLs", len(result.get("blocked", []))),
    ]
    print(f"run {run_id} complete in {time.monotonic() - began:.1f} s")
    for name, value in rows:
        print(f"  {name:<13} {value:>6}")
    for blocked in result.get("blocked", [])[:20]:
        print(f"  blocked  {blocked['url']}  ({blocked['reason']})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "dev":
        from agent_patterns_dev.devserver import serve

        return serve(args.host, args.port)
    if args.command == "token":
        from agent_patterns.errors import AgentPatternsError
        from agent_patterns.tenancy import issue_token
        from agent_patterns_dev.environment import export_auth_secret

        export_auth_secret(dev_settings().data_dir)

        try:
            print(issue_token(args.tenant, ttl_seconds=args.ttl))
        except AgentPatternsError as exc:
            print(f"agent-patterns token: {exc.message}", file=sys.stderr)
            return 2
        return 0
    if args.command == "events":
        return _events(args)
    if args.command == "crawl":
        return _crawl(args)
    if args.command == "cancel":
        return _cancel(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
