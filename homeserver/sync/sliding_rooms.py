"""The room list of simplified sliding sync (MSC4186 "Lists and subscriptions").

The server's list for a user holds the rooms they are joined to, invited to, knocking on or
banned from (unless they never joined), the rooms they were kicked from, and the rooms they left
themselves during the request's token range if the connection had been sent them (so the client
sees the leave); forgotten rooms are never listed. Each
list filters it, sorts it by recent activity (the latest event the user may see: for rooms they
are not joined to, their membership event) and takes the rooms inside its ranges. A room
subscription adds a room the user has, or had, a membership in. Rooms matched by several rules
get the combined room config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection

from homeserver.sync.sliding_request import ListConfig, ListFilters, RoomConfig, SlidingSyncRequest
from homeserver.sync.tokens import SyncToken
from storage.account_data import AccountDataStore
from storage.events import EventStore, PersistedEvent
from storage.sliding_sync import SlidingSyncStore
from storage.state import StateKey
from storage.sync import Membership, SyncStore

# MSC4186 bump_stamp: the event types that count as "proper" activity.
BUMP_EVENT_TYPES = ("m.room.create", "m.room.message", "m.room.encrypted", "m.sticker",
                    "m.call.invite", "m.poll.start", "m.beacon_info")
_FACT_TYPES = ("m.room.create", "m.room.encryption")
_SPACE_CHILD = "m.space.child"


class RoomActivity:
    """Latest timeline event and latest bump event per room.

    Kept current by the event creator's listener and filled from the database on a miss. Values
    only grow (max of everything seen), which keeps them right however a database read and a
    new event interleave: each is the position of an event that exists, and the newest event
    always reaches the listener.
    """

    def __init__(self, store: SlidingSyncStore) -> None:
        self.store = store
        self._latest: dict[str, int] = {}
        self._bump: dict[str, int] = {}

    def on_event(self, persisted: PersistedEvent) -> None:
        if persisted.state_group_before is None:
            return  # an outlier: not part of the timeline
        room_id, pos = persisted.event.room_id, persisted.stream_ordering
        self._latest[room_id] = max(self._latest.get(room_id, 0), pos)
        if persisted.event.type in BUMP_EVENT_TYPES:
            self._bump[room_id] = max(self._bump.get(room_id, 0), pos)

    async def latest(self, bounds: dict[str, int]) -> dict[str, int]:
        """room id -> its latest timeline event at or before the room's bound."""
        return await self._lookup(self._latest, bounds, None)

    async def latest_bump(self, bounds: dict[str, int]) -> dict[str, int]:
        """room id -> its latest bump event at or before the room's bound."""
        return await self._lookup(self._bump, bounds, BUMP_EVENT_TYPES)

    async def _lookup(self, cache: dict[str, int], bounds: dict[str, int],
                      types: tuple[str, ...] | None) -> dict[str, int]:
        out: dict[str, int] = {}
        missing: dict[str, int] = {}
        for room_id, upto in bounds.items():
            pos = cache.get(room_id)
            if pos is not None and pos <= upto:
                out[room_id] = pos
            else:
                missing[room_id] = upto
        if missing:
            found = await self.store.latest_positions(missing, types)
            for room_id, pos in found.items():
                out[room_id] = pos
                if room_id not in cache:
                    # Read with a bound at or above every position handed out before it:
                    # later events reach on_event, so this is the latest for now.
                    cache[room_id] = max(cache.get(room_id, 0), pos)
        return out


@dataclass
class InterestedRooms:
    """What the lists and subscriptions select, and what the response needs to know about it."""
    memberships: dict[str, Membership]
    # Memberships that began in the token range (joined, invited, knocking anew): the room is
    # sent from scratch.
    fresh: set[str]
    newly_left: set[str]
    dm_rooms: set[str]
    counts: dict[str, int] = field(default_factory=dict)
    # list name -> the room ids in its ranges, in order
    list_rooms: dict[str, list[str]] = field(default_factory=dict)
    # room id -> the names of the lists whose ranges hold it
    room_lists: dict[str, list[str]] = field(default_factory=dict)
    subscribed: set[str] = field(default_factory=set)
    # every room matched by a rule -> its combined room config
    configs: dict[str, RoomConfig] = field(default_factory=dict)


