"""The per-event pipeline on both engines: who is evaluated (local members joined at the event,
not the sender, plus a local invitee), room facts per state group, the sender's own event
counting as read, listeners, and waiting for evaluations in flight."""

from __future__ import annotations

import itertools
from typing import Any, Iterable

import pytest_twisted
from twisted.internet import defer

from crypto.room_versions import get_room_version
from homeserver.push.processor import PushProcessor
from homeserver.push.rule_service import PushRuleService
from homeserver.rooms.events import Event
from storage.database import Database
from storage.events import EventRow, PersistedEvent
from storage.notifications import NotificationStore
from storage.push_rules import UserRules
from tests.ephemeral.conftest import FakeClock

ROOM = "!r:hs"
RV = get_room_version("10")
_ids = itertools.count(1)


def event(etype: str, sender: str, content: dict[str, Any], state_key: str | None = None) -> Event:
    pdu: dict[str, Any] = {"type": etype, "sender": sender, "content": content, "room_id": ROOM,
                           "depth": 1, "origin_server_ts": 0, "prev_events": [], "auth_events": []}
    if state_key is not None:
        pdu["state_key"] = state_key
    return Event(f"$e{next(_ids)}", RV, pdu)


def member(user: str, membership: str = "join", name: str | None = None) -> Event:
    content: dict[str, Any] = {"membership": membership}
    if name:
        content["displayname"] = name
    return event("m.room.member", user, content, user)


class FakeEvents:
    def __init__(self) -> None:
        self.groups: dict[int, dict[tuple[str, str], str]] = {}
        self.events: dict[str, Event] = {}
        self.group_reads = 0

    def add_group(self, group: int, state: Iterable[Event]) -> None:
        self.groups[group] = {}
        for ev in state:
            self.events[ev.event_id] = ev
            self.groups[group][ev.key] = ev.event_id

    async def get_state_group(self, group: int) -> dict[tuple[str, str], str]:
        self.group_reads += 1
        return dict(self.groups[group])

    async def get_events(self, ids: Iterable[str]) -> dict[str, Event]:
        return {i: self.events[i] for i in ids if i in self.events}


class DefaultsOnly:
    async def get_rules(self, user_ids: Iterable[str]) -> dict[str, UserRules]:
        return {u: UserRules() for u in user_ids}


async def main_thread(row: EventRow) -> str:
    rel = row.event.content.get("m.relates_to")
    if isinstance(rel, dict) and rel.get("rel_type") == "m.thread":
        return rel["event_id"]
    return "main"


def setup(db: Database) -> tuple[PushProcessor, FakeEvents, NotificationStore]:
    events = FakeEvents()
    store = NotificationStore(db)
    rules = PushRuleService(DefaultsOnly(), None, None)  # type: ignore[arg-type]
    proc = PushProcessor(events, rules, store, main_thread, FakeClock(), "hs")  # type: ignore[arg-type]
    return proc, events, store


STATE = [member("@a:hs", name="Alice"), member("@b:hs"), member("@c:hs"),
         member("@remote:elsewhere"), member("@gone:hs", "leave"), member("@inv:hs", "invite")]


@pytest_twisted.ensureDeferred
async def test_who_is_evaluated(db: Database) -> None:
    proc, events, store = setup(db)
    events.add_group(1, STATE)
    told: list[list[str]] = []
    proc.listeners.append(told.append)
    msg = event("m.room.message", "@a:hs", {"msgtype": "m.text", "body": "hi"})
    matched = await proc.process(PersistedEvent(msg, 10, 1, 1))
    assert sorted(matched) == ["@b:hs", "@c:hs"]   # not the sender, remote, left or invited
    assert told == [["@b:hs", "@c:hs"]]
    assert await store.unread_counts("@b:hs", [ROOM]) == {(ROOM, "main"): (1, 0)}
    assert await store.unread_counts("@inv:hs", [ROOM]) == {}
    # An invite is evaluated for its local target too.
    invite = member("@new:hs", "invite")
    invite = Event(invite.event_id, RV, {**invite.pdu, "sender": "@a:hs"})
    matched = await proc.process(PersistedEvent(invite, 11, 1, 2))
    assert matched["@new:hs"].rule_id == ".m.rule.invite_for_me"
    assert matched["@b:hs"].rule_id == ".m.rule.member_event"
    # Outliers are not evaluated.
    assert await proc.process(PersistedEvent(msg, 12, None, None)) == {}


