"""Wakes waiting /sync requests when something their user may see happens.

Producers (event persistence, typing, receipts, account data, to-device, device lists, presence)
call ``notify`` with the stream that moved, its new position and the users (or rooms) concerned;
each waiting request of those users is woken. Nothing here polls the database.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Iterable

from twisted.internet import defer

from homeserver.http.burst import Burst
from homeserver.sync.tokens import STREAMS, SyncToken

RoomMembers = Callable[[str], Awaitable[list[str]]]
_WAKE_CHUNK = 16  # waiting requests woken in one reactor turn


class Notifier:
    def __init__(self, reactor: Any, burst: Burst | None = None) -> None:
        self.reactor = reactor
        # Answers first: reads and access-log lines wait while woken requests are answered.
        self.burst = burst or Burst()
        self._positions = {s: 0 for s in STREAMS}
        self._waiters: dict[str, set[defer.Deferred]] = {}
        # Users interested in a room right now (joined, invited, knocking): kept by whoever
        # knows memberships (the rooms layer), so a wake-up needs no database query.
        self.room_users: Callable[[str], Iterable[str]] = lambda room_id: ()

    def set_position(self, stream: str, position: int) -> None:
        """Initialise a stream's current position at start-up."""
        self._positions[stream] = max(self._positions[stream], position)

    def current_token(self) -> SyncToken:
        return SyncToken(**self._positions)

    def notify(self, stream: str, position: int, *, users: Iterable[str] = (),
               rooms: Iterable[str] = ()) -> None:
        """``stream`` reached ``position``; wake the given users and everyone in the given rooms."""
        if position > self._positions[stream]:
            self._positions[stream] = position
        targets = set(users)
        for room_id in rooms:
            targets.update(self.room_users(room_id))
        woken = [d for user_id in targets for d in self._waiters.pop(user_id, ())]
        if woken:
            self.burst.begin()
            self._wake(woken)

    def _wake(self, woken: list[defer.Deferred]) -> None:
        """Wake the first few requests now and the rest a few at a time, a reactor turn apart:
        a woken request usually runs to its answer at once, and the reactor sends answers only
        between turns, so two hundred woken together would all reach the network at the end.
        The burst (begun by ``notify``) ends after the last few."""
        try:
            for d in woken[:_WAKE_CHUNK]:
                if not d.called:
                    d.callback(None)
        finally:
            if len(woken) > _WAKE_CHUNK:
                self.reactor.callLater(0, self._wake, woken[_WAKE_CHUNK:])
            else:
                self.burst.end()

    async def wait(self, user_id: str, timeout_s: float) -> None:
        """Return when the user is woken, or after ``timeout_s`` seconds."""
        if timeout_s <= 0:
            return
        d: defer.Deferred = defer.Deferred()
        self._waiters.setdefault(user_id, set()).add(d)
        call = self.reactor.callLater(timeout_s, lambda: d.called or d.callback(None))
        try:
            await d
        finally:
            if call.active():
                call.cancel()
            waiters = self._waiters.get(user_id)
            if waiters is not None:
                waiters.discard(d)
                if not waiters:
                    del self._waiters[user_id]

    def waiting_users(self) -> int:
        return len(self._waiters)

    def waiting_among(self, users: Iterable[str]) -> list[str]:
        """Those of these users with a request waiting now."""
        return [u for u in users if u in self._waiters]
