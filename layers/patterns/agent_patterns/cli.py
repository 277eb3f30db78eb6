"""The `agent-patterns` command."""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent-patterns", description="Serverless backend for AI agents.")
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="serve all four functions locally on one port")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    token = sub.add_parser("token", help="print a bearer token for a tenant on the local server")
    token.add_argument("--tenant", required=True, help="tenant id: a-z, 0-9 and _, starting with a letter")
    token.add_argument("--ttl", type=int, default=30 * 86_400, help="lifetime in seconds (default 30 days)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "dev":
        from agent_patterns.devserver import serve

        return serve(args.host, args.port)
    if args.command == "token":
        from agent_patterns.errors import AgentPatternsError
        from agent_patterns.tenancy import issue_token

        try:
            print(issue_token(args.tenant, ttl_seconds=args.ttl))
        except AgentPatternsError as exc:
            print(f"agent-patterns token: {exc.message}", file=sys.stderr)
            return 2
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
