"""homeserver/e2ee/device_lists.py on both engines: changed/left between positions, and wake-ups."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer, reactor

from homeserver.e2ee.device_lists import DeviceListTracker
from homeserver.notifier import Notifier
from storage.database import Database
from storage.e2ee_keys import E2eKeyStore
from storage.events import EventStore

A, B, C, D, E = (f"@{n}:test.local" for n in "abcde")


class World:
    def __init__(self, db: Database) -> None:  # noqa: F811
        self.db = db
        self.events = EventStore(db)
        self.notifier = Notifier(reactor)
        self.store = E2eKeyStore(db)
        self.tracker = DeviceListTracker(self.store, self.events, self.notifier)
        self._n = 0

    async def member(self, room_id: str, user_id: str, membership: str, record: bool = True) -> None:
        """Set a current membership as the rooms layer would, and record it in the stream."""
        self._n += 1
        await self.db.execute(
            "INSERT INTO current_membership (room_id, user_id, membership, event_id, stream_ordering,"
            " forgotten) VALUES (?, ?, ?, ?, ?, FALSE) ON CONFLICT (room_id, user_id) DO UPDATE"
            " SET membership = excluded.membership", (room_id, user_id, membership, f"$e{self._n}", self._n))
        if record:
            await self.store.record_membership(user_id, room_id, membership)

    async def changes(self, user_id: str, since: int) -> tuple[set[str], set[str]]:
        return await self.tracker.device_list_changes(user_id, since, self.tracker.current_position())


async def _world(db: Database) -> World:  # noqa: F811
    w = World(db)
    await w.tracker.load()
    for user in (A, B):
        await w.member("!r1:x", user, "join", record=False)
    for user in (A, C):
        await w.member("!r2:x", user, "join", record=False)
    await w.member("!r3:x", D, "join", record=False)
    return w


@pytest_twisted.ensureDeferred
async def test_key_changes_of_users_sharing_a_room_and_of_oneself(db: Database) -> None:  # noqa: F811
    w = await _world(db)
    start = w.tracker.current_position()
    for user in (B, D, A):
        await w.tracker.record_change(user)
    assert await w.changes(A, start) == ({A, B}, set())
    assert await w.changes(C, start) == ({A}, set())
    assert await w.changes(D, start) == ({D}, set())
    # Nothing for an initial sync, nor for an empty range.
    assert await w.tracker.device_list_changes(A, None, w.tracker.current_position()) == (set(), set())
    assert await w.changes(A, w.tracker.current_position()) == (set(), set())


@pytest_twisted.ensureDeferred
async def test_joins_and_leaves(db: Database) -> None:  # noqa: F811
    w = await _world(db)
    start = w.tracker.current_position()
    await w.member("!r1:x", E, "join")  # E now shares r1 with A and B
    assert await w.changes(A, start) == ({E}, set())
    assert await w.changes(E, start) == ({A, B}, set())
    mid = w.tracker.current_position()
    await w.member("!r2:x", C, "leave")  # C shares nothing with A any more
    assert await w.changes(A, mid) == (set(), {C})
    assert await w.changes(C, mid) == (set(), {A})
    after_c = w.tracker.current_position()
    await w.member("!r1:x", A, "leave")  # A leaves r1: B and E are gone for A
    assert await w.changes(A, after_c) == (set(), {B, E})
    assert await w.changes(B, after_c) == (set(), {A})
    # Over the whole range E both arrived and went: A never hears of it as "changed".
    changed, left = await w.changes(A, start)
    assert E not in changed and {B, C, E} <= left


@pytest_twisted.ensureDeferred
async def test_a_user_still_sharing_another_room_has_not_left(db: Database) -> None:  # noqa: F811
    w = await _world(db)
    await w.member("!r2:x", B, "join")
    start = w.tracker.current_position()
    await w.member("!r1:x", B, "leave")
    assert await w.changes(A, start) == (set(), set())


@pytest_twisted.ensureDeferred
async def test_changes_wake_users_sharing_a_room(db: Database) -> None:  # noqa: F811
    w = await _world(db)
    woken: list[str] = []
    waits = [defer.ensureDeferred(w.notifier.wait(u, 5)).addCallback(lambda _, u=u: woken.append(u))
             for u in (A, B, D)]
    await w.tracker.record_change(B)
    assert sorted(woken) == [A, B]
    assert w.notifier.current_token().device_lists == w.tracker.current_position()
    await w.tracker.record_change(D)
    await defer.gatherResults(waits)
    assert sorted(woken) == [A, B, D]
