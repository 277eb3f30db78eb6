"""Run leases: a run whose worker died ends as `error` (reason `abandoned`), never `running` forever.

A Lambda timeout, an out-of-memory kill or `kill -9` of the dev server stops a worker without a
word: its run would stay `running` and its event stream would carry heartbeats forever. So each
unfinished run has a lease: a member `{tenant_id}/{run_id}` of the sorted set `runs:leases`,
scored by its deadline (unix seconds).

- `create_run` gives a queued run `RUN_QUEUED_LEASE_SECONDS` to be picked up by a worker.
- A worker running a step holds the run for `RUN_LEASE_SECONDS` and renews that every third of it
  (`Lease`); a step that continues in another invocation hands it back with the queued deadline.
- A terminal transition removes the member (`runs.events.transition`); so does cancelling.
- The reaper (`reap_expired_runs`: every minute on AWS, and from the streaming function) ends
  every run whose deadline has passed; `reap_if_expired` does the same for one run when it is read.

Deadlines are set and compared on the Redis server's clock (TIME inside the scripts), so workers
and reapers on different hosts never disagree about them. A renewal never brings a removed member
back (a cancelled or reaped run stays ended, and its worker learns it must stop). A claim moves a
due deadline forward in the same script that checks it: two reapers never both end a run, and a
lease renewed a moment ago is not due any more. Claiming moves the deadline instead of removing
the member, so a reaper that dies before ending the run leaves it to be claimed again later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType

from agent_patterns.backends import get_redis
from agent_patterns.config import get_settings
from agent_patterns.observability import logger
from agent_patterns.runs.records import TERMINAL_STATUSES, get_run, parse_run_id
from agent_patterns.tenancy import validate_tenant_id

LEASES_KEY = "runs:leases"
# How long a claimed run is left to the reaper that claimed it before another may claim it again.
REAP_RETRY_SECONDS = 60
ABANDONED = "abandoned"

_NOW = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) + tonumber(t[2]) / 1000000\n"
# KEYS[1] the set; ARGV[1] the member, ARGV[2] seconds from now.
_SET = _NOW + "redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])\nreturn 1\n"
_RENEW = (
    _NOW
    + """if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
"""
)
# ARGV[1] at most this many members; read-only: the sweep costs one range query when nothing is due.
_DUE = _NOW + "return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))\n"
# ARGV[1] the member, ARGV[2] seconds: 1 when the member was due and is now this caller's.
_CLAIM = (
    _NOW
    + """local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not deadline or tonumber(deadline) > now then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
