"""A small room-DAG builder for the state resolution tests.

Events get readable ids ("$NAME:example.com") instead of reference hashes, so tests can name
them and control the event-id tie-breaks; auth events are picked from the state before each
event by the auth events selection, as a real server would.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from crypto.room_versions import RoomVersion
from homeserver.rooms.auth_rules import auth_types_for_event
from homeserver.rooms.events import Event, StateKey
from homeserver.rooms.state_res import resolve_state

ALICE = "@alice:example.com"
BOB = "@bob:example.com"
CHARLIE = "@charlie:example.com"
EVELYN = "@evelyn:example.com"
ZARA = "@zara:example.com"

JOIN = {"membership": "join"}

StateMap = dict[StateKey, str]


def eid(name: str) -> str:
    """The event id the builder gives the event called ``name``."""
    return f"${name}:example.com"


class Room:
    """Events of one room, the state after each, and an async batch fetcher over them."""

    def __init__(self, room_version: RoomVersion) -> None:
        self.rv = room_version
        self.events: dict[str, Event] = {}
        self.state_after: dict[str, StateMap] = {}
        self.room_id = "!room:example.com"
        self.fetched: list[str] = []  # every id get_events was asked for, in order
        self._ts = 0
        self._last: str | None = None

    # --- building ------------------------------------------------------------------------------

    def add(
        self,
        name: str,
        sender: str,
        event_type: str,
        state_key: str | None = None,
        content: Mapping[str, Any] | None = None,
        *,
        prev: Sequence[str] | None = None,
        state_before: Mapping[StateKey, str] | None = None,
        auth: Sequence[str] | None = None,
        ts: int | None = None,
    ) -> Event:
        """Add an event after ``prev`` (default: the last one added); returns it.

        The state before it is the state after its single prev event unless ``state_before``
        is given (needed for merges); ``auth`` overrides the selected auth events (names).
        """
        prev_names = list(prev) if prev is not None else ([self._last] if self._last else [])
        if state_before is None:
            if len(prev_names) > 1:
                raise ValueError("a merge needs state_before")
            state_before = self.state_after[prev_names[0]] if prev_names else {}
        content = dict(content or {})
        if auth is None:
            keys = auth_types_for_event(event_type, sender, state_key, content, self.rv)
            auth_ids = sorted(state_before[k] for k in keys if k in state_before)
        else:
            auth_ids = [eid(a) for a in auth]
        prev_ids = [eid(p) for p in prev_names]
        self._ts = self._ts + 1 if ts is None else ts
        pdu: dict[str, Any] = {
            "type": event_type,
            "sender": sender,
            "content": content,
            "depth": 1 + max((self.by_id(p).depth for p in prev_ids), default=0),
            "origin_server_ts": self._ts,
            "prev_events": self._refs(prev_ids),
            "auth_events": self._refs(auth_ids),
            "room_id": self.room_id,
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        event_id = eid(name)
        if event_type == "m.room.create" and self.rv.room_id_is_create_event_hash:
            # v12: the room id is the create event's id with '!' (MSC4291); no room_id field.
            del pdu["room_id"]
            self.room_id = "!" + event_id[1:]
        if not self.rv.event_id_is_reference_hash:
            pdu["event_id"] = event_id
        event = Event(event_id, self.rv, pdu)
        event.check_format()
        self.events[event_id] = event
        after = dict(state_before)
        if state_key is not None:
            after[(event_type, state_key)] = event_id
        self.state_after[name] = after
        self._last = name
        return event

    def _refs(self, ids: list[str]) -> list[Any]:
        if self.rv.event_id_is_reference_hash:
            return ids
        return [[i, {}] for i in ids]

    def by_id(self, event_id: str) -> Event:
        return self.events[event_id]

    def __getitem__(self, name: str) -> Event:
        return self.events[eid(name)]

    def state(self, name: str) -> StateMap:
        """A copy of the state after the event called ``name``."""
        return dict(self.state_after[name])

    # --- resolving -----------------------------------------------------------------------------

    async def get_events(self, event_ids: Iterable[str]) -> dict[str, Event]:
        ids = list(event_ids)
        self.fetched.extend(ids)
        return {i: self.events[i] for i in ids if i in self.events}

    async def get_auth_chain(self, event_ids: Iterable[str]) -> set[str]:
        """A reference auth-chain walk, standing in for a storage-side chain index."""
        seen: set[str] = set()
        todo = [a for e in event_ids if e in self.events for a in self.events[e].auth_event_ids]
        while todo:
            event_id = todo.pop()
            if event_id in seen:
                continue
            seen.add(event_id)
            if event_id in self.events:
                todo.extend(self.events[event_id].auth_event_ids)
        return seen

    async def resolve(self, *state_sets: Mapping[StateKey, str], **kwargs: Any) -> StateMap:
        return await resolve_state(self.rv, list(state_sets), self.get_events, **kwargs)

    async def merge(self, *names: str, **kwargs: Any) -> StateMap:
        """The resolved state of the states after the named events."""
        return await self.resolve(*(self.state_after[n] for n in names), **kwargs)

    # --- the usual opening ---------------------------------------------------------------------

    def start(self, members: Sequence[str] = (BOB, CHARLIE, ZARA)) -> None:
        """CREATE, Alice's join, IPOWER (Alice admin), IJR (public), then joins by ``members``."""
        create: dict[str, Any] = {"room_version": self.rv.identifier}
        if not self.rv.implicit_room_creator:
            create["creator"] = ALICE
        self.add("CREATE", ALICE, "m.room.create", "", create)
        self.add("IMA", ALICE, "m.room.member", ALICE, JOIN)
        self.add("IPOWER", ALICE, "m.room.power_levels", "", self.power_content())
        self.add("IJR", ALICE, "m.room.join_rules", "", {"join_rule": "public"})
        for user in members:
            self.add("IM" + user[1].upper(), user, "m.room.member", user, JOIN)

    def power_content(self, **users: int) -> dict[str, Any]:
        """Power levels giving Alice 100 (implicitly, as creator, in v12) plus ``users``."""
        levels = {} if self.rv.privileged_room_creators else {ALICE: 100}
        levels.update({f"@{k}:example.com": v for k, v in users.items()})
        return {"users": levels}