class RoomLists:
    def __init__(self, events: EventStore, sync_store: SyncStore, store: SlidingSyncStore,
                 account_data: AccountDataStore, activity: RoomActivity) -> None:
        self.events = events
        self.sync_store = sync_store
        self.store = store
        self.account_data = account_data
        self.activity = activity

    async def compute(self, user_id: str, request: SlidingSyncRequest, since: SyncToken | None,
                      now: SyncToken, sent_before: Collection[str] = ()) -> InterestedRooms:
        """``sent_before``: the rooms the connection has been sent (a room the user left
        themselves is listed once more only if the client has it, to see the leave)."""
        memberships = {m.room_id: m for m in await self.sync_store.current_memberships(user_id)
                       if not m.forgotten and m.stream_ordering <= now.events}
        fresh: set[str] = set()
        newly_left: set[str] = set()
        if since is not None:
            changes = await self.sync_store.membership_changes(user_id, since.events, now.events)
            changed: dict[str, set[str]] = {}
            for c in changes:
                if c.room_id in memberships:
                    changed.setdefault(c.room_id, set()).add(c.membership)
            before = await self.store.memberships_at(user_id, changed, since.events)
            for room_id, seen in changed.items():
                m = memberships[room_id]
                if m.membership in ("leave", "ban"):
                    newly_left.add(room_id)
                elif before.get(room_id) != m.membership or seen != {m.membership}:
                    # A new membership, or one left and taken again within the range.
                    fresh.add(room_id)
        rooms = InterestedRooms(memberships, fresh, newly_left, await self._dm_rooms(user_id))
        if request.lists:
            listed = await self._listable(user_id, memberships, newly_left & set(sent_before))
            order = await self._sorted(listed, now)
            facts = _RoomFacts(self, user_id, memberships, now)
            for lst in request.lists:
                selected = [r for r in order if await facts.passes(r, lst.filters, rooms.dm_rooms)]
                rooms.counts[lst.name] = len(selected)
                in_range = _in_ranges(selected, lst)
                rooms.list_rooms[lst.name] = in_range
                for room_id in in_range:
                    _add_config(rooms.configs, room_id, lst.room)
                    rooms.room_lists.setdefault(room_id, []).append(lst.name)
        for room_id, cfg in request.subscriptions.items():
            if room_id in memberships:
                rooms.subscribed.add(room_id)
                _add_config(rooms.configs, room_id, cfg)
        return rooms

    async def _dm_rooms(self, user_id: str) -> set[str]:
        """The rooms m.direct names (account data is the client's: anything malformed is skipped)."""
        content = await self.account_data.get_global(user_id, "m.direct")
        out: set[str] = set()
        if isinstance(content, dict):
            for room_ids in content.values():
                if isinstance(room_ids, list):
                    out.update(r for r in room_ids if isinstance(r, str))
        return out

    async def _listable(self, user_id: str, memberships: dict[str, Membership],
                        show_leave: set[str]) -> dict[str, Membership]:
        """The server's room list: no rooms the user left themselves (but those in
        ``show_leave``), and no rooms they were banned from without ever joining."""
        leaves = [m.event_id for m in memberships.values() if m.membership == "leave"
                  and m.room_id not in show_leave]
        rows = await self.events.get_rows(leaves) if leaves else {}
        bans = [r for r, m in memberships.items() if m.membership == "ban"]
        joins = await self.events.get_join_positions(user_id, bans) if bans else {}
        out = {}
        for room_id, m in memberships.items():
            if m.membership == "leave" and room_id not in show_leave:
                row = rows.get(m.event_id)
                if row is None or row.event.sender == user_id:
                    continue  # left by themselves (kicks stay listed)
            if m.membership == "ban" and not joins.get(room_id):
                continue
            out[room_id] = m
        return out

    async def _sorted(self, rooms: dict[str, Membership], now: SyncToken) -> list[str]:
        """Room ids by recent activity, newest first (ties by room id, for a stable order)."""
        joined = {r: now.events for r, m in rooms.items() if m.membership == "join"}
        latest = await self.activity.latest(joined)
        key = {r: latest.get(r, m.stream_ordering) if m.membership == "join" else m.stream_ordering
               for r, m in rooms.items()}
        return sorted(rooms, key=lambda r: (-key[r], r))


