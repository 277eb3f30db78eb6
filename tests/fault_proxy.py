"""A TCP proxy for fault-injection tests (Redis in mind): clients connect to the proxy, the proxy
connects each of them to the real server, and a test switches faults on and off at any time.

The proxy runs its own asyncio event loop in its own thread, so it never depends on (or blocks)
the event loop of the test, and the test's code talks to it through plain method calls. Every
control method is thread-safe and takes effect before it returns (it runs in the proxy's loop
and waits there); configuring faults before `start()` is allowed too.

Faults:

- `drop_reply_after_execution(match)`: a client read that matches is forwarded; when the
  server's reply starts to arrive (so the command has run) the reply is thrown away and both
  sides are reset. "Redis executed it but the client saw a connection error".
- `reset_mid_request(match)`: only the first half of a matching client read is forwarded, then
  both sides are reset (RST): the server never gets the complete command.
- `blackhole()`: nothing is forwarded in either direction (a network partition): requests hang
  until the client's own socket timeout. Bytes and closes are *held*, not lost, like TCP would
  retransmit them: `restore()` delivers them in order (so a request the client gave up on still
  runs on the server after the partition heals). Call `cut_all()` before `restore()` to lose
  them instead.
- `refuse()`: "Redis is down": live connections are reset, new ones are accepted by the kernel
  and reset at once (the client sees ECONNRESET / "Connection closed by server" on its first
  read or write, not ECONNREFUSED on connect: the listening socket stays open so that its port
  can never be taken by someone else).
- `restore()`: back to normal forwarding (ends blackhole and refuse, delivers held bytes);
  `clear_faults()` removes the per-request rules.
- `cut_all(reset=True)`: close every live connection now (RST, or FIN with `reset=False`).

Limitations (by design: the proxy does not parse RESP):

- Rules match the bytes of *one client read*. redis-py writes one command (or a whole pipeline
  / MULTI block) with one write, and on loopback that is normally one read, but TCP may split
  or merge reads: a needle that straddles two reads is missed, and a read holding several
  pipelined commands matches as a whole. Large arguments (redis-py splits values over ~6 kB
  into separate writes) may arrive in several reads: match on something near the start of the
  command (the command name, the script sha, the first key).
- `drop_reply_after_execution` fires on the *first reply bytes* that arrive after the matching
  read was forwarded. With one request in flight per connection (the normal redis-py client),
  that is the matching command's reply. With several pipelined commands in flight on the same
  connection, it may be an earlier command's reply, and the matching command may or may not
  have run by then.
- `reset_mid_request` forwards the first half of the read: if that read holds several
  pipelined commands, the complete ones in the first half do run.
- There is no flow control beyond asyncio's write buffers, and held bytes are kept in memory:
  fine for tests, not for bulk traffic.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

Match = bytes | Callable[[bytes], bool]

_CONTROL_TIMEOUT = 10.0


@dataclass(frozen=True)
class ProxyStats:
    """A snapshot of the proxy's counters."""

    accepted: int  # client connections accepted (refused ones included)
    active: int  # client connections open now
    dropped: int  # replies thrown away by drop_reply_after_execution
    resets: int  # requests cut in half by reset_mid_request
    refused: int  # connections reset at once because of refuse()
    cut: int  # connections closed by cut_all() or refuse()
    upstream_failures: int  # connections whose upstream connect failed (the server was down)


@dataclass
class _Rule:
    match: Match
    times: int | None
    probability: float

    def fires(self, chunk: bytes, rng: random.Random) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        matched = self.match in chunk if isinstance(self.match, bytes) else self.match(chunk)
        if not matched:
            return False
        if self.probability < 1.0 and rng.random() >= self.probability:
            return False
        if self.times is not None:
            self.times -= 1
        return True


