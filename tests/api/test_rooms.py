"""Rooms over the client API on both engines: creation, sending, state, messages, membership."""

from __future__ import annotations

import pytest

from tests.harness import Client, ServerProcess




def create(c: Client, **body) -> str:
    r = c.post("createRoom", body)
    assert r.status_code == 200, r.text
    return r.json()["room_id"]


def send(c: Client, room: str, body: str, txn: str | None = None) -> str:
    import uuid
    r = c.put(f"rooms/{room}/send/m.room.message/{txn or uuid.uuid4().hex}",
              {"msgtype": "m.text", "body": body})
    assert r.status_code == 200, r.text
    return r.json()["event_id"]


def bodies(c: Client, room: str, **params) -> list[str]:
    r = c.get(f"rooms/{room}/messages", params={"limit": 100, **params})
    assert r.status_code == 200, r.text
    return [e["content"]["body"] for e in r.json()["chunk"] if e["type"] == "m.room.message"]


@pytest.mark.parametrize("version", ["10", "11", "12"])
def test_create_room_each_version(server: ServerProcess, version: str) -> None:
    (a,) = server.users(1)
    room = create(a, room_version=version, name="Room", topic="About")
    create_ev = a.get(f"rooms/{room}/state/m.room.create/", params={"format": "event"}).json()
    assert create_ev["content"]["room_version"] == version
    if version == "12":
        assert room == "!" + create_ev["event_id"][1:]
        assert "creator" not in create_ev["content"]
    else:
        assert room.endswith(":test.local")
    assert a.get(f"rooms/{room}/state/m.room.name/").json() == {"name": "Room"}
    assert a.get(f"rooms/{room}/state/m.room.topic/").json()["topic"] == "About"
    pl = a.get(f"rooms/{room}/state/m.room.power_levels/").json()
    if version == "12":
        assert a.user_id not in pl["users"]  # creators outrank every power level
    else:
        assert pl["users"][a.user_id] == 100


def test_create_room_presets(server: ServerProcess) -> None:
    (a,) = server.users(1)
    pub = create(a, preset="public_chat")
    priv = create(a)
    assert a.get(f"rooms/{pub}/state/m.room.join_rules/").json() == {"join_rule": "public"}
    assert a.get(f"rooms/{priv}/state/m.room.join_rules/").json() == {"join_rule": "invite"}
    assert a.get(f"rooms/{priv}/state/m.room.history_visibility/").json() == {"history_visibility": "shared"}
    assert a.get(f"rooms/{pub}/state/m.room.guest_access/").json() == {"guest_access": "forbidden"}


