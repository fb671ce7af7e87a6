"""One room's entry in a simplified sliding sync response (MSC4186 "Room results").

A room never sent on the connection (or whose membership began anew: a join, an invite) is sent
whole (``initial``): the newest ``timeline_limit`` events, the required state as of now, name,
avatar, heroes and member counts. Otherwise only what changed since the room was last sent:
newer timeline events, state that changed (or that the room config newly asks for), and the
metadata those changes touch. Rooms the user is invited to or knocking on get stripped state
only; rooms they left or were removed from are shown up to their leave, never beyond.

Every timeline event passes the visibility function; a user who was never joined to a room
they left (a rejected invite) sees their own membership and nothing of the room's state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from homeserver.rooms.pagination import position_token
from homeserver.rooms.serialize import ClientSerializer
from homeserver.rooms.stripped import StrippedState
from homeserver.rooms.visibility import Visibility
from homeserver.sync.sliding_connections import ConnectionState
from homeserver.sync.sliding_request import MEMBER, RoomConfig
from homeserver.sync.sliding_rooms import InterestedRooms, RoomActivity
from homeserver.sync.tokens import SyncToken
from storage.events import EventRow, EventStore
from storage.state import StateKey, StateMap
from storage.sync import Membership, SyncStore

MAX_HEROES = 5
_NAME = ("m.room.name", "")
_AVATAR = ("m.room.avatar", "")


@dataclass
class RoomResult:
    body: dict[str, Any]
    initial: bool
    expanded: bool
    timeline_event_ids: list[str] = field(default_factory=list)

    def worth_sending(self) -> bool:
        b = self.body
        return self.initial or self.expanded or any(k in b for k in (
            "timeline", "required_state", "invite_state", "name", "avatar", "heroes",
            "joined_count", "invited_count"))


@dataclass
class _Plan:
    """How one room is to be sent, decided before anything is read."""
    room_id: str
    membership: Membership
    config: RoomConfig
    prev_config: RoomConfig | None
    initial: bool
    expanded: bool
    from_bound: int | None   # the stream position the client has the room up to
    to_bound: int            # the last stream position the user may see


class RoomBuilder:
    def __init__(self, events: EventStore, sync_store: SyncStore, visibility: Visibility,
                 serializer: ClientSerializer, activity: RoomActivity,
                 stripped: StrippedState | None = None) -> None:
        self.events = events
        self.stripped = stripped or StrippedState(events)
        self.sync_store = sync_store
        self.visibility = visibility
        self.serializer = serializer
        self.activity = activity

    async def build(self, user_id: str, since: SyncToken | None, now: SyncToken,
                    rooms: InterestedRooms, to_send: list[str], prev: ConnectionState,
                    new: ConnectionState) -> dict[str, RoomResult]:
        """Results for the rooms in ``to_send``; records what was sent in ``new``."""
        plans = [self._plan(since, now, rooms, room_id, prev) for room_id in to_send]
        timelines = await self.sync_store.timelines([
            (p.room_id, None if p.initial or p.expanded else p.from_bound, p.to_bound,
             p.config.timeline_limit)
            for p in plans if p.config.timeline_limit > 0 and not _stripped_only(p)])
        all_rows = [r for rows, _ in timelines.values() for r in rows]
        visible_ids = {r.event.event_id for r in await self.visibility.filter_for_user(user_id, all_rows)}
        bumps = await self.activity.latest_bump(
            {p.room_id: now.events for p in plans if p.membership.membership == "join"})
        out = {}
        for p in plans:
            timeline = timelines.get(p.room_id)
            result = await self._room(user_id, since, rooms, p, timeline, visible_ids, prev, new)
            bump = bumps.get(p.room_id) if p.membership.membership == "join" else None
            result.body["bump_stamp"] = bump if bump is not None else p.membership.stream_ordering
            out[p.room_id] = result
        return out

    @staticmethod
    def _plan(since: SyncToken | None, now: SyncToken, rooms: InterestedRooms, room_id: str,
              prev: ConnectionState) -> _Plan:
        m = rooms.memberships[room_id]
        config = rooms.configs[room_id]
        prev_config = prev.configs.get(room_id)
        from_bound: int | None = None
        initial = True
        if since is not None and room_id not in rooms.fresh and room_id in prev.rooms:
            status = prev.rooms[room_id]
            from_bound = since.events if status is None else status
            initial = False
        expanded = (not initial and prev_config is not None
                    and config.timeline_limit > prev_config.timeline_limit)
        to_bound = now.events if m.membership == "join" else min(m.stream_ordering, now.events)
        return _Plan(room_id, m, config, prev_config, initial, expanded, from_bound, to_bound)

    async def _room(self, user_id: str, since: SyncToken | None, rooms: InterestedRooms, p: _Plan,
                    timeline: tuple[list[EventRow], bool] | None, visible_ids: set[str],
                    prev: ConnectionState, new: ConnectionState) -> RoomResult:
        m = p.membership
        body: dict[str, Any] = {"membership": m.membership}
        if p.initial:
            body["initial"] = True
        if p.expanded:
            # The MSC's name, and the one Synapse (and so today's clients) use.
            body["expanded_timeline"] = body["unstable_expanded_timeline"] = True
        names = rooms.room_lists.get(p.room_id)
        if names:
            body["lists"] = names
        if p.room_id in rooms.dm_rooms:
            body["is_dm"] = True
        result = RoomResult(body, p.initial, p.expanded)
        self._record(p, timeline, new)
        if _stripped_only(p):
            if p.initial:
                stripped = await self.stripped.at_membership(m.event_id)
                body["invite_state"] = body["stripped_state"] = stripped
            return result

        rows: list[EventRow] = []
        limited = False
        if timeline is not None:
            all_rows, limited = timeline
            rows = [r for r in all_rows if r.event.event_id in visible_ids]
            result.timeline_event_ids = [r.event.event_id for r in rows]
            if rows:
                body["timeline"] = await self.serializer.serialize(rows, include_room_id=False,
                                                                   user_id=user_id)
                body["prev_batch"] = position_token(rows[0].event.depth, rows[0].stream_ordering)
            elif all_rows:
                last = all_rows[-1]
                body["prev_batch"] = position_token(last.event.depth, last.stream_ordering + 1)
            body["limited"] = limited
            if since is not None:
                live = 0
                for r in reversed(rows):
                    if r.stream_ordering <= since.events:
                        break
                    live += 1
                body["num_live"] = live
            else:
                body["num_live"] = 0

        restricted = m.membership in ("leave", "ban") and not (
            await self.events.get_join_positions(user_id, [p.room_id])).get(p.room_id)
        state_to = await self._state_at(p.room_id, p.to_bound)
        if restricted:
            # Never joined (a rejected invite, a ban before joining): only their own membership.
            if p.initial or p.room_id in rooms.newly_left:
                body["required_state"] = await self.serializer.serialize(
                    [r for r in (await self.events.get_rows([m.event_id])).values()],
                    include_room_id=False)
            return result

        delta: StateMap = dict(state_to)
        removed: list[StateKey] = []
        if not p.initial:
            assert p.from_bound is not None
            state_from = await self._state_at(p.room_id, p.from_bound)
            delta = {k: v for k, v in state_to.items() if state_from.get(k) != v}
            removed = [k for k in state_from if k not in state_to]
        chosen = self._required_state(user_id, p, state_to, delta, rows, limited, prev, new)
        stubs = [{"type": t, "state_key": k} for t, k in removed
                 if p.config.required_state.wants(t, k, user_id)]
        if chosen or stubs:
            state_rows = await self.events.get_rows(chosen.values())
            body["required_state"] = await self.serializer.serialize(
                [state_rows[i] for i in chosen.values() if i in state_rows],
                include_room_id=False) + stubs
        await self._meta(user_id, p, state_to, delta, removed, body)
        return result

    def _record(self, p: _Plan, timeline: tuple[list[EventRow], bool] | None,
                new: ConnectionState) -> None:
        """The room is sent up to now, with this config; a smaller timeline_limit is remembered
        only when the client's timeline has a gap (otherwise it holds the longer one already)."""
        new.rooms[p.room_id] = None
        config = p.config
        limited = timeline[1] if timeline is not None else False
        if (p.prev_config is not None and not p.initial
                and config.timeline_limit < p.prev_config.timeline_limit and not limited):
            config = RoomConfig(p.prev_config.timeline_limit, config.required_state)
        new.configs[p.room_id] = config

    def _required_state(self, user_id: str, p: _Plan, state_to: StateMap, delta: StateMap,
                        timeline: list[EventRow], limited: bool, prev: ConnectionState,
                        new: ConnectionState) -> dict[StateKey, str]:
        wanted = p.config.required_state
        chosen = {k: v for k, v in delta.items() if wanted.wants(k[0], k[1], user_id)}
        if not p.initial and p.prev_config is not None and p.prev_config.required_state != wanted:
            # The config asks for more than before: the newly covered state, as it is now.
            before = p.prev_config.required_state
            for k, v in state_to.items():
                if wanted.wants(k[0], k[1], user_id) and not before.wants(k[0], k[1], user_id):
                    chosen[k] = v
        if not wanted.lazy_members:
            new.lazy_members.pop(p.room_id, None)
            return chosen
        # MSC4186 "Lazy loaded memberships": the senders and targets of the timeline not yet
        # sent; when the timeline has no gap, every membership change too.
        needed = {r.event.sender for r in timeline}
        needed |= {r.event.state_key for r in timeline
                   if r.event.type == MEMBER and r.event.state_key}
        if p.initial:
            send = needed
            new.lazy_members.pop(p.room_id, None)
        else:
            had_lazy = p.prev_config is not None and p.prev_config.required_state.lazy_members
            sent_before = set(prev.lazy_members.get(p.room_id, [])) if had_lazy else set()
            changed = {k[1] for k in delta if k[0] == MEMBER}
            if limited:
                send = (needed - sent_before) | (needed & changed)
                new.forget_lazy(p.room_id, changed - send)
            else:
                send = (needed - sent_before) | changed
            if not had_lazy:
                new.lazy_members.pop(p.room_id, None)
        sent = sorted(u for u in send if (MEMBER, u) in state_to)
        for u in sent:
            chosen[(MEMBER, u)] = state_to[(MEMBER, u)]
        new.remember_lazy(p.room_id, sent)
        return chosen

    async def _meta(self, user_id: str, p: _Plan, state_to: StateMap, delta: StateMap,
                    removed: list[StateKey], body: dict[str, Any]) -> None:
        """Name, avatar, heroes and member counts: whole when initial, else what changed."""
        touched = set(delta) | set(removed)
        ids = [state_to[k] for k in (_NAME, _AVATAR) if k in state_to]
        events = await self.events.get_events(ids)
        name = _content_str(events.get(state_to.get(_NAME, "")), "name")
        if p.initial or _NAME in touched:
            if name is not None or not p.initial:
                body["name"] = name
        if p.initial or _AVATAR in touched:
            avatar = _content_str(events.get(state_to.get(_AVATAR, "")), "url")
            if avatar is not None or not p.initial:
                body["avatar"] = avatar
        members_changed = p.initial or any(k[0] == MEMBER for k in touched)
        if p.membership.membership != "join" or not members_changed:
            return
        joined = await self.events.get_members(p.room_id, ("join",))
        invited = await self.events.get_members(p.room_id, ("invite",))
        body["joined_count"] = len(joined)
        body["invited_count"] = len(invited)
        if name is None:
            heroes = [u for u in joined + invited if u != user_id][:MAX_HEROES]
            if not heroes:
                left = await self.events.get_members(p.room_id, ("leave", "ban"))
                heroes = [u for u in left if u != user_id][:MAX_HEROES]
            member_ids = [state_to[(MEMBER, u)] for u in heroes if (MEMBER, u) in state_to]
            members = await self.events.get_events(member_ids)
            body["heroes"] = [_hero(u, members.get(state_to.get((MEMBER, u), ""))) for u in heroes]

    async def _state_at(self, room_id: str, pos: int) -> StateMap:
        group = await self.sync_store.state_group_at(room_id, pos)
        return await self.events.get_state_group(group) if group is not None else {}


def _stripped_only(p: _Plan) -> bool:
    return p.membership.membership in ("invite", "knock")


def _content_str(event: Any, key: str) -> str | None:
    """A non-empty string field of an event's content (an empty name counts as none, per spec)."""
    if event is None:
        return None
    value = event.content.get(key)
    return value if isinstance(value, str) and value else None


def _hero(user_id: str, member: Any) -> dict[str, Any]:
    hero: dict[str, Any] = {"user_id": user_id}
    if member is not None:
        for key in ("displayname", "avatar_url"):
            value = member.content.get(key)
            if isinstance(value, str):
                hero[key] = value
    return hero