class _RoomFacts:
    """Room properties the list filters ask about, loaded once per request and only if asked.

    For rooms the user is joined to they come from the current state; otherwise from the state
    the user last saw (before their invite, knock or leave), as stripped state would show it.
    """

    def __init__(self, lists: RoomLists, user_id: str, memberships: dict[str, Membership],
                 now: SyncToken) -> None:
        self.lists = lists
        self.user_id = user_id
        self.memberships = memberships
        self.now = now
        self._facts: dict[str, dict[StateKey, str]] | None = None
        self._contents: dict[str, dict[str, Any]] = {}
        self._space_children: dict[str, set[str]] = {}
        self._tags: dict[str, set[str]] | None = None

    async def passes(self, room_id: str, f: ListFilters, dm_rooms: set[str]) -> bool:
        m = self.memberships[room_id]
        if f.is_dm is not None and (room_id in dm_rooms) != f.is_dm:
            return False
        if f.is_invite is not None and (m.membership == "invite") != f.is_invite:
            return False
        if f.is_encrypted is not None:
            facts = await self._room_facts()
            if (("m.room.encryption", "") in facts.get(room_id, {})) != f.is_encrypted:
                return False
        if f.needs_room_type:
            room_type = await self._room_type(room_id)
            if f.room_types is not None and room_type not in f.room_types:
                return False
            if f.not_room_types is not None and room_type in f.not_room_types:
                return False
        if f.spaces is not None:
            children: set[str] = set()
            for space_id in f.spaces:
                children |= await self._children(space_id)
            if room_id not in children:
                return False
        if f.tags is not None or f.not_tags is not None:
            tags = (await self._room_tags()).get(room_id, set())
            if f.not_tags is not None and tags & set(f.not_tags):
                return False
            if f.tags is not None and not tags & set(f.tags):
                return False
        return True

    async def _room_facts(self) -> dict[str, dict[StateKey, str]]:
        if self._facts is None:
            joined = [r for r, m in self.memberships.items() if m.membership == "join"]
            facts = await self.lists.store.current_state_of_types(joined, _FACT_TYPES)
            others = [m for m in self.memberships.values() if m.membership != "join"]
            rows = await self.lists.events.get_rows(m.event_id for m in others) if others else {}
            for m in others:
                row = rows.get(m.event_id)
                if row is None or row.state_group_before is None:
                    continue
                state = await self.lists.events.get_state_group(row.state_group_before)
                facts[m.room_id] = {k: state[k] for k in ((t, "") for t in _FACT_TYPES) if k in state}
            self._facts = facts
        return self._facts

    async def _room_type(self, room_id: str) -> str | None:
        create_id = (await self._room_facts()).get(room_id, {}).get(("m.room.create", ""))
        if create_id is None:
            return None
        if create_id not in self._contents:
            events = await self.lists.events.get_events([create_id])
            self._contents[create_id] = dict(events[create_id].content) if create_id in events else {}
        room_type = self._contents[create_id].get("type")
        return room_type if isinstance(room_type, str) else None

    async def _children(self, space_id: str) -> set[str]:
        """Rooms a space the user is joined to names as m.space.child (with a via, per spec)."""
        if space_id not in self._space_children:
            children: set[str] = set()
            m = self.memberships.get(space_id)
            if m is not None and m.membership == "join":
                state = await self.lists.events.get_current_state_ids(space_id)
                ids = {k: v for k, v in state.items() if k[0] == _SPACE_CHILD}
                events = await self.lists.events.get_events(ids.values())
                for (_, child), event_id in ids.items():
                    ev = events.get(event_id)
                    via = ev.content.get("via") if ev is not None else None
                    if isinstance(via, list) and via:
                        children.add(child)
            self._space_children[space_id] = children
        return self._space_children[space_id]

    async def _room_tags(self) -> dict[str, set[str]]:
        if self._tags is None:
            data = await self.lists.account_data.get_room_changes(
                self.user_id, None, None, self.now.account_data)
            self._tags = {}
            for room_id, by_type in data.items():
                tags = by_type.get("m.tag", {}).get("tags")
                if isinstance(tags, dict):
                    self._tags[room_id] = set(tags)
        return self._tags


def _in_ranges(rooms: list[str], lst: ListConfig) -> list[str]:
    if lst.ranges is None:
        return list(rooms)
    picked: set[int] = set()
    for lo, hi in lst.ranges:
        picked.update(range(lo, min(hi, len(rooms) - 1) + 1))
    return [rooms[i] for i in sorted(picked)]


def _add_config(configs: dict[str, RoomConfig], room_id: str, cfg: RoomConfig) -> None:
    old = configs.get(room_id)
    configs[room_id] = cfg if old is None else old.combine(cfg)
