"""What a remote server may read of a room (spec: "Authorization" of /event, /backfill, /state,
/get_missing_events): the events that one of its users could see, by the same history
visibility rules the client API applies to one user (homeserver/rooms/visibility.py).
"""

from __future__ import annotations

from typing import Sequence

from storage.events import EventRow, EventStore


def server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1] if ":" in user_id else ""


class ServerVisibility:
    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def servers_in_room(self, room_id: str) -> set[str]:
        return {server_of(u) for u in await self.store.get_members(room_id, ("join",))}

    async def is_in_room(self, server: str, room_id: str) -> bool:
        return server in await self.servers_in_room(room_id)

    async def filter(self, server: str, rows: Sequence[EventRow]) -> list[EventRow]:
        """The rows ``server`` may see: world_readable, or one of its users was joined at the
        event (invited, for history_visibility invited), or — for shared history — it has a
        user in the room now. A server that never had a member sees nothing but
        world_readable history."""
        in_room_now: dict[str, bool] = {}
        out = []
        for row in rows:
            if row.rejected or row.soft_failed:
                continue
            room_id = row.event.room_id
            if room_id not in in_room_now:
                in_room_now[room_id] = await self.is_in_room(server, room_id)
            state = {}
            if row.state_group_before is not None:
                state = await self.store.get_state_group(row.state_group_before)
            hv_id = state.get(("m.room.history_visibility", ""))
            hv = "shared"
            if hv_id:
                hv_ev = (await self.store.get_events([hv_id])).get(hv_id)
                value = hv_ev.content.get("history_visibility") if hv_ev else None
                if value in ("world_readable", "shared", "invited", "joined"):
                    hv = value
            if hv == "world_readable":
                out.append(row)
                continue
            member_ids = [eid for (t, k), eid in state.items()
                          if t == "m.room.member" and server_of(k) == server]
            members = await self.store.get_events(member_ids)
            memberships = {m.membership for m in members.values()}
            ev = row.event
            if ev.type == "m.room.member" and ev.state_key and server_of(ev.state_key) == server:
                memberships.add(ev.membership)  # one's own membership change is visible
            if "join" in memberships or (hv == "invited" and "invite" in memberships) or (
                    hv == "shared" and in_room_now[room_id]):
                out.append(row)
        return out
