"""Evaluating push rules for each new event, off the request path, and storing notifications.

Spec: Client-Server API "Push Notifications", "Server behaviour": for each local user in the room
other than the sender, the first matching rule decides the actions; "notify" makes a
notification, counted per room and thread until a read receipt passes it.

Who is evaluated: the local users joined to the room in the state before the event (joined at
the event, so the visibility function lets them see it), plus the local target of an invite
(the invite is theirs to see whatever the history visibility). The room facts the conditions
need (members, display names, power levels) are kept per state group, so the messages that
follow one another in a room share them; a state event derives the next group's facts from the
previous ones instead of reading the whole state again.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable, Iterable, Mapping

from twisted.internet import defer
from twisted.python.failure import Failure

from homeserver.clock import Clock
from homeserver.push.evaluator import CompiledRule, EventView
from homeserver.push.rule_service import PushRuleService
from homeserver.rooms.events import Event
from homeserver.rooms.power_levels import get_notification_level, get_power_level
from homeserver.rooms.visibility import Visibility
from storage.events import EventRow, EventStore, PersistedEvent
from storage.notifications import UNTHREADED, NewNotification, NotificationStore
from storage.state import StateMap

logger = logging.getLogger(__name__)

ENCRYPTED = "m.room.encrypted"
_CONTEXT_CACHE_SIZE = 512
_CONCURRENCY = 8
_WAIT_LIMIT_S = 10.0


@dataclass(frozen=True)
class RoomFacts:
    """What push rules need to know about a room at one state group."""
    joined: Mapping[str, str | None]  # every joined user -> display name
    power_levels: Event | None
    create: Event | None
    history_visibility: str
    name: str | None
    alias: str | None

    def after(self, event: Event) -> "RoomFacts":
        """The facts once ``event`` (a state event) is applied."""
        if not event.is_state:
            return self
        key = event.key
        if event.type == "m.room.member" and event.state_key is not None:
            joined = dict(self.joined)
            if event.membership == "join":
                joined[event.state_key] = _display_name(event)
            else:
                joined.pop(event.state_key, None)
            return replace(self, joined=joined)
        if key == ("m.room.power_levels", ""):
            return replace(self, power_levels=event)
        if key == ("m.room.create", ""):
            return replace(self, create=event)
        if key == ("m.room.history_visibility", ""):
            return replace(self, history_visibility=_history_visibility(event))
        if key == ("m.room.name", ""):
            return replace(self, name=_str(event.content.get("name")))
        if key == ("m.room.canonical_alias", ""):
            return replace(self, alias=_str(event.content.get("alias")))
        return self


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _display_name(member: Event) -> str | None:
    return _str(member.content.get("displayname"))


def _history_visibility(event: Event | None) -> str:
    value = event.content.get("history_visibility") if event is not None else None
    return value if isinstance(value, str) else "shared"


def event_fields(ev: Event) -> dict[str, Any]:
    """The event as push rule keys address it: the client-visible top-level fields."""
    out: dict[str, Any] = {"type": ev.type, "sender": ev.sender, "room_id": ev.room_id,
                           "event_id": ev.event_id, "content": ev.content,
                           "origin_server_ts": ev.origin_server_ts}
    if ev.is_state:
        out["state_key"] = ev.state_key
    if ev.redacts:
        out["redacts"] = ev.redacts
    return out


class PushProcessor:
    def __init__(self, events: EventStore, rules: PushRuleService, notifications: NotificationStore,
                 thread_of: Callable[[EventRow], Awaitable[str]], clock: Clock,
                 server_name: str) -> None:
        self.events = events
        self.rules = rules
        self.notifications = notifications
        self.thread_of = thread_of
        self.clock = clock
        self.server_name = server_name
        # Called with the users who got a new unread notification (pushers send it on).
        self.listeners: list[Callable[[list[str]], Any]] = []
        self._facts: OrderedDict[int, RoomFacts] = OrderedDict()
        # room id -> evaluations in flight for events of that room
        self._pending: dict[str, set[defer.Deferred]] = {}
        self._limit = defer.DeferredSemaphore(_CONCURRENCY)

    def is_local(self, user_id: str) -> bool:
        return user_id.split(":", 1)[-1] == self.server_name

    # --- the event listener --------------------------------------------------------------------

    def on_event(self, persisted: PersistedEvent) -> None:
        """EventCreator listener: evaluate in the background; /sync counts wait for it."""
        d = defer.ensureDeferred(self._limited(persisted))
        room_id = persisted.event.room_id
        self._pending.setdefault(room_id, set()).add(d)

        def done(result: Any) -> None:
            in_room = self._pending.get(room_id)
            if in_room is not None:
                in_room.discard(d)
                if not in_room:
                    del self._pending[room_id]
            if isinstance(result, Failure):
                logger.error("push evaluation of %s failed: %s", persisted.event.event_id,
                             result.getTraceback())
        d.addBoth(done)

    async def _limited(self, persisted: PersistedEvent) -> None:
        async with self._limit:
            await self.process(persisted)

    async def wait_pending(self, room_ids: Iterable[str] | None = None,
                           timeout_s: float = _WAIT_LIMIT_S) -> None:
        """Return once every event handed over so far (in these rooms; None: in any room) has
        been evaluated, or after ``timeout_s``: a count read after this includes them, so an
        event and the count it changes reach /sync together."""
        rooms = self._pending.keys() if room_ids is None else room_ids
        pending = [d for r in rooms for d in self._pending.get(r, ())]
        if not pending:
            return
        finished: defer.Deferred = defer.Deferred()
        left = [len(pending)]

        def one(result: Any) -> Any:
            left[0] -= 1
            if left[0] == 0 and not finished.called:
                finished.callback(None)
            return result
        for d in pending:
            d.addBoth(one)
        call = self.clock.call_later(timeout_s, lambda: finished.called or finished.callback(None))
        try:
            await finished
        finally:
            if call.active():
                call.cancel()

    # --- evaluation ----------------------------------------------------------------------------

    async def process(self, persisted: PersistedEvent) -> dict[str, CompiledRule]:
        """Evaluate one event for everyone concerned and store their notifications; returns
        user -> the rule that matched (for users some rule matched)."""
        ev = persisted.event
        if persisted.state_group_before is None:
            return {}  # an outlier: not in the timeline, nobody is notified
        facts = await self._facts_at(persisted.state_group_before)
        after = persisted.state_group_after
        if after is not None and after != persisted.state_group_before:
            self._remember(after, facts.after(ev))
        users = self.recipients(ev, facts, persisted.stream_ordering)
        matched: dict[str, CompiledRule] = {}
        if users:
            view = self.view(ev, facts)
            for ruleset, owners in (await self.rules.rulesets_for(users)).items():
                matched.update(ruleset.evaluate(view, owners))
        notify = [NewNotification(u, list(r.actions), r.highlight)
                  for u, r in sorted(matched.items()) if r.notify]
        thread_id = None
        if notify or self.is_local(ev.sender):
            row = EventRow(ev, persisted.stream_ordering, False, False, False,
                           persisted.state_group_before, persisted.state_group_after)
            thread_id = await self.thread_of(row)
        if notify:
            assert thread_id is not None
            unread = await self.notifications.add(ev.room_id, thread_id, ev.event_id,
                                                  persisted.stream_ordering,
                                                  self.clock.time_msec(), notify)
            if unread:
                for listener in self.listeners:
                    try:
                        listener(unread)
                    except Exception:
                        logger.exception("notification listener failed")
        if self.is_local(ev.sender) and thread_id is not None:
            # Spec "Marking notifications as read": sending an event updates one's read
            # position like a receipt would, here in the event's thread.
            await self.notifications.mark_read(ev.sender, ev.room_id, thread_id,
                                               persisted.stream_ordering)
        if ev.membership in ("leave", "ban") and ev.state_key and self.is_local(ev.state_key):
            # Notifications of a room one has left are no longer counted (in badges).
            await self.notifications.mark_read(ev.state_key, ev.room_id, UNTHREADED,
                                               persisted.stream_ordering)
        return matched

    def recipients(self, ev: Event, facts: RoomFacts, stream_ordering: int) -> list[str]:
        """Local users other than the sender who may see the event and so may be notified."""
        users: list[str] = []
        # Members joined at the event see it, whatever the history visibility (the one rule of
        # rooms/visibility.py, asked once for all of them).
        if Visibility.visible(facts.history_visibility, "join", stream_ordering, []):
            users = [u for u in facts.joined if u != ev.sender and self.is_local(u)]
        if ev.type == "m.room.member" and ev.membership == "invite" and ev.state_key \
                and ev.state_key != ev.sender and self.is_local(ev.state_key) \
                and ev.state_key not in facts.joined:
            users.append(ev.state_key)
        return users

    def view(self, ev: Event, facts: RoomFacts) -> EventView:
        pl, create = facts.power_levels, facts.create
        return EventView(
            event_fields(ev), member_count=len(facts.joined),
            sender_power=get_power_level(ev.sender, pl, create),
            notification_level=lambda key: get_notification_level(key, pl),
            display_names={u: n for u, n in facts.joined.items() if n},
            opaque_content=ev.type == ENCRYPTED)

    # --- room facts ----------------------------------------------------------------------------

    async def facts_at(self, state_group: int) -> RoomFacts:
        return await self._facts_at(state_group)

    async def _facts_at(self, group: int) -> RoomFacts:
        facts = self._facts.get(group)
        if facts is not None:
            self._facts.move_to_end(group)
            return facts
        state = await self.events.get_state_group(group)
        facts = await self._read_facts(state)
        self._remember(group, facts)
        return facts

    def _remember(self, group: int, facts: RoomFacts) -> None:
        self._facts[group] = facts
        self._facts.move_to_end(group)
        while len(self._facts) > _CONTEXT_CACHE_SIZE:
            self._facts.popitem(last=False)

    async def _read_facts(self, state: StateMap) -> RoomFacts:
        wanted = [eid for (t, _k), eid in state.items() if t == "m.room.member"]
        singles = {k: state.get((k, "")) for k in ("m.room.power_levels", "m.room.create",
                                                     "m.room.history_visibility", "m.room.name",
                                                     "m.room.canonical_alias")}
        events = await self.events.get_events(wanted + [i for i in singles.values() if i])
        joined = {}
        for eid in wanted:
            m = events.get(eid)
            if m is not None and m.membership == "join" and m.state_key is not None:
                joined[m.state_key] = _display_name(m)

        def get(t: str) -> Event | None:
            eid = singles[t]
            return events.get(eid) if eid else None
        name, alias = get("m.room.name"), get("m.room.canonical_alias")
        return RoomFacts(
            joined=joined, power_levels=get("m.room.power_levels"), create=get("m.room.create"),
            history_visibility=_history_visibility(get("m.room.history_visibility")),
            name=_str(name.content.get("name")) if name else None,
            alias=_str(alias.content.get("alias")) if alias else None)
