"""The visibility function remembers (state group, reader) -> (history visibility, membership),
which never changes once a state group is written, but not while an event it names is missing."""

from __future__ import annotations

from typing import Any, Iterable

import pytest_twisted

from homeserver.rooms.events import Event
from homeserver.rooms.visibility import Visibility
from storage.events import EventRow

ROOM = "!r:hs"


def event(event_id: str, etype: str, content: dict[str, Any], state_key: str | None = None,
          sender: str = "@a:hs") -> Event:
    pdu: dict[str, Any] = {"event_id": event_id, "type": etype, "sender": sender, "room_id": ROOM,
                           "content": content, "depth": 1, "origin_server_ts": 1,
                           "prev_events": [], "auth_events": []}
    if state_key is not None:
        pdu["state_key"] = state_key
    return Event.from_pdu(pdu, "1")


class Store:
    def __init__(self) -> None:
        self.groups = {1: {("m.room.history_visibility", ""): "$hv",
                           ("m.room.member", "@b:hs"): "$b_join"}}
        self.events = {"$hv": event("$hv", "m.room.history_visibility",
                                    {"history_visibility": "joined"}, "")}
        self.group_reads = 0

    async def get_state_group(self, group: int, *, copy: bool = True) -> dict:
        self.group_reads += 1
        return self.groups[group]

    async def get_events(self, ids: Iterable[str]) -> dict[str, Event]:
        return {i: self.events[i] for i in ids if i in self.events}

    async def get_join_positions(self, user_id: str, room_ids: Iterable[str]) -> dict:
        return {}

    async def get_forgotten(self, user_id: str, room_ids: Iterable[str]) -> set:
        return set()


@pytest_twisted.ensureDeferred
async def test_remembered_per_group_and_reader_but_not_while_an_event_is_missing() -> None:
    store = Store()
    vis = Visibility(store)  # type: ignore[arg-type]
    msg = EventRow(event("$m", "m.room.message", {"body": "hi"}), 10, False, False, False, 1, 1)
    # The reader's join is not stored yet (it may come over federation): not visible, and
    # not remembered.
    assert await vis.filter_for_user("@b:hs", [msg]) == []
    store.events["$b_join"] = event("$b_join", "m.room.member", {"membership": "join"}, "@b:hs",
                                    sender="@b:hs")
    assert await vis.filter_for_user("@b:hs", [msg]) == [msg]
    reads = store.group_reads
    assert await vis.filter_for_user("@b:hs", [msg]) == [msg]
    assert store.group_reads == reads  # answered from memory
    # Another reader of the same group is worked out for itself.
    assert await vis.filter_for_user("@c:hs", [msg]) == []
    assert store.group_reads == reads + 1
