"""Global and per-room account data, and room tags as the m.tag room account data, on both engines."""

from __future__ import annotations

from urllib.parse import quote

import pytest
import pytest_twisted
from twisted.internet import reactor

from storage.account_data import AccountDataStore
from storage.database import Database
from storage.engines import create_engine
from tests.harness import Client, ServerProcess

ROOM = "!someroom:test.local"


def test_set_and_get_global_account_data(user: Client) -> None:
    path = f"user/{user.user_id}/account_data/org.example.config"
    r = user.get(path)
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")
    assert user.put(path, {"theme": "dark", "nested": {"a": [1, 2]}}).status_code == 200
    assert user.get(path).json() == {"theme": "dark", "nested": {"a": [1, 2]}}
    assert user.put(path, {"theme": "light"}).status_code == 200
    assert user.get(path).json() == {"theme": "light"}
    assert user.put(path, {}).status_code == 200
    assert user.get(path).json() == {}
    # Global and room data do not fall back to each other.
    r = user.get(f"user/{user.user_id}/rooms/{ROOM}/account_data/org.example.config")
    assert r.status_code == 404


def test_set_and_get_room_account_data(user: Client) -> None:
    path = f"user/{user.user_id}/rooms/{ROOM}/account_data/org.example.room"
    r = user.get(path)
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")
    assert user.put(path, {"pinned": True}).status_code == 200
    assert user.get(path).json() == {"pinned": True}
    other_room = f"user/{user.user_id}/rooms/!other:test.local/account_data/org.example.room"
    assert user.get(other_room).status_code == 404
    assert user.get(f"user/{user.user_id}/account_data/org.example.room").status_code == 404
    # Type names are path segments: percent-encoded characters round-trip.
    odd = f"user/{user.user_id}/rooms/{ROOM}/account_data/{quote('org.example/with slash', safe='')}"
    assert user.put(odd, {"x": 1}).status_code == 200
    assert user.get(odd).json() == {"x": 1}


def test_only_the_owner_may_read_or_write(server: ServerProcess, user: Client) -> None:
    other = server.client()
    other.register()
    user.put(f"user/{user.user_id}/account_data/org.example.secret", {"k": "v"})
    user.put(f"user/{user.user_id}/rooms/{ROOM}/account_data/org.example.secret", {"k": "v"})
    for path in (f"user/{user.user_id}/account_data/org.example.secret",
                 f"user/{user.user_id}/rooms/{ROOM}/account_data/org.example.secret"):
        for r in (other.get(path), other.put(path, {"k": "stolen"})):
            assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
        assert user.get(path).json() == {"k": "v"}
    r = user.put("user/@nobody:elsewhere.example/account_data/org.example.x", {})
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
    assert user.get(f"user/{user.user_id}/account_data/org.example.secret", token=None).status_code == 401


@pytest.mark.parametrize("data_type", ["m.fully_read", "m.push_rules"])
def test_server_managed_types_are_rejected(user: Client, data_type: str) -> None:
    for path in (f"user/{user.user_id}/account_data/{data_type}",
                 f"user/{user.user_id}/rooms/{ROOM}/account_data/{data_type}"):
        r = user.put(path, {"event_id": "$x"})
        assert (r.status_code, r.json()["errcode"]) == (405, "M_BAD_JSON"), r.text
        assert user.get(path).status_code == 404  # and nothing was stored


def test_bad_bodies_and_room_ids(user: Client) -> None:
    path = f"user/{user.user_id}/account_data/org.example.bad"
    room_path = f"user/{user.user_id}/rooms/{ROOM}/account_data/org.example.bad"
    for p in (path, room_path):
        r = user.put(p, data=b"{not json")
        assert (r.status_code, r.json()["errcode"]) == (400, "M_NOT_JSON")
        for body in (b"[1, 2]", b'"text"', b"3", b"null"):
            r = user.put(p, data=body)
            assert r.status_code == 400 and r.json()["errcode"] in ("M_BAD_JSON", "M_NOT_JSON"), body
        r = user.put(p, data=b"")
        assert r.status_code == 400 and r.json()["errcode"] in ("M_BAD_JSON", "M_NOT_JSON")
        assert user.get(p).status_code == 404  # nothing was stored
    for bad_room in ("notaroom", "@user:test.local", quote("!has space:test.local")):
        for r in (user.get(f"user/{user.user_id}/rooms/{bad_room}/account_data/org.example.x"),
                  user.put(f"user/{user.user_id}/rooms/{bad_room}/account_data/org.example.x", {})):
            assert (r.status_code, r.json()["errcode"]) == (400, "M_INVALID_PARAM"), bad_room
    r = user.put(f"user/{user.user_id}/account_data/{'t' * 256}", {})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_INVALID_PARAM")


