"""Monotonic id generators for tables whose ids the server assigns (stream orderings, groups)."""

from __future__ import annotations

import threading

from storage.database import Database


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
