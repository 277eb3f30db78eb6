"""Closing a client on the event loop that owns it.

A client dropped unclosed is closed later by a finalizer, on whatever thread the garbage
collector ran, after the collector may already have closed its sockets: that late close removes
the socket's file descriptor from the owning loop's selector, and if a live connection of that
loop has reused the number meanwhile, the live one is never read again (a hang, seen in CI).
So clients are closed on their own loop, never left to the collector.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def close_on_loop(loop: asyncio.AbstractEventLoop, closing: Coroutine[Any, Any, None]) -> None:
    """Run `closing` on `loop` (from any thread); dropped when that loop is closed, as a closed
    loop has no selector left to corrupt."""
    if loop.is_closed():
        closing.close()
        return
    try:
        asyncio.run_coroutine_threadsafe(closing, loop)
    except RuntimeError:  # the loop closed meanwhile
        closing.close()
