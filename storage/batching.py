"""Lookups asked for in one reactor turn, answered together by one load.

One message wakes every member of a room at once; when a per-user cache is cold (the first
message after a start, or after the users' memberships changed) each woken /sync would read its
own row. A ``TurnBatch`` collects the keys asked for until the reactor turn ends and loads them
all with one call (one transaction), so two hundred cold users cost one round trip, not two
hundred. ``SingleFlight`` (single_flight.py) is the other half: identical keys share a read.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Generic, Hashable, TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TurnBatch(Generic[K, V]):
    def __init__(self, call_later: Callable[..., Any],
                 load: Callable[[list[K]], Awaitable[dict[K, V]]]) -> None:
        self._call_later = call_later
        self._load = load
        self._pending: dict[K, list[defer.Deferred]] = {}
        self._scheduled = False

    async def get(self, key: K, default: V) -> V:
        """``load``'s answer for ``key`` (``default`` when it has none)."""
        d: defer.Deferred = defer.Deferred()
        self._pending.setdefault(key, []).append(d)
        if not self._scheduled:
            self._scheduled = True
            self._call_later(0, self._flush)
        found = await d
        return found.get(key, default)

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        self._scheduled = False

        def done(found: dict[K, V]) -> None:
            for waiters in pending.values():
                for w in waiters:
                    w.callback(found)

        def failed(f: Failure) -> None:
            for waiters in pending.values():
                for w in waiters:
                    w.errback(f)
        defer.ensureDeferred(self._load(list(pending))).addCallbacks(done, failed)
