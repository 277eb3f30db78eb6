"""Crawl runs from request to result: start, process job messages, continue, persist.

One job message (SQS on AWS, in-process locally) is `{"kind": "crawl", "run_id", "tenant_id",
"step"}`; an EventBridge schedule sends `{"kind": "schedule", "tenant_id", "url", "max_pages"}`
and the run is created when it arrives, and another sends `{"kind": "reap"}` every minute to end
runs whose worker died (`runs.leases`) and re-queue webhook deliveries left in an outbox
(`webhooks.outbox.sweep_outbox`). Each step runs at most once: a redelivered message
finds the step's idempotency record, or a finished run, and does nothing. While a step runs
its worker holds the run's lease; a cancelled or reaped run makes it stop and write nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import unquote

from pydantic import BaseModel, Field, HttpUrl, StringConstraints, field_validator, model_validator
from pydantic_core import PydanticCustomError

from agent_patterns.backends import connection, get_redis
from agent_patterns.backends.sqs import send_job
from agent_patterns.crawl.engine import run_crawl
from agent_patterns.crawl.netguard import BlockedAddressError, EgressPolicy
from agent_patterns.crawl.politeness import MAX_REQUESTS_PER_SECOND, MIN_REQUESTS_PER_SECOND
from agent_patterns.crawl.settings import crawl_settings
from agent_patterns.crawl.types import MAX_PAGES_LIMIT, AuthConfig, CrawlConfig, CrawlResult
from agent_patterns.crawl.urls import without_userinfo
from agent_patterns.errors import BackendUnavailableError, NotFoundError, RunEndedError, ValidationError
from agent_patterns.inputs import RequestBody
from agent_patterns.runs import events
from agent_patterns.runs.events import checkpoint_key
from agent_patterns.runs.leases import Lease, reap_expired_runs, reap_if_expired
from agent_patterns.runs.records import TERMINAL_STATUSES, get_run, parse_run_id
from agent_patterns.tenancy import tenant, validate_tenant_id

if TYPE_CHECKING:
    from psycopg import AsyncConnection

CHECKPOINT_TTL_S = 6 * 3600
KIND = "crawl"


class AuthRequest(RequestBody):
    """Login before crawling. Give `password` (sealed at rest) or `password_secret_arn`."""

    login_url: HttpUrl
    username: str = Field(min_length=1, max_length=256)
    password: str | None = Field(None, min_length=1, max_length=1024)
    password_secret_arn: str | None = Field(None, pattern=r"^arn:aws[a-z-]*:secretsmanager:")
    username_selector: str | None = Field(None, max_length=500)
    password_selector: str | None = Field(None, max_length=500)
    submit_selector: str | None = Field(None, max_length=500)
    success_selector: str | None = Field(None, max_length=500)
    success_url_contains: str | None = Field(None, max_length=500)

    @model_validator(mode="after")
    def _one_secret(self) -> AuthRequest:
        if (self.password is None) == (self.password_secret_arn is None):
            raise ValueError("give exactly one of password and password_secret_arn")
        return self


PathPattern = Annotated[str, StringConstraints(pattern=r"^/[^\x00-\x1f]{0,199}$")]  # a glob on the URL path


class CrawlRequest(RequestBody):
    url: HttpUrl
    max_pages: int = Field(MAX_PAGES_LIMIT, ge=1, le=MAX_PAGES_LIMIT)
    auth: AuthRequest | None = None
    webhook_url: HttpUrl | None = None  # POSTed to when the run ends (webhooks.outbox), besides the tenant's
    index: bool | Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")] = Field(
        False, description="store each page in the tenant's search index (true, or a collection name)"
    )
    prune: bool = Field(False, description="with index: remove the site's documents this crawl no longer finds")
    respect_robots: bool = Field(True, description="honour the site's robots.txt (false: recorded in the result)")
    use_sitemap: bool = Field(True, description="seed the crawl from the site's sitemap.xml")
    include: list[PathPattern] = Field(default_factory=list, max_length=20, description="crawl only these paths")
    exclude: list[PathPattern] = Field(default_factory=list, max_length=20, description="never these paths")
    max_requests_per_second: float | None = Field(
        None,
        strict=True,  # a number: not "5", not true
        description="requests per second to the site's origin (default CRAWL_ORIGIN_MAX_RPS)",
    )

    @field_validator("max_requests_per_second")
    @classmethod
    def _rate(cls, rate: float | None) -> float | None:
        if rate is not None and not MIN_REQUESTS_PER_SECOND <= rate <= MAX_REQUESTS_PER_SECOND:  # NaN too
            raise PydanticCustomError(
                "rate_out_of_range",
                "must be between {low} and {high} requests per second, got {rate}",
                {"low": f"{MIN_REQUESTS_PER_SECOND:g}", "high": f"{MAX_REQUESTS_PER_SECOND:g}", "rate": rate},
            )
        return rate

    @model_validator(mode="after")
    def _prune_needs_index(self) -> CrawlRequest:
        if self.prune and self.index is False:
            raise ValueError("prune needs index: true (or a collection name)")
        return self


class JobMessage(BaseModel):
    kind: Literal["crawl", "schedule"]
    tenant_id: str
    run_id: str | None = None
    step: int = Field(0, ge=0, le=1000)
    url: HttpUrl | None = None
    max_pages: int = Field(MAX_PAGES_LIMIT, ge=1, le=MAX_PAGES_LIMIT)

    @field_validator("tenant_id")
    @classmethod
    def _tenant(cls, v: str) -> str:
        return validate_tenant_id(v)


def _policy() -> EgressPolicy:
    return EgressPolicy(crawl_settings().crawl_allowed_private_hosts)


async def validate_request(request: CrawlRequest) -> None:
    """Refuse what the crawler would refuse anyway, at the door: 422 with the reason."""
    policy = _policy()
    targets = [("url", str(request.url))]
    if request.auth is not None:
        targets.append(("auth.login_url", str(request.auth.login_url)))
    for name, url in targets:
        try:
            await policy.check_url(url)
        except BlockedAddressError as exc:
            raise ValidationError(f"{name}: {exc}; the crawler reaches public addresses only") from exc
    if request.webhook_url is not None:  # the same rule, for where the run's ending is POSTed
        from agent_patterns.webhooks.targets import check_target

        await check_target(str(request.webhook_url), "webhook_url")


def _stored_request(request: CrawlRequest) -> dict[str, Any]:
    """The run's request as stored: passwords only sealed, never in the clear. Credentials in
    the URL (`https://user:pw@host/`) leave the URL: they are kept sealed and given to the
    browser as HTTP credentials, so no URL anywhere (result, events, logs) carries them."""
    from agent_patterns.crawl.sealing import seal

    data = request.model_dump(mode="json", exclude_none=True)
    url = request.url
    if url.username or url.password:
        data["url"] = without_userinfo(str(url))
        data["http_credentials_sealed"] = seal(json.dumps([unquote(url.username or ""), unquote(url.password or "")]))
    auth = data.get("auth")
    if auth and "password" in auth:
        auth["password_sealed"] = seal(auth.pop("password"))
    return data


def _unsealed_http_credentials(stored: dict[str, Any]) -> tuple[str, str] | None:
    from agent_patterns.crawl.sealing import unseal

    sealed = stored.get("http_credentials_sealed")
    if not sealed:
        return None
    user, password = json.loads(unseal(sealed))
    return str(user), str(password)


def public_request(stored: dict[str, Any]) -> dict[str, Any]:
    """The request as shown to users: no password, sealed or not."""
    shown: dict[str, Any] = json.loads(json.dumps(stored))
    shown.pop("http_credentials_sealed", None)
    if isinstance(shown.get("auth"), dict):
        shown["auth"].pop("password_sealed", None)
        shown["auth"].pop("password", None)
    return shown


async def start_run(tenant_id: str, request: CrawlRequest) -> str:
    """Record a queued crawl run and enqueue its first step; returns run_id."""
    await validate_request(request)
    run_id = await events.create_run(tenant_id, KIND, _stored_request(request))
    job = {"kind": "crawl", "run_id": run_id, "tenant_id": tenant_id, "step": 0}
    try:
        await send_job(crawl_settings().crawl_queue_url, job)
    except Exception as exc:  # never a run left `queued` that no worker will ever see
        message = f"the crawl could not be queued: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
        await _fail(tenant_id, run_id, message)
        raise BackendUnavailableError(message) from exc
    return run_id


def _auth_config(stored: dict[str, Any] | None) -> AuthConfig | None:
    if not stored:
        return None
    from agent_patterns.crawl.sealing import unseal

    password = unseal(stored["password_sealed"]) if "password_sealed" in stored else None
    extra = {
        k: stored[k]
        for k in (
            "username_selector",
            "password_selector",
            "submit_selector",
            "success_selector",
            "success_url_contains",
        )
        if stored.get(k)
    }
    return AuthConfig(
        login_url=stored["login_url"],
        username=stored["username"],
        password=password,
        password_secret_arn=stored.get("password_secret_arn"),
        **extra,
    )


class ReapMessage(BaseModel):
    """`{"kind": "reap"}`, sent every minute by an EventBridge schedule: end abandoned runs, then
    queue again the webhook deliveries SQS never took (`webhooks.outbox.sweep_outbox`)."""

    kind: Literal["reap"]
    limit: int = Field(100, ge=1, le=1000)


async def process_job(message: dict[str, Any], remaining_ms: Callable[[], int]) -> dict[str, Any]:
    """Run one step of a crawl (or one sweep of the reaper). Returns what happened; raises only
    for messages that can never succeed (they go back to the queue and, after 3 receives, to
    the DLQ)."""
    if message.get("kind") == "reap":
        reap = ReapMessage.model_validate(message)
        run_ids = await reap_expired_runs(reap.limit)
        from agent_patterns.webhooks.outbox import sweep_outbox  # deliveries SQS never took (never raises)

        return {"outcome": "reaped", "run_ids": run_ids, "webhooks": await sweep_outbox()}
    job = JobMessage.model_validate(message)
    if job.kind == "schedule":
        if job.url is None:
            raise ValidationError("schedule message without url")
        request = CrawlRequest(url=job.url, max_pages=job.max_pages)
        await validate_request(request)
        run_id = await events.create_run(job.tenant_id, KIND, {**_stored_request(request), "trigger": "schedule"})
        job = JobMessage(kind="crawl", tenant_id=job.tenant_id, run_id=run_id, step=0)
    assert job.run_id is not None
    return await _run_step(job.tenant_id, parse_run_id(job.run_id), job.step, remaining_ms)


async def _run_step(tenant_id: str, run_id: str, step: int, remaining_ms: Callable[[], int]) -> dict[str, Any]:
    record = await get_run(tenant_id, run_id)
    if record is None:
        raise NotFoundError(f"run {run_id} of tenant {tenant_id} does not exist")
    if record.status in TERMINAL_STATUSES:
        return {"run_id": run_id, "step": step, "outcome": f"already {record.status}"}
    cancelled = {"run_id": run_id, "step": step, "outcome": "cancelled"}
    crawl: asyncio.Task[CrawlResult] | None = None

    def stop_crawl() -> None:  # the lease is gone: the run was cancelled or reaped
        if crawl is not None:
            crawl.cancel()  # the engine closes its browser on the way out

    async with Lease(tenant_id, run_id, on_lost=stop_crawl) as lease:
        if lease.lost:
            return cancelled
        max_pages = int(record.request.get("max_pages", MAX_PAGES_LIMIT))
        resume: dict[str, Any] | None = None
        if step == 0:
            if record.status == "queued":
                running = {"url": None, "pages_crawled": 0, "max_pages": max_pages}
                if await events.transition(tenant_id, run_id, "running", running) is None:
                    return cancelled  # ended since it was read
        else:
            raw = await get_redis().get(checkpoint_key(run_id))
            if raw is None:
                await _fail(tenant_id, run_id, "the crawl's saved state expired before it could continue")
                return {"run_id": run_id, "step": step, "outcome": "error"}
            resume = json.loads(raw)

        indexer = _indexer(tenant_id, run_id, record.request)

        async def on_page(
            url: str, pages_crawled: int, page: dict[str, Any] | None = None, failure: str | None = None
        ) -> None:
            progress: dict[str, Any] = {"url": url, "pages_crawled": pages_crawled, "max_pages": max_pages}
            progress["page"] = _page_event(page, failure)
            if indexer is not None:
                progress["page"]["index"] = "queued" if indexer.offer(page) else "skipped"
                progress["pages_indexed"] = indexer.indexed
                if outcomes := indexer.take_outcomes():
                    progress["indexed"] = outcomes
            with contextlib.suppress(RunEndedError):  # cancelled or reaped: the lease will stop the crawl
                await events.publish(run_id, "running", progress)

        settings = crawl_settings()
        stop_at = time.monotonic() + remaining_ms() / 1000 - settings.crawl_invocation_margin_seconds
        rate = record.request.get("max_requests_per_second")
        config = CrawlConfig(
            url=str(record.request["url"]),
            max_pages=max_pages,
            auth_config=_auth_config(record.request.get("auth")),
            http_credentials=_unsealed_http_credentials(record.request),
            concurrency=settings.crawl_concurrency,
            allowed_private_hosts=settings.crawl_allowed_private_hosts,
            limits=settings.page_limits,
            stop_at=stop_at,
            resume_state=resume,
            on_page=on_page,
            respect_robots=bool(record.request.get("respect_robots", True)),
            use_sitemap=bool(record.request.get("use_sitemap", True)),
            include=tuple(record.request.get("include") or ()),
            exclude=tuple(record.request.get("exclude") or ()),
            max_requests_per_second=float(rate) if rate is not None else settings.crawl_origin_max_rps,
        )
        # Its own task, so that losing the lease can cancel the crawl and nothing else.
        crawl = asyncio.create_task(run_crawl(config))
        try:
            result = await crawl
        except asyncio.CancelledError:
            this = asyncio.current_task()
            if lease.lost and (this is None or this.cancelling() == 0):
                return cancelled  # our crawl was stopped, not this step (as the dev server's Ctrl-C does)
            raise
        if indexer is not None:
            await indexer.drain()  # this step's pages are in the index before it saves or completes
            if (outcomes := indexer.take_outcomes()) and not lease.lost:  # the last pages' outcomes
                last: dict[str, Any] = {"url": None, "pages_crawled": result.pages_crawled, "max_pages": max_pages}
                last.update(pages_indexed=indexer.indexed, indexed=outcomes)
                with contextlib.suppress(RunEndedError):
                    await events.publish(run_id, "running", last)
        if lease.lost:
            return cancelled
        if result.continuation is not None:
            await get_redis().set(checkpoint_key(run_id), json.dumps(result.continuation), ex=CHECKPOINT_TTL_S)
            if not await lease.requeue():  # ended while this step saved its state: no next step
                await get_redis().delete(checkpoint_key(run_id))
                return cancelled
            await send_job(
                crawl_settings().crawl_queue_url,
                {"kind": "crawl", "run_id": run_id, "tenant_id": tenant_id, "step": step + 1},
            )
            return {"run_id": run_id, "step": step, "outcome": "continued", "pages_crawled": result.pages_crawled}
        if result.error_message is not None:
            if not await _fail(tenant_id, run_id, result.error_message):
                return cancelled
            return {"run_id": run_id, "step": step, "outcome": "error"}
        summary = result.summary()
        stored = {
            **summary,
            "skipped": result.crawl_data["skipped"],
            "blocked": result.crawl_data["blocked"],
            "invocations": result.crawl_data["invocations"],
            "elapsed_s": result.crawl_data["elapsed_s"],
        }
        if "stopped" in result.crawl_data:
            stored["stopped"] = summary["stopped"] = result.crawl_data["stopped"]
        if "truncated" in result.crawl_data:
            stored["truncated"] = result.crawl_data["truncated"]
        stored["robots"] = result.crawl_data.get("robots")
        stored["rate_limit"] = result.crawl_data.get("rate_limit")
        if "sitemap" in result.crawl_data:
            stored["sitemap"] = result.crawl_data["sitemap"]
        if indexer is not None:
            stored["index"] = summary["index"] = await _index_summary(tenant_id, run_id, record.request, result)
        await _ensure_crawl_schema(tenant_id)
        store = _pages_writer(tenant_id, run_id, result)
        if await events.transition(tenant_id, run_id, "complete", summary, result=stored, in_transaction=store) is None:
            return cancelled  # ended by a cancel or a reap while finishing: no pages, no result
        return {"run_id": run_id, "step": step, "outcome": "complete", **summary}


EVENT_TITLE_CHARS = 200  # a progress event carries this much of a page's title (events stay small)


def _page_event(page: dict[str, Any] | None, failure: str | None) -> dict[str, Any]:
    """What a progress event says of the page just finished: its status, title (cut) and number of
    forms, or why it failed. Never its Markdown, links or form fields: those are in the report."""
    if page is None:
        return {"error": (failure or "error")[:EVENT_TITLE_CHARS]}
    return {
        "status": page.get("status"),
        "title": str(page.get("title") or "")[:EVENT_TITLE_CHARS],
        "forms": len(page.get("forms") or ()),
    }


async def _fail(tenant_id: str, run_id: str, message: str) -> bool:
    """End the run with an `error` event; False when it had already ended."""
    event_id = await events.transition(tenant_id, run_id, "error", {"message": message}, error_message=message)
    return event_id is not None


async def _ensure_crawl_schema(tenant_id: str) -> None:
    from agent_patterns.backends.migrations import ensure_tenant_schema
    from agent_patterns.crawl.schema import CRAWL

    async with connection() as db:
        await ensure_tenant_schema(db, tenant(tenant_id).schema, CRAWL)


def _indexer(tenant_id: str, run_id: str, request: dict[str, Any]) -> Any:
    from agent_patterns.crawl.indexing import Indexer

    index = request.get("index", False)
    if index is False:
        return None
    return Indexer(tenant_id, run_id, str(request["url"]), index if isinstance(index, str) else None)


async def _index_summary(tenant_id: str, run_id: str, request: dict[str, Any], result: CrawlResult) -> dict[str, Any]:
    """What the crawl did to the index: added, changed, unchanged, failed, and removed (prune)."""
    from agent_patterns.crawl import indexing

    summary: dict[str, Any] = await indexing.counts(run_id)
    summary["removed"] = 0
    if request.get("prune"):
        index = request.get("index")
        keep = {indexing.canonical(p) for p in result.crawl_data["pages"]}
        collection = index if isinstance(index, str) else None
        summary["removed"] = await indexing.prune(tenant_id, str(request["url"]), collection, keep)
    await get_redis().delete(indexing.counts_key(run_id))
    return summary


def _pages_writer(tenant_id: str, run_id: str, result: CrawlResult) -> Callable[[AsyncConnection], Awaitable[None]]:
    """Writes the run's pages inside the transaction that marks it complete: a run has pages
    exactly when it is complete."""
    from psycopg import sql

    schema = tenant(tenant_id).schema
    rows = [
        (
            run_id,
            i,
            p["url"],
            p.get("final_url"),
            p.get("status"),
            p.get("title"),
            p["depth"],
            json.dumps(p["links"]),
            json.dumps(p["forms"]),
            p.get("markdown"),
            p.get("lang"),
            p.get("content_hash"),
        )
        for i, p in enumerate(result.crawl_data["pages"])
    ]

    async def write(db: AsyncConnection) -> None:
        await db.execute(
            sql.SQL("DELETE FROM {}.crawl_pages WHERE run_id = %s").format(sql.Identifier(schema)), (run_id,)
        )
        async with db.cursor() as cur:
            await cur.executemany(
                sql.SQL(
                    "INSERT INTO {}.crawl_pages (run_id, position, url, final_url, status, title, depth, links,"
                    " forms, markdown, lang, content_hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                ).format(sql.Identifier(schema)),
                rows,
            )

    return write


CANCELLED = "cancelled by the user"


async def cancel_run(tenant_id: str, run_id: str) -> dict[str, Any]:
    """Cancel a queued or running crawl: it ends as `error` (reason `cancelled`) at once, and its
    worker, finding the lease gone at its next renewal (within a third of RUN_LEASE_SECONDS),
    stops the crawl and writes nothing. Cancelling a cancelled run answers the same; cancelling
    a run that ended otherwise is a 409 saying how it ended."""
    record = await get_run(tenant_id, run_id)
    if record is None or record.kind != KIND:
        raise NotFoundError(f"crawl run {run_id} not found")
    answer = {"run_id": record.run_id, "status": "error", "reason": "cancelled"}
    if record.status not in TERMINAL_STATUSES:
        payload = {"message": CANCELLED, "reason": "cancelled"}
        if await events.transition(tenant_id, run_id, "error", payload, error_message=CANCELLED) is not None:
            return answer
        record = await get_run(tenant_id, run_id) or record  # it ended meanwhile: say how
    if record.status == "error" and record.error_message == CANCELLED:
        return answer
    how = f"error ({record.error_message})" if record.status == "error" and record.error_message else record.status
    raise RunEndedError(f"run {record.run_id} has already ended: {how}")


# Markdown one report carries at most (one page always): Lambda answers at most 6 MB.
REPORT_MARKDOWN_BYTES = 4_000_000


async def crawl_report(tenant_id: str, run_id: str, *, pages_from: int = 0) -> dict[str, Any]:
    """A run's status, request (without secrets), result and pages, for GET /v1/crawls/{id}.

    Pages come in crawl order from position `pages_from`, with their Markdown, as many as fit in
    REPORT_MARKDOWN_BYTES; when more are left, `pages_next` is the position to ask for next.
    A run whose lease has expired is reaped first, so a poller sees `error` (abandoned) at once."""
    from psycopg import sql
    from psycopg.rows import dict_row

    await reap_if_expired(tenant_id, run_id)  # a dead worker's run reads as ended without waiting for a sweep
    record = await get_run(tenant_id, run_id)
    if record is None or record.kind != KIND:
        raise NotFoundError(f"crawl run {run_id} not found")
    from agent_patterns.backends.migrations import ensure_tenant_schema
    from agent_patterns.crawl.schema import CRAWL

    async with connection() as db:
        await ensure_tenant_schema(db, tenant(tenant_id).schema, CRAWL)
        cur = db.cursor(row_factory=dict_row)
        await cur.execute(
            sql.SQL(
                "SELECT url, final_url, status, title, depth, links, forms, lang, content_hash, markdown, left_"
                " FROM (SELECT *, row_number() OVER w AS n, count(*) OVER () AS left_,"
                " sum(octet_length(coalesce(markdown, ''))) OVER w AS upto"
                " FROM {}.crawl_pages WHERE run_id = %s AND position >= %s WINDOW w AS (ORDER BY position)) p"
                " WHERE n = 1 OR upto <= %s ORDER BY position"
            ).format(sql.Identifier(tenant(tenant_id).schema)),
            (record.run_id, pages_from, REPORT_MARKDOWN_BYTES),
        )
        pages = await cur.fetchall()
    left = pages[0]["left_"] if pages else 0
    for page in pages:
        del page["left_"]
    report = asdict(record)
    report.pop("tenant_id")
    report["request"] = public_request(record.request)
    report["created_at"] = record.created_at.isoformat()
    report["updated_at"] = record.updated_at.isoformat()
    report["pages"] = pages
    if left > len(pages):
        report["pages_next"] = pages_from + len(pages)
    return report
