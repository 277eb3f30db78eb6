"""The `agent-patterns` command on a user's mistakes: one line on stderr saying what is wrong, exit 2
for a usage error and 1 for an API that failed or is not there, never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_patterns_dev.gateway import load_function
from tests.conftest import ROOT, LiveServer, python_subprocess_env

RUN_ID = "6c1f6bb4-38a4-4c47-8d35-2a3b5d2e1f00"
TENANT_RULE = "use 1-48 characters a-z, 0-9 and _, starting with a letter"

# Every command that talks to the API, with its arguments (README.md is a file to ingest: cwd is the checkout).
API_COMMANDS = [
    ("usage",),
    ("search", "refunds"),
    ("ask", "refunds?"),
    ("ingest", "README.md"),
    ("events", RUN_ID),
    ("crawl", "https://example.com/"),
    ("cancel", RUN_ID),
]


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = python_subprocess_env()
    env.pop("AGENT_PATTERNS_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "agent_patterns_dev.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )


def one_line(out: subprocess.CompletedProcess[str]) -> str:
    """The only line on stderr (a traceback, or an error line after a blank one, fails here)."""
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


@pytest.fixture(scope="module")
def nothing_there() -> Iterator[str]:
    """A port bound but not listening: connecting is refused, as with no dev server running."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize(
    "args",
    [
        *((*c, "--tenant", "Bad") for c in API_COMMANDS),
        ("usage", "--tenant", ""),
        ("limits", "show", "Bad"),
        ("limits", "set", "acme-corp", "--daily-tokens", "5"),
        ("token", "--tenant", "Bad"),
    ],
    ids=lambda a: " ".join(a),
)
def test_an_invalid_tenant_is_a_usage_error_saying_what_a_tenant_id_looks_like(
    args: tuple[str, ...], nothing_there: str
) -> None:
    out = cli(*args, *(() if args[0] == "token" else ("--api", nothing_there)))
    assert out.returncode == 2, out.stderr
    line = one_line(out)
    assert line.startswith(f"agent-patterns {args[0]}: invalid tenant id ") and line.endswith(TENANT_RULE)


@pytest.mark.parametrize(
    "args",
    [*API_COMMANDS, ("limits", "show", "acme"), ("limits", "set", "acme", "--daily-tokens", "5")],
    ids=lambda a: " ".join(a),
)
def test_an_api_nothing_answers_at_is_one_line_naming_it(args: tuple[str, ...], nothing_there: str) -> None:
    out = cli(*args, "--api", nothing_there, timeout=20)  # events and crawl do not retry for a minute first
    assert out.returncode == 1, out.stderr
    line = one_line(out)
    assert line.startswith(f"agent-patterns {args[0]}: cannot reach the API at {nothing_there}: "), line
    assert "Connection refused" in line
    assert line.endswith("; is the dev server running (`agent-patterns dev`)?")


def test_an_api_url_that_is_not_one_is_the_same_line() -> None:
    out = cli("usage", "--api", "localhost:3000")  # no scheme
    assert out.returncode == 1, out.stderr
    assert one_line(out).startswith("agent-patterns usage: cannot reach the API at localhost:3000: ")


def test_an_api_that_accepts_but_never_answers_times_out_as_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent_patterns_dev import cli as entry
    from agent_patterns_dev import client

    monkeypatch.setattr(client, "TIMEOUT_S", 0.5, raising=False)
    with socket.socket() as s:  # listening, so the connection is made, but nothing ever reads the request
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        assert entry.main(["usage", "--api", url, "--tenant", "acme"]) == 1
    err = capsys.readouterr().err
    assert err == f"agent-patterns usage: cannot reach the API at {url}: no answer in time (ReadTimeout);" + (
        " is the dev server running (`agent-patterns dev`)?\n"
    )


@pytest.fixture(scope="module")
def llm_api() -> Iterator[LiveServer]:
    with LiveServer(load_function("llm").app) as live:
        yield live


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--daily-tokens", "-1"),
        ("--requests-per-minute", str(2**31)),  # above the integer column
        ("--tokens-per-minute", str(2**31)),
        ("--daily-tokens", str(2**63)),  # above the bigint column
        ("--monthly-tokens", str(2**63)),
    ],
)
def test_a_limit_the_server_refuses_is_its_422_message_on_one_line(llm_api: LiveServer, flag: str, value: str) -> None:
    out = cli("limits", "set", "acme", flag, value, "--api", llm_api.url)
    assert out.returncode == 1, out.stderr
    line = one_line(out)
    assert line.startswith("agent-patterns limits: HTTP 422: "), line
    assert flag.removeprefix("--").replace("-", "_") in line


@pytest.fixture(scope="module")
def not_our_api() -> Iterator[LiveServer]:
    """A web server that is not this API (a proxy's HTML error page, a website's home page)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    page = "<html>\n<head><title>413 Request Entity Too Large</title></head>\n<body>\n<h1>413</h1>\n</body>\n</html>\n"

    async def answer(request: Request) -> HTMLResponse:
        if request.url.path.startswith("/v1/admin"):
            return HTMLResponse(page, status_code=413)
        return HTMLResponse("<html>\n<body>Welcome</body>\n</html>\n")

    app = Starlette(routes=[Route("/{path:path}", answer, methods=["GET", "POST", "PUT"])])
    with LiveServer(app) as live:
        yield live


def test_an_html_error_page_is_one_line(not_our_api: LiveServer) -> None:
    out = cli("limits", "set", "acme", "--daily-tokens", "5", "--api", not_our_api.url)
    assert out.returncode == 1, out.stderr
    assert one_line(out).startswith("agent-patterns limits: HTTP 413: <html> <head><title>413 Request Entity")


@pytest.mark.parametrize("args", [("usage",), ("search", "q"), ("cancel", RUN_ID)], ids=lambda a: a[0])
def test_an_answer_that_is_not_json_says_api_may_be_wrong(not_our_api: LiveServer, args: tuple[str, ...]) -> None:
    out = cli(*args, "--api", not_our_api.url)
    assert out.returncode == 1, out.stderr
    assert one_line(out) == (
        f"agent-patterns {args[0]}: HTTP 200: the answer is not a JSON object:"
        f" is {not_our_api.url} the agent-patterns API?"
    )


@pytest.mark.parametrize("name", ["", "   "])
def test_an_empty_operator_name_is_refused_for_what_it_is(name: str) -> None:
    out = cli("token", "--operator", name)
    assert out.returncode == 2, out.stderr
    assert one_line(out) == "agent-patterns token: --operator needs a name saying who you are, e.g. ops@example.com"
    assert out.stdout == ""


@pytest.mark.parametrize("who", [("--tenant", "acme"), ("--operator", "ops@example.com")], ids=lambda w: w[0])
@pytest.mark.parametrize("ttl", ["0", "-5"])
def test_a_token_that_would_be_born_expired_is_refused(ttl: str, who: tuple[str, str]) -> None:
    out = cli("token", *who, "--ttl", ttl)
    assert out.returncode == 2, out.stderr
    assert one_line(out) == f"agent-patterns token: --ttl must be a positive number of seconds, not {ttl}"
    assert out.stdout == ""


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs a file that is listed but cannot be read")
def test_ingest_skips_a_file_it_cannot_read_and_says_why(nothing_there: str) -> None:
    out = cli("ingest", "/proc/self/mem", "--api", nothing_there)  # reading it fails with EIO
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 0
    assert out.stderr.startswith("skipped /proc/self/mem: Input/output error\n")
