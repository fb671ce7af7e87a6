"""Stripped state (spec "Stripped state"): what an invitee or knocker sees of a room before
joining it — a few state events, reduced to type, state key, content and sender.

One list of event types serves every place that sends it: invites and knocks in /sync and
sliding sync (the room as it was at the membership event, followed by that event), the
``invite_room_state`` of invites sent over federation, and the ``knock_room_state`` a
``send_knock`` answers with (the room as it is now).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from homeserver.rooms.events import Event
from storage.events import EventStore
from storage.state import StateMap

STRIPPED_STATE_TYPES = ("m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
                        "m.room.canonical_alias", "m.room.encryption", "m.room.topic")
STRIPPED_STATE_KEYS = [(t, "") for t in STRIPPED_STATE_TYPES]


def stripped_event(e: Event) -> dict[str, Any]:
    return {"type": e.type, "state_key": e.state_key, "content": dict(e.content),
            "sender": e.sender}


class StrippedState:
    def __init__(self, events: EventStore) -> None:
        self.events = events
        # async (invite event id) -> the stripped state another server sent with its invite
        # of a local user to a room this server is not in (set when federation is on).
        self.remote_invite_state: Callable[[str], Awaitable[list[Any] | None]] | None = None

    async def from_state(self, state: StateMap) -> list[dict[str, Any]]:
        ids = [state[k] for k in STRIPPED_STATE_KEYS if k in state]
        events = await self.events.get_events(ids)
        return [stripped_event(events[i]) for i in ids if i in events]

    async def of_room(self, room_id: str) -> list[dict[str, Any]]:
        """The room as it is now."""
        return await self.from_state(await self.events.get_current_state_ids(room_id))

    async def at_membership(self, event_id: str) -> list[dict[str, Any]]:
        """For /sync's invite and knock sections: the room as it was at the membership event,
        then the membership event itself."""
        row = await self.events.get_event_row(event_id)
        state: StateMap = {}
        if row is not None and row.state_group_before is not None:
            state = await self.events.get_state_group(row.state_group_before)
        out = await self.from_state(state)
        if not state and self.remote_invite_state is not None:
            # An invite from another server to a room this one is not in: the stripped state
            # the inviting server sent with it.
            out = [e for e in await self.remote_invite_state(event_id) or []
                   if isinstance(e, dict) and e.get("type") != "m.room.member"]
        if row is not None:
            ev = row.event
            out.append({**stripped_event(ev), "event_id": ev.event_id,
                        "origin_server_ts": ev.origin_server_ts})
        return out
