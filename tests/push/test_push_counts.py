"""Unread counts for /sync (room_counts, thread_counts) and their clearing by receipts, on both
engines."""

from __future__ import annotations

from dataclasses import dataclass

import pytest_twisted
from twisted.internet import defer, reactor

from homeserver.push.counts import NotificationCounts
from storage.database import Database
from storage.notifications import NewNotification, NotificationStore

A = "@a:hs"
ROOM, OTHER, EMPTY = "!r:hs", "!o:hs", "!e:hs"


@dataclass
class Row:
    stream_ordering: int


def note(highlight: bool = False) -> list[NewNotification]:
    return [NewNotification(A, ["notify"], highlight)]


async def fill(store: NotificationStore) -> None:
    await store.add(ROOM, "main", "$1", 1, 0, note())
    await store.add(ROOM, "$t1", "$2", 2, 0, note(True))
    await store.add(ROOM, "$t1", "$3", 3, 0, note())
    await store.add(ROOM, "$t2", "$4", 4, 0, note())
    await store.add(ROOM, "main", "$5", 5, 0, note(True))
    await store.add(OTHER, "main", "$6", 6, 0, note())


def c(n: int, h: int) -> dict[str, int]:
    return {"notification_count": n, "highlight_count": h}


@pytest_twisted.ensureDeferred
async def test_room_and_thread_counts(db: Database) -> None:
    store = NotificationStore(db)
    counts = NotificationCounts(store)
    await fill(store)
    assert await counts.room_counts(A, [ROOM, OTHER, EMPTY]) == {
        ROOM: c(5, 2), OTHER: c(1, 0), EMPTY: c(0, 0)}
    assert await counts.room_counts(A, [ROOM, OTHER], threaded=True) == {ROOM: c(2, 1), OTHER: c(1, 0)}
    assert await counts.thread_counts(A, [ROOM, OTHER, EMPTY]) == {
        ROOM: {"$t1": c(2, 1), "$t2": c(1, 0)}}
    assert await counts.room_counts("@b:hs", [ROOM]) == {ROOM: c(0, 0)}
    assert await counts.room_counts(A, []) == {}


@pytest_twisted.ensureDeferred
async def test_receipts_clear_counts(db: Database) -> None:
    store = NotificationStore(db)
    counts = NotificationCounts(store)
    cleared: list[str] = []
    counts.listeners.append(cleared.append)
    await fill(store)
    # m.fully_read is not a read receipt for notifications.
    await counts.on_receipt(A, ROOM, "m.fully_read", None, Row(5))  # type: ignore[arg-type]
    assert (await counts.room_counts(A, [ROOM]))[ROOM] == c(5, 2)
    # A threaded private receipt clears its thread only, up to its event.
    await counts.on_receipt(A, ROOM, "m.read.private", "$t1", Row(2))  # type: ignore[arg-type]
    assert await counts.thread_counts(A, [ROOM]) == {ROOM: {"$t1": c(1, 0), "$t2": c(1, 0)}}
    await counts.on_receipt(A, ROOM, "m.read", "main", Row(5))  # type: ignore[arg-type]
    assert await counts.room_counts(A, [ROOM], threaded=True) == {ROOM: c(0, 0)}
    assert (await counts.room_counts(A, [ROOM]))[ROOM] == c(2, 0)
    assert cleared == [A, A]
    # An unthreaded receipt clears everything before it, in every thread.
    await counts.on_receipt(A, ROOM, "m.read", None, Row(3))  # type: ignore[arg-type]
    assert await counts.thread_counts(A, [ROOM]) == {ROOM: {"$t2": c(1, 0)}}
    await counts.on_receipt(A, ROOM, "m.read", None, Row(3))  # type: ignore[arg-type]
    assert cleared == [A, A, A]  # nothing cleared the second time, nobody told
    await counts.on_receipt(A, ROOM, "m.read", None, Row(4))  # type: ignore[arg-type]
    assert await counts.room_counts(A, [ROOM, OTHER]) == {ROOM: c(0, 0), OTHER: c(1, 0)}


@pytest_twisted.ensureDeferred
async def test_counts_wait_for_pending_evaluation(db: Database) -> None:
    store = NotificationStore(db)
    pending: defer.Deferred = defer.Deferred()

    async def wait_pending(room_ids: list[str]) -> None:
        assert room_ids == [ROOM]
        await pending

    counts = NotificationCounts(store, wait_pending)
    d = defer.ensureDeferred(counts.room_counts(A, [ROOM]))
    await store.add(ROOM, "main", "$1", 1, 0, note())
    assert not d.called
    reactor.callLater(0, pending.callback, None)  # type: ignore[attr-defined]
    assert await d == {ROOM: c(1, 0)}
