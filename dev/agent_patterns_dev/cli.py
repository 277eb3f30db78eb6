"""The `agent-patterns` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from agent_patterns_dev.settings import dev_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent-patterns", description="Serverless backend for AI agents.")
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="serve all four functions locally on one port")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    token = sub.add_parser("token", help="print a bearer token for a tenant (or an operator) on the local server")
    who = token.add_mutually_exclusive_group(required=True)
    who.add_argument("--tenant", help="tenant id: a-z, 0-9 and _, starting with a letter")
    who.add_argument("--operator", metavar="NAME", help="an operator token (limits routes), naming who you are")
    token.add_argument("--ttl", type=int, default=30 * 86_400, help="lifetime in seconds (default 30 days)")
    crawl = sub.add_parser("crawl", help="start a crawl; --follow shows its progress live")
    crawl.add_argument("url")
    crawl.add_argument("--max-pages", type=int, default=None, help="1-100 (default 100)")
    crawl.add_argument("--follow", action="store_true", help="show live progress and a summary at the end")
    _api_options(crawl)
    cancel = sub.add_parser("cancel", help="cancel a queued or running crawl (it ends as an error, reason cancelled)")
    cancel.add_argument("run_id")
    _api_options(cancel)
    ing = sub.add_parser("ingest", help="store files (or every text file in a folder) as the tenant's documents")
    ing.add_argument("paths", nargs="+", help="files or folders (.md, .txt, .html, .rst, .json, ...)")
    ing.add_argument("--batch", type=int, default=20, help="documents per request (default 20)")
    _api_options(ing)
    sea = sub.add_parser("search", help="search the tenant's documents")
    sea.add_argument("query")
    sea.add_argument("--limit", type=int, default=5)
    sea.add_argument("--mode", choices=("vector", "hybrid", "keyword"), default="hybrid")
    _api_options(sea)
    ask = sub.add_parser("ask", help="answer a question from the tenant's documents, streamed, with sources")
    ask.add_argument("question")
    ask.add_argument("--k", type=int, default=6, help="sources to retrieve (default 6)")
    _api_options(ask)
    usage = sub.add_parser("usage", help="the tenant's LLM usage from the ledger, and its budget now")
    usage.add_argument("--from", dest="start", help="first UTC day, YYYY-MM-DD (default: today)")
    usage.add_argument("--to", dest="end", help="last UTC day, YYYY-MM-DD (default: today)")
    usage.add_argument("--group-by", choices=("model", "day"), default="model")
    usage.add_argument("--json", action="store_true", help="the API's JSON as is")
    _api_options(usage)
    lim = sub.add_parser("limits", help="show or change a tenant's budgets and rates (operators)")
    lim_sub = lim.add_subparsers(dest="action", required=True)
    show = lim_sub.add_parser("show", help="a tenant's overrides and the limits in force")
    show.add_argument("tenant_id")
    change = lim_sub.add_parser("set", help="change overrides; 'none' clears one back to the default")
    change.add_argument("tenant_id")
    for name in LIMIT_NAMES:
        change.add_argument(f"--{name.replace('_', '-')}", dest=name, metavar="N|none")
    for p in (show, change):
        p.add_argument("--api", default=dev_settings().api, help="API base URL (default: the local dev server)")
        p.add_argument("--token", help="operator token (default: AGENT_PATTERNS_TOKEN, or minted locally)")
    ev = sub.add_parser("events", help="print a run's events as they happen, until it ends")
    ev.add_argument("run_id")
    _api_options(ev)
    ev.add_argument("--after", help="start after this event id")
    ev.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


LIMIT_NAMES = (
    "daily_tokens",
    "daily_usd",
    "monthly_tokens",
    "monthly_usd",
    "requests_per_minute",
    "tokens_per_minute",
)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    )


TEXT_SUFFIXES = {".md", ".markdown", ".txt", ".rst", ".html", ".htm", ".json", ".csv", ".py", ".yaml", ".yml"}


def _files(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {raw}")
    # once each, though named twice (a file and its folder): one request may not hold an id twice
    first: dict[Path, Path] = {}
    for path in found:
        first.setdefault(path.resolve(), path)
    return list(first.values())


def _ingest(args: argparse.Namespace) -> int:
    from agent_patterns_dev.client import ApiError, ingest_documents, resolve_token

    try:
        files = _files(args.paths)
    except FileNotFoundError as exc:
        print(f"agent-patterns ingest: {exc}", file=sys.stderr)
        return 2
    token = resolve_token(args.token, args.tenant)
    done = stored_files = chunks = 0
    for start in range(0, len(files), max(1, args.batch)):
        batch = files[start : start + max(1, args.batch)]
        documents = []
        for path in batch:
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                print(f"skipped {path}: not UTF-8 text", file=sys.stderr)
                continue
            except OSError as exc:  # unreadable (permissions, a device, gone since it was listed)
                print(f"skipped {path}: {exc.strerror or exc}", file=sys.stderr)
                continue
            if not text.strip():
                print(f"skipped {path}: empty", file=sys.stderr)
                continue
            documents.append({"id": str(path), "text": text, "metadata": {"path": str(path), "title": path.stem}})
        if documents:
            try:
                stored = ingest_documents(args.api, token, documents)["documents"]
            except ApiError as exc:
                if not done:
                    raise  # main prints it; nothing was stored
                print(f"\nagent-patterns ingest: {exc} (after {done} of {len(files)} files)", file=sys.stderr)
                return 1
            chunks += sum(int(d["chunks"]) for d in stored)
            stored_files += len(stored)
        done += len(batch)
        print(f"\r{_bar(done, len(files))} files", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    skipped = f" ({done - stored_files} skipped)" if done > stored_files else ""
    print(f"{stored_files} files, {chunks} chunks stored{skipped}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from agent_patterns_dev.client import resolve_token, search_documents

    body = {"query": args.query, "limit": args.limit, "mode": args.mode}
    matches = search_documents(args.api, resolve_token(args.token, args.tenant), body)["matches"]
    if not matches:
        print("no matches")
    for n, m in enumerate(matches, start=1):
        score = m.get("score", m.get("similarity"))
        shown = " ".join(str(m["content"]).split())[:160]
        print(
            f"{n:>2}. {m['document_id']}  (score {score:.4f})" if score is not None else f"{n:>2}. {m['document_id']}"
        )
        print(f"    {shown}")
    return 0


def _ask(args: argparse.Namespace) -> int:
    from agent_patterns_dev.client import ApiError, ask_stream, resolve_token

    citations: list[dict[str, object]] = []
    token = resolve_token(args.token, args.tenant)
    streamed = False
    try:
        for chunk in ask_stream(args.api, token, {"question": args.question, "k": args.k}):
            for choice in chunk.get("choices", ()):
                print((choice.get("delta") or {}).get("content") or "", end="", flush=True)
                streamed = True
            citations = chunk.get("citations", citations)
    except (ApiError, KeyboardInterrupt):
        if streamed:
            print()  # ends the half-printed answer, so main's error line stands on its own
        raise
    print()
    if citations:
        print("\nSources:")
        for c in citations:
            print(f"  [{c['n']}] {c.get('title') or ''} {c.get('url') or c.get('document_id')}".rstrip())
    return 0


def _usage(args: argparse.Namespace) -> int:
    import json

    from agent_patterns_dev.client import get_usage, resolve_token

    params = {"group_by": args.group_by, **{k: v for k, v in (("from", args.start), ("to", args.end)) if v}}
    data = get_usage(args.api, resolve_token(args.token, args.tenant), params)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    head = [args.group_by, "calls", "cache hits", "input", "output", "cached", "tokens", "cost USD"]
    rows = [head]
    for g in [*data["groups"], {args.group_by: "total", **data["totals"]}]:
        rows.append(
            [str(g[args.group_by])]
            + [str(g[k]) for k in ("calls", "cache_hits", "input_tokens", "output_tokens", "cached_input_tokens")]
            + [str(g["tokens"]), f"{g['cost_usd']:.6f}"]
        )
    print(f"usage {data['from']} .. {data['to']}")
    print(_table(rows))
    b = data["budget"]
    left = "no limit" if b["remaining_tokens"] is None else f"{b['remaining_tokens']} tokens left"
    usd = "" if b["remaining_usd"] is None else f", ${b['remaining_usd']:.6f} left"
    print(f"today: {b['used_tokens']} tokens used, {b['reserved_tokens']} reserved by calls in flight, {left}{usd}")
    return 0


def _limit_value(name: str, text: str) -> object:
    """A limit as the API takes it: a whole number, dollars as an exact decimal string, or None."""
    from decimal import Decimal, InvalidOperation

    if text.lower() == "none":
        return None
    if name.endswith("_usd"):
        try:
            return str(Decimal(text))
        except InvalidOperation:
            raise ValueError(text) from None
    return int(text)


def _limits(args: argparse.Namespace) -> int:
    import json

    from agent_patterns.tenancy import validate_tenant_id
    from agent_patterns_dev.client import get_limits, operator_token, set_limits

    validate_tenant_id(args.tenant_id)  # before a request, like every other command's --tenant
    token = operator_token(args.token)
    if args.action == "show":
        data = get_limits(args.api, token, args.tenant_id)
    else:
        changes: dict[str, object] = {}
        for name in LIMIT_NAMES:
            value = getattr(args, name)
            if value is not None:
                try:
                    changes[name] = _limit_value(name, value)
                except ValueError:
                    flag = "--" + name.replace("_", "-")
                    print(f"agent-patterns limits set: {flag} {value!r} is not a number (or none)", file=sys.stderr)
                    return 2
        if not changes:
            print("agent-patterns limits set: name at least one limit, e.g. --daily-usd 5", file=sys.stderr)
            return 2
        data = set_limits(args.api, token, args.tenant_id, changes)
    print(json.dumps(data, indent=2))
    return 0


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

    from agent_patterns_dev.client import follow_events, resolve_token

    token = resolve_token(args.token, args.tenant)
    for event in follow_events(args.api, args.run_id, token, after=args.after):
        if args.json:
            print(json.dumps({"id": event.id, "type": event.type, "payload": event.payload}), flush=True)
        else:
            print(f"{event.id}  {event.type:<8}  {json.dumps(event.payload)}", flush=True)
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from agent_patterns_dev.client import cancel_crawl, resolve_token

    result = cancel_crawl(args.api, resolve_token(args.token, args.tenant), args.run_id)
    print(f"run {result['run_id']} {result['reason']} (status: {result['status']})")
    return 0


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = min(width, round(width * done / total)) if total else 0
    return "[" + "#" * filled + "-" * (width - filled) + f"] {done}/{total}"


def _crawl(args: argparse.Namespace) -> int:
    import time

    from agent_patterns_dev.client import ApiError, follow_events, get_crawl, resolve_token, start_crawl

    token = resolve_token(args.token, args.tenant)
    started = start_crawl(args.api, token, args.url, args.max_pages)
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
    except (ApiError, KeyboardInterrupt):
        if live and last is not None:
            print(file=sys.stderr)  # ends the progress bar, so main's error line stands on its own
        raise
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


def _token(args: argparse.Namespace) -> int:
    from agent_patterns.tenancy import issue_operator_token, issue_token
    from agent_patterns_dev.environment import export_auth_secret

    if args.ttl <= 0:  # jwt would sign it, already expired
        print(f"agent-patterns token: --ttl must be a positive number of seconds, not {args.ttl}", file=sys.stderr)
        return 2
    if args.operator is not None and not args.operator.strip():
        print("agent-patterns token: --operator needs a name saying who you are, e.g. ops@example.com", file=sys.stderr)
        return 2
    export_auth_secret(dev_settings().data_dir)
    if args.operator is not None:
        print(issue_operator_token(args.operator.strip(), ttl_seconds=args.ttl))
    else:
        print(issue_token(args.tenant, ttl_seconds=args.ttl))
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "token": _token,
    "events": _events,
    "crawl": _crawl,
    "cancel": _cancel,
    "usage": _usage,
    "ingest": _ingest,
    "search": _search,
    "ask": _ask,
    "limits": _limits,
}


def main(argv: list[str] | None = None) -> int:
    """Runs a command; the errors a user can cause end as one line on stderr, never a traceback."""
    args = _parser().parse_args(argv)
    if args.command == "dev":
        from agent_patterns_dev.devserver import serve

        return serve(args.host, args.port)
    from agent_patterns.errors import AgentPatternsError, InvalidTenantError
    from agent_patterns_dev.client import ApiError

    name = f"agent-patterns {args.command}"
    try:
        return COMMANDS[args.command](args)
    except InvalidTenantError as exc:  # a usage error, like argparse's own
        print(f"{name}: {exc.message}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    except AgentPatternsError as exc:  # e.g. no AUTH_SECRET to mint a token with
        print(f"{name}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C while following a run or streaming an answer
        print(file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
