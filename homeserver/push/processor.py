"""Evaluating push rules for each new event, off the request path, and storing notifications.

Spec: Client-Server API "Push Notifications", "Server behaviour": for each local user in the room
other than the sender, the first matching rule decides the actions; "notify" makes a
notification, counted per room and thread until a read receipt passes it.

Who is evaluated: the local users joined to the room in the state before the event (joined at
the event, so the visibility function lets them see it), plus the local target of an invite
(the invite is theirs to see whatever the history visibility). The room facts the conditions
need (members, display names, power levels) are kept per state group, so the messages that
follow one another in a room share them; a state event derives the next group's facts from the
previous ones instead of reading the whole state again. So is the audience: the local members
grouped by ruleset (everyone who changed nothing shares the defaults), asked for again only
when someone's rules change.

Cost: events are queued as they commit and evaluated by one worker in batches; a batch's
notifications, read marks and the evaluation position are written in one transaction of a few
statements (storage/notifications.py), so a burst of messages costs a few commits, not several
per event. The position makes the queue survive restarts: events committed after it are
evaluated at start-up (writing a notification twice stores nothing more).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable, Collection, Iterable, Mapping

from twisted.internet import defer

from homeserver.clock import Clock
from homeserver.push.evaluator import CompiledRule, EventView, Ruleset
from homeserver.push.rule_service import PushRuleService
from homeserver.rooms.events import Event
from homeserver.rooms.power_levels import get_notification_level, get_power_level
from homeserver.rooms.visibility import Visibility
from storage.events import EventRow, EventStore, PersistedEvent
from storage.notifications import UNTHREADED, EventNotifications, NotificationStore, ReadMark
from storage.state import StateMap

logger = logging.getLogger(__name__)

ENCRYPTED = "m.room.encrypted"
_CONTEXT_CACHE_SIZE = 512
_BATCH = 500          # events evaluated and written together at most
# How long the first event of a batch waits for others to join it (unless /sync waits for it).
_DELAY_S = 0.1
_CATCH_UP_PAGE = 200  # events read at a time when catching up at start-up
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


@dataclass(frozen=True)
class Audience:
    """Who push rules are evaluated for in a room at one state group, and what they need that
    does not change from one event to the next."""
    facts: RoomFacts
    visible: bool                        # joined members may see events (always, today)
    display_names: Mapping[str, str]     # joined users with a display name
    rules_version: int                   # PushRuleService.version the grouping was made at
    groups: tuple[tuple[Ruleset, frozenset[str]], ...]  # local joined users by ruleset


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
        self._suffix = ":" + server_name
        # Called after each batch with the users it notified (pushers send on what is unread).
        self.listeners: list[Callable[[list[str]], Any]] = []
        self._facts: OrderedDict[int, RoomFacts] = OrderedDict()
        self._audiences: OrderedDict[int, Audience] = OrderedDict()
        # Events handed over and not yet evaluated, in stream order, each with its number in
        # the order of handing over; rooms -> the number of their latest such event.
        self._queue: list[tuple[int, PersistedEvent]] = []
        self._handed = 0
        self._done = 0
        self._room_last: dict[str, int] = {}
        self._waiters: list[tuple[int, defer.Deferred]] = []
        self._working = False
        self._timer: Any = None
        # Set while the events of a previous run are evaluated: /sync waits for them in every
        # room (the waiters are listed here).
        self._catch_up: tuple[int, int] | None = None
        self._catch_up_waiters: list[defer.Deferred] = []

    def is_local(self, user_id: str) -> bool:
        return user_id.endswith(self._suffix) and user_id.split(":", 1)[-1] == self.server_name

    # --- start-up ------------------------------------------------------------------------------

    async def start(self, enabled: bool = True) -> None:
        """Evaluate the events a previous run committed but did not evaluate, in the background.
        With push off, forget the position: when it is switched on again, evaluation starts
        from the events of that moment, as it always has."""
        current = self.events.stream_ids.current()
        if not enabled:
            await self.notifications.set_evaluated_position(None)
            return
        position = await self.notifications.evaluated_position()
        if position is None or position >= current:
            await self.notifications.set_evaluated_position(current)
            return
        logger.info("push: evaluating the events after stream position %d (up to %d)",
                    position, current)
        self._catch_up = (position, current)
        self._schedule(now=True)

    # --- the event listener --------------------------------------------------------------------

    def on_event(self, persisted: PersistedEvent) -> None:
        """EventCreator listener: queue the event. The worker evaluates the queue a moment later
        (or at once when /sync waits for it, see ``wait_pending``), so the events of a burst
        share a batch and its one transaction."""
        self._handed += 1
        self._queue.append((self._handed, persisted))
        self._room_last[persisted.event.room_id] = self._handed
        self._schedule(now=len(self._queue) >= _BATCH)

    def _schedule(self, now: bool) -> None:
        """Start the worker now, or after the batching delay if it is not due already."""
        if self._working:
            return  # it looks at the queue again when it finishes
        if now:
            if self._timer is not None:
                if self._timer.active():
                    self._timer.cancel()
                self._timer = None
            self._working = True
            defer.ensureDeferred(self._work())
        elif self._timer is None:
            self._timer = self.clock.call_later(_DELAY_S, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._schedule(now=True)

    async def _work(self) -> None:
        batch: list[tuple[int, PersistedEvent]] = []
        try:
            if self._catch_up is not None:
                await self._run_catch_up()
            batch, self._queue = self._queue[:_BATCH], self._queue[_BATCH:]
            if batch:
                await self.process_batch([p for _, p in batch])
        except Exception:
            logger.exception("push evaluation of %d events failed", len(batch))
        finally:
            self._working = False
        if batch:
            self._finished(batch[-1][0])
        if self._queue:
            self._schedule(now=bool(self._waiters) or len(self._queue) >= _BATCH)

    async def _run_catch_up(self) -> None:
        assert self._catch_up is not None
        after, upto = self._catch_up
        try:
            while after < upto:
                page = await self.notifications.timeline_events_between(after, upto, _CATCH_UP_PAGE)
                if not page:
                    break
                rows = await self.events.get_rows([e for _, e in page])
                batch = [PersistedEvent(r.event, r.stream_ordering, r.state_group_before,
                                        r.state_group_after)
                         for _, e in page if (r := rows.get(e)) is not None]
                await self.process_batch(batch, position=page[-1][0])
                after = page[-1][0]
            await self.notifications.set_evaluated_position(upto)
        except Exception:
            logger.exception("push: evaluating the events of the previous run failed")
        finally:
            self._catch_up = None
            waiters, self._catch_up_waiters = self._catch_up_waiters, []
            for d in waiters:
                d.callback(None)

    def _finished(self, number: int) -> None:
        self._done = number
        for room_id in [r for r, n in self._room_last.items() if n <= number]:
            del self._room_last[room_id]
        ready = [d for n, d in self._waiters if n <= number]
        if ready:
            self._waiters = [(n, d) for n, d in self._waiters if n > number]
            for d in ready:
                if not d.called:
                    d.callback(None)

    async def wait_pending(self, room_ids: Iterable[str] | None = None,
                           timeout_s: float = _WAIT_LIMIT_S) -> None:
        """Return once every event handed over so far (in these rooms; None: in any room) has
        been evaluated, or after ``timeout_s``: a count read after this includes them, so an
        event and the count it changes reach /sync together."""
        if room_ids is None:
            target = self._handed if self._handed > self._done else 0
        else:
            target = max((self._room_last.get(r, 0) for r in room_ids), default=0)
        waits: list[defer.Deferred] = []
        if target > self._done:
            d: defer.Deferred = defer.Deferred()
            self._waiters.append((target, d))
            waits.append(d)
            self._schedule(now=True)
        if self._catch_up is not None:
            caught_up: defer.Deferred = defer.Deferred()
            self._catch_up_waiters.append(caught_up)
            waits.append(caught_up)
        if not waits:
            return
        finished = defer.gatherResults(waits, consumeErrors=True) if len(waits) > 1 else waits[0]
        timed_out: defer.Deferred = defer.Deferred()
        call = self.clock.call_later(timeout_s, lambda: timed_out.called or timed_out.callback(None))
        try:
            await defer.DeferredList([finished, timed_out], fireOnOneCallback=True,
                                     consumeErrors=True)
        finally:
            if call.active():
                call.cancel()

    # --- evaluation ----------------------------------------------------------------------------

    async def process(self, persisted: PersistedEvent) -> dict[str, CompiledRule]:
        """Evaluate one event for everyone concerned and store their notifications at once;
        returns user -> the rule that matched (for users some rule matched)."""
        matched: dict[str, CompiledRule] = {}
        for rule, users in (await self.process_batch([persisted]))[0]:
            for u in users:
                matched[u] = rule
        return matched

    async def process_batch(self, batch: list[PersistedEvent], position: int | None = None
                            ) -> list[list[tuple[CompiledRule, Collection[str]]]]:
        """Evaluate events (in stream order) and store their notifications and read marks in one
        transaction, with the evaluation position (default: the last event's). Returns, per
        event, the rules that matched with the users they matched for."""
        adds: list[EventNotifications] = []
        marks: list[ReadMark] = []
        results = []
        now = self.clock.time_msec()
        for persisted in batch:
            try:
                results.append(await self._evaluate(persisted, now, adds, marks))
            except Exception:
                logger.exception("push evaluation of %s failed", persisted.event.event_id)
                results.append([])
        if position is None and batch:
            position = max(p.stream_ordering for p in batch)
        unread = await self.notifications.write_batch(adds, marks, position)
        if unread:
            for listener in self.listeners:
                try:
                    listener(unread)
                except Exception:
                    logger.exception("notification listener failed")
        return results

    async def _evaluate(self, persisted: PersistedEvent, now: int, adds: list[EventNotifications],
                        marks: list[ReadMark]) -> list[tuple[CompiledRule, Collection[str]]]:
        ev = persisted.event
        if persisted.state_group_before is None:
            return []  # an outlier: not in the timeline, nobody is notified
        facts = await self._facts_at(persisted.state_group_before)
        after = persisted.state_group_after
        if after is not None and after != persisted.state_group_before:
            self._remember(after, facts.after(ev))
        audience = await self._audience(persisted.state_group_before, facts)
        sender = ev.sender
        view: EventView | None = None
        matched: list[tuple[CompiledRule, Collection[str]]] = []
        if audience.visible:
            for ruleset, members in audience.groups:
                owners = members - {sender} if sender in members else members
                if owners:
                    view = view or self._view(ev, audience)
                    matched.extend(ruleset.evaluate_groups(view, owners))  # type: ignore[arg-type]
        invitee = ev.state_key
        if ev.type == "m.room.member" and ev.membership == "invite" and invitee \
                and invitee != sender and self.is_local(invitee) and invitee not in facts.joined:
            view = view or self._view(ev, audience)
            for ruleset, owners in (await self.rules.rulesets_for([invitee])).items():
                matched.extend(ruleset.evaluate_groups(view, set(owners)))
        notify = [(users, rule.actions, rule.highlight) for rule, users in matched if rule.notify]
        local_sender = self.is_local(sender)
        if notify or local_sender:
            row = EventRow(ev, persisted.stream_ordering, False, False, False,
                           persisted.state_group_before, persisted.state_group_after)
            thread_id = await self.thread_of(row)
            if notify:
                adds.append(EventNotifications(ev.room_id, thread_id, ev.event_id,
                                               persisted.stream_ordering, now, notify))
            if local_sender:
                # Spec "Marking notifications as read": sending an event updates one's read
                # position like a receipt would, here in the event's thread.
                marks.append(ReadMark(sender, ev.room_id, thread_id, persisted.stream_ordering))
        if ev.membership in ("leave", "ban") and invitee and self.is_local(invitee):
            # Notifications of a room one has left are no longer counted (in badges).
            marks.append(ReadMark(invitee, ev.room_id, UNTHREADED, persisted.stream_ordering))
        return matched

    def _view(self, ev: Event, audience: Audience) -> EventView:
        facts = audience.facts
        pl, create = facts.power_levels, facts.create
        return EventView(
            event_fields(ev), member_count=len(facts.joined),
            sender_power=get_power_level(ev.sender, pl, create),
            notification_level=lambda key: get_notification_level(key, pl),
            display_names=audience.display_names,
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

    async def _audience(self, group: int, facts: RoomFacts) -> Audience:
        """The audience at a state group, made again when its facts or anyone's rules changed."""
        audience = self._audiences.get(group)
        version = self.rules.version
        if audience is not None and audience.facts is facts and audience.rules_version == version:
            self._audiences.move_to_end(group)
            return audience
        local = frozenset(u for u in facts.joined if self.is_local(u))
        rulesets = await self.rules.rulesets_for(sorted(local)) if local else {}
        audience = Audience(
            facts=facts,
            visible=Visibility.visible(facts.history_visibility, "join", 0, []),
            display_names={u: n for u, n in facts.joined.items() if n},
            rules_version=version,
            groups=tuple((rs, frozenset(users)) for rs, users in rulesets.items()))
        if self.rules.version == version:  # no change raced with reading the rules
            self._audiences[group] = audience
            self._audiences.move_to_end(group)
            while len(self._audiences) > _CONTEXT_CACHE_SIZE:
                self._audiences.popitem(last=False)
        return audience

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