"""
)


def lease_member(tenant_id: str, run_id: str) -> str:
    return f"{validate_tenant_id(tenant_id)}/{parse_run_id(run_id)}"


def _parse_member(member: str) -> tuple[str, str] | None:
    tenant_id, _, run_id = member.partition("/")
    try:
        return validate_tenant_id(tenant_id), parse_run_id(run_id)
    except ValueError:
        return None


async def open_lease(tenant_id: str, run_id: str, seconds: float) -> None:
    """Give a run a deadline `seconds` from now, whether or not it had one (a new run)."""
    await get_redis().eval(_SET, 1, LEASES_KEY, lease_member(tenant_id, run_id), seconds)


async def renew_lease(tenant_id: str, run_id: str, seconds: float) -> bool:
    """Move the run's deadline to `seconds` from now; False when it has no lease any more (it was
    cancelled, reaped or finished): then nothing is written and the caller must stop."""
    member = lease_member(tenant_id, run_id)
    return bool(await get_redis().eval(_RENEW, 1, LEASES_KEY, member, seconds))


async def release_lease(tenant_id: str, run_id: str) -> None:
    await get_redis().zrem(LEASES_KEY, lease_member(tenant_id, run_id))


async def lease_deadline(tenant_id: str, run_id: str) -> float | None:
    """The run's deadline (unix seconds, Redis's clock), or None when it holds no lease."""
    score = await get_redis().zscore(LEASES_KEY, lease_member(tenant_id, run_id))
    return None if score is None else float(score)


class Lease:
    """A worker's hold on a run while it runs one step: renewed every third of RUN_LEASE_SECONDS
    by a background task. When a renewal finds the lease gone (the run was cancelled or reaped),
    `lost` turns True and `on_lost` is called once (the crawl step cancels its crawl). A lease
    that was already gone on entry is `lost` at once and never renewed.

    Leaving the block stops the renewals but keeps the deadline: a step that ended its run has
    already removed it, and one that stopped half-way must be reaped if nobody takes over."""

    def __init__(self, tenant_id: str, run_id: str, *, on_lost: Callable[[], object] | None = None) -> None:
        self.tenant_id = tenant_id
        self.run_id = parse_run_id(run_id)
        self.on_lost = on_lost
        self.lost = False
        self._renewals: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Lease:
        seconds = get_settings().run_lease_seconds
        if await renew_lease(self.tenant_id, self.run_id, seconds):
            self._renewals = asyncio.create_task(self._renew_every(seconds / 3, seconds))
        else:
            self.lost = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop renewing (the deadline stays as it is)."""
        task, self._renewals = self._renewals, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})  # unlike `await task`, never swallows our own cancellation

    async def requeue(self) -> bool:
        """Hand the run back to the queue: stop renewing, deadline RUN_QUEUED_LEASE_SECONDS from
        now (the next step must start by then). False when the lease is gone: do not continue."""
        await self.stop()
        if self.lost or not await renew_lease(self.tenant_id, self.run_id, get_settings().run_queued_lease_seconds):
            self.lost = True
        return not self.lost

    async def _renew_every(self, interval: float, seconds: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                held = await renew_lease(self.tenant_id, self.run_id, seconds)
            except Exception as exc:  # a Redis hiccup: two more renewals fit in the lease
                logger.warning("lease renewal failed", extra={"run_id": self.run_id, "error": str(exc)[:200]})
                continue
            if not held:
                self.lost = True
                logger.info("run lease lost: the run was cancelled or reaped", extra={"run_id": self.run_id})
                if self.on_lost is not None:
                    self.on_lost()
                return


async def reap_expired_runs(limit: int = 100) -> list[str]:
    """End every run (up to `limit`) whose lease deadline has passed; returns the ids of the
    runs this call ended. Nothing due costs one read-only script (one range query)."""
    redis = get_redis()
    due: list[str] = await redis.eval(_DUE, 1, LEASES_KEY, limit)
    reaped = []
    for member in due:
        if not await redis.eval(_CLAIM, 1, LEASES_KEY, member, REAP_RETRY_SECONDS):
            continue  # renewed, finished or claimed by another reaper since the range query
        try:
            run_id = await _reap(member)
        except Exception as exc:  # e.g. Postgres down: the claim lapses and a later sweep retries
            logger.warning("could not reap a run", extra={"lease": member, "error": str(exc)[:200]})
            continue
        if run_id is not None:
            reaped.append(run_id)
    return reaped


async def reap_if_expired(tenant_id: str, run_id: str) -> bool:
    """End this run if its lease deadline has passed (a run read before any sweep saw it);
    True when this call ended it."""
    member = lease_member(tenant_id, run_id)
    if not await get_redis().eval(_CLAIM, 1, LEASES_KEY, member, REAP_RETRY_SECONDS):
        return False
    return await _reap(member) is not None


async def _reap(member: str) -> str | None:
    """End a claimed run as abandoned; the run id, or None when it had already ended."""
    from agent_patterns.runs.events import checkpoint_key, transition

    parsed = _parse_member(member)
    if parsed is None:
        await get_redis().zrem(LEASES_KEY, member)
        return None
    tenant_id, run_id = parsed
    record = await get_run(tenant_id, run_id)
    if record is None or record.status in TERMINAL_STATUSES:
        await get_redis().zrem(LEASES_KEY, member)  # a lease outliving its run: just drop it
        return None
    settings = get_settings()
    if record.status == "queued":
        why = f"no worker started the run within {settings.run_queued_lease_seconds} s"
    elif await get_redis().exists(checkpoint_key(run_id)):
        why = f"no worker continued the run within {settings.run_queued_lease_seconds} s"
    else:
        why = f"the worker stopped responding (no heartbeat for {settings.run_lease_seconds} s)"
    message = f"abandoned: {why}"
    payload = {"message": message, "reason": ABANDONED}
    if await transition(tenant_id, run_id, "error", payload, error_message=message) is None:
        return None  # it ended on its own meanwhile (transition dropped the lease)
    logger.warning("run abandoned", extra={"run_id": run_id, "tenant_id": tenant_id, "reason": why})
    return run_id
