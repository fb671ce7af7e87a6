"""Room aliases, directory visibility and /publicRooms on both engines."""

from __future__ import annotations

import uuid
from urllib.parse import quote

from tests.harness import ServerProcess




def test_alias_lifecycle(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = a.post("createRoom", {"preset": "public_chat"}).json()["room_id"]
    alias = f"#a{uuid.uuid4().hex[:8]}:test.local"
    enc = quote(alias)
    assert a.put(f"directory/room/{enc}", {"room_id": room}).status_code == 200
    r = a.put(f"directory/room/{enc}", {"room_id": room})
    assert r.status_code == 409
    assert b.get(f"directory/room/{enc}").json() == {"room_id": room, "servers": ["test.local"]}
    assert b.post(f"join/{enc}").json() == {"room_id": room}
    assert alias in a.get(f"rooms/{room}/aliases").json()["aliases"]
    # Bob neither created the alias nor moderates the room.
    assert b.delete(f"directory/room/{enc}").status_code == 403
    assert a.delete(f"directory/room/{enc}").status_code == 200
    assert b.get(f"directory/room/{enc}").status_code == 404
    assert b.post(f"join/{enc}").status_code == 404


def test_alias_bad_input(server: ServerProcess) -> None:
    a = server.users(1)[0]
    room = a.post("createRoom", {}).json()["room_id"]
    assert a.put("directory/room/nohash", {"room_id": room}).status_code == 400
    assert a.put("directory/room/%23x:other.server", {"room_id": room}).status_code == 400
    assert a.put("directory/room/%23x:test.local", {"room_id": "!nope:test.local"}).status_code == 404
    assert a.put("directory/room/%23x:test.local", {}).status_code == 400
    outsider = server.users(1)[0]
    r = outsider.put(f"directory/room/%23o{uuid.uuid4().hex[:6]}:test.local", {"room_id": room})
    assert r.status_code == 403


def test_public_rooms_listing_search_and_pagination(server: ServerProcess) -> None:
    a, b = server.users(2)
    tag = uuid.uuid4().hex[:8]
    rooms = [a.post("createRoom", {"visibility": "public", "preset": "public_chat",
                                   "name": f"{tag} room {i}", "topic": "t"}).json()["room_id"]
             for i in range(3)]
    private = a.post("createRoom", {"name": f"{tag} hidden"}).json()["room_id"]
    b.post(f"join/{rooms[1]}")
    r = b.post("publicRooms", {"filter": {"generic_search_term": tag}, "limit": 2}).json()
    assert r["total_room_count_estimate"] == 3
    assert r["chunk"][0]["room_id"] == rooms[1] and r["chunk"][0]["num_joined_members"] == 2
    assert r["chunk"][0]["name"] == f"{tag} room 1" and r["chunk"][0]["join_rule"] == "public"
    r2 = b.post("publicRooms", {"filter": {"generic_search_term": tag}, "limit": 2,
                                "since": r["next_batch"]}).json()
    listed = {e["room_id"] for e in r["chunk"] + r2["chunk"]}
    assert listed == set(rooms) and private not in listed
    assert any(e["room_id"] == rooms[0] for e in b.get("publicRooms", token=None).json()["chunk"])
    # Unpublish, then publish the private room.
    assert a.get(f"directory/list/room/{rooms[0]}").json() == {"visibility": "public"}
    assert b.put(f"directory/list/room/{rooms[0]}", {"visibility": "private"}).status_code == 403
    assert a.put(f"directory/list/room/{rooms[0]}", {"visibility": "private"}).status_code == 200
    assert a.put(f"directory/list/room/{private}", {"visibility": "public"}).status_code == 200
    listed = {e["room_id"] for e in b.post("publicRooms", {"filter": {"generic_search_term": tag}}).json()["chunk"]}
    assert listed == {rooms[1], rooms[2], private}
    assert b.post("publicRooms", {"since": "garbage"}).status_code == 400


def test_canonical_alias_must_point_to_the_room(server: ServerProcess) -> None:
    a = server.users(1)[0]
    room = a.post("createRoom", {}).json()["room_id"]
    other = a.post("createRoom", {}).json()["room_id"]
    alias = f"#c{uuid.uuid4().hex[:8]}:test.local"
    a.put(f"directory/room/{quote(alias)}", {"room_id": other})
    r = a.put(f"rooms/{room}/state/m.room.canonical_alias/", {"alias": alias})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_BAD_ALIAS")
    r = a.put(f"rooms/{room}/state/m.room.canonical_alias/", {"alt_aliases": ["#nope:test.local"]})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_BAD_ALIAS")
    r = a.put(f"rooms/{other}/state/m.room.canonical_alias/", {"alias": alias, "alt_aliases": [alias]})
    assert r.status_code == 200
