"""Issue 13, end to end on `agent-patterns dev`: a local docs site (a login-protected part, a path
robots.txt disallows) crawled with `index: true` into the tenant's search index, an answer that
cites the one page stating the fact, a re-crawl that re-embeds only the page that changed, and
one signed webhook per run, verifiable with the tenant's documented secret, while a webhook URL
pointing at a private address is refused.

The dev server runs as a subprocess (crawl worker and webhook deliveries in it, as they run
locally) on the test run's Redis and Postgres; the docs site, the webhook receiver and the stub
OpenAI API (chat and embeddings) run in this process."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.conftest import LiveServer, bearer
from tests.docs_site import FACT, MEMBERS_ONLY, PAGES, PASSWORD, QUESTION, USERNAME, DocsSite, docs_site
from tests.e2e.test_dev_server import dev_server
from tests.llm_stub import StubProviders
from tests.readme_webhooks import readme_verify

SOURCE = re.compile(r"^\[(\d+)\] [^\n]*\n", re.M)


class CitingStub(StubProviders):
    """The stub providers, whose OpenAI chat model answers a `/v1/answer` prompt as a grounded
    model would: with the fact, citing the number of the source that states it."""

    async def _act(self, provider: str, body: dict[str, Any]) -> Response | dict[str, Any]:
        outcome = await super()._act(provider, body)
        if provider == "openai" and isinstance(outcome, dict) and "content" not in outcome:
            outcome["content"] = self.grounded_answer(str(body["messages"][-1]["content"]))
        return outcome

    @staticmethod
    def sources(prompt: str) -> dict[int, str]:
        """The numbered sources of an answer prompt: number -> its label line and text."""
        heads = list(SOURCE.finditer(prompt))
        ends = [h.start() for h in heads[1:]] + [prompt.find("\n\nQuestion: ")]
        return {int(h.group(1)): prompt[h.start() : end] for h, end in zip(heads, ends, strict=True)}

    def grounded_answer(self, prompt: str) -> str:
        stating = [n for n, text in self.sources(prompt).items() if FACT in text]
        return f"The key rotation window is {FACT} [{stating[0]}]." if stating else "I do not know."

    def embedded(self, since: int = 0) -> list[str]:
        """The texts sent to the embeddings API in requests `since` onwards."""
        texts: list[str] = []
        for provider, body in self.requests[since:]:
            if provider == "embeddings":
                texts += body["input"] if isinstance(body["input"], list) else [body["input"]]
        return texts


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    deliveries: list[Delivery] = field(default_factory=list)

    def app(self) -> Starlette:
        async def receive(request: Request) -> Response:
            self.deliveries.append(Delivery(request.url.path, dict(request.headers), await request.body()))
            return PlainTextResponse("ok")

        return Starlette(routes=[Route("/{path:path}", receive, methods=["POST"])])


@dataclass
class World:
    base: str  # the dev server
    headers: dict[str, str]
    site: DocsSite
    site_url: str
    stub: CitingStub
    receiver: Receiver
    receiver_url: str
    log: list[str]


@pytest.fixture(scope="module")
def world(backend_urls: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    site, stub, receiver = docs_site(), CitingStub(), Receiver()
    with LiveServer(site.app) as site_live, LiveServer(stub.app()) as stub_live, LiveServer(receiver.app()) as hooks:
        env = {
            **backend_urls,  # the test run's Redis and Postgres (the dev server's own are tested elsewhere)
            "AUTH_SECRET": os.environ["AUTH_SECRET"],
            "CRAWL_ALLOWED_PRIVATE_HOSTS_UNSAFE": f"127.0.0.1:{site_live.port},127.0.0.1:{hooks.port}",
            "OPENAI_API_KEY": "sk-test-openai",
            "OPENAI_BASE_URL": f"{stub_live.url}/v1",
            "ANTHROPIC_API_KEY": "sk-test-anthropic",
            "ANTHROPIC_BASE_URL": stub_live.url,
            "LLM_ATTEMPT_TIMEOUT_SECONDS": "5",
            "LLM_TOTAL_TIMEOUT_SECONDS": "10",
        }
        with dev_server(tmp_path_factory.mktemp("grounded") / "data", **env) as (base, proc):
            log: list[str] = []
            threading.Thread(target=drain, args=(proc, log), daemon=True).start()
            tenant = f"docs{uuid.uuid4().hex[:10]}"  # a tenant of its own: its index, runs and webhooks
            yield World(base, bearer(tenant), site, site_live.url, stub, receiver, hooks.url, log)


def drain(proc: subprocess.Popen[str], log: list[str]) -> None:
    """Keep reading the dev server's output, so a full pipe never blocks it (and keep it for failures)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        log.append(line)


