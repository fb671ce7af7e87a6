"""The /sync handler: what changed for a user between two stream tokens, by room and stream.

An initial sync (no ``since``) returns each room's recent timeline and the state before it; an
incremental sync returns what happened in (since, now]. Nothing is returned that the
visibility function hides from the user. With nothing new, the request waits on the notifier
(never polling the database) until something concerning the user happens or the timeout ends.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from twisted.internet import defer

from homeserver.rooms.pagination import position_token
from homeserver.notifier import Notifier
from homeserver.rooms.serialize import ClientSerializer
from homeserver.rooms.stripped import StrippedState
from homeserver.rooms.visibility import Visibility
from homeserver.sync.filters import DEFAULT_FILTER, SyncFilter
from homeserver.sync.tokens import SyncToken
from homeserver.ephemeral.presence import PresenceService
from homeserver.ephemeral.receipts import ReceiptService
from homeserver.ephemeral.typing import TypingService
from homeserver.e2ee.device_lists import DeviceListTracker
from homeserver.e2ee.keys import KeyService
from homeserver.e2ee.to_device import ToDeviceService
from homeserver.push.counts import NotificationCounts
from homeserver.push.rule_service import PushRuleService
from storage.account_data import AccountDataStore
from storage.events import EventRow, EventStore
from storage.state import StateMap
from storage.sync import Membership, SyncStore

logger = logging.getLogger(__name__)

# Hooks for the other streams, filled as those parts of the server exist. Each takes
# (user_id, device_id, room_ids, since token or None, now token) and adds to the response.
Extension = Callable[["SyncContext"], Awaitable[None]]


@dataclass
class SyncContext:
    user_id: str
    device_id: str
    since: SyncToken | None
    now: SyncToken
    full_state: bool
    filter: SyncFilter
    joined_rooms: list[str]
    response: dict[str, Any]

    @property
    def is_initial(self) -> bool:
        return self.since is None or self.full_state


class SyncHandler:
    def __init__(self, events: EventStore, store: SyncStore, visibility: Visibility,
                 serializer: ClientSerializer, notifier: Notifier,
                 account_data: AccountDataStore | None = None, typing: TypingService | None = None,
                 receipts: ReceiptService | None = None,
                 presence: PresenceService | None = None,
                 to_device: ToDeviceService | None = None,
                 device_lists: DeviceListTracker | None = None,
                 keys: KeyService | None = None,
                 push_counts: NotificationCounts | None = None,
                 push_rules: PushRuleService | None = None,
                 stripped: StrippedState | None = None) -> None:
        self.events = events
        self.stripped = stripped or StrippedState(events)
        self.push_counts = push_counts
        self.push_rules = push_rules
        self.device_lists = device_lists
        self.keys = keys
        self.to_device = to_device
        self.account_data = account_data
        self.typing = typing
        self.receipts = receipts
        self.presence = presence
        self.store = store
        self.visibility = visibility
        self.serializer = serializer
        self.notifier = notifier
        self.extensions: list[Extension] = []
        # Streams other than "events" that an extension reports on: a change in them is worth
        # answering a long-poll for.
        self.watched_streams: set[str] = {"events"}

    async def sync(self, user_id: str, device_id: str, since: SyncToken | None, timeout_ms: int,
                   full_state: bool, flt: SyncFilter | None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_ms / 1000.0
        if since is not None and not full_state and timeout_ms > 0 \
                and not self.notifier.current_token().is_after(since):
            # No stream has moved since the token (a client polling again right after its last
            # answer): there is nothing to compute until something happens.
            defer.ensureDeferred(self._prepare_wake(user_id)).addErrback(
                lambda f: logger.warning("preparing %s's /sync wake-up failed: %s", user_id,
                                         f.getErrorMessage()))
            await self.notifier.wait(user_id, timeout_ms / 1000.0)
        while True:
            now = self._clamp(self.notifier.current_token(), since)
            response = await self._compute(user_id, device_id, since, now, full_state, flt)
            remaining = deadline - time.monotonic()
            if since is None or full_state or _has_content(response) or remaining <= 0:
                return await self._with_key_counts(user_id, device_id, response)
            if not self.notifier.current_token().is_after(now):
                await self.notifier.wait(user_id, remaining)
                if deadline - time.monotonic() <= 0 and not self.notifier.current_token().is_after(now):
                    return await self._with_key_counts(user_id, device_id, response)

    async def _prepare_wake(self, user_id: str) -> None:
        """While the request waits, have in memory what its wake-up reads first (the user's
        memberships and membership facts, the unread counts of its joined rooms), so that the
        first event after a start or a reconnection does not read them for every waiting member
        at once. Each is read only when missing, with the other users asked for in the same
        reactor turn."""
        memberships = await self.store.current_memberships(user_id)
        await self.events.prefetch_membership_facts([user_id])
        if self.push_counts is not None:
            await self.push_counts.warm(user_id, [m.room_id for m in memberships
                                                  if m.membership == "join"])

    async def _with_key_counts(self, user_id: str, device_id: str, response: dict[str, Any]
                               ) -> dict[str, Any]:
        """The device's one-time and fallback key counts: read only for the response that is
        sent (a long-poll computes several that find nothing)."""
        if self.keys is not None:
            response["device_one_time_keys_count"] = await self.keys.one_time_key_counts(
                user_id, device_id)
            response["device_unused_fallback_key_types"] = await self.keys.unused_fallback_key_types(
                user_id, device_id)
        return response

    @staticmethod
    def _clamp(now: SyncToken, since: SyncToken | None) -> SyncToken:
        """Never go backwards: a token from before a restart may be ahead in in-memory streams."""
        if since is None:
            return now
        return now.at_least(since)

    async def _compute(self, user_id: str, device_id: str, since: SyncToken | None,
                       now: SyncToken, full_state: bool, flt: SyncFilter | None) -> dict[str, Any]:
        flt = flt or DEFAULT_FILTER
        memberships = await self.store.current_memberships(user_id)
        by_room = {m.room_id: m for m in memberships if flt.room_allowed(m.room_id)}
        # Timelines start afresh only on an initial sync (or a room newly joined); full_state
        # asks for every joined room's whole state but keeps timelines incremental.
        initial = since is None or full_state
        response: dict[str, Any] = {"next_batch": str(now), "rooms": {}, "account_data": {"events": []},
                                    "presence": {"events": []}}
        rooms: dict[str, dict[str, Any]] = {"join": {}, "invite": {}, "leave": {}, "knock": {}}

        since_events = since.events if since is not None else 0
        changes = [] if since is None else await self.store.membership_changes(
            user_id, since_events, now.events)
        changed_rooms = {c.room_id: c for c in changes if c.room_id in by_room}
        joined = [m.room_id for m in by_room.values() if m.membership == "join"
                  and m.stream_ordering <= now.events]
        if initial:
            active = set(joined)
        else:
            active = await self.store.rooms_with_events(joined, since_events, now.events)
            active |= {r for r in changed_rooms if by_room[r].membership == "join"}

        limit = flt.timeline.limit
        afters = {room_id: None if since is None or room_id in changed_rooms else since_events
                  for room_id in sorted(active)}
        timelines = await self.store.timelines(
            [(r, after, now.events, limit) for r, after in afters.items()]) if afters else {}
        # Visibility for every room's page at once (one batch of reads, not one per room);
        # the state groups it reads are loaded together first.
        page_rows = [r for rows, _ in timelines.values() for r in rows]
        await self.events.get_state_groups(
            {r.state_group_before for r in page_rows if r.state_group_before is not None},
            copy=False)
        visible = {r.event.event_id for r in await self.visibility.filter_for_user(user_id, page_rows)}
        filled: list[_Timeline] = []
        for room_id in afters:
            rows, limited = timelines[room_id]
            shown, limited, hidden = await self._fill_timeline(
                user_id, room_id, rows, limited, afters[room_id], limit, flt,
                first_page=[r for r in rows if r.event.event_id in visible])
            filled.append(_Timeline(room_id, shown, limited, initial or room_id in changed_rooms,
                                    state_gap=limited or hidden))
        rooms["join"].update(await self._joined_rooms(user_id, filled, since_events, now, flt))

        for m in by_room.values():
            if m.stream_ordering > now.events:
                continue
            fresh = initial or m.room_id in changed_rooms
            if m.membership == "invite" and fresh:
                rooms["invite"][m.room_id] = {"invite_state": {"events": await self.stripped.at_membership(m.event_id)}}
            elif m.membership == "knock" and fresh:
                rooms["knock"][m.room_id] = {"knock_state": {"events": await self.stripped.at_membership(m.event_id)}}
            elif m.membership in ("leave", "ban") and not m.forgotten:
                if (since is None and not flt.include_leave) or not fresh:
                    continue
                if since is not None and m.room_id not in changed_rooms:
                    continue
                rooms["leave"][m.room_id] = await self._left_room(user_id, m, since_events, flt)

        if flt.event_fields is not None:
            for section in rooms.values():
                for room in section.values():
                    for part in ("timeline", "state"):
                        if part in room:
                            room[part]["events"] = [flt.apply_event_fields(e)
                                                    for e in room[part]["events"]]
        if self.account_data is not None:
            await self._account_data(user_id, since, now, flt, joined, rooms, response)
        await self._ephemeral(user_id, since, now, flt, joined, rooms)
        if self.to_device is not None:
            await self._to_device(user_id, device_id, since, now, response)
        if self.device_lists is not None and since is not None:
            changed, left = await self.device_lists.device_list_changes(
                user_id, since.device_lists, now.device_lists)
            if changed or left:
                response["device_lists"] = {"changed": sorted(changed), "left": sorted(left)}
        if self.presence is not None and (since is None or since.presence < now.presence):
            changes = await self.presence.presence_changes(
                user_id, None if since is None else since.presence, now.presence)
            response["presence"]["events"] = [e for e in changes if flt.presence.matches(e)]
        if self.push_counts is not None and rooms["join"]:
            await self._notification_counts(user_id, flt, rooms["join"])
        if self.push_rules is not None and since is None and not any(
                e["type"] == "m.push_rules" for e in response["account_data"]["events"]):
            response["account_data"]["events"].append(
                {"type": "m.push_rules", "content": await self.push_rules.account_data_content(user_id)})
        response["rooms"] = {k: v for k, v in rooms.items() if v}
        ctx = SyncContext(user_id, device_id, since, now, full_state, flt, joined, response)
        for ext in self.extensions:
            await ext(ctx)
        return response

    async def _shown(self, user_id: str, room_id: str, rows: list[EventRow], flt: SyncFilter
                     ) -> list[EventRow]:
        visible = await self.visibility.filter_for_user(user_id, rows)
        return [r for r in visible if flt.timeline.matches(r.event, room_id)]

    async def _fill_timeline(self, user_id: str, room_id: str, rows: list[EventRow], limited: bool,
                             after: int | None, limit: int, flt: SyncFilter,
                             first_page: list[EventRow] | None = None
                             ) -> tuple[list[EventRow], bool, bool]:
        """The newest ``limit`` events the user may see and the filter lets through, reading
        further back while hidden events leave the page short. Returns (events, limited,
        whether events in the range were hidden). ``first_page``: the visible ones of ``rows``,
        when already known."""
        if first_page is None:
            shown = await self._shown(user_id, room_id, rows, flt)
        else:
            shown = [r for r in first_page if flt.timeline.matches(r.event, room_id)]
        hidden = len(shown) < len(rows)
        pages = 0
        while limited and len(shown) < limit and rows and pages < 20:
            pages += 1
            older = await self.store.timelines([(room_id, after, rows[0].stream_ordering - 1, limit)])
            rows, limited = older[room_id]
            page = await self._shown(user_id, room_id, rows, flt)
            hidden = hidden or len(page) < len(rows)
            shown = page + shown
        if len(shown) > limit:
            shown, limited = shown[-limit:], True
        return shown, limited, hidden

    async def _joined_rooms(self, user_id: str, timelines: list["_Timeline"], since_events: int,
                            now: SyncToken, flt: SyncFilter) -> dict[str, dict[str, Any]]:
        """The joined-room sections of ``timelines``, as ``_joined_room`` builds one, with each
        kind of read done once for all rooms (state groups, state events, serialization,
        member counts)."""
        if not timelines:
            return {}
        # State before each timeline's first event (or at "now" when it is empty), and at
        # ``since`` where a gap needs the state changes.
        no_first = [t.room_id for t in timelines
                    if not t.rows or t.rows[0].state_group_before is None]
        groups_now = await self.store.state_groups_at(no_first, now.events) if no_first else {}
        gapped = [t.room_id for t in timelines if not t.newly_joined and t.state_gap]
        groups_since = await self.store.state_groups_at(gapped, since_events) if gapped else {}
        start_groups: dict[str, int | None] = {}
        for t in timelines:
            first = t.rows[0] if t.rows else None
            if first is not None and first.state_group_before is not None:
                start_groups[t.room_id] = first.state_group_before
            else:
                start_groups[t.room_id] = groups_now.get(t.room_id)
        maps = await self.events.get_state_groups(
            [g for g in (*start_groups.values(), *groups_since.values()) if g is not None],
            copy=False)
        state_ids_by_room: dict[str, dict] = {}
        for t in timelines:
            g = start_groups[t.room_id]
            state_at_start = maps[g] if g is not None else {}  # read only: not copied
            if t.newly_joined:
                state_ids = state_at_start
            elif t.state_gap:
                g_since = groups_since.get(t.room_id)
                before = maps[g_since] if g_since is not None else {}
                state_ids = {k: v for k, v in state_at_start.items() if before.get(k) != v}
            else:
                state_ids = {}
            state_ids_by_room[t.room_id] = self._lazy_members(state_ids, t.rows, user_id, flt,
                                                              state_at_start)
        in_timeline = {r.event.event_id for t in timelines for r in t.rows}
        state_rows = await self.events.get_rows(
            i for ids in state_ids_by_room.values() for i in ids.values() if i not in in_timeline)
        state_lists = {t.room_id: [state_rows[i] for i in state_ids_by_room[t.room_id].values()
                                   if i in state_rows and flt.state.matches(state_rows[i].event, t.room_id)]
                       for t in timelines}
        timeline_json = await self.serializer.serialize(
            [r for t in timelines for r in t.rows], include_room_id=False, user_id=user_id)
        state_json = await self.serializer.serialize(
            [r for t in timelines for r in state_lists[t.room_id]], include_room_id=False)
        summaries_for = [t.room_id for t in timelines
                         if t.newly_joined or any(r.event.type == "m.room.member" for r in t.rows)]
        members = await self.store.members_of_rooms(summaries_for, ("join", "invite")) \
            if summaries_for else {}
        out: dict[str, dict[str, Any]] = {}
        ti = si = 0
        for t in timelines:
            n, m = len(t.rows), len(state_lists[t.room_id])
            room: dict[str, Any] = {
                "timeline": {"events": timeline_json[ti:ti + n], "limited": t.limited},
                "state": {"events": state_json[si:si + m]},
                "account_data": {"events": []},
                "ephemeral": {"events": []},
            }
            ti, si = ti + n, si + m
            if t.rows:
                first = t.rows[0]
                room["timeline"]["prev_batch"] = position_token(first.event.depth,
                                                                first.stream_ordering)
            if t.room_id in members:
                joined, invited = members[t.room_id]["join"], members[t.room_id]["invite"]
                room["summary"] = _summary(user_id, joined, invited)
            out[t.room_id] = room
        return out

    async def _notification_counts(self, user_id: str, flt: SyncFilter,
                                   joined: dict[str, dict[str, Any]]) -> None:
        """unread_notifications (and per thread, when the filter asks) of the rooms returned."""
        assert self.push_counts is not None
        threaded = bool(flt.unread_thread_notifications)
        room_ids = list(joined)
        counts = await self.push_counts.room_counts(user_id, room_ids, threaded=threaded)
        for room_id, c in counts.items():
            joined[room_id]["unread_notifications"] = c
        if threaded:
            for room_id, threads in (await self.push_counts.thread_counts(user_id, room_ids)).items():
                if threads:
                    joined[room_id]["unread_thread_notifications"] = threads

    async def _to_device(self, user_id: str, device_id: str, since: SyncToken | None,
                         now: SyncToken, response: dict[str, Any]) -> None:
        """Messages for this device, each delivered until a since token acknowledges it."""
        assert self.to_device is not None
        if since is not None:
            await self.to_device.delete_acknowledged(user_id, device_id, since.to_device)
        events, next_pos = await self.to_device.messages_for_device(
            user_id, device_id, None if since is None else since.to_device, now.to_device)
        response["to_device"] = {"events": events}
        if next_pos != now.to_device:
            # More are waiting: the next token stops where this batch ended.
            response["next_batch"] = str(now.copy_with(to_device=next_pos))

    async def _ephemeral(self, user_id: str, since: SyncToken | None, now: SyncToken,
                         flt: SyncFilter, joined: list[str], rooms: dict[str, dict[str, Any]]) -> None:
        """Typing and receipts of joined rooms that changed in (since, now]."""
        per_room: dict[str, list[dict[str, Any]]] = {}
        allowed = [r for r in joined if flt.room_allowed(r)]
        if self.typing is not None:
            for room_id, ev in self.typing.events_for_rooms(
                    allowed, None if since is None else since.typing).items():
                per_room.setdefault(room_id, []).append(ev)
        if self.receipts is not None and (since is None or since.receipts < now.receipts):
            got = await self.receipts.receipts_for_rooms(
                allowed, None if since is None else since.receipts, now.receipts, user_id)
            for room_id, evs in got.items():
                per_room.setdefault(room_id, []).extend(evs)
        for room_id, evs in per_room.items():
            evs = [e for e in evs if flt.ephemeral.matches(e, room_id)]
            if not evs:
                continue
            room = rooms["join"].setdefault(room_id, _empty_joined_room())
            room["ephemeral"]["events"] = evs

    async def _account_data(self, user_id: str, since: SyncToken | None, now: SyncToken,
                            flt: SyncFilter, joined: list[str], rooms: dict[str, dict[str, Any]],
                            response: dict[str, Any]) -> None:
        """Global and per-room account data written in (since, now] (all of it initially)."""
        assert self.account_data is not None
        after = None if since is None else since.account_data
        if after is not None and after >= now.account_data:
            return  # nothing was written in the range
        glob = await self.account_data.get_global_changes(user_id, after, now.account_data)
        response["account_data"]["events"] = [
            e for e in ({"type": t, "content": c} for t, c in glob.items()) if flt.account_data.matches(e)]
        per_room = await self.account_data.get_room_changes(user_id, joined, after, now.account_data)
        for room_id, data in per_room.items():
            if not flt.room_allowed(room_id):
                continue
            events = [e for e in ({"type": t, "content": c} for t, c in data.items())
                      if flt.room_account_data.matches(e, room_id)]
            if not events:
                continue
            room = rooms["join"].setdefault(room_id, _empty_joined_room())
            room["account_data"]["events"] = events

    def _lazy_members(self, state_ids: StateMap, timeline: list[EventRow], user_id: str,
                      flt: SyncFilter, state_at_start: StateMap) -> StateMap:
        """With lazy_load_members: of the member events, only those of the timeline's senders
        (and the user's own), taken from the state at the timeline's start even when the rest of
        the state is unchanged, so the client always knows who sent what. Members already sent
        earlier may be sent again (what include_redundant_members asks for; without a record of
        what each device has, the server always does so)."""
        if not flt.state.lazy_load_members:
            return state_ids
        wanted = {r.event.sender for r in timeline} | {user_id}
        out = {k: v for k, v in state_ids.items() if k[0] != "m.room.member" or k[1] in wanted}
        for sender in wanted:
            key = ("m.room.member", sender)
            if key in state_at_start:
                out[key] = state_at_start[key]
        return out

    async def _left_room(self, user_id: str, m: Membership, since_events: int, flt: SyncFilter
                         ) -> dict[str, Any]:
        """The timeline up to and including the user's leave; nothing after it."""
        timelines = await self.store.timelines([(m.room_id, since_events or None, m.stream_ordering,
                                                 flt.timeline.limit)])
        rows, limited = timelines[m.room_id]
        visible = await self.visibility.filter_for_user(user_id, rows)
        leave_row = await self.events.get_event_row(m.event_id)
        state: StateMap = {}
        if rows and rows[0].state_group_before is not None:
            state = await self.events.get_state_group(rows[0].state_group_before)
        elif leave_row is not None and leave_row.state_group_after is not None:
            state = await self.events.get_state_group(leave_row.state_group_after)
        in_timeline = {r.event.event_id for r in visible}
        state_rows = await self.events.get_rows(i for i in state.values() if i not in in_timeline)
        room: dict[str, Any] = {
            "timeline": {"events": await self.serializer.serialize(visible, include_room_id=False,
                                                                   user_id=user_id),
                         "limited": limited},
            "state": {"events": await self.serializer.serialize(
                [state_rows[i] for i in state.values() if i in state_rows], include_room_id=False)},
            "account_data": {"events": []},
        }
        if rows:
            room["timeline"]["prev_batch"] = position_token(rows[0].event.depth,
                                                            rows[0].stream_ordering)
        return room


@dataclass
class _Timeline:
    """A joined room's timeline as /sync shows it, before its section is built."""
    room_id: str
    rows: list[EventRow]
    limited: bool
    newly_joined: bool
    state_gap: bool


def _summary(user_id: str, joined: list[str], invited: list[str]) -> dict[str, Any]:
    heroes = [u for u in joined + invited if u != user_id][:5]
    return {"m.heroes": heroes, "m.joined_member_count": len(joined),
            "m.invited_member_count": len(invited)}


def _empty_joined_room() -> dict[str, Any]:
    return {"timeline": {"events": [], "limited": False}, "state": {"events": []},
            "ephemeral": {"events": []}, "account_data": {"events": []}}


def _has_content(response: dict[str, Any]) -> bool:
    """Whether an incremental sync found anything worth returning."""
    if response.get("rooms"):
        return True
    for key in ("account_data", "presence", "to_device"):
        if response.get(key, {}).get("events"):
            return True
    if response.get("device_lists", {}).get("changed") or response.get("device_lists", {}).get("left"):
        return True
    return False
