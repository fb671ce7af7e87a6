"""Monotonic id generators for tables whose ids the server assigns (stream orderings, groups)."""

from __future__ import annotations

import threading
from typing import Awaitable, Callable, TypeVar

from twisted.internet import defer

from storage.database import Database

T = TypeVar("T")


class IdGenerator:
    """Hands out max(existing)+1, +2, ...; initialised once from the table at start-up."""

    def __init__(self, table: str, column: str) -> None:
        self.table = table
        self.column = column
        self._next: int | None = None
        self._lock = threading.Lock()

    async def load(self, db: Database) -> None:
        rows = await db.query(f"SELECT MAX({self.column}) FROM {self.table}")
        self._next = (rows[0][0] or 0) + 1

    def next(self) -> int:
        with self._lock:
            if self._next is None:
                raise RuntimeError(f"id generator for {self.table} used before load()")
            n = self._next
            self._next += 1
            return n

    def current(self) -> int:
        """The highest id handed out so far."""
        assert self._next is not None
        return self._next - 1


class OrderedStream:
    """Base of the stores of a stream whose positions this server hands out (account data,
    to-device, receipts, presence): one write at a time, so positions commit in the order they
    were handed out and readers may trust every position up to ``current_position()``."""

    def __init__(self, db: Database, table: str, column: str) -> None:
        self.db = db
        self.stream_ids = IdGenerator(table, column)
        self._write_lock = defer.DeferredLock()
        self._committed = 0

    async def load(self) -> None:
        await self.stream_ids.load(self.db)
        self._committed = self.stream_ids.current()

    def current_position(self) -> int:
        """The highest stream position whose write (and every earlier one) has committed (0
        before the first)."""
        return self._committed

    async def _ordered_write(self, write: Callable[[], Awaitable[T]],
                             position: Callable[[T], int | None]) -> T:
        """Run ``write`` (which takes its positions from ``stream_ids``) alone; once it has
        committed, ``position(result)`` (None: nothing written) is the stream's position."""
        async with self._write_lock:
            result = await write()
            pos = position(result)
            if pos is not None and pos > self._committed:
                self._committed = pos
            return result