def wait_for[T](what: str, probe: Callable[[], T | None], timeout_s: float = 45.0) -> T:
    deadline = time.monotonic() + timeout_s
    while (value := probe()) is None:
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def crawl(w: World) -> tuple[str, dict[str, Any]]:
    """One crawl of the docs site into the index, with the members' login; its run id and report."""
    body = {
        "url": w.site_url + "/",
        "max_pages": 20,
        "index": True,
        "respect_robots": True,
        "webhook_url": w.receiver_url + "/hooks/agent-runs",
        "auth": {
            "login_url": w.site_url + "/login",
            "username": USERNAME,
            "password": PASSWORD,
            "success_url_contains": "/members/",
        },
    }
    started = httpx.post(f"{w.base}/v1/crawls", json=body, headers=w.headers, timeout=10)
    assert started.status_code == 202, started.text
    run_id = str(started.json()["run_id"])

    def ended() -> dict[str, Any] | None:
        report: dict[str, Any] = httpx.get(f"{w.base}/v1/crawls/{run_id}", headers=w.headers, timeout=10).json()
        return report if report["status"] in ("complete", "error") else None

    report = wait_for(f"crawl {run_id}", ended)
    assert report["status"] == "complete", (report.get("error_message"), "".join(w.log[-40:]))
    return run_id, report


def delivery_of(w: World, run_id: str) -> Delivery:
    """The webhook POST of the run's ending, once the receiver has it."""
    event_id = f"msg_{uuid.UUID(run_id).hex}_complete"
    found = wait_for(
        f"the webhook of {run_id}",
        lambda: [d for d in w.receiver.deliveries if d.headers.get("webhook-id") == event_id] or None,
        timeout_s=20,
    )
    return found[0]


def document(w: World, doc_id: str) -> dict[str, Any]:
    response = httpx.get(f"{w.base}/v1/documents/{quote(doc_id, safe='')}", headers=w.headers, timeout=10)
    assert response.status_code == 200, (doc_id, response.text)
    found: dict[str, Any] = response.json()
    return found


def text_of(doc: dict[str, Any]) -> str:
    return "\n".join(c["content"] for c in doc["chunks"])


