"""Account data and room tags stores on both engines: stream positions and change queries."""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import defer

from storage.account_data import AccountDataStore
from storage.database import Database, Transaction
from storage.migrations import prepare_database
from storage.tags import TagStore


async def _store(db: Database) -> AccountDataStore:
    s = AccountDataStore(db)
    await s.load()
    return s


@pytest_twisted.ensureDeferred
async def test_positions_increase_and_survive_a_restart(db: Database) -> None:
    s = await _store(db)
    assert s.current_position() == 0
    p1 = await s.set_global("@a:x", "org.example.one", {"n": 1})
    p2 = await s.set_room("@a:x", "!r:x", "org.example.two", {"n": 2})
    p3 = await s.set_global("@b:x", "org.example.one", {"n": 3})
    assert 0 < p1 < p2 < p3 == s.current_position()
    again = await _store(db)  # a restarted server continues after the persisted maximum
    assert again.current_position() == p3
    assert await again.set_global("@a:x", "org.example.one", {"n": 4}) > p3


@pytest_twisted.ensureDeferred
async def test_overwrite_replaces_content_and_moves_position(db: Database) -> None:
    s = await _store(db)
    p1 = await s.set_global("@a:x", "t", {"v": 1})
    p2 = await s.set_global("@a:x", "t", {"v": 2})
    assert p2 > p1
    assert await s.get_global("@a:x", "t") == {"v": 2}
    assert await s.get_global_changes("@a:x", None, p2) == {"t": {"v": 2}}
    # The rewrite moved the data to p2: a reader already at p1 still sees it.
    assert await s.get_global_changes("@a:x", p1, p2) == {"t": {"v": 2}}
    assert await s.get_global_changes("@a:x", p2, p2) == {}


@pytest_twisted.ensureDeferred
async def test_changes_between_positions(db: Database) -> None:
    s = await _store(db)
    p1 = await s.set_global("@a:x", "one", {"n": 1})
    p2 = await s.set_global("@a:x", "two", {"n": 2})
    p3 = await s.set_global("@a:x", "three", {"n": 3})
    assert await s.get_global_changes("@a:x", None, p3) == {
        "one": {"n": 1}, "two": {"n": 2}, "three": {"n": 3}}
    assert await s.get_global_changes("@a:x", p1, p3) == {"two": {"n": 2}, "three": {"n": 3}}
    assert await s.get_global_changes("@a:x", p1, p2) == {"two": {"n": 2}}
    assert await s.get_global_changes("@a:x", None, p1) == {"one": {"n": 1}}
    assert await s.get_global_changes("@a:x", p3, p3) == {}
    assert await s.get_global_changes("@other:x", None, p3) == {}


@pytest_twisted.ensureDeferred
async def test_room_and_global_data_are_separate(db: Database) -> None:
    s = await _store(db)
    await s.set_global("@a:x", "t", {"scope": "global"})
    p = await s.set_room("@a:x", "!r1:x", "t", {"scope": "r1"})
    await s.set_room("@a:x", "!r2:x", "t", {"scope": "r2"})
    last = await s.set_room("@a:x", "!r2:x", "u", {"scope": "r2u"})
    await s.set_room("@b:x", "!r1:x", "t", {"scope": "b"})
    assert await s.get_global("@a:x", "t") == {"scope": "global"}
    assert await s.get_room("@a:x", "!r1:x", "t") == {"scope": "r1"}
    assert await s.get_room("@a:x", "!r3:x", "t") is None
    assert await s.get_global("@a:x", "u") is None  # no fallback from room to global
    assert await s.get_global_changes("@a:x", None, last) == {"t": {"scope": "global"}}
    assert await s.get_room_changes("@a:x", None, None, last) == {
        "!r1:x": {"t": {"scope": "r1"}}, "!r2:x": {"t": {"scope": "r2"}, "u": {"scope": "r2u"}}}
    assert await s.get_room_changes("@a:x", ["!r2:x", "!r9:x"], None, last) == {
        "!r2:x": {"t": {"scope": "r2"}, "u": {"scope": "r2u"}}}
    assert await s.get_room_changes("@a:x", [], None, last) == {}
    assert await s.get_room_changes("@a:x", None, p, last) == {
        "!r2:x": {"t": {"scope": "r2"}, "u": {"scope": "r2u"}}}
    assert await s.get_room_changes("@a:x", None, None, p) == {"!r1:x": {"t": {"scope": "r1"}}}


@pytest_twisted.ensureDeferred
async def test_room_changes_for_many_rooms(db: Database) -> None:
    s = await _store(db)
    rooms = [f"!r{i}:x" for i in range(1200)]
    for room in rooms[::100]:
        await s.set_room("@a:x", room, "t", {"room": room})
    changes = await s.get_room_changes("@a:x", rooms, None, s.current_position())
    assert changes == {room: {"t": {"room": room}} for room in rooms[::100]}


