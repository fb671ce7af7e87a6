"""Presence: online, unavailable or offline, a status message and the last activity.

Spec: Client-Server API "Presence". Presence is visible to the user and to the users who share
a joined room with them. The state lives in memory (loaded at start-up) and every visible
change is written with the next "presence" stream id and wakes the /sync long-polls of those
users. Activity (sending an event, PUT online) only moves ``last_active_ts`` in memory while
the user stays online and ``currently_active``; the spec lets clients take the user as active
until an update says otherwise.

Timeouts, checked every few seconds for local users:
- online with no activity for ``IDLE_AFTER_MS``: unavailable (spec "Idle timeout");
- online and currently_active with no activity for ``ACTIVE_GRANULARITY_MS``: no longer
  currently_active;
- online or unavailable, not seen (no /sync, PUT or activity) for ``OFFLINE_AFTER_MS``:
  offline. /sync marks the user seen when a request starts, and a long-poll may last up to
  five minutes, so this is a little longer than that.

With ``presence.enabled: false`` (as in Synapse) nothing is recorded, PUT is accepted and does
nothing, GET answers ``offline`` for everyone and /sync gets no presence events.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Protocol

from twisted.internet import defer

from homeserver.clock import Clock
from homeserver.http.errors import MatrixError
from homeserver.notifier import Notifier
from storage.events import PersistedEvent
from storage.presence import PresenceRow, PresenceStore

logger = logging.getLogger(__name__)

ONLINE, UNAVAILABLE, OFFLINE = "online", "unavailable", "offline"
STATES = (ONLINE, UNAVAILABLE, OFFLINE)

IDLE_AFTER_MS = 5 * 60_000
ACTIVE_GRANULARITY_MS = 60_000
OFFLINE_AFTER_MS = 6 * 60_000
CHECK_INTERVAL_S = 5.0


class RoomSource(Protocol):
    async def get_rooms_for_user(self, user_id: str, memberships: tuple[str, ...] = ...) -> list[str]: ...

    async def get_interested_users(self, room_id: str) -> set[str]: ...


@dataclass(frozen=True)
class Presence:
    state: str = OFFLINE
    status_msg: str | None = None
    last_active_ts: int = 0
    currently_active: bool = False
    explicit: bool = False

    def content(self, now: int) -> dict[str, Any]:
        """The m.presence content (and GET /presence body), last_active_ago as of ``now``."""
        out: dict[str, Any] = {"presence": self.state}
        if self.last_active_ts:
            out["last_active_ago"] = max(0, now - self.last_active_ts)
        if self.status_msg is not None:
            out["status_msg"] = self.status_msg
        if self.state == ONLINE:
            out["currently_active"] = self.currently_active
        return out

    def differs_visibly(self, other: "Presence") -> bool:
        return (self.state, self.status_msg, self.currently_active, self.explicit) != \
            (other.state, other.status_msg, other.currently_active, other.explicit)


def _from_row(row: PresenceRow) -> Presence:
    return Presence(row.state, row.status_msg, row.last_active_ts, row.currently_active,
                    row.explicit)


class PresenceService:
    def __init__(self, store: PresenceStore, rooms: RoomSource, notifier: Notifier, clock: Clock,
                 server_name: str, enabled: bool = True) -> None:
        self.store = store
        self.rooms = rooms
        self.notifier = notifier
        self.clock = clock
        self.server_name = server_name
        self.enabled = enabled
        self._states: dict[str, Presence] = {}
        # local user -> when last seen (a /sync, a PUT or activity): for the offline timeout
        self._last_seen: dict[str, int] = {}
        self._loop: Any = None
        # async (user id, Presence): told of each visible change (federation sends it on).
        self.listeners: list[Any] = []

    async def load(self) -> None:
        """Read the stored states, give every local user shown as present a fresh offline
        timeout (nothing was seen while the server was down) and start the timeout checks."""
        await self.store.load()
        self.notifier.set_position("presence", self.store.current_position())
        now = self.clock.time_msec()
        for row in await self.store.get_all():
            self._states[row.user_id] = _from_row(row)
            if row.state != OFFLINE and self._is_local(row.user_id):
                self._last_seen[row.user_id] = now
        if self.enabled:
            self._loop = self.clock.looping_call(CHECK_INTERVAL_S, self._tick)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def current_position(self) -> int:
        return self.store.current_position()

    def _is_local(self, user_id: str) -> bool:
        return user_id.endswith(":" + self.server_name)

    def get(self, user_id: str) -> Presence:
        return self._states.get(user_id) or Presence()

    # --- writing -------------------------------------------------------------------------------

    async def set_state(self, user_id: str, presence: str) -> None:
        """/sync's ``set_presence``, called as each /sync request starts.

        ``offline``: the request leaves presence alone. ``online``: an offline user comes
        online (a user already online or unavailable stays so: syncing is not activity).
        ``unavailable``: the user is shown as unavailable."""
        if not self.enabled or presence == OFFLINE:
            return
        now = self.clock.time_msec()
        self._last_seen[user_id] = now
        cur = self.get(user_id)
        if presence == ONLINE and cur.state == OFFLINE:
            await self._update(user_id, replace(cur, state=ONLINE, last_active_ts=now,
                                                currently_active=True, explicit=False))
        elif presence == UNAVAILABLE and cur.state != UNAVAILABLE:
            await self._update(user_id, replace(cur, state=UNAVAILABLE, currently_active=False,
                                                explicit=False))

    async def set_status(self, user_id: str, presence: str, status_msg: str | None) -> None:
        """PUT /presence/{userId}/status: the state and status message as given (no message
        clears it); ``online`` counts as activity."""
        if not self.enabled:
            return
        now = self.clock.time_msec()
        self._last_seen[user_id] = now
        cur = self.get(user_id)
        new = replace(cur, state=presence, status_msg=status_msg, explicit=True,
                      currently_active=False)
        if presence == ONLINE:
            new = replace(new, last_active_ts=now, currently_active=True)
        await self._update(user_id, new)

    async def bump_active(self, user_id: str) -> None:
        """The user did something (sent an event): activity brings an unavailable user back
        online; an offline user, who may be hiding, stays offline."""
        if not self.enabled:
            return
        now = self.clock.time_msec()
        self._last_seen[user_id] = now
        cur = self.get(user_id)
        new = replace(cur, last_active_ts=now)
        if cur.state == UNAVAILABLE:
            new = replace(new, state=ONLINE, currently_active=True, explicit=False)
        elif cur.state == ONLINE:
            new = replace(new, currently_active=True)
        await self._update(user_id, new)

    def on_event(self, persisted: PersistedEvent) -> None:
        """Event listener: a local user's new event is activity."""
        sender = persisted.event.sender
        if self.enabled and self._is_local(sender):
            defer.ensureDeferred(self.bump_active(sender)).addErrback(
                lambda f: logger.error("presence activity of %s failed: %s", sender, f))

    async def handle_timeouts(self) -> None:
        """Idle, currently_active and offline timeouts of local users (see the module doc)."""
        if not self.enabled:
            return
        now = self.clock.time_msec()
        for user_id, seen in list(self._last_seen.items()):
            cur = self.get(user_id)
            if cur.state == OFFLINE:
                if now - seen > OFFLINE_AFTER_MS:
                    del self._last_seen[user_id]  # nothing left to time out
                continue
            new = cur
            if now - seen > OFFLINE_AFTER_MS:
                new = replace(cur, state=OFFLINE, currently_active=False, explicit=False)
            elif cur.state == ONLINE and now - cur.last_active_ts > IDLE_AFTER_MS:
                new = replace(cur, state=UNAVAILABLE, currently_active=False, explicit=False)
            elif cur.state == ONLINE and cur.currently_active \
                    and now - cur.last_active_ts > ACTIVE_GRANULARITY_MS:
                new = replace(cur, currently_active=False)
            if new is not cur:
                await self._update(user_id, new)

    def _tick(self) -> None:
        defer.ensureDeferred(self.handle_timeouts()).addErrback(
            lambda f: logger.error("presence timeouts failed: %s", f))

    async def _update(self, user_id: str, new: Presence) -> None:
        """Keep ``new`` in memory; write and announce it if anything visible changed."""
        old = self.get(user_id)
        self._states[user_id] = new
        if not new.differs_visibly(old):
            return
        stream_id = await self.store.upsert(user_id, new.state, new.status_msg,
                                            new.last_active_ts, new.currently_active, new.explicit)
        self.notifier.notify("presence", stream_id, users=await self._audience(user_id))
        for listener in self.listeners:
            try:
                await listener(user_id, new)
            except Exception:
                logger.exception("presence listener failed")

    async def set_remote(self, user_id: str, state: str, status_msg: str | None,
                         last_active_ago: int | None, currently_active: bool) -> None:
        """Presence another server reported for one of its users (its server times it out)."""
        if not self.enabled or self._is_local(user_id) or state not in (ONLINE, UNAVAILABLE, OFFLINE):
            return
        now = self.clock.time_msec()
        last = now - max(0, last_active_ago) if isinstance(last_active_ago, int) else 0
        await self._update(user_id, Presence(state, status_msg, last, currently_active, True))

    async def _audience(self, user_id: str) -> set[str]:
        users = {user_id}
        for room_id in await self.rooms.get_rooms_for_user(user_id, ("join",)):
            users |= await self.rooms.get_interested_users(room_id)
        return users

    # --- reading -------------------------------------------------------------------------------

    async def get_presence(self, observer: str, user_id: str) -> dict[str, Any]:
        """GET /presence/{userId}/status: 403 unless the observer is the user or shares a
        joined room with them."""
        if not self.enabled:
            return {"presence": OFFLINE}
        if observer != user_id and not await self.store.shares_room(observer, user_id):
            raise MatrixError(403, "M_FORBIDDEN", "You are not allowed to see their presence")
        return self.get(user_id).content(self.clock.time_msec())

    async def presence_changes(self, user_id: str, from_pos: int | None, to_pos: int
                               ) -> list[dict[str, Any]]:
        """The m.presence events for /sync's ``presence`` section: the user's own and those of
        users sharing a joined room with them, changed in (from_pos, to_pos]. An initial sync
        (``from_pos`` None) gets everyone's current presence except offline users."""
        if not self.enabled:
            return []
        rows = await self.store.changes_visible_to(user_id, from_pos, to_pos,
                                                   include_offline=from_pos is not None)
        now = self.clock.time_msec()
        # Memory has the freshest last activity; the row is there when memory lost it.
        return [{"type": "m.presence", "sender": row.user_id,
                 "content": self._states.get(row.user_id, _from_row(row)).content(now)}
                for row in rows]
