"""Migrations 0017 and 0018: notifications stored per user (0016) move to rows per event with
nothing lost: counts, highlights, actions and read state read the same afterwards, on both
engines."""

from __future__ import annotations

import pytest_twisted

from storage.database import Database, Transaction
from storage.migrations import list_migrations, prepare_database
from storage.notifications import NotificationStore

ROOM = "!r:hs"
HL = ["notify", {"set_tweak": "highlight"}]


@pytest_twisted.ensureDeferred
async def test_per_user_rows_move_to_per_event_rows(fresh_db: Database) -> None:
    old_db = fresh_db
    await prepare_database(old_db, before=17)

    def fill(txn: Transaction) -> None:
        rows = [("@a:hs", 1, "main", '["notify"]', False, False),
                ("@b:hs", 1, "main", '["notify",{"set_tweak":"sound","value":"default"}]', False, True),
                ("@a:hs", 2, "$t", '["notify",{"set_tweak":"highlight"}]', True, True),
                ("@b:hs", 2, "$t", '["notify",{"set_tweak":"highlight"}]', True, True),
                ("@a:hs", 3, "main", '["notify"]', False, True)]
        for user, stream, thread, actions, hl, unread in rows:
            txn.execute("INSERT INTO push_notifications (user_id, stream_ordering, event_id, room_id,"
                        " thread_id, actions_json, highlight, unread, ts) VALUES (?, ?, ?, ?, ?, ?, ?,"
                        " ?, ?)", (user, stream, f"${stream}", ROOM, thread, actions, hl, unread,
                                   1000 + stream))
        txn.execute("INSERT INTO push_read_positions (user_id, room_id, thread_id, stream_ordering)"
                    " VALUES (?, ?, ?, ?)", ("@a:hs", ROOM, "main", 1))
    await old_db.run("fill", fill)
    assert await prepare_database(old_db) == [f for v, f in list_migrations(old_db.engine_name)
                                              if v >= 17]
    store = NotificationStore(old_db)
    assert await store.unread_counts("@a:hs", [ROOM]) == {(ROOM, "$t"): (1, 1), (ROOM, "main"): (1, 0)}
    assert await store.unread_counts("@b:hs", [ROOM]) == {(ROOM, "$t"): (1, 1), (ROOM, "main"): (1, 0)}
    listed = await store.list("@b:hs", [ROOM], None, 10)
    assert [(n.event_id, n.actions, n.highlight, n.unread, n.ts) for n in listed] == [
        ("$2", HL, True, True, 1002),
        ("$1", ["notify", {"set_tweak": "sound", "value": "default"}], False, True, 1001)]
    assert [(n.event_id, n.unread) for n in await store.list("@a:hs", [ROOM], None, 10)] == [
        ("$3", True), ("$2", True), ("$1", False)]
