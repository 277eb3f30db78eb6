"""Egress guard for the crawler: only public addresses, checked on every hop.

Chromium is launched with this module's local proxy as its only way out. The proxy resolves
each target once, refuses any address that is not globally routable (loopback, private,
link-local incl. 169.254.169.254, unique-local, multicast, CGNAT, and IPv4-mapped / NAT64 /
6to4 forms of them), then connects to the address it checked, so DNS rebinding cannot swap
it. Redirect hops, subresources, fetch/XHR and WebSockets all pass through it, which a
`page.route` guard alone cannot promise (it never sees redirects).

No well-kept Python library does this for a browser (advocate and the like wrap `requests`);
the proxy is small and has no dependencies beyond asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
SIX_TO_FOUR = ipaddress.ip_network("2002::/16")


class BlockedAddressError(Exception):
    """The target resolves to an address the crawler must not reach."""


def embedded_ipv4(addr: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address hidden in an IPv6 one (mapped, NAT64, 6to4, compatible), if any."""
    if isinstance(addr, ipaddress.IPv4Address):
        return None
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr in NAT64 or addr in NAT64_LOCAL:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr in SIX_TO_FOUR:
        return addr.sixtofour
    if int(addr) >> 32 == 0 and int(addr) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(addr))
    return None


def is_public(addr: IPAddress) -> bool:
    """True only for globally routable unicast addresses, looking through embedded IPv4."""
    inner = embedded_ipv4(addr)
    if inner is not None:  # the IPv4 address is where the packets really go
        return is_public(inner)
    return bool(addr.is_global) and not addr.is_multicast and not addr.is_reserved


