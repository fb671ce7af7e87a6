"""A lock per key (a file hash, a media id), created on first use and dropped when unused."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator, Hashable

from twisted.internet.defer import DeferredLock


class KeyedLock:
    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[DeferredLock, int]] = {}

    @asynccontextmanager
    async def __call__(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = DeferredLock()
        self._locks[key] = (lock, users + 1)
        await lock.acquire()
        try:
            yield
        finally:
            lock.release()
            lock2, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock2, users - 1)

    def __len__(self) -> int:
        return len(self._locks)
