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
