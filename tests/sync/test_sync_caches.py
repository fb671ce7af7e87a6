"""The in-memory helpers behind cheap /sync wake-ups: change caches, shared reads, tokens."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer

from homeserver.sync.tokens import SyncToken
from storage.single_flight import SingleFlight
from storage.stream_changes import StreamChangeCache


def test_change_cache_answers_only_above_its_floor() -> None:
    c = StreamChangeCache(floor=10)
    c.record("!a", 12)
    c.record("!a", 11)  # an older position never moves the entry back
    assert c.last_change("!a") == 12
    assert c.changed_since("!a", 11) and not c.changed_since("!a", 12)
    assert not c.changed_since("!b", 10)
    # Below the floor nothing is known: "maybe changed", and callers go to the database.
    assert not c.knows(9) and c.changed_since("!b", 9)


def test_change_cache_trims_by_raising_its_floor() -> None:
    c = StreamChangeCache(floor=0, max_entries=4)
    for i in range(1, 6):
        c.record(f"!r{i}", i)
    assert c.floor >= 2  # the oldest entries went, and with them the knowledge below
    assert not c.knows(1)
    assert c.knows(c.floor) and c.last_change("!r5") == 5
    assert c.changed_since("!r1", 0)  # forgotten entries count as "maybe changed"


@pytest_twisted.ensureDeferred
async def test_single_flight_shares_one_read_and_its_failure() -> None:
    flights: SingleFlight = SingleFlight()
    gate: defer.Deferred = defer.Deferred()
    calls = []

    async def read() -> list[int]:
        calls.append(1)
        await gate
        return [1, 2]
    a = defer.ensureDeferred(flights.run("k", read))
    b = defer.ensureDeferred(flights.run("k", read))
    gate.callback(None)
    assert await a == [1, 2] and await b == [1, 2] and len(calls) == 1
    assert await flights.run("k", read) == [1, 2] and len(calls) == 2  # not cached afterwards

    gate2: defer.Deferred = defer.Deferred()

    async def failing() -> int:
        await gate2
        raise ValueError("boom")
    c = defer.ensureDeferred(flights.run("f", failing))
    d = defer.ensureDeferred(flights.run("f", failing))
    gate2.callback(None)
    for waiter in (c, d):
        try:
            await waiter
        except ValueError:
            continue
        raise AssertionError("the failure should reach every waiter")


def test_token_at_least_takes_each_streams_further_position() -> None:
    a = SyncToken(5, 1, 2, 3, 4, 5, 6)
    b = SyncToken(4, 2, 2, 3, 4, 5, 7)
    assert str(a.at_least(b)) == "s5_2_2_3_4_5_7" == str(b.at_least(a))
    assert a.at_least(SyncToken()) is a
    assert SyncToken.parse(str(a)) == a
    assert b.is_after(a) and a.is_after(b) and not a.is_after(a)


def test_notifier_wakes_a_crowd_a_few_per_reactor_turn() -> None:
    """Waiting requests are woken 16 at a time, a reactor turn apart (so the answers of the
    first reach the network while the others are computed), and every one is woken."""
    from twisted.internet.task import Clock

    from homeserver.notifier import _WAKE_CHUNK, Notifier
    clock = Clock()
    notifier = Notifier(clock)
    woken: list[str] = []
    users = [f"@u{i}:hs" for i in range(40)]
    for u in users:
        d = defer.ensureDeferred(notifier.wait(u, 30.0))
        d.addCallback(lambda _, u=u: woken.append(u))
    notifier.notify("events", 5, users=users)
    assert len(woken) == _WAKE_CHUNK and notifier.current_token().events == 5
    assert notifier.waiting_users() == 0  # all taken off the waiting list at once
    clock.advance(0)  # (the test clock runs the later turns' calls in one go)
    assert sorted(woken) == sorted(users)
    assert notifier.waiting_among(users) == []


@pytest_twisted.ensureDeferred
async def test_a_parked_long_poll_prepares_its_wake_up() -> None:
    """A long-poll with nothing new waits at once, and meanwhile the user's memberships,
    membership facts and joined rooms' unread counts are read into memory (each store reads only
    what it misses), so the first event does not read them for every waiting member at once."""
    from twisted.internet.task import Clock

    from homeserver.notifier import Notifier
    from homeserver.sync.handler import SyncHandler
    from storage.sync import Membership

    asked: list[tuple[str, object]] = []

    class Store:
        async def current_memberships(self, user_id: str) -> list[Membership]:
            asked.append(("memberships", user_id))
            return [Membership("!a:hs", "join", "$j1", 1), Membership("!b:hs", "leave", "$l", 2),
                    Membership("!c:hs", "join", "$j2", 3)]

    class Events:
        async def prefetch_membership_facts(self, users: list[str]) -> None:
            asked.append(("facts", tuple(users)))

    class Counts:
        async def warm(self, user_id: str, room_ids: list[str]) -> None:
            asked.append(("counts", (user_id, tuple(room_ids))))

    clock = Clock()
    notifier = Notifier(clock)
    handler = SyncHandler(Events(), Store(), None, None, notifier,  # type: ignore[arg-type]
                          push_counts=Counts())  # type: ignore[arg-type]
    since = notifier.current_token()
    d = defer.ensureDeferred(handler.sync("@u:hs", "DEV", since, 30_000, False, None))
    assert not d.called and notifier.waiting_among(["@u:hs"]) == ["@u:hs"]
    assert asked == [("memberships", "@u:hs"), ("facts", ("@u:hs",)),
                     ("counts", ("@u:hs", ("!a:hs", "!c:hs")))]
    d.cancel()
    d.addErrback(lambda f: None)