def test_create_room_initial_state_override_and_invite(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = create(a, initial_state=[{"type": "m.room.history_visibility", "state_key": "",
                                     "content": {"history_visibility": "joined"}},
                                    {"type": "org.example.custom", "state_key": "k",
                                     "content": {"x": 1}}],
                  power_level_content_override={"events_default": 10},
                  invite=[b.user_id], is_direct=True)
    assert a.get(f"rooms/{room}/state/m.room.history_visibility/").json() == {"history_visibility": "joined"}
    assert a.get(f"rooms/{room}/state/org.example.custom/k").json() == {"x": 1}
    assert a.get(f"rooms/{room}/state/m.room.power_levels/").json()["events_default"] == 10
    inv = a.get(f"rooms/{room}/state/m.room.member/{b.user_id}").json()
    assert inv == {"membership": "invite", "is_direct": True}
    assert b.post(f"rooms/{room}/join", {}).status_code == 200
    assert room in b.get("joined_rooms").json()["joined_rooms"]


def test_create_room_bad_input(server: ServerProcess) -> None:
    (a,) = server.users(1)
    r = a.post("createRoom", {"room_version": "999"})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_UNSUPPORTED_ROOM_VERSION")
    r = a.post("createRoom", {"preset": "party"})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_INVALID_PARAM")
    r = a.post("createRoom", {"invite": ["not-a-user"]})
    assert r.status_code == 400
    r = a.post("createRoom", {"initial_state": [{"type": 5}]})
    assert r.status_code == 400
    assert a.get("joined_rooms").json()["joined_rooms"] == []


def test_room_alias_in_create(server: ServerProcess) -> None:
    import uuid
    (a,) = server.users(1)
    alias = "r" + uuid.uuid4().hex[:8]
    room = create(a, room_alias_name=alias)
    assert a.get(f"rooms/{room}/state/m.room.canonical_alias/").json() == {"alias": f"#{alias}:test.local"}
    r = a.post("createRoom", {"room_alias_name": alias})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_ROOM_IN_USE")


def test_send_is_idempotent_per_txn_id(server: ServerProcess) -> None:
    (a,) = server.users(1)
    room = create(a)
    e1 = send(a, room, "once", txn="same")
    e2 = send(a, room, "once", txn="same")
    assert e1 == e2
    assert bodies(a, room) == ["once"]
    # The same txn id from another device is a different request.
    other = Client(a.base_url)
    other.login(a.user_id, "correct horse battery")
    assert send(other, room, "once", txn="same") != e1


def test_get_event_and_messages_pagination(server: ServerProcess) -> None:
    (a,) = server.users(1)
    room = create(a)
    ids = [send(a, room, f"m{i}") for i in range(7)]
    ev = a.get(f"rooms/{room}/event/{ids[3]}").json()
    assert ev["content"]["body"] == "m3" and ev["room_id"] == room and "age" in ev["unsigned"]
    r = a.get(f"rooms/{room}/messages", params={"dir": "b", "limit": 3}).json()
    assert [e["content"].get("body") for e in r["chunk"]] == ["m6", "m5", "m4"]
    r2 = a.get(f"rooms/{room}/messages", params={"dir": "b", "limit": 3, "from": r["end"]}).json()
    assert [e["content"].get("body") for e in r2["chunk"]] == ["m3", "m2", "m1"]
    fwd = a.get(f"rooms/{room}/messages", params={"dir": "f", "limit": 100}).json()
    assert [e["content"]["body"] for e in fwd["chunk"] if e["type"] == "m.room.message"] == \
        [f"m{i}" for i in range(7)]
    assert fwd["chunk"][0]["type"] == "m.room.create"
    assert a.get(f"rooms/{room}/event/$nope").status_code == 404


def test_state_events(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = create(a, preset="public_chat")
    r = a.put(f"rooms/{room}/state/m.room.topic/", {"topic": "new"})
    assert r.status_code == 200
    assert a.get(f"rooms/{room}/state/m.room.topic/").json() == {"topic": "new"}
    state = a.get(f"rooms/{room}/state").json()
    assert {e["type"] for e in state} >= {"m.room.create", "m.room.member", "m.room.power_levels",
                                          "m.room.join_rules", "m.room.topic"}
    b.post(f"join/{room}")
    # Bob (power 0) may not change the topic (state_default 50).
    r = b.put(f"rooms/{room}/state/m.room.topic/", {"topic": "bob"})
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
    assert a.get(f"rooms/{room}/state/m.room.topic/").json() == {"topic": "new"}
    assert a.get(f"rooms/{room}/state/m.room.nothing/").status_code == 404


def test_non_member_cannot_read_or_send(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = create(a)
    send(a, room, "secret")
    r = b.get(f"rooms/{room}/messages")
    assert r.status_code == 403
    assert b.get(f"rooms/{room}/state").status_code == 403
    assert b.get(f"rooms/{room}/state/m.room.name/").status_code == 403
    r = b.put(f"rooms/{room}/send/m.room.message/x", {"msgtype": "m.text", "body": "hi"})
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
    r = b.post(f"rooms/{room}/join", {})
    assert r.status_code == 403  # invite-only


def test_invite_leave_kick_ban_unban(server: ServerProcess) -> None:
    a, b, c = server.users(3)
    room = create(a)
    assert a.post(f"rooms/{room}/invite", {"user_id": b.user_id}).status_code == 200
    assert b.post(f"join/{room}").status_code == 200
    assert c.post(f"rooms/{room}/invite", {"user_id": c.user_id}).status_code == 403
    r = b.post(f"rooms/{room}/kick", {"user_id": a.user_id, "reason": "coup"})
    assert r.status_code == 403
    assert a.post(f"rooms/{room}/kick", {"user_id": b.user_id, "reason": "bye"}).status_code == 200
    m = a.get(f"rooms/{room}/state/m.room.member/{b.user_id}").json()
    assert m["membership"] == "leave" and m["reason"] == "bye"
    assert a.post(f"rooms/{room}/ban", {"user_id": c.user_id}).status_code == 200
    assert a.post(f"rooms/{room}/invite", {"user_id": c.user_id}).status_code == 403
    assert a.post(f"rooms/{room}/unban", {"user_id": c.user_id}).status_code == 200
    assert a.post(f"rooms/{room}/invite", {"user_id": c.user_id}).status_code == 200
    assert c.post(f"rooms/{room}/leave", {}).status_code == 200  # rejecting the invite
    members = a.get(f"rooms/{room}/members").json()["chunk"]
    assert {m["state_key"]: m["content"]["membership"] for m in members} == {
        a.user_id: "join", b.user_id: "leave", c.user_id: "leave"}
    only = a.get(f"rooms/{room}/members", params={"membership": "join"}).json()["chunk"]
    assert [m["state_key"] for m in only] == [a.user_id]
    joined = a.get(f"rooms/{room}/joined_members").json()["joined"]
    assert list(joined) == [a.user_id]


def test_forget(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = create(a, preset="public_chat")
    b.post(f"join/{room}")
    assert b.post(f"rooms/{room}/forget", {}).status_code == 400
    b.post(f"rooms/{room}/leave", {})
    assert b.post(f"rooms/{room}/forget", {}).status_code == 200


def test_knock(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = create(a, initial_state=[{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}])
    r = b.post(f"knock/{room}", {"reason": "let me in"})
    assert r.status_code == 200, r.text
    assert a.get(f"rooms/{room}/state/m.room.member/{b.user_id}").json()["membership"] == "knock"
    assert a.post(f"rooms/{room}/invite", {"user_id": b.user_id}).status_code == 200
    assert b.post(f"rooms/{room}/join", {}).status_code == 200


def test_redact(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = create(a, preset="public_chat")
    b.post(f"join/{room}")
    ev = send(b, room, "oops")
    mine = send(a, room, "admin msg")
    r = b.put(f"rooms/{room}/redact/{mine}/t1", {"reason": "no"})
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
    r = b.put(f"rooms/{room}/redact/{ev}/t2", {"reason": "typo"})
    assert r.status_code == 200, r.text
    got = a.get(f"rooms/{room}/event/{ev}").json()
    assert got["content"] == {}
    assert got["unsigned"]["redacted_because"]["content"]["reason"] == "typo"
    assert a.put(f"rooms/{room}/redact/{mine}/t3", {}).status_code == 200


def test_big_event_and_bad_ids(server: ServerProcess) -> None:
    (a,) = server.users(1)
    room = create(a)
    r = a.put(f"rooms/{room}/send/m.room.message/big", {"msgtype": "m.text", "body": "x" * 70000})
    assert r.status_code == 413 and r.json()["errcode"] == "M_TOO_LARGE"
    r = a.put("rooms/not-a-room/send/m.room.message/x", {"body": "x"})
    assert r.status_code == 400
    r = a.put("rooms/!unknown:test.local/send/m.room.message/x", {"body": "x"})
    assert r.status_code in (403, 404)
    r = a.put(f"rooms/{room}/state/m.room.topic/{'k' * 300}", {"topic": "x"})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_INVALID_PARAM")
    assert bodies(a, room) == []


@pytest.mark.parametrize("version", [str(v) for v in range(1, 13)])
def test_every_room_version_creates_sends_and_joins(server: ServerProcess, version: str) -> None:
    a, b = server.users(2)
    room = create(a, room_version=version, preset="public_chat", name=f"v{version}")
    send(a, room, "hello")
    assert b.post(f"join/{room}").status_code == 200
    send(b, room, "hi back")
    assert bodies(b, room) == ["hi back", "hello"]
    assert a.get(f"rooms/{room}/state/m.room.create/").json()["room_version"] == version


def test_members_at_a_point_in_the_timeline(server: ServerProcess) -> None:
    a, b, c = server.users(3)
    room = create(a, preset="public_chat")
    b.post(f"join/{room}")
    send(a, room, "marker")
    token = a.get(f"rooms/{room}/messages", params={"limit": 1}).json()["end"]
    c.post(f"join/{room}")
    b.post(f"rooms/{room}/leave", {})
    now = {m["state_key"]: m["content"]["membership"]
           for m in a.get(f"rooms/{room}/members").json()["chunk"]}
    assert now == {a.user_id: "join", b.user_id: "leave", c.user_id: "join"}
    then = {m["state_key"]: m["content"]["membership"]
            for m in a.get(f"rooms/{room}/members", params={"at": token}).json()["chunk"]}
    assert then == {a.user_id: "join", b.user_id: "join"}
    r = a.get(f"rooms/{room}/members", params={"not_membership": "leave"}).json()["chunk"]
    assert {m["state_key"] for m in r} == {a.user_id, c.user_id}


def test_messages_filter_and_lazy_members(server: ServerProcess) -> None:
    import json
    a, b = server.users(2)
    room = create(a, preset="public_chat")
    b.post(f"join/{room}")
    send(a, room, "from a")
    send(b, room, "from b")
    a.put(f"rooms/{room}/send/org.example.other/x1", {"v": 1})
    flt = json.dumps({"types": ["m.room.message"], "senders": [b.user_id], "lazy_load_members": True})
    r = a.get(f"rooms/{room}/messages", params={"filter": flt, "limit": 50}).json()
    assert [e["content"]["body"] for e in r["chunk"]] == ["from b"]
    assert [(e["type"], e["state_key"]) for e in r["state"]] == [("m.room.member", b.user_id)]
    r = a.get(f"rooms/{room}/messages", params={"filter": json.dumps({"not_types": ["m.room.message"]}),
                                               "limit": 50}).json()
    assert not any(e["type"] == "m.room.message" for e in r["chunk"])
    r = a.get(f"rooms/{room}/messages", params={"filter": "{not json"})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_NOT_JSON")
    r = a.get(f"rooms/{room}/messages", params={"filter": json.dumps({"limit": "x"})})
    assert r.status_code == 400


@pytest.mark.parametrize("version", ["8", "10", "12"])
def test_restricted_join_through_an_allowed_room(server: ServerProcess, version: str) -> None:
    a, b, c = server.users(3)
    space = create(a, room_version=version, preset="public_chat")
    b.post(f"join/{space}")
    room = create(a, room_version=version, initial_state=[{"type": "m.room.join_rules", "content": {
        "join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]}}])
    r = c.post(f"rooms/{room}/join", {})
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
    assert b.post(f"rooms/{room}/join", {}).status_code == 200
    member = a.get(f"rooms/{room}/state/m.room.member/{b.user_id}").json()
    assert member["membership"] == "join"
    assert member["join_authorised_via_users_server"] == a.user_id


def test_profile_changes_reach_joined_rooms(server: ServerProcess) -> None:
    a, b = server.users(2)
    rooms = [create(a, preset="public_chat") for _ in range(2)]
    for room in rooms:
        b.post(f"join/{room}")
    a.put(f"profile/{a.user_id}/displayname", {"displayname": "Alice Renamed"})
    a.put(f"profile/{a.user_id}/avatar_url", {"avatar_url": "mxc://test.local/new"})
    for room in rooms:
        member = b.get(f"rooms/{room}/state/m.room.member/{a.user_id}").json()
        assert member["displayname"] == "Alice Renamed" and member["avatar_url"] == "mxc://test.local/new"
        assert member["membership"] == "join"


def test_concurrent_identical_room_creations_get_distinct_rooms(server: ServerProcess) -> None:
    import concurrent.futures
    (a,) = server.users(1)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: a.post("createRoom", {}), range(16)))
    assert all(r.status_code == 200 for r in results), [r.text for r in results if r.status_code != 200]
    assert len({r.json()["room_id"] for r in results}) == 16
