"""Receipts on both engines: the store's stream positions and "never back" rule, and the
service's checks, notifications, fully read marker and what /sync reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from homeserver.ephemeral.receipts import ReceiptService
from homeserver.http.errors import MatrixError
from homeserver.notifier import Notifier
from storage.account_data import AccountDataStore
from storage.database import Database
from storage.receipts import ReceiptStore
from tests.ephemeral.conftest import FakeClock, FakeRooms

ROOM = "!r:x"


@dataclass
class FakeEvent:
    event_id: str
    room_id: str
    content: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeRow:
    event: FakeEvent
    stream_ordering: int
    outlier: bool = False


class FakeVisibility:
    def __init__(self) -> None:
        self.hidden: set[tuple[str, str]] = set()

    async def can_see(self, user_id: str, row: FakeRow) -> bool:
        return (user_id, row.event.event_id) not in self.hidden


# --- the store ---------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_store_positions_and_never_back(db: Database) -> None:
    s = ReceiptStore(db)
    await s.load()
    assert s.current_position() == 0
    p1 = await s.upsert(ROOM, "m.read", "@a:x", None, "$e2", 20, 1000)
    assert p1 == 1 == s.current_position()
    # Same or earlier event for the same (type, thread): ignored.
    assert await s.upsert(ROOM, "m.read", "@a:x", None, "$e2", 20, 1001) is None
    assert await s.upsert(ROOM, "m.read", "@a:x", None, "$e1", 10, 1002) is None
    got = await s.get(ROOM, "m.read", "@a:x")
    assert got is not None and (got.event_id, got.ts, got.stream_id) == ("$e2", 1000, p1)
    # Another thread, type or user is another receipt, however early its event.
    p2 = await s.upsert(ROOM, "m.read", "@a:x", "main", "$e1", 10, 1003)
    p3 = await s.upsert(ROOM, "m.read.private", "@a:x", None, "$e1", 10, 1004)
    p4 = await s.upsert(ROOM, "m.read", "@b:x", None, "$e1", 10, 1005)
    p5 = await s.upsert(ROOM, "m.read", "@a:x", None, "$e3", 30, 1006)
    assert p1 < p2 < p3 < p4 < p5 == s.current_position()
    again = ReceiptStore(db)
    await again.load()
    assert again.current_position() == s.current_position()
    assert await again.upsert(ROOM, "m.read", "@c:x", None, "$e3", 30, 1) > p5


@pytest_twisted.ensureDeferred
async def test_store_changes_between_positions(db: Database) -> None:
    s = ReceiptStore(db)
    await s.load()
    other = "!o:x"
    p1 = await s.upsert(ROOM, "m.read", "@a:x", None, "$1", 1, 1)
    p2 = await s.upsert(ROOM, "m.read.private", "@a:x", None, "$1", 1, 1)
    p3 = await s.upsert(other, "m.read", "@b:x", None, "$9", 9, 1)
    p4 = await s.upsert(ROOM, "m.read.private", "@b:x", None, "$1", 1, 1)

    async def changes(rooms: list[str], frm: int | None, to: int, user: str) -> list[tuple]:
        rs = await s.changes(rooms, frm, to, ("m.read",), ("m.read.private",), user)
        return [(r.room_id, r.receipt_type, r.user_id) for r in rs]
    assert await changes([ROOM, other], None, p4, "@a:x") == [
        (ROOM, "m.read", "@a:x"), (ROOM, "m.read.private", "@a:x"), (other, "m.read", "@b:x")]
    assert await changes([ROOM, other], None, p4, "@b:x") == [
        (ROOM, "m.read", "@a:x"), (other, "m.read", "@b:x"), (ROOM, "m.read.private", "@b:x")]
    assert await changes([ROOM], p1, p4, "@a:x") == [(ROOM, "m.read.private", "@a:x")]
    assert await changes([ROOM, other], p2, p3, "@a:x") == [(other, "m.read", "@b:x")]
    assert await changes([ROOM, other], p4, p4, "@a:x") == []
    assert await changes([], None, p4, "@a:x") == []
    many = [f"!{i}:x" for i in range(450)] + [other]
    assert await changes(many, None, p4, "@a:x") == [(other, "m.read", "@b:x")]


# --- the service -------------------------------------------------------------------------------

@pytest.fixture
def setup(db: Database, rooms: FakeRooms, notifier: Notifier, clock: FakeClock) -> Any:
    for user in ("@a:x", "@b:x"):
        rooms.set(ROOM, user, "join")
    rooms.set(ROOM, "@c:x", "invite")
    rows = [FakeRow(FakeEvent(f"$e{i}", ROOM), i * 10) for i in range(1, 4)]
    rows.append(FakeRow(FakeEvent("$reply", ROOM, {"m.relates_to": {"rel_type": "m.thread",
                                                                   "event_id": "$e1"}}), 50))
    rows.append(FakeRow(FakeEvent("$edit", ROOM, {"m.relates_to": {"rel_type": "m.replace",
                                                                  "event_id": "$reply"}}), 60))
    rows.append(FakeRow(FakeEvent("$elsewhere", "!o:x"), 70))
    rows.append(FakeRow(FakeEvent("$outlier", ROOM), 80, outlier=True))
    for r in rows:
        rooms.rows[r.event.event_id] = r
    visibility = FakeVisibility()
    account_data = AccountDataStore(db)
    service = ReceiptService(ReceiptStore(db), account_data, rooms, visibility,  # type: ignore[arg-type]
                             notifier, clock)
    return service, account_data, visibility


@pytest_twisted.ensureDeferred
async def test_receipts_for_sync(setup: Any, clock: FakeClock, notifier: Notifier) -> None:
    service, _, _ = setup
    await service.load()
    await service.account_data.load()
    start = service.current_position()
    await service.post_receipt("@a:x", ROOM, "m.read", "$e2")
    await service.post_receipt("@b:x", ROOM, "m.read", "$e2", "main")
    await service.post_receipt("@b:x", ROOM, "m.read.private", "$e3")
    await service.post_receipt("@a:x", ROOM, "m.read", "$reply", "$e1")
    now = service.current_position()
    assert now == start + 4 == notifier.current_token().receipts
    ts = clock.time_msec()
    for_a = await service.receipts_for_rooms([ROOM], None, now, "@a:x")
    assert for_a == {ROOM: [{"type": "m.receipt", "content": {
        "$e2": {"m.read": {"@a:x": {"ts": ts}, "@b:x": {"ts": ts, "thread_id": "main"}}},
        "$reply": {"m.read": {"@a:x": {"ts": ts, "thread_id": "$e1"}}}}}]}
    for_b = await service.receipts_for_rooms([ROOM], start + 2, now, "@b:x")
    assert for_b == {ROOM: [{"type": "m.receipt", "content": {
        "$e3": {"m.read.private": {"@b:x": {"ts": ts}}},
        "$reply": {"m.read": {"@a:x": {"ts": ts, "thread_id": "$e1"}}}}}]}
    assert await service.receipts_for_rooms([ROOM], now, now, "@a:x") == {}
    # One user, one type, one event, two threads: a second m.receipt event for the room.
    await service.post_receipt("@a:x", ROOM, "m.read", "$e3")
    await service.post_receipt("@a:x", ROOM, "m.read", "$e3", "main")
    events = (await service.receipts_for_rooms([ROOM], now, service.current_position(), "@a:x"))[ROOM]
    assert [e["content"] for e in events] == [
        {"$e3": {"m.read": {"@a:x": {"ts": ts}}}},
        {"$e3": {"m.read": {"@a:x": {"ts": ts, "thread_id": "main"}}}}]


@pytest_twisted.ensureDeferred
async def test_who_is_woken(setup: Any, notifier: Notifier, clock: FakeClock) -> None:
    service, _, _ = setup
    await service.load()
    waits = {u: defer.ensureDeferred(notifier.wait(u, 60)) for u in ("@a:x", "@b:x", "@c:x")}
    await service.post_receipt("@b:x", ROOM, "m.read.private", "$e1")
    assert [u for u, d in waits.items() if d.called] == ["@b:x"]
    await service.post_receipt("@b:x", ROOM, "m.read", "$e1")
    assert all(d.called for d in waits.values())
    pos = notifier.current_token().receipts
    # An ignored receipt (earlier event) moves nothing and wakes no one.
    wait_a = defer.ensureDeferred(notifier.wait("@a:x", 60))
    await service.post_receipt("@b:x", ROOM, "m.read", "$e1")
    assert not wait_a.called
    assert await service.receipts_for_rooms([ROOM], pos, service.current_position(), "@a:x") == {}
    clock.advance(60)


@pytest_twisted.ensureDeferred
async def test_checks_change_nothing(setup: Any) -> None:
    service, account_data, visibility = setup
    await service.load()
    await account_data.load()
    visibility.hidden.add(("@b:x", "$e3"))
    cases = [
        (("@c:x", ROOM, "m.read", "$e1"), 403),  # invited, not joined
        (("@z:x", ROOM, "m.read", "$e1"), 403),
        (("@b:x", "!o:x", "m.read", "$elsewhere"), 403),
        (("@b:x", ROOM, "m.read", "$elsewhere"), 404),
        (("@b:x", ROOM, "m.read", "$unknown"), 404),
        (("@b:x", ROOM, "m.read", "$outlier"), 404),
        (("@b:x", ROOM, "m.read", "$e3"), 404),  # not visible to b
        (("@b:x", ROOM, "m.read", "nodollar"), 404),
        (("@b:x", ROOM, "m.unknown", "$e1"), 400),
        (("@b:x", ROOM, "m.read", "$reply", "main"), 400),
        (("@b:x", ROOM, "m.read", "$edit", "main"), 400),
        (("@b:x", ROOM, "m.read", "$e2", "$e1"), 400),
        (("@b:x", ROOM, "m.read", "$e2", ""), 400),
        (("@b:x", ROOM, "m.read", "$e2", "thread"), 400),
        (("@b:x", ROOM, "m.fully_read", "$e2", "main"), 400),
    ]
    for args, status in cases:
        with pytest.raises(MatrixError) as e:
            await service.post_receipt(*args)
        assert e.value.status == status, args
    with pytest.raises(MatrixError) as e:
        await service.set_read_markers("@b:x", ROOM, {"m.fully_read": "$e1", "m.read": "$e3"})
    assert e.value.status == 404
    assert service.current_position() == 0
    assert await account_data.get_room("@b:x", ROOM, "m.fully_read") is None
    # The thread rules that hold: a reply (or an edit of one) in its thread, a root in both.
    for args in (("$reply", "$e1"), ("$edit", "$e1"), ("$e1", "$e1"), ("$e1", "main"), ("$e2", "main")):
        await service.post_receipt("@b:x", ROOM, "m.read", *args)


@pytest_twisted.ensureDeferred
async def test_fully_read_is_room_account_data(setup: Any, notifier: Notifier, clock: FakeClock) -> None:
    service, account_data, _ = setup
    await service.load()
    await account_data.load()
    wait_b = defer.ensureDeferred(notifier.wait("@b:x", 60))
    await service.set_read_markers("@a:x", ROOM, {"m.fully_read": "$e2", "m.read": "$e1"})
    assert await account_data.get_room("@a:x", ROOM, "m.fully_read") == {"event_id": "$e2"}
    assert notifier.current_token().account_data == account_data.current_position() > 0
    assert not (await service.store.get(ROOM, "m.fully_read", "@a:x"))
    assert (await service.store.get(ROOM, "m.read", "@a:x")).event_id == "$e1"
    pos = account_data.current_position()
    # Never back, and the same event again is no change.
    await service.set_read_markers("@a:x", ROOM, {"m.fully_read": "$e1"})
    await service.set_read_markers("@a:x", ROOM, {"m.fully_read": "$e2"})
    assert account_data.current_position() == pos
    await service.set_read_markers("@a:x", ROOM, {"m.fully_read": "$e3"})
    assert await account_data.get_room("@a:x", ROOM, "m.fully_read") == {"event_id": "$e3"}
    assert account_data.current_position() > pos
    assert wait_b.called  # by the m.read receipt, not by a's marker
    clock.advance(60)


@pytest_twisted.ensureDeferred
async def test_load_sets_the_notifier_position(db: Database, rooms: FakeRooms, clock: FakeClock) -> None:
    store = ReceiptStore(db)
    await store.load()
    for i in range(3):
        await store.upsert(ROOM, "m.read", f"@{i}:x", None, "$e", 1, 1)
    notifier = Notifier(clock.reactor)
    service = ReceiptService(ReceiptStore(db), AccountDataStore(db), rooms, FakeVisibility(),  # type: ignore[arg-type]
                             notifier, clock)
    await service.load()
    assert service.current_position() == 3 == notifier.current_token().receipts