@pytest_twisted.ensureDeferred
async def test_room_facts_follow_state_events(db: Database) -> None:
    proc, events, store = setup(db)
    events.add_group(1, STATE)
    await proc.process(PersistedEvent(event("m.room.message", "@a:hs", {"body": "x",
                                                                        "msgtype": "m.text"}), 10, 1, 1))
    assert events.group_reads == 1
    # c leaves (state group 2 derives from group 1 plus the event, without reading it) ...
    await proc.process(PersistedEvent(member("@c:hs", "leave"), 11, 1, 2))
    matched = await proc.process(PersistedEvent(
        event("m.room.message", "@a:hs", {"msgtype": "m.text", "body": "y"}), 12, 2, 2))
    assert sorted(matched) == ["@b:hs"]
    assert matched["@b:hs"].rule_id == ".m.rule.message"  # the remote member still counts
    await proc.process(PersistedEvent(member("@remote:elsewhere", "leave"), 13, 2, 3))
    matched = await proc.process(PersistedEvent(
        event("m.room.message", "@a:hs", {"msgtype": "m.text", "body": "z"}), 14, 3, 3))
    # ... and now the room has two members: a one-to-one room.
    assert matched["@b:hs"].rule_id == ".m.rule.room_one_to_one"
    assert events.group_reads == 1
    facts = await proc.facts_at(1)
    assert facts.joined["@a:hs"] == "Alice" and facts.history_visibility == "shared"


@pytest_twisted.ensureDeferred
async def test_own_event_marks_read_and_waiting(db: Database) -> None:
    proc, events, store = setup(db)
    events.add_group(1, STATE)
    root = event("m.room.message", "@a:hs", {"msgtype": "m.text", "body": "root"})
    await proc.process(PersistedEvent(root, 10, 1, 1))
    threaded = event("m.room.message", "@a:hs", {"msgtype": "m.text", "body": "t", "m.relates_to": {
        "rel_type": "m.thread", "event_id": root.event_id}})
    await proc.process(PersistedEvent(threaded, 11, 1, 1))
    assert await store.unread_counts("@b:hs", [ROOM]) == {(ROOM, "main"): (1, 0),
                                                         (ROOM, root.event_id): (1, 0)}
    reply = event("m.room.message", "@b:hs", {"msgtype": "m.text", "body": "reply"})
    await proc.process(PersistedEvent(reply, 12, 1, 1))
    # b's reply in the main timeline reads the main timeline, not the thread.
    assert await store.unread_counts("@b:hs", [ROOM]) == {(ROOM, root.event_id): (1, 0)}

    # on_event works in the background; wait_pending returns once it is done.
    later = event("m.room.message", "@a:hs", {"msgtype": "m.text", "body": "later"})
    proc.on_event(PersistedEvent(later, 13, 1, 1))
    await proc.wait_pending()
    assert (await store.unread_counts("@c:hs", [ROOM]))[(ROOM, "main")] == (3, 0)
    await proc.wait_pending()  # nothing pending: returns at once


def hold_writes(store: NotificationStore) -> defer.Deferred:
    """Make the store's batch writes wait until the returned Deferred fires."""
    gate: defer.Deferred = defer.Deferred()
    real = store.write_batch

    async def held(*args: Any, **kwargs: Any) -> list[str]:
        await gate
        return await real(*args, **kwargs)
    store.write_batch = held  # type: ignore[method-assign]
    return gate


def text(sender: str, body: str = "hi") -> Event:
    return event("m.room.message", sender, {"msgtype": "m.text", "body": body})


@pytest_twisted.ensureDeferred
async def test_wait_pending_gives_up_after_its_limit(db: Database) -> None:
    proc, events, store = setup(db)
    events.add_group(1, STATE)
    gate = hold_writes(store)
    proc.on_event(PersistedEvent(text("@a:hs"), 10, 1, 1))
    clock = proc.clock
    # Other rooms' evaluations are not waited for.
    await proc.wait_pending(["!other:hs"])
    d = defer.ensureDeferred(proc.wait_pending([ROOM], timeout_s=5))
    assert not d.called
    clock.advance(5)  # type: ignore[attr-defined]
    assert d.called
    d2 = defer.ensureDeferred(proc.wait_pending())
    assert not d2.called
    gate.callback(None)
    await d2
    assert await store.unread_counts("@b:hs", [ROOM]) == {(ROOM, "main"): (1, 0)}