def test_tags_are_served_as_the_m_tag_room_account_data(user: Client) -> None:
    room = user.post("createRoom", {}).json()["room_id"]
    tag_path = f"user/{user.user_id}/rooms/{room}/tags"
    m_tag = f"user/{user.user_id}/rooms/{room}/account_data/m.tag"
    assert user.get(m_tag).status_code == 404
    assert user.put(f"{tag_path}/m.favourite", {"order": 0.5}).status_code == 200
    assert user.put(f"{tag_path}/u.work", {}).status_code == 200
    assert user.get(m_tag).json() == {"tags": {"m.favourite": {"order": 0.5}, "u.work": {}}}
    assert user.delete(f"{tag_path}/m.favourite").status_code == 200
    assert user.get(m_tag).json() == {"tags": {"u.work": {}}}
    assert user.delete(f"{tag_path}/never.set").status_code == 200
    # Writing m.tag as account data is writing the tags: one copy, both APIs agree.
    assert user.put(m_tag, {"tags": {"m.lowpriority": {"order": 1}}}).status_code == 200
    assert user.get(tag_path).json() == {"tags": {"m.lowpriority": {"order": 1}}}


async def _positions(db: Database) -> int:
    """The account data stream's persisted position, as a restarted server would see it."""
    store = AccountDataStore(db)
    await store.load()
    return store.current_position()


@pytest_twisted.ensureDeferred
async def test_writes_move_the_account_data_stream(server: ServerProcess, user: Client) -> None:
    # Read the running server's database through the store /sync uses.
    cfg = server.config["database"]
    db = Database(create_engine(cfg["name"], cfg["args"]), reactor)
    db.start()
    try:
        store = AccountDataStore(db)
        room = user.post("createRoom", {}).json()["room_id"]
        p0 = await _positions(db)
        user.put(f"user/{user.user_id}/rooms/{room}/tags/m.favourite", {"order": 0.5})
        p1 = await _positions(db)
        assert p1 > p0
        assert await store.get_room_changes(user.user_id, None, p0, p1) == {
            room: {"m.tag": {"tags": {"m.favourite": {"order": 0.5}}}}}
        user.delete(f"user/{user.user_id}/rooms/{room}/tags/m.favourite")
        p2 = await _positions(db)
        assert await store.get_room_changes(user.user_id, [room], p1, p2) == {room: {"m.tag": {"tags": {}}}}
        user.put(f"user/{user.user_id}/account_data/org.example.a", {"a": 1})
        p3 = await _positions(db)
        assert p3 > p2
        assert await store.get_global_changes(user.user_id, p2, p3) == {"org.example.a": {"a": 1}}
        assert await store.get_room_changes(user.user_id, None, p2, p3) == {}
        assert await store.get_global_changes(user.user_id, None, p3) == {"org.example.a": {"a": 1}}
    finally:
        db.stop()


def test_account_data_survives_a_restart(make_server) -> None:  # type: ignore[no-untyped-def]
    srv = make_server()
    c = srv.client()
    c.register()
    c.put(f"user/{c.user_id}/account_data/org.example.keep", {"v": 1})
    c.put(f"user/{c.user_id}/rooms/{ROOM}/tags/u.keep", {})
    srv.restart()
    assert c.get(f"user/{c.user_id}/account_data/org.example.keep").json() == {"v": 1}
    assert c.get(f"user/{c.user_id}/rooms/{ROOM}/tags").json() == {"tags": {"u.keep": {}}}
    c.put(f"user/{c.user_id}/account_data/org.example.keep", {"v": 2})
    assert c.get(f"user/{c.user_id}/account_data/org.example.keep").json() == {"v": 2}
