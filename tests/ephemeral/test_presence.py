"""Presence on both engines: the store's positions and visibility query, the service's rules for
PUT, /sync and activity, its timeouts, what /sync reads, and the switch that turns it off."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer

from homeserver.ephemeral.presence import (ACTIVE_GRANULARITY_MS, IDLE_AFTER_MS, OFFLINE_AFTER_MS,
                                           PresenceService)
from homeserver.http.errors import MatrixError
from homeserver.notifier import Notifier
from storage.database import Database
from storage.presence import PresenceStore
from tests.ephemeral.conftest import FakeClock, FakeRooms

A, B, C = "@a:x", "@b:x", "@c:x"


async def member(db: Database, rooms: FakeRooms, room_id: str, user_id: str,
                 membership: str = "join") -> None:
    """A membership both for the SQL visibility query and for the wake-up list."""
    await db.execute(
        "INSERT INTO current_membership (room_id, user_id, membership, event_id, stream_ordering,"
        " forgotten) VALUES (?, ?, ?, ?, 1, FALSE) ON CONFLICT (room_id, user_id) DO UPDATE"
        " SET membership = excluded.membership", (room_id, user_id, membership, "$m" + user_id))
    rooms.set(room_id, user_id, membership)


async def make(db: Database, rooms: FakeRooms, notifier: Notifier, clock: FakeClock,
               enabled: bool = True) -> PresenceService:
    service = PresenceService(PresenceStore(db), rooms, notifier, clock, "x", enabled)
    await service.load()
    service.stop()  # the tests run the timeout checks themselves
    return service


class _Persisted:
    def __init__(self, sender: str) -> None:
        self.event = type("E", (), {"sender": sender})()


# --- the store ---------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_store_positions_and_visibility(db: Database, rooms: FakeRooms) -> None:
    s = PresenceStore(db)
    await s.load()
    await member(db, rooms, "!r:x", A)
    await member(db, rooms, "!r:x", B)
    await member(db, rooms, "!r:x", C, "invite")
    await member(db, rooms, "!s:x", C)
    p1 = await s.upsert(A, "online", "hi", 5, True, True)
    p2 = await s.upsert(B, "offline", None, 0, False, False)
    p3 = await s.upsert(C, "online", None, 7, True, False)
    assert (p1, p2, p3) == (1, 2, 3) == (1, 2, s.current_position())
    row = await s.get(A)
    assert row is not None and (row.state, row.status_msg, row.last_active_ts, row.currently_active,
                                row.explicit, row.stream_id) == ("online", "hi", 5, True, True, 1)
    assert await s.get("@nobody:x") is None

    async def visible(observer: str, frm: int | None, offline: bool = True) -> list[str]:
        return [r.user_id for r in await s.changes_visible_to(observer, frm, p3, offline)]
    assert await visible(A, None) == [A, B]
    assert await visible(A, None, offline=False) == [A]
    assert await visible(A, p1) == [B]
    assert await visible(C, None) == [C]  # an invite shares nothing
    assert await visible("@nobody:x", None) == []
    assert await s.shares_room(A, B) and await s.shares_room(B, A)
    assert not await s.shares_room(A, C)
    await s.upsert(A, "unavailable", None, 5, False, True)
    assert [r.user_id for r in await s.changes_visible_to(B, p3, s.current_position(), True)] == [A]
    assert {r.user_id: r.state for r in await s.get_all()} == {A: "unavailable", B: "offline", C: "online"}
    again = PresenceStore(db)
    await again.load()
    assert again.current_position() == s.current_position() == 4


# --- the service -------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_put_and_get(db: Database, rooms: FakeRooms, notifier: Notifier, clock: FakeClock) -> None:
    p = await make(db, rooms, notifier, clock)
    await member(db, rooms, "!r:x", A)
    await member(db, rooms, "!r:x", B)
    assert await p.get_presence(A, A) == {"presence": "offline"}
    await p.set_status(A, "online", "busy")
    clock.advance(2)
    assert await p.get_presence(B, A) == {"presence": "online", "status_msg": "busy",
                                          "last_active_ago": 2000, "currently_active": True}
    with pytest.raises(MatrixError) as e:
        await p.get_presence(C, A)
    assert e.value.status == 403
    await p.set_status(A, "unavailable", None)
    assert await p.get_presence(A, A) == {"presence": "unavailable", "last_active_ago": 2000}
    assert p.current_position() == 2 == notifier.current_token().presence


@pytest_twisted.ensureDeferred
async def test_sync_rules(db: Database, rooms: FakeRooms, notifier: Notifier, clock: FakeClock) -> None:
    p = await make(db, rooms, notifier, clock)
    await p.set_state(A, "offline")  # set_presence=offline: presence left alone
    assert p.get(A).state == "offline" and p.current_position() == 0
    await p.set_state(A, "online")
    assert p.get(A).state == "online" and p.get(A).currently_active
    pos = p.current_position()
    await p.set_state(A, "online")  # syncing again is not a change
    assert p.current_position() == pos
    await p.set_state(A, "unavailable")
    assert p.get(A).state == "unavailable"
    await p.set_state(A, "online")  # syncing is not activity: still unavailable
    assert p.get(A).state == "unavailable"
    await p.set_status(B, "unavailable", "away")
    await p.set_state(B, "online")  # an explicit unavailable holds against /sync
    assert p.get(B).state == "unavailable" and p.get(B).status_msg == "away"
    await p.set_status(C, "offline", None)
    await p.set_state(C, "online")  # an offline user who syncs comes online
    assert p.get(C).state == "online"


@pytest_twisted.ensureDeferred
async def test_activity(db: Database, rooms: FakeRooms, notifier: Notifier, clock: FakeClock) -> None:
    p = await make(db, rooms, notifier, clock)
    await p.set_status(A, "unavailable", None)
    clock.advance(10)
    p.on_event(_Persisted(A))  # type: ignore[arg-type]  # a new event of A's is activity
    assert p.get(A).state == "online" and p.get(A).currently_active
    assert p.get(A).last_active_ts == clock.time_msec()
    await p.set_status(C, "online", None)  # written after the event's update, so that is done
    pos = p.current_position()
    assert pos == 3
    clock.advance(10)
    await p.bump_active(A)  # online and currently active: only the time moves, in memory
    assert p.current_position() == pos and p.get(A).last_active_ts == clock.time_msec()
    await p.set_status(B, "offline", None)
    await p.bump_active(B)  # offline (maybe hiding) stays offline
    assert p.get(B).state == "offline"
    pos = p.current_position()
    p.on_event(_Persisted("@remote:elsewhere"))  # type: ignore[arg-type]
    assert p.current_position() == pos and p.get("@remote:elsewhere").state == "offline"


@pytest_twisted.ensureDeferred
async def test_timeouts(db: Database, rooms: FakeRooms, notifier: Notifier, clock: FakeClock) -> None:
    p = await make(db, rooms, notifier, clock)
    await p.set_state(A, "online")
    await p.set_status(B, "online", None)
    await p.set_status(C, "offline", None)
    clock.advance(ACTIVE_GRANULARITY_MS / 1000 + 1)
    await p.set_state(A, "online")  # A keeps syncing, B does not
    await p.handle_timeouts()
    assert (p.get(A).state, p.get(A).currently_active) == ("online", False)
    assert (p.get(B).state, p.get(B).currently_active) == ("online", False)
    clock.advance((IDLE_AFTER_MS - ACTIVE_GRANULARITY_MS) / 1000)
    await p.set_state(A, "online")
    await p.handle_timeouts()
    assert p.get(A).state == "unavailable"  # idle, though syncing
    assert p.get(B).state == "unavailable"
    clock.advance((OFFLINE_AFTER_MS - IDLE_AFTER_MS) / 1000)
    await p.set_state(A, "online")
    await p.handle_timeouts()
    assert p.get(A).state == "unavailable"  # still seen
    assert p.get(B).state == "offline"  # not seen for OFFLINE_AFTER_MS
    assert p.get(C).state == "offline"
    await p.bump_active(A)
    assert p.get(A).state == "online"


@pytest_twisted.ensureDeferred
async def test_what_sync_reads_and_who_is_woken(db: Database, rooms: FakeRooms, notifier: Notifier,
                                                clock: FakeClock) -> None:
    p = await make(db, rooms, notifier, clock)
    await member(db, rooms, "!r:x", A)
    await member(db, rooms, "!r:x", B)
    await member(db, rooms, "!r:x", C, "invite")
    waits = {u: defer.ensureDeferred(notifier.wait(u, 60)) for u in (A, B, C, "@d:x")}
    await p.set_status(A, "online", "hi")
    # The room's members (an invitee too) hear of it; others do not.
    assert [u for u, d in waits.items() if d.called] == [A, B, C]
    await p.set_status(B, "offline", None)
    p2 = p.current_position()
    clock.advance(1)
    assert await p.presence_changes(B, None, p2) == [
        {"type": "m.presence", "sender": A, "content": {
            "presence": "online", "status_msg": "hi", "last_active_ago": 1000, "currently_active": True}}]
    assert [e["sender"] for e in await p.presence_changes(A, 0, p2)] == [A, B]
    assert [e["sender"] for e in await p.presence_changes(A, 1, p2)] == [B]
    assert await p.presence_changes(C, None, p2) == []  # invited only: nothing shared
    assert await p.presence_changes("@d:x", 0, p2) == []
    assert await p.presence_changes(A, p2, p2) == []
    clock.advance(60)


@pytest_twisted.ensureDeferred
async def test_restart_keeps_state_and_times_out_absent_users(
        db: Database, rooms: FakeRooms, notifier: Notifier, clock: FakeClock) -> None:
    p = await make(db, rooms, notifier, clock)
    await p.set_status(A, "unavailable", "lunch")
    await p.set_state(B, "online")
    again = await make(db, rooms, Notifier(clock.reactor), clock)
    assert again.get(A).status_msg == "lunch" and again.get(B).state == "online"
    assert again.current_position() == p.current_position()
    clock.advance(OFFLINE_AFTER_MS / 1000 - 10)
    await again.set_state(B, "online")
    clock.advance(11)
    await again.handle_timeouts()
    assert again.get(A).state == "offline" and again.get(B).state == "unavailable"


@pytest_twisted.ensureDeferred
async def test_disabled(db: Database, rooms: FakeRooms, notifier: Notifier, clock: FakeClock) -> None:
    p = await make(db, rooms, notifier, clock, enabled=False)
    await member(db, rooms, "!r:x", A)
    await p.set_status(A, "online", "hi")
    await p.set_state(A, "online")
    await p.bump_active(A)
    await p.handle_timeouts()
    assert p.current_position() == 0
    assert await p.get_presence(A, A) == {"presence": "offline"}
    assert await p.get_presence(C, A) == {"presence": "offline"}
    assert await p.presence_changes(A, None, 10) == []


def test_content_shapes() -> None:
    from homeserver.ephemeral.presence import Presence
    assert Presence().content(5) == {"presence": "offline"}
    assert Presence("online", None, 3, False).content(5) == {
        "presence": "online", "last_active_ago": 2, "currently_active": False}
    assert Presence("unavailable", "", 9, False).content(5) == {
        "presence": "unavailable", "last_active_ago": 0, "status_msg": ""}
