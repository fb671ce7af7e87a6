"""Device-list tracking: the device_lists stream behind /sync's device_lists and /keys/changes.

A user's position moves when their device keys or cross-signing keys change, when a device with
keys is deleted, and when they join or leave a room (spec: "Tracking the device list for a
user" and "Extensions to /sync"). Everyone who shares a room with the user is woken.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.internet import defer

from homeserver.notifier import Notifier
from storage.e2ee_keys import E2eKeyStore
from storage.events import EventStore, PersistedEvent

logger = logging.getLogger(__name__)

STREAM = "device_lists"


class DeviceListTracker:
    def __init__(self, store: E2eKeyStore, events: EventStore, notifier: Notifier) -> None:
        self.store = store
        self.events = events
        self.notifier = notifier
        # async (user id, stream position): told of every recorded change of a user's devices
        # or keys (federation tells the servers that share a room with a local user).
        self.listeners: list[Any] = []

    async def load(self) -> None:
        await self.store.load()
        self.notifier.set_position(STREAM, self.store.current_position())

    def current_position(self) -> int:
        """The device_lists position a new sync token carries."""
        return self.store.current_position()

    # --- recording changes -----------------------------------------------------------------------

    async def changed(self, user_id: str, pos: int | None) -> None:
        """The user's devices or keys changed at ``pos`` (None: nothing was written)."""
        if pos is None:
            return
        for listener in self.listeners:
            try:
                await listener(user_id, pos)
            except Exception:
                logger.exception("device list listener failed")
        users = {user_id}
        for room_id in await self.events.get_rooms_for_user(user_id):
            users |= await self.events.get_interested_users(room_id)
        self.notifier.notify(STREAM, pos, users=users)

    async def record_change(self, user_id: str) -> None:
        """Record a change that no key write recorded (e.g. a new device) and wake watchers."""
        await self.changed(user_id, await self.store.record_key_change(user_id))

    def on_event(self, persisted: PersistedEvent) -> None:
        """EventCreator listener: joins and leaves change who sees whose device list."""
        ev = persisted.event
        if ev.type != "m.room.member" or ev.state_key is None:
            return
        defer.ensureDeferred(self._membership_changed(persisted)).addErrback(
            lambda f: logger.error("device-list tracking of %s failed: %s", ev.event_id, f))

    async def _membership_changed(self, persisted: PersistedEvent) -> None:
        ev = persisted.event
        target = ev.state_key
        assert target is not None
        joined = (ev.membership or "leave") == "join"
        before = await self.store.membership_before(ev.room_id, target, persisted.stream_ordering)
        if (before == "join") == joined:
            return  # a profile change, or a leave of someone who was not joined
        pos = await self.store.record_membership(target, ev.room_id, "join" if joined else "leave")
        users = await self.events.get_interested_users(ev.room_id)
        users.add(target)
        self.notifier.notify(STREAM, pos, users=users)

    # --- reading changes -------------------------------------------------------------------------

    async def device_list_changes(self, user_id: str, from_pos: int | None, to_pos: int
                                  ) -> tuple[set[str], set[str]]:
        """(changed, left) for the user between two device_lists positions.

        changed: the user and users sharing a room with them whose devices or keys changed,
        and users the user newly shares a room with. left: users the user shared a room with
        and no longer shares any with. Only an incremental sync has them: from_pos None gives
        two empty sets.
        """
        to_pos = min(to_pos, self.current_position())
        if from_pos is None or from_pos >= to_pos:
            return set(), set()
        changed = await self.store.key_changes_seen_by(user_id, from_pos, to_pos)
        rows = await self.store.membership_changes_near(user_id, from_pos, to_pos)
        my_rooms = set(await self.events.get_rooms_for_user(user_id))
        rooms_i_left = {room for u, room, m in rows if u == user_id and m != "join"}
        maybe_left: set[str] = set()
        for member, room_id, membership in rows:
            if member == user_id:
                others = set(await self.events.get_members(room_id)) - {user_id}
                if membership == "join":
                    changed |= others
                else:
                    maybe_left |= others
            elif membership == "join":
                if room_id in my_rooms:
                    changed.add(member)
            elif room_id in my_rooms or room_id in rooms_i_left:
                maybe_left.add(member)
        sharing = await self.store.sharing_a_room(user_id, (changed | maybe_left) - {user_id})
        changed = {u for u in changed if u == user_id or u in sharing}
        left = {u for u in maybe_left if u != user_id and u not in sharing}
        return changed, left