def test_crawl_index_answer_recrawl_and_webhooks_end_to_end(world: World) -> None:
    w = world
    secret_response = httpx.get(f"{w.base}/v1/webhooks/secret", headers=w.headers, timeout=10)
    assert secret_response.status_code == 200, secret_response.text
    secret = secret_response.json()["secret"]

    # A webhook URL that points at a private address is refused at the door, no run is created.
    for private in ("http://10.0.0.1/hooks", "http://169.254.169.254/latest/meta-data/"):
        refused = httpx.post(
            f"{w.base}/v1/crawls",
            json={"url": w.site_url + "/", "max_pages": 1, "webhook_url": private},
            headers=w.headers,
            timeout=10,
        )
        assert refused.status_code == 422 and "webhook_url" in refused.text, refused.text
    endpoints = {"urls": [w.receiver_url + "/hooks/default", "http://10.0.0.1/hooks"]}
    refused = httpx.put(f"{w.base}/v1/webhooks", json=endpoints, headers=w.headers, timeout=10)
    assert refused.status_code == 422 and "urls.1" in refused.text, refused.text
    assert httpx.get(f"{w.base}/v1/webhooks", headers=w.headers, timeout=10).json()["urls"] == []

    # First crawl: robots.txt honoured, the members' area crawled after the login, all indexed.
    first_run, first = crawl(w)
    result = first["result"]
    base = w.site_url
    assert result["robots"]["respected"] is True and result["robots"]["status"] == "found", result["robots"]
    disallowed = {s["url"] for s in result["skipped"] if s["reason"] == "disallowed by robots.txt"}
    assert disallowed == {base + "/private/"}, result["skipped"]
    assert w.site.hits["/robots.txt"] >= 1
    assert [path for path in w.site.hits if path.startswith("/private")] == []  # never fetched
    expected = {base + path for path in PAGES if not path.startswith("/private")} | {base + "/guide/status"}
    assert {p["final_url"] for p in first["pages"]} == expected, first["pages"]
    assert result["index"] == {"added": len(expected), "changed": 0, "unchanged": 0, "failed": 0, "removed": 0}

    # The documents exist, one per page, with the page's main content as Markdown.
    listed = httpx.get(f"{w.base}/v1/documents", params={"limit": 100}, headers=w.headers, timeout=10).json()
    assert {d["id"] for d in listed["documents"]} == expected
    for doc_id in expected:
        doc = document(w, doc_id)
        title = PAGES.get(doc_id.removeprefix(base), ("Service status", ""))[0]
        assert doc["metadata"]["url"] == doc_id and doc["metadata"]["title"] == title, doc["metadata"]
        assert doc["metadata"]["crawl_run"] == first_run and doc["metadata"]["content_hash"]
        text = text_of(doc)
        assert text.startswith(f"# {title}\n"), text  # Markdown of the main content only: no menu, no footer
        assert "all rights reserved" not in text and "Docs home" not in text, text
    install = text_of(document(w, base + "/guide/install"))
    assert "\n1. Download the package.\n" in install and "```sh\nacme-agent install --workspace demo\n```" in install
    assert re.search(
        r"^[-*] Keys are shown once, when they are created\.$", text_of(document(w, base + "/guide/security")), re.M
    )
    assert MEMBERS_ONLY in text_of(document(w, base + "/members/handbook"))  # the page behind the login

    # An answer whose fact is on one page cites that page (and only it) among several sources.
    answered = httpx.post(f"{w.base}/v1/answer", json={"question": QUESTION}, headers=w.headers, timeout=30)
    assert answered.status_code == 200, (answered.text, "".join(w.log[-30:]))
    answer = answered.json()
    assert answer["grounded"] is True and FACT in answer["answer"], answer
    assert [c["url"] for c in answer["citations"]] == [base + "/guide/security"], answer["citations"]
    assert answer["citations"][0]["title"] == "Security and API keys"
    prompts = [body for provider, body in w.stub.requests if provider == "openai"]
    sources = CitingStub.sources(str(prompts[-1]["messages"][-1]["content"]))
    assert {base + "/guide/configure", base + "/guide/security", base + "/members/handbook"} <= {
        url for text in sources.values() for url in expected if f" — {url}\n" in text
    }, sources  # the citation was picked among several sources

    # A re-crawl after one page changed re-embeds exactly that page.
    before = len(w.stub.requests)
    w.site.edition = 2
    second_run, second = crawl(w)
    assert second["result"]["index"] == {
        "added": 0,
        "changed": 1,
        "unchanged": len(expected) - 1,
        "failed": 0,
        "removed": 0,
    }
    status = document(w, base + "/guide/status")
    assert w.site.status_text() in text_of(status) and status["metadata"]["crawl_run"] == second_run
    assert sorted(w.stub.embedded(before)) == sorted(c["content"] for c in status["chunks"])
    assert {provider for provider, _ in w.stub.requests[before:]} == {"embeddings"}  # and no chat call
    assert [path for path in w.site.hits if path.startswith("/private")] == []

    # One signed webhook per run, verifiable with the tenant's secret; never a second one.
    for run_id in (first_run, second_run):
        delivery = delivery_of(w, run_id)
        assert delivery.path == "/hooks/agent-runs"
        payload = Webhook(secret).verify(delivery.body, delivery.headers)
        assert readme_verify()(secret, delivery.headers, delivery.body)
        assert payload["type"] == "run.complete" and payload["data"]["run_id"] == run_id, payload
        assert payload["data"]["status"] == "complete"
        other = "whsec_" + base64.b64encode(b"\x01" * 32).decode()
        with pytest.raises(WebhookVerificationError):
            Webhook(other).verify(delivery.body, delivery.headers)
    ids = [d.headers["webhook-id"] for d in w.receiver.deliveries]
    assert sorted(ids) == sorted(f"msg_{uuid.UUID(r).hex}_complete" for r in (first_run, second_run)), ids
    runs = httpx.get(f"{w.base}/v1/runs", headers=w.headers, timeout=10).json()["runs"]
    assert {r["run_id"] for r in runs} == {first_run, second_run}  # the refused requests made no run
    last = json.loads(delivery_of(w, second_run).body)
    assert last["data"]["result"]["pages_crawled"] == len(expected), last