@dataclass(eq=False)
class _Pair:
    """One client connection and its upstream connection."""

    client: asyncio.Transport
    upstream: asyncio.Transport | None = None
    connecting: asyncio.Task[None] | None = None
    to_upstream: deque[bytes] = field(default_factory=deque)
    to_client: deque[bytes] = field(default_factory=deque)
    client_eof: bool = False
    upstream_eof: bool = False
    drop_next_reply: bool = False
    closed: bool = False


def _reset(transport: asyncio.BaseTransport) -> None:
    """Close with an RST (SO_LINGER 0), dropping anything unsent."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()
    else:
        transport.close()


class _ClientSide(asyncio.Protocol):
    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.pair: _Pair | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.proxy._live.add(transport)
        self.pair = self.proxy._client_connected(transport)

    def data_received(self, data: bytes) -> None:
        if self.pair is not None:
            self.proxy._from_client(self.pair, data)

    def eof_received(self) -> bool:
        if self.pair is not None:
            self.proxy._client_gone(self.pair)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.proxy._live.discard(self.transport)
        if self.pair is not None:
            self.proxy._client_gone(self.pair)


class _UpstreamSide(asyncio.Protocol):
    def __init__(self, proxy: FaultProxy, pair: _Pair) -> None:
        self.proxy = proxy
        self.pair = pair

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.proxy._live.add(transport)

    def data_received(self, data: bytes) -> None:
        self.proxy._from_upstream(self.pair, data)

    def eof_received(self) -> bool:
        self.proxy._upstream_gone(self.pair)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.proxy._live.discard(self.transport)
        self.proxy._upstream_gone(self.pair)


class FaultProxy:
    """A TCP proxy on 127.0.0.1:<ephemeral port> in front of `upstream_host:upstream_port`,
    with switchable faults (see the module docstring). Use as a context manager, or call
    `start()` and `close()`; `close()` closes every socket and joins the thread."""

    def __init__(self, upstream_host: str, upstream_port: int, *, seed: int | None = None) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self._rng = random.Random(seed)  # fault probabilities, not security
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._closed = False
        self._start_error: BaseException | None = None
        # State below is touched only in the proxy's loop (or before it starts).
        self._pairs: set[_Pair] = set()
        self._live: set[asyncio.Transport] = set()  # every open socket but the listener's
        self._drop_rule: _Rule | None = None
        self._reset_rule: _Rule | None = None
        self._blackholed = False
        self._refusing = False
        self._accepted = 0
        self._dropped = 0
        self._resets = 0
        self._refused = 0
        self._cut = 0
        self._upstream_failures = 0
        self.errors: list[dict[str, Any]] = []  # unexpected errors seen in the proxy's loop

    # ----- lifecycle

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> Self:
        if self._thread is not None or self._closed:
            raise RuntimeError("a FaultProxy starts once")
        self._listener.listen(128)
        self._listener.setblocking(False)
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(self._on_loop_error)
        self._thread = threading.Thread(target=self._run, args=(ready,), name=f"fault-proxy-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(_CONTROL_TIMEOUT) or self._start_error is not None:
            self.close()
            raise RuntimeError("the fault proxy did not start") from self._start_error
        return self

    def close(self) -> None:
        """Reset every connection, close the listening socket, stop the loop, join the thread."""
        if self._closed:
            return
        self._closed = True
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            stop = self._stop
            if stop is not None:
                with contextlib.suppress(RuntimeError):  # the loop already stopped
                    loop.call_soon_threadsafe(stop.set)
            thread.join(_CONTROL_TIMEOUT)
            if thread.is_alive():
                raise RuntimeError("the fault proxy's thread did not stop")
        if loop is not None and not loop.is_closed() and not (thread is not None and thread.is_alive()):
            loop.close()
        self._listener.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        # Not set as this thread's current loop: objects of other loops that the garbage collector
        # happens to finalize in this thread (an SDK client scheduling its own close) must not
        # land their tasks, and their errors, on the proxy's loop.
        try:
            loop.run_until_complete(self._main(ready))
        except BaseException as exc:  # recorded, never printed from this thread
            self._start_error = self._start_error or exc
            ready.set()
        finally:
            with contextlib.suppress(Exception):
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())  # getaddrinfo threads
            loop.close()

    async def _main(self, ready: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            server = await loop.create_server(lambda: _ClientSide(self), sock=self._listener)
        except BaseException as exc:
            self._start_error = exc
            ready.set()
            return
        ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()  # closes the listening socket
            connecting = [p.connecting for p in self._pairs if p.connecting is not None]
            for pair in list(self._pairs):
                self._close_pair(pair, reset=True)
            if connecting:
                await asyncio.gather(*connecting, return_exceptions=True)
            for transport in list(self._live):  # also those still flushing after a graceful close
                _reset(transport)
            deadline = loop.time() + _CONTROL_TIMEOUT
            while self._live and loop.time() < deadline:  # aborted transports close their sockets soon
                await asyncio.sleep(0.001)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), _CONTROL_TIMEOUT)

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        future = context.get("future")
        coro = getattr(future, "get_coro", lambda: None)()
        code = getattr(coro, "cr_code", None)
        if code is not None and code.co_filename != __file__:
            # Another library's task, created on this loop because the garbage collector finalized
            # one of its objects (an SDK client closing itself) in this thread: not the proxy's.
            loop.default_exception_handler(context)
            return
        self.errors.append(context)
        loop.default_exception_handler(context)  # logged (pytest captures it): a bug in a rule or here

    def _call[T](self, fn: Callable[[], T]) -> T:
        """Run `fn` in the proxy's loop and wait for it (directly before start / after close)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive() or threading.current_thread() is thread:
            return fn()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                result = fn()
            except BaseException as exc:
                done.set_exception(exc)
                return
            # Answer one turn later: the sockets `fn` aborted are closed by callbacks it scheduled,
            # which run first, so the fault is fully in effect when the caller continues.
            loop.call_soon(done.set_result, result)

        loop.call_soon_threadsafe(run)
        return done.result(_CONTROL_TIMEOUT)

    # ----- faults (thread-safe)

    def drop_reply_after_execution(self, match: Match, times: int | None = None, probability: float = 1.0) -> None:
        """Forward a matching client read, wait for the server's reply (the command ran), then
        reset both sides without sending it. Replaces the previous drop rule."""
        rule = _Rule(match, times, probability)

        def apply() -> None:
            self._drop_rule = rule

        self._call(apply)

    def reset_mid_request(self, match: Match, times: int | None = None, probability: float = 1.0) -> None:
        """Forward only the first half of a matching client read, then reset both sides.
        Replaces the previous reset rule; checked before the drop rule."""
        rule = _Rule(match, times, probability)

        def apply() -> None:
            self._reset_rule = rule

        self._call(apply)

    def clear_faults(self) -> None:
        """Remove the drop and reset rules (a reply already marked for dropping is still dropped)."""

        def apply() -> None:
            self._drop_rule = self._reset_rule = None

        self._call(apply)

    def blackhole(self) -> None:
        """Stop forwarding in both directions; bytes and closes are held until `restore()`."""

        def apply() -> None:
            self._blackholed = True

        self._call(apply)

    def refuse(self) -> None:
        """Reset every live connection, and reset new ones as soon as they are accepted."""

        def apply() -> None:
            self._refusing = True
            self._cut_all(reset=True)

        self._call(apply)

    def restore(self) -> None:
        """Forward normally again: ends blackhole() and refuse(), delivers held bytes and closes."""

        def apply() -> None:
            self._blackholed = False
            self._refusing = False
            for pair in list(self._pairs):
                self._pump(pair)

        self._call(apply)

    def cut_all(self, reset: bool = True) -> int:
        """Close every live connection now, both sides (RST, or FIN when `reset` is false),
        dropping held bytes; returns how many were closed."""
        return self._call(lambda: self._cut_all(reset))

    # ----- stats

    @property
    def stats(self) -> ProxyStats:
        return self._call(
            lambda: ProxyStats(
                accepted=self._accepted,
                active=len(self._pairs),
                dropped=self._dropped,
                resets=self._resets,
                refused=self._refused,
                cut=self._cut,
                upstream_failures=self._upstream_failures,
            )
        )

    @property
    def accepted(self) -> int:
        return self._accepted

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def resets(self) -> int:
        return self._resets

    # ----- the proxy's loop

    def _cut_all(self, reset: bool) -> int:
        pairs = list(self._pairs)
        for pair in pairs:
            self._close_pair(pair, reset=reset, flush=False)
        self._cut += len(pairs)
        return len(pairs)

    def _client_connected(self, transport: asyncio.Transport) -> _Pair | None:
        self._accepted += 1
        if self._refusing or self._closed:
            self._refused += 1
            _reset(transport)
            return None
        pair = _Pair(client=transport)
        self._pairs.add(pair)
        pair.connecting = asyncio.get_running_loop().create_task(self._connect_upstream(pair))
        return pair

    async def _connect_upstream(self, pair: _Pair) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_connection(
                lambda: _UpstreamSide(self, pair), self.upstream_host, self.upstream_port
            )
        except OSError:
            self._upstream_failures += 1
            self._close_pair(pair, reset=True)
            return
        finally:
            pair.connecting = None
        if pair.closed:
            _reset(transport)
            return
        pair.upstream = transport
        self._pump(pair)

    def _from_client(self, pair: _Pair, data: bytes) -> None:
        if not pair.closed:
            pair.to_upstream.append(data)
            self._pump(pair)

    def _from_upstream(self, pair: _Pair, data: bytes) -> None:
        if not pair.closed:
            pair.to_client.append(data)
            self._pump(pair)

    def _client_gone(self, pair: _Pair) -> None:
        if not pair.closed and not pair.client_eof:
            pair.client_eof = True
            self._pump(pair)

    def _upstream_gone(self, pair: _Pair) -> None:
        if not pair.closed and not pair.upstream_eof:
            pair.upstream_eof = True
            self._pump(pair)

    def _pump(self, pair: _Pair) -> None:
        """Deliver what can be delivered now (nothing while blackholed), applying the rules."""
        if pair.closed or self._blackholed:
            return
        while pair.to_client and not pair.closed:
            chunk = pair.to_client.popleft()
            if pair.drop_next_reply:
                self._dropped += 1
                self._close_pair(pair, reset=True)
                return
            if not pair.client_eof and not pair.client.is_closing():
                pair.client.write(chunk)
        if pair.upstream is not None:
            while pair.to_upstream and not pair.closed:
                chunk = pair.to_upstream.popleft()
                if pair.upstream_eof or pair.upstream.is_closing():
                    continue
                if self._reset_rule is not None and self._reset_rule.fires(chunk, self._rng):
                    self._resets += 1
                    pair.upstream.write(chunk[: len(chunk) // 2])
                    self._close_pair(pair, reset=True)
                    return
                if self._drop_rule is not None and self._drop_rule.fires(chunk, self._rng):
                    pair.drop_next_reply = True
                pair.upstream.write(chunk)
        if pair.client_eof and (pair.upstream is not None or pair.upstream_eof):
            self._close_pair(pair, reset=False)  # the client left: the server gets what it sent, then FIN
        elif pair.upstream_eof and not pair.to_client:
            self._close_pair(pair, reset=False)  # the server closed: the client gets what it sent, then FIN

    def _close_pair(self, pair: _Pair, reset: bool, flush: bool = True) -> None:
        if pair.closed:
            return
        pair.closed = True
        self._pairs.discard(pair)
        pair.to_client.clear()
        pair.to_upstream.clear()
        if pair.connecting is not None:
            pair.connecting.cancel()
        for transport in (pair.client, pair.upstream):
            if transport is None or transport.is_closing():
                continue
            if reset:
                _reset(transport)
            elif flush:
                transport.close()  # what is already buffered is sent, then FIN
            else:
                transport.abort()  # FIN now, buffered bytes dropped
