"""/context, reports and tags on both engines."""

from __future__ import annotations

import uuid

from tests.harness import Client, ServerProcess


def setup_room(server: ServerProcess) -> tuple[Client, Client, str, list[str]]:
    a, b = server.client(), server.client()
    a.register()
    b.register()
    room = a.post("createRoom", {"preset": "public_chat"}).json()["room_id"]
    ids = []
    for i in range(9):
        r = a.put(f"rooms/{room}/send/m.room.message/{uuid.uuid4().hex}", {"msgtype": "m.text", "body": f"m{i}"})
        ids.append(r.json()["event_id"])
    return a, b, room, ids


def test_context(server: ServerProcess) -> None:
    a, _, room, ids = setup_room(server)
    r = a.get(f"rooms/{room}/context/{ids[4]}", params={"limit": 4})
    assert r.status_code == 200, r.text
    ctx = r.json()
    assert ctx["event"]["content"]["body"] == "m4"
    assert [e["content"]["body"] for e in ctx["events_before"]] == ["m3", "m2"]
    assert [e["content"]["body"] for e in ctx["events_after"]] == ["m5", "m6"]
    assert any(e["type"] == "m.room.create" for e in ctx["state"])
    older = a.get(f"rooms/{room}/messages", params={"from": ctx["start"], "dir": "b", "limit": 2}).json()
    assert [e["content"]["body"] for e in older["chunk"]] == ["m1", "m0"]
    newer = a.get(f"rooms/{room}/messages", params={"from": ctx["end"], "dir": "f", "limit": 2}).json()
    assert [e["content"]["body"] for e in newer["chunk"]] == ["m7", "m8"]


def test_context_respects_visibility(server: ServerProcess) -> None:
    a, b, room, ids = setup_room(server)
    private = a.post("createRoom", {}).json()["room_id"]
    r = a.put(f"rooms/{private}/send/m.room.message/x", {"msgtype": "m.text", "body": "secret"})
    assert b.get(f"rooms/{private}/context/{r.json()['event_id']}").status_code == 404
    assert b.get(f"rooms/{room}/context/$missing").status_code == 404


def test_reports(server: ServerProcess) -> None:
    a, b, room, ids = setup_room(server)
    # Not a member: the events are invisible, so reporting one is "not found".
    assert b.post(f"rooms/{room}/report/{ids[0]}", {"reason": "spam"}).status_code == 404
    b.post(f"join/{room}")
    assert b.post(f"rooms/{room}/report/{ids[0]}", {"reason": "spam"}).status_code == 200
    assert b.post(f"rooms/{room}/report/$nope", {"reason": "x"}).status_code == 404
    assert b.post(f"rooms/{room}/report", {"reason": "bad room"}).status_code == 200
    assert b.post("rooms/!nope:test.local/report", {"reason": "x"}).status_code == 404
    assert b.post(f"users/{a.user_id}/report", {"reason": "rude"}).status_code == 200
    assert b.post("users/@nobody:test.local/report", {"reason": "x"}).status_code == 404
    r = b.post(f"rooms/{room}/report", {})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_MISSING_PARAM")


def test_tags(server: ServerProcess) -> None:
    a, b, room, _ = setup_room(server)
    assert a.get(f"user/{a.user_id}/rooms/{room}/tags").json() == {"tags": {}}
    assert a.put(f"user/{a.user_id}/rooms/{room}/tags/m.favourite", {"order": 0.25}).status_code == 200
    assert a.put(f"user/{a.user_id}/rooms/{room}/tags/u.work", {}).status_code == 200
    assert a.get(f"user/{a.user_id}/rooms/{room}/tags").json() == {
        "tags": {"m.favourite": {"order": 0.25}, "u.work": {}}}
    assert a.delete(f"user/{a.user_id}/rooms/{room}/tags/u.work").status_code == 200
    assert list(a.get(f"user/{a.user_id}/rooms/{room}/tags").json()["tags"]) == ["m.favourite"]
    assert b.get(f"user/{a.user_id}/rooms/{room}/tags").status_code == 403
    assert a.put(f"user/{a.user_id}/rooms/{room}/tags/x", {"order": "high"}).status_code == 400


def test_room_upgrade(server: ServerProcess) -> None:
    from urllib.parse import quote
    a, b, room, _ = setup_room(server)
    b.post(f"join/{room}")
    a.put(f"rooms/{room}/state/m.room.name/", {"name": "Old name"})
    alias = f"#up{uuid.uuid4().hex[:6]}:test.local"
    a.put(f"directory/room/{quote(alias)}", {"room_id": room})
    a.put(f"rooms/{room}/state/m.room.canonical_alias/", {"alias": alias})
    assert b.post(f"rooms/{room}/upgrade", {"new_version": "11"}).status_code == 403
    r = a.post(f"rooms/{room}/upgrade", {"new_version": "999"})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_UNSUPPORTED_ROOM_VERSION")
    r = a.post(f"rooms/{room}/upgrade", {"new_version": "11"})
    assert r.status_code == 200, r.text
    new = r.json()["replacement_room"]
    tomb = a.get(f"rooms/{room}/state/m.room.tombstone/").json()
    assert tomb["replacement_room"] == new
    create = a.get(f"rooms/{new}/state/m.room.create/").json()
    assert create["predecessor"]["room_id"] == room and create["room_version"] == "11"
    assert a.get(f"rooms/{new}/state/m.room.name/").json() == {"name": "Old name"}
    assert a.get(f"rooms/{new}/state/m.room.join_rules/").json() == {"join_rule": "public"}
    assert a.get(f"directory/room/{quote(alias)}").json()["room_id"] == new
    # Ordinary members can no longer talk in the old room, but can join the new one.
    r = b.put(f"rooms/{room}/send/m.room.message/after", {"msgtype": "m.text", "body": "x"})
    assert r.status_code == 403
    assert b.post(f"join/{new}").status_code == 200
