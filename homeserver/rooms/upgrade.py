"""Room upgrades (spec: Client-Server "Room Upgrades", server behaviour).

A new room of the requested version is created with a ``predecessor`` pointer, the transferable
state is copied across, local aliases move, the old room gets an ``m.room.tombstone`` and its
power levels are raised so ordinary members can no longer talk or invite there.
"""

from __future__ import annotations

from typing import Any

from crypto.room_versions import KNOWN_ROOM_VERSIONS, get_room_version
from homeserver.http.errors import MatrixError
from homeserver.rooms.power_levels import get_required_level
from homeserver.rooms.service import RoomService
from storage.directory import DirectoryStore

TRANSFERABLE = ("m.room.server_acl", "m.room.encryption", "m.room.name", "m.room.avatar",
                "m.room.topic", "m.room.guest_access", "m.room.history_visibility",
                "m.room.join_rules")


class RoomUpgrader:
    def __init__(self, rooms: RoomService, directory: DirectoryStore) -> None:
        self.rooms = rooms
        self.directory = directory

    async def upgrade(self, room_id: str, user_id: str, new_version: str,
                      additional_creators: list[str]) -> str:
        if new_version not in KNOWN_ROOM_VERSIONS:
            raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION",
                              f"Room version {new_version!r} is not supported by this server")
        await self.rooms.room_version(room_id)
        level, pl_event = await self.rooms.power_of(room_id, user_id)
        if level < get_required_level("m.room.tombstone", True, pl_event):
            raise MatrixError(403, "M_FORBIDDEN", "You may not upgrade this room")
        keys = [(t, "") for t in (*TRANSFERABLE, "m.room.create", "m.room.power_levels",
                                  "m.room.canonical_alias")]
        old = await self.rooms.current_state_events(room_id, keys)
        old_create = old[("m.room.create", "")]
        rv = get_room_version(new_version)

        create: dict[str, Any] = {"predecessor": {"room_id": room_id}}
        if isinstance(old_create.content.get("type"), str):
            create["type"] = old_create.content["type"]
        if rv.privileged_room_creators and additional_creators:
            create["additional_creators"] = list(additional_creators)
        pl: dict[str, Any] = dict(old[("m.room.power_levels", "")].content) \
            if ("m.room.power_levels", "") in old else {}
        users = dict(pl.get("users") or {})
        if rv.privileged_room_creators:
            # Creators have infinite power in these versions and may not be listed.
            for u in (user_id, *additional_creators):
                users.pop(u, None)
        elif user_id not in users:
            # Coming from a version where the upgrader's power came from being a creator.
            users[user_id] = 100
        pl["users"] = users
        initial_state = [(t, "", dict(old[(t, "")].content)) for t in TRANSFERABLE if (t, "") in old]
        new_room = await self.rooms.create_room(
            user_id, room_version=new_version, preset=None, visibility="private",
            creation_content=create, initial_state=initial_state, name=None, topic=None,
            invite=[], is_direct=False, power_level_override=pl, alias_localpart=None)

        for alias in await self.directory.get_aliases_for_room(room_id):
            await self.directory.move_alias(alias, new_room)
        canonical = old.get(("m.room.canonical_alias", ""))
        if canonical is not None and canonical.content:
            await self.rooms.send(new_room, user_id, "m.room.canonical_alias",
                                  dict(canonical.content), state_key="")
        if await self.directory.is_public(room_id):
            await self.directory.set_public(room_id, False)
            await self.directory.set_public(new_room, True)
        await self.rooms.send(room_id, user_id, "m.room.tombstone",
                              {"body": "This room has been replaced", "replacement_room": new_room},
                              state_key="")
        await self._restrict_old_room(room_id, user_id)
        return new_room

    async def _restrict_old_room(self, room_id: str, user_id: str) -> None:
        """Stop ordinary members from talking or inviting in the old room, when we may."""
        key = ("m.room.power_levels", "")
        pl_event = (await self.rooms.current_state_events(room_id, [key])).get(key)
        content: dict[str, Any] = dict(pl_event.content) if pl_event is not None else {}
        users_default = content.get("users_default", 0)
        restricted = max(50, (users_default if isinstance(users_default, int) else 0) + 1)
        changed = False
        for name in ("events_default", "invite"):
            current = content.get(name, 0)
            if not isinstance(current, int) or current < restricted:
                content[name] = restricted
                changed = True
        if changed:
            try:
                await self.rooms.send(room_id, user_id, "m.room.power_levels", content, state_key="")
            except MatrixError:
                pass  # the upgrader may not be allowed to change power levels; the spec says "if possible"