@pytest_twisted.ensureDeferred
async def test_concurrent_writes_commit_in_position_order(db: Database) -> None:
    s = await _store(db)
    positions = await defer.gatherResults([
        defer.ensureDeferred(s.set_global("@a:x", f"t{i}", {"i": i})) for i in range(20)])
    assert sorted(positions) == list(range(1, 21))
    assert s.current_position() == 20
    assert len(await s.get_global_changes("@a:x", None, 20)) == 20


@pytest_twisted.ensureDeferred
async def test_tags_are_the_m_tag_room_account_data(db: Database) -> None:
    s = await _store(db)
    tags = TagStore(s)
    before = s.current_position()
    p1 = await tags.set_tag("@a:x", "!r:x", "m.favourite", {"order": 0.5})
    p2 = await tags.set_tag("@a:x", "!r:x", "u.work", {})
    assert before < p1 < p2
    assert await tags.get_tags("@a:x", "!r:x") == {"m.favourite": {"order": 0.5}, "u.work": {}}
    assert await s.get_room_changes("@a:x", None, p1, p2) == {
        "!r:x": {"m.tag": {"tags": {"m.favourite": {"order": 0.5}, "u.work": {}}}}}
    p3 = await tags.delete_tag("@a:x", "!r:x", "m.favourite")
    assert p3 is not None and p3 > p2
    assert await s.get_room_changes("@a:x", ["!r:x"], p2, p3) == {"!r:x": {"m.tag": {"tags": {"u.work": {}}}}}
    # Deleting a tag the room does not have changes nothing and takes no position.
    assert await tags.delete_tag("@a:x", "!r:x", "m.favourite") is None
    assert s.current_position() == p3
    p4 = await tags.delete_tag("@a:x", "!r:x", "u.work")
    assert await s.get_room_changes("@a:x", None, p3, p4) == {"!r:x": {"m.tag": {"tags": {}}}}
    assert await tags.get_tags("@b:x", "!r:x") == {}


@pytest_twisted.ensureDeferred
async def test_concurrent_tag_writes_lose_nothing(db: Database) -> None:
    tags = TagStore(await _store(db))
    await defer.gatherResults([
        defer.ensureDeferred(tags.set_tag("@a:x", "!r:x", f"u.t{i}", {"order": i / 10}))
        for i in range(10)])
    assert await tags.get_tags("@a:x", "!r:x") == {f"u.t{i}": {"order": i / 10} for i in range(10)}


@pytest_twisted.ensureDeferred
async def test_tags_tolerate_a_malformed_m_tag_set_by_a_client(db: Database) -> None:
    s = await _store(db)
    tags = TagStore(s)
    await s.set_room("@a:x", "!r:x", "m.tag", {"tags": "not an object"})
    assert await tags.get_tags("@a:x", "!r:x") == {}
    await s.set_room("@a:x", "!r:x", "m.tag", {"tags": {"good": {"order": 1}, "bad": 3}})
    assert await tags.get_tags("@a:x", "!r:x") == {"good": {"order": 1}}
    await tags.set_tag("@a:x", "!r:x", "u.new", {})
    assert await s.get_room("@a:x", "!r:x", "m.tag") == {"tags": {"good": {"order": 1}, "u.new": {}}}


@pytest_twisted.ensureDeferred
async def test_migration_moves_room_tags_into_m_tag_account_data(fresh_db: Database) -> None:
    await prepare_database(fresh_db, before=5)

    def tags_before(txn: Transaction) -> None:
        txn.executemany("INSERT INTO room_tags (user_id, room_id, tag, content_json) VALUES (?, ?, ?, ?)",
                        [("@a:x", "!r1:x", "m.favourite", json.dumps({"order": 0.25})),
                         ("@a:x", "!r1:x", 'u."quoted"\\', json.dumps({})),
                         ("@a:x", "!r2:x", "m.lowpriority", json.dumps({"order": 1})),
                         ("@b:x", "!r1:x", "u.work", json.dumps({"order": 0.5}))])
    await fresh_db.run("old tags", tags_before)
    await prepare_database(fresh_db)

    s = await _store(fresh_db)
    assert s.current_position() == 3  # one position per (user, room)
    tags = TagStore(s)
    assert await tags.get_tags("@a:x", "!r1:x") == {"m.favourite": {"order": 0.25}, 'u."quoted"\\': {}}
    assert await tags.get_tags("@b:x", "!r1:x") == {"u.work": {"order": 0.5}}
    assert await s.get_room_changes("@a:x", None, None, 3) == {
        "!r1:x": {"m.tag": {"tags": {"m.favourite": {"order": 0.25}, 'u."quoted"\\': {}}}},
        "!r2:x": {"m.tag": {"tags": {"m.lowpriority": {"order": 1}}}}}
    assert await tags.set_tag("@b:x", "!r1:x", "u.new", {}) == 4
