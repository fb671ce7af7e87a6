"""Who can see what: history_visibility, leaving, kicks and bans on every read path we have."""

from __future__ import annotations

import uuid

import pytest

from tests.harness import Client, ServerProcess




def room_with(a: Client, visibility: str, join_rule: str = "public") -> str:
    r = a.post("createRoom", {"initial_state": [
        {"type": "m.room.history_visibility", "content": {"history_visibility": visibility}},
        {"type": "m.room.join_rules", "content": {"join_rule": join_rule}}]})
    assert r.status_code == 200, r.text
    return r.json()["room_id"]


def send(c: Client, room: str, body: str) -> str:
    r = c.put(f"rooms/{room}/send/m.room.message/{uuid.uuid4().hex}", {"msgtype": "m.text", "body": body})
    assert r.status_code == 200, r.text
    return r.json()["event_id"]


def seen(c: Client, room: str) -> list[str]:
    r = c.get(f"rooms/{room}/messages", params={"limit": 200})
    if r.status_code == 403:
        return []
    assert r.status_code == 200, r.text
    return [e["content"]["body"] for e in r.json()["chunk"][::-1]
            if e["type"] == "m.room.message" and "body" in e["content"]]


def can_get(c: Client, room: str, event_id: str) -> bool:
    r = c.get(f"rooms/{room}/event/{event_id}")
    assert r.status_code in (200, 404), r.text
    return r.status_code == 200


@pytest.mark.parametrize("visibility,expected_before_join", [
    ("world_readable", ["before"]), ("shared", ["before"]), ("invited", []), ("joined", [])])
def test_history_before_joining(server: ServerProcess, visibility: str,
                                expected_before_join: list[str]) -> None:
    a, b = server.users(2)
    room = room_with(a, visibility)
    before = send(a, room, "before")
    assert b.post(f"join/{room}").status_code == 200
    after = send(a, room, "after")
    assert seen(b, room) == expected_before_join + ["after"]
    assert can_get(b, room, before) == bool(expected_before_join)
    assert can_get(b, room, after)


def test_invited_visibility_starts_at_the_invite(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = room_with(a, "invited", join_rule="invite")
    send(a, room, "before invite")
    a.post(f"rooms/{room}/invite", {"user_id": b.user_id})
    send(a, room, "after invite")
    b.post(f"rooms/{room}/join", {})
    send(a, room, "after join")
    assert seen(b, room) == ["after invite", "after join"]


def test_joined_visibility_starts_at_the_join(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = room_with(a, "joined", join_rule="invite")
    a.post(f"rooms/{room}/invite", {"user_id": b.user_id})
    send(a, room, "while invited")
    b.post(f"rooms/{room}/join", {})
    send(a, room, "joined")
    assert seen(b, room) == ["joined"]


@pytest.mark.parametrize("how", ["leave", "kick", "ban"])
def test_nothing_after_leaving(server: ServerProcess, how: str) -> None:
    a, b = server.users(2)
    room = room_with(a, "shared")
    b.post(f"join/{room}")
    send(a, room, "while member")
    if how == "leave":
        b.post(f"rooms/{room}/leave", {})
    elif how == "kick":
        assert a.post(f"rooms/{room}/kick", {"user_id": b.user_id}).status_code == 200
    else:
        assert a.post(f"rooms/{room}/ban", {"user_id": b.user_id}).status_code == 200
    later = send(a, room, "after leaving")
    a.put(f"rooms/{room}/state/m.room.topic/", {"topic": "secret topic"})
    assert seen(b, room) == ["while member"]
    assert not can_get(b, room, later)
    # State is what it was when they left.
    r = b.get(f"rooms/{room}/state/m.room.topic/")
    assert r.status_code == 404
    assert all(e.get("content", {}).get("topic") != "secret topic"
               for e in b.get(f"rooms/{room}/state").json())


def test_rejoining_shared_room_shows_the_gap(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = room_with(a, "shared")
    b.post(f"join/{room}")
    b.post(f"rooms/{room}/leave", {})
    send(a, room, "while away")
    b.post(f"join/{room}")
    assert seen(b, room) == ["while away"]  # shared: joining again reveals the history


def test_world_readable_for_non_members_but_not_private(server: ServerProcess) -> None:
    a, b = server.users(2)
    public = room_with(a, "world_readable", join_rule="invite")
    private = room_with(a, "shared", join_rule="invite")
    p1 = send(a, public, "hello world")
    p2 = send(a, private, "hush")
    assert seen(b, public) == ["hello world"]
    assert can_get(b, public, p1)
    assert b.get(f"rooms/{public}/state").status_code == 200
    assert seen(b, private) == []
    assert not can_get(b, private, p2)
    assert b.get(f"rooms/{private}/state").status_code == 403
    assert b.get(f"rooms/{private}/members").status_code == 403


def test_visibility_change_applies_from_that_point(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = room_with(a, "joined")
    send(a, room, "joined-era")
    a.put(f"rooms/{room}/state/m.room.history_visibility/", {"history_visibility": "shared"})
    send(a, room, "shared-era")
    b.post(f"join/{room}")
    assert seen(b, room) == ["shared-era"]


def test_own_leave_and_visibility_change_events_are_visible(server: ServerProcess) -> None:
    a, b, c = server.users(3)
    room = room_with(a, "joined")
    b.post(f"join/{room}")
    assert b.post(f"rooms/{room}/leave", {}).status_code == 200
    leave_id = b.get(f"rooms/{room}/state/m.room.member/{b.user_id}", params={"format": "event"}).json()["event_id"]
    assert can_get(b, room, leave_id)
    r = a.put(f"rooms/{room}/state/m.room.history_visibility/", {"history_visibility": "world_readable"})
    assert can_get(c, room, r.json()["event_id"])  # the change itself counts as world_readable


def test_world_readable_pagination_never_403s(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = room_with(a, "joined", join_rule="invite")
    send(a, room, "hidden")
    a.put(f"rooms/{room}/state/m.room.history_visibility/", {"history_visibility": "world_readable"})
    send(a, room, "open")
    r = b.get(f"rooms/{room}/messages", params={"limit": 2}).json()
    seen_bodies = [e["content"].get("body") for e in r["chunk"]]
    assert "open" in seen_bodies
    while "end" in r:
        r2 = b.get(f"rooms/{room}/messages", params={"limit": 2, "from": r["end"]})
        assert r2.status_code == 200
        r = r2.json()
        assert all(e["content"].get("body") != "hidden" for e in r["chunk"])


def test_forgotten_room_history_is_gone(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = room_with(a, "shared")
    b.post(f"join/{room}")
    ev = send(a, room, "old news")
    b.post(f"rooms/{room}/leave", {})
    assert seen(b, room) == ["old news"]
    assert b.post(f"rooms/{room}/forget", {}).status_code == 200
    assert b.get(f"rooms/{room}/messages").status_code == 403
    assert not can_get(b, room, ev)
    assert b.get(f"rooms/{room}/state").status_code == 403
