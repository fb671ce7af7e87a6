"""Typing notifications: who is typing in which room, in memory, with expiry timers.

Spec: Client-Server API "Typing Notifications". Every change of a room's typing list takes the
next position of the "typing" stream and wakes the /sync long-polls of the room's users. The
stream lives in memory; its first position is the start-up time in milliseconds, so positions
keep growing across restarts and old tokens stay behind the new ones (see ``changed_rooms``
for a token from the future all the same).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from twisted.internet import defer

from homeserver.clock import Clock
from homeserver.http.errors import MatrixError
from homeserver.notifier import Notifier
from storage.events import PersistedEvent

logger = logging.getLogger(__name__)

# A client says it is typing for at most this long; it re-sends to keep typing.
MAX_TIMEOUT_MS = 30_000
DEFAULT_TIMEOUT_MS = 30_000


class MembershipSource(Protocol):
    async def get_membership(self, room_id: str, user_id: str) -> tuple[str, str, int] | None: ...

    async def get_interested_users(self, room_id: str) -> set[str]: ...


def typing_event(user_ids: list[str]) -> dict[str, Any]:
    return {"type": "m.typing", "content": {"user_ids": user_ids}}


class TypingService:
    def __init__(self, events: MembershipSource, notifier: Notifier, clock: Clock) -> None:
        self.events = events
        self.notifier = notifier
        self.clock = clock
        # room id -> typing user -> the timer that ends their typing
        self._typing: dict[str, dict[str, Any]] = {}
        # room id -> stream position of the room's latest typing change
        self._room_pos: dict[str, int] = {}
        self._position = max(0, clock.time_msec())
        notifier.set_position("typing", self._position)
        # async (room id, user id, typing, timeout ms): told of each accepted /typing call.
        self.listeners: list[Any] = []

    # --- reading, for /sync ----------------------------------------------------------------------

    def position(self) -> int:
        return self._position

    def typing_users(self, room_id: str) -> list[str]:
        return sorted(self._typing.get(room_id, ()))

    def changed_rooms(self, since: int) -> set[str]:
        """Rooms whose typing list changed after position ``since``. A position ahead of the
        stream (a token from before a restart, or another server) gets every room with typing
        state, so the client replaces whatever it holds."""
        if since > self._position:
            return set(self._room_pos)
        return {room for room, pos in self._room_pos.items() if pos > since}

    def events_for_rooms(self, room_ids: list[str] | set[str], since: int | None
                         ) -> dict[str, dict[str, Any]]:
        """room id -> the m.typing event to put in that room's ``ephemeral`` section.

        Initial sync (``since`` None): the rooms where someone types. Incremental: the rooms
        whose list changed since then, an empty list included (someone stopped)."""
        out: dict[str, dict[str, Any]] = {}
        ahead = since is not None and since > self._position
        for room_id in room_ids:
            if since is None or ahead:
                users = self.typing_users(room_id)
                if users or (ahead and room_id in self._room_pos):
                    out[room_id] = typing_event(users)
            elif self._room_pos.get(room_id, 0) > since:
                out[room_id] = typing_event(self.typing_users(room_id))
        return out

    # --- writing -------------------------------------------------------------------------------

    async def set_typing(self, user_id: str, room_id: str, typing: bool,
                         timeout_ms: int = DEFAULT_TIMEOUT_MS) -> None:
        """PUT /typing: the user must be joined to the room (403 otherwise)."""
        membership = await self.events.get_membership(room_id, user_id)
        if membership is None or membership[0] != "join":
            raise MatrixError(403, "M_FORBIDDEN", "You are not joined to this room")
        timeout_ms = min(max(timeout_ms, 0), MAX_TIMEOUT_MS)
        if typing:
            await self._start(room_id, user_id, timeout_ms)
        else:
            await self._stop(room_id, user_id)
        for listener in self.listeners:
            try:
                await listener(room_id, user_id, typing, timeout_ms)
            except Exception:
                logger.exception("typing listener failed")

    async def _start(self, room_id: str, user_id: str, timeout_ms: int) -> None:
        typers = self._typing.setdefault(room_id, {})
        old = typers.get(user_id)
        if old is not None and old.active():
            old.cancel()
        typers[user_id] = self.clock.call_later(timeout_ms / 1000.0, self._expire, room_id, user_id)
        if old is None:  # only a new typer changes the list; a refresh just moves the timer
            await self._changed(room_id)

    async def _stop(self, room_id: str, user_id: str) -> None:
        typers = self._typing.get(room_id)
        if not typers or user_id not in typers:
            return
        timer = typers.pop(user_id)
        if timer.active():
            timer.cancel()
        if not typers:
            del self._typing[room_id]
        await self._changed(room_id)

    def _expire(self, room_id: str, user_id: str) -> None:
        typers = self._typing.get(room_id)
        if typers is None or user_id not in typers:
            return
        self._background(self._stop(room_id, user_id), "typing expiry")

    async def _changed(self, room_id: str) -> None:
        self._position += 1
        pos = self._room_pos[room_id] = self._position
        users = await self.events.get_interested_users(room_id)
        self.notifier.notify("typing", pos, users=users)

    def on_event(self, persisted: PersistedEvent) -> None:
        """Event listener: a typer who leaves (or is kicked or banned) stops typing."""
        ev = persisted.event
        if ev.type != "m.room.member" or not ev.state_key or ev.membership == "join":
            return
        if ev.state_key in self._typing.get(ev.room_id, {}):
            self._background(self._stop(ev.room_id, ev.state_key), "typing stop on leave")

    @staticmethod
    def _background(coro: Any, what: str) -> None:
        defer.ensureDeferred(coro).addErrback(lambda f: logger.error("%s failed: %s", what, f))
