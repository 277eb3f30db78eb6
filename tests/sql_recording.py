"""A connection wrapper that records every statement the code under test asks it to run, so a
test can check or replay exactly that SQL (with its parameters and format)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import psycopg
from psycopg.abc import Params, QueryNoTemplate


@dataclass(frozen=True)
class Statement:
    query: QueryNoTemplate
    params: Params | None
    binary: bool


@dataclass
class RecordingConnection:
    """Passes everything to a real connection; `execute` calls are recorded first."""

    conn: psycopg.AsyncConnection[Any]
    statements: list[Statement] = field(default_factory=list)

    async def execute(
        self, query: QueryNoTemplate, params: Params | None = None, *, prepare: bool | None = None, binary: bool = False
    ) -> psycopg.AsyncCursor[Any]:
        self.statements.append(Statement(query, params, binary))
        return await self.conn.execute(query, params, prepare=prepare, binary=binary)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)

    def as_connection(self) -> psycopg.AsyncConnection[Any]:
        """This recorder where the code under test wants a connection (it only uses what is passed on)."""
        return cast("psycopg.AsyncConnection[Any]", self)