@pytest_twisted.ensureDeferred
async def test_events_queued_meanwhile_are_written_in_one_batch(db: Database) -> None:
    proc, events, store = setup(db)
    events.add_group(1, STATE)
    told: list[list[str]] = []
    proc.listeners.append(told.append)
    writes: list[int] = []
    real = store.write_batch

    async def counted(adds: Any, marks: Any, position: Any = None) -> list[str]:
        writes.append(len(adds))
        return await real(adds, marks, position)
    store.write_batch = counted  # type: ignore[method-assign]
    clock = proc.clock
    # Events wait a moment for others to join their batch ...
    proc.on_event(PersistedEvent(text("@a:hs", "one"), 10, 1, 1))
    proc.on_event(PersistedEvent(text("@b:hs", "two"), 11, 1, 1))
    assert writes == []
    clock.advance(1)  # type: ignore[attr-defined]
    await proc.wait_pending([ROOM])
    assert writes == [2]
    # ... unless /sync waits for them: then they go at once.
    gate = hold_writes(store)
    proc.on_event(PersistedEvent(text("@a:hs", "three"), 12, 1, 1))
    waiting = defer.ensureDeferred(proc.wait_pending([ROOM]))
    assert not waiting.called  # its write is under way (held here), with no time passing
    # Events handed over during a write are the next batch.
    proc.on_event(PersistedEvent(text("@c:hs", "four"), 13, 1, 1))
    proc.on_event(PersistedEvent(text("@b:hs", "five"), 14, 1, 1))
    gate.callback(None)
    await waiting
    assert writes == [2, 1]
    await proc.wait_pending([ROOM])
    assert writes == [2, 1, 2]
    # Each sender's own event reads what came before it, within a batch as across batches:
    # a read up to "three", c up to "four", b up to "five".
    assert await store.unread_counts("@a:hs", [ROOM]) == {(ROOM, "main"): (2, 0)}
    assert await store.unread_counts("@b:hs", [ROOM]) == {}
    assert await store.unread_counts("@c:hs", [ROOM]) == {(ROOM, "main"): (1, 0)}
    listed = await store.list("@c:hs", [ROOM], None, 10)
    assert [(n.stream_ordering, n.unread) for n in listed] == [
        (14, True), (12, False), (11, False), (10, False)]
    assert [sorted(t) for t in told] == [["@a:hs", "@b:hs", "@c:hs"], ["@b:hs", "@c:hs"],
                                         ["@a:hs", "@b:hs", "@c:hs"]]


class Stream:
    def __init__(self, current: int) -> None:
        self._current = current

    def current(self) -> int:
        return self._current


@pytest_twisted.ensureDeferred
async def test_events_not_evaluated_before_a_restart_are_evaluated_at_start(db: Database) -> None:
    proc, events, store = setup(db)
    events.add_group(1, STATE)
    # First start: nothing recorded, so evaluation starts where the stream stands.
    events.stream_ids = Stream(9)  # type: ignore[attr-defined]
    await proc.start()
    assert await store.evaluated_position() == 9
    await proc.process_batch([PersistedEvent(text("@a:hs"), 10, 1, 1)])
    assert await store.evaluated_position() == 10
    # Events 11 and 12 committed, then the server stopped before evaluating them.
    later = {11: text("@a:hs", "x"), 12: text("@c:hs", "y")}
    rows = {ev.event_id: EventRow(ev, s, False, False, False, 1, 1) for s, ev in later.items()}

    async def between(after: int, upto: int, limit: int) -> list[tuple[int, str]]:
        return [(s, ev.event_id) for s, ev in sorted(later.items()) if after < s <= upto][:limit]

    async def get_rows(ids: Iterable[str]) -> dict[str, EventRow]:
        return {i: rows[i] for i in ids}
    events.get_rows = get_rows  # type: ignore[attr-defined]
    events.stream_ids = Stream(12)  # type: ignore[attr-defined]
    proc2, _, _ = setup(db)
    proc2.events = events  # type: ignore[assignment]
    store.timeline_events_between = between  # type: ignore[method-assign]
    proc2.notifications = store
    await proc2.start()
    await proc2.wait_pending([ROOM])
    assert await store.unread_counts("@b:hs", [ROOM]) == {(ROOM, "main"): (3, 0)}
    assert await store.unread_counts("@a:hs", [ROOM]) == {(ROOM, "main"): (1, 0)}
    assert await store.evaluated_position() == 12
    # Evaluating them again (a crash before the position was written) stores nothing more.
    await proc2.process_batch([PersistedEvent(later[12], 12, 1, 1)])
    assert await store.unread_counts("@b:hs", [ROOM]) == {(ROOM, "main"): (3, 0)}
    # With push off, the position is forgotten: switched on again, it starts afresh.
    await proc2.start(enabled=False)
    assert await store.evaluated_position() is None