def parse_host_entry(entry: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address → (host, port or None)."""
    e = entry.strip().lower()
    if e.startswith("["):
        host, _, rest = e[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if e.count(":") == 1:
        host, _, port = e.partition(":")
        return host, int(port) if port.isdigit() else None
    return e, None


@dataclass(frozen=True)
class EgressPolicy:
    """What the crawler may reach: public addresses, plus the explicitly allowed private hosts.

    `allowed_private_hosts` names `host` or `host:port` entries (tests, intranets); it is empty
    by default and never widens to anything not named.
    """

    allowed_private_hosts: tuple[str, ...] = ()

    def allows_private(self, host: str, port: int) -> bool:
        bare = host.strip("[]").lower()
        entries = {parse_host_entry(e) for e in self.allowed_private_hosts if e.strip()}
        return (bare, None) in entries or (bare, port) in entries

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """The addresses to connect to; BlockedAddressError if any of them is not allowed."""
        bare = host.strip("[]")
        try:
            literal: IPAddress | None = ipaddress.ip_address(bare)
        except ValueError:
            literal = None
        if literal is not None:
            addrs: list[IPAddress] = [literal]
        else:
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(bare, port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise BlockedAddressError(f"cannot resolve {bare}: {exc.strerror}") from exc
            addrs = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
        if self.allows_private(host, port):
            return addrs
        bad = [a for a in addrs if not is_public(a)]
        if bad:  # one private answer is enough to refuse: the browser could be steered to it
            raise BlockedAddressError(f"{bare} resolves to non-public address {bad[0]}")
        return addrs

    async def check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise BlockedAddressError(f"scheme {parts.scheme or '(none)'!r} is not allowed: only http and https")
        if not parts.hostname:
            raise BlockedAddressError("the URL has no host")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        await self.resolve(parts.hostname, port)


@dataclass
class BlockedRequest:
    url: str
    reason: str
    host: str | None = None  # lower-case host name, when the request named one


@dataclass
class EgressProxy:
    """A local HTTP proxy (CONNECT and absolute-form requests) enforcing an EgressPolicy."""

    policy: EgressPolicy
    blocked: list[BlockedRequest] = field(default_factory=list)
    connect_timeout: float = 10.0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> EgressProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, limit=1 << 16)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def __aenter__(self) -> EgressProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, _, rest = head.partition(b"\r\n")
        try:
            method, target, version = request_line.decode("latin-1").split(" ", 2)
        except ValueError:
            await _reply(writer, 400, "Bad Request")
            return
        if method == "CONNECT":
            host, _, port_s = target.rpartition(":")
            port = int(port_s) if port_s.isdigit() else 443
            display = f"https://{host.strip('[]')}:{port}" if port != 443 else f"https://{host.strip('[]')}"
            upstream = await self._open(host, port, display, writer)
            if upstream is None:
                return
            up_reader, up_writer = upstream
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await writer.drain()
            await _pipe_both(reader, writer, up_reader, up_writer)
            return
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            self.blocked.append(BlockedRequest(target, "only http(s) URLs are proxied"))
            await _reply(writer, 403, "Forbidden", blocked="only http(s) URLs are proxied")
            return
        port = parts.port or 80
        upstream = await self._open(parts.hostname, port, target, writer)
        if upstream is None:
            return
        up_reader, up_writer = upstream
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        headers = [
            line
            for line in rest.split(b"\r\n")
            if line and not line.lower().startswith((b"proxy-connection:", b"connection:", b"keep-alive:"))
        ]
        # One request per proxied connection: the browser cannot slip a second request for
        # another host onto a connection whose destination was checked for the first.
        up_writer.write(
            f"{method} {path} {version}\r\n".encode("latin-1")
            + b"\r\n".join([*headers, b"Connection: close"])
            + b"\r\n\r\n"
        )
        await up_writer.drain()
        # The request body (POST) flows upstream while we wait for the response head.
        to_upstream = asyncio.create_task(_pipe(reader, up_writer))
        try:
            response_head = await up_reader.readuntil(b"\r\n\r\n")
            status_line, _, response_rest = response_head.partition(b"\r\n")
            kept = [
                line
                for line in response_rest.split(b"\r\n")
                if line and not line.lower().startswith((b"connection:", b"keep-alive:", b"proxy-connection:"))
            ]
            writer.write(status_line + b"\r\n" + b"\r\n".join([*kept, b"Connection: close"]) + b"\r\n\r\n")
            await writer.drain()
            await _pipe(up_reader, writer)
        finally:
            to_upstream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await to_upstream
            up_writer.close()

    async def _open(
        self, host: str, port: int, display: str, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            addrs = await self.policy.resolve(host, port)
        except BlockedAddressError as exc:
            self.blocked.append(BlockedRequest(display, str(exc), host.lower()))
            await _reply(writer, 403, "Forbidden", blocked=str(exc))
            return None
        last: Exception | None = None
        for addr in addrs:  # connect to the address that was checked, never re-resolve
            try:
                return await asyncio.wait_for(asyncio.open_connection(str(addr), port), self.connect_timeout)
            except (OSError, TimeoutError) as exc:
                last = exc
        await _reply(writer, 502, f"Bad Gateway: {last}")
        return None


BLOCKED_HEADER = "x-egress-blocked"


async def _reply(writer: asyncio.StreamWriter, status: int, reason: str, blocked: str | None = None) -> None:
    """An answer from the proxy itself; refusals carry BLOCKED_HEADER so the crawler can tell
    them from a site's own 403."""
    body = reason.encode()
    extra = f"{BLOCKED_HEADER}: {blocked.encode('ascii', 'replace').decode()}\r\n" if blocked else ""
    writer.write(
        f"HTTP/1.1 {status} {reason.split(':')[0]}\r\nContent-Type: text/plain\r\n{extra}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while chunk := await src.read(65536):
            dst.write(chunk)
            await dst.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            dst.write_eof() if dst.can_write_eof() else dst.close()


async def _pipe_both(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    try:
        to_up = asyncio.create_task(_pipe(reader, up_writer))
        await _pipe(up_reader, writer)
        to_up.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await to_up
    finally:
        up_writer.close()
