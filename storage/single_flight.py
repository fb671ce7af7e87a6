"""Identical reads in flight at the same time share one database round trip.

One message wakes every member of a room at once; their /sync requests then ask for the same
rows before any answer is back (and so before any cache is filled).
"""

from __future__ import annotations

from typing import Awaitable, Callable, Generic, Hashable, TypeVar

from twisted.internet import defer

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._waiting: dict[Hashable, list[defer.Deferred]] = {}

    async def run(self, key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
        """``read()``'s result, shared with every caller of the same key while it runs.
        Callers must not modify the result."""
        waiters = self._waiting.get(key)
        if waiters is not None:
            d: defer.Deferred = defer.Deferred()
            waiters.append(d)
            return await d
        self._waiting[key] = []
        try:
            result = await read()
        except BaseException as e:
            for w in self._waiting.pop(key, []):
                w.errback(e)
            raise
        for w in self._waiting.pop(key, []):
            w.callback(result)
        return result
