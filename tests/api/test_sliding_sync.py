"""Simplified sliding sync (MSC4186) on both engines: lists, filters, subscriptions,
required_state, timelines, incremental updates per connection, extensions, long-polling and
M_UNKNOWN_POS. The path is unstable, so its answers are not checked against the spec's schemas."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest_twisted
from twisted.internet import reactor

from homeserver.clock import Clock
from homeserver.http.errors import MatrixError
from homeserver.sync.sliding_connections import ConnectionState, SlidingConnections
from storage.database import Database
from storage.sliding_sync import SlidingSyncStore
from tests.e2ee.test_keys_helpers import Device
from tests.harness import Client, ServerProcess

PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
ALL = [["*", "*"]]


def ss(c: Client, body: dict[str, Any], pos: str | None = None, timeout: int | None = None,
       status: int = 200) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if pos is not None:
        params["pos"] = pos
    if timeout is not None:
        params["timeout"] = timeout
    r = c.post(PATH, body, params=params, validate=False)
    assert r.status_code == status, r.text
    return r.json()


def one_list(ranges: list[list[int]] | None = None, required_state: Any = None, limit: int = 1,
             conn_id: str | None = None, **filters: Any) -> dict[str, Any]:
    lst: dict[str, Any] = {"timeline_limit": limit, "required_state": required_state or []}
    if ranges is not None:
        lst["ranges"] = ranges
    if filters:
        lst["filters"] = filters
    body: dict[str, Any] = {"lists": {"all": lst}}
    if conn_id:
        body["conn_id"] = conn_id
    return body


def send(c: Client, room: str, body: str) -> str:
    r = c.put(f"rooms/{room}/send/m.room.message/{uuid.uuid4().hex}", {"msgtype": "m.text", "body": body})
    assert r.status_code == 200, r.text
    return r.json()["event_id"]


def bodies(room: dict[str, Any]) -> list[str]:
    return [e["content"]["body"] for e in room.get("timeline", []) if e["type"] == "m.room.message"]


def state_keys(room: dict[str, Any]) -> set[tuple[str, str]]:
    return {(e["type"], e["state_key"]) for e in room.get("required_state", [])}


def create(c: Client, **body: Any) -> str:
    r = c.post("createRoom", body)
    assert r.status_code == 200, r.text
    return r.json()["room_id"]


# --- lists ---------------------------------------------------------------------------------------

def test_list_ranges_follow_recency_and_grow(server: ServerProcess) -> None:
    (a,) = server.users(1)
    rooms = [create(a, name=f"room {i}") for i in range(4)]
    for room in (rooms[2], rooms[0], rooms[3], rooms[1]):
        send(a, room, f"in {room}")
    resp = ss(a, one_list([[0, 1]]))
    assert resp["lists"] == {"all": {"count": 4}}
    assert set(resp["rooms"]) == {rooms[1], rooms[3]}
    newest, second = resp["rooms"][rooms[1]], resp["rooms"][rooms[3]]
    assert newest["initial"] is True and newest["name"] == "room 1"
    assert newest["lists"] == ["all"] and newest["membership"] == "join"
    assert newest["bump_stamp"] > second["bump_stamp"]
    assert bodies(newest) == [f"in {rooms[1]}"]
    assert newest["joined_count"] == 1 and newest["invited_count"] == 0
    # Growing the window sends only the rooms the connection has not had.
    more = ss(a, one_list([[0, 3]]), pos=resp["pos"], timeout=0)
    assert set(more["rooms"]) == {rooms[0], rooms[2]}
    assert more["lists"] == {"all": {"count": 4}}
    # A second, disjoint range of the same list; no ranges means the whole list.
    both = ss(a, one_list([[0, 0], [3, 3]], conn_id="two"))
    assert set(both["rooms"]) == {rooms[1], rooms[2]}
    assert set(ss(a, one_list(None, conn_id="three"))["rooms"]) == set(rooms)


def test_filters_dm_encrypted_invite_and_types(server: ServerProcess) -> None:
    a, b = server.users(2)
    dm = create(a, invite=[b.user_id], is_direct=True)
    b.post(f"rooms/{dm}/join", {})
    encrypted = create(a, initial_state=[{"type": "m.room.encryption", "state_key": "",
                                          "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])
    space = create(a, creation_content={"type": "m.space"}, name="Space")
    invited = create(b, name="Come in")
    b.post(f"rooms/{invited}/invite", {"user_id": a.user_id})
    assert a.put(f"user/{a.user_id}/account_data/m.direct", {b.user_id: [dm]}).status_code == 200
    body = {"lists": {
        "dms": {"ranges": [[0, 10]], "timeline_limit": 1, "required_state": [], "filters": {"is_dm": True}},
        "not_dms": {"ranges": [[0, 10]], "timeline_limit": 0, "filters": {"is_dm": False}},
        "enc": {"ranges": [[0, 10]], "timeline_limit": 0, "filters": {"is_encrypted": True}},
        "invites": {"ranges": [[0, 10]], "timeline_limit": 5, "filters": {"is_invite": True}},
        "joined": {"ranges": [[0, 10]], "timeline_limit": 0, "filters": {"is_invite": False}},
        "spaces": {"ranges": [[0, 10]], "timeline_limit": 0, "filters": {"room_types": ["m.space"]}},
        "no_spaces": {"ranges": [[0, 10]], "timeline_limit": 0, "filters": {"not_room_types": ["m.space"]}},
        "plain": {"ranges": [[0, 10]], "timeline_limit": 0, "filters": {"room_types": [None]}},
    }}
    resp = ss(a, body)
    lists = {name: {r for r, v in resp["rooms"].items() if name in v.get("lists", [])}
             for name in body["lists"]}
    assert lists["dms"] == {dm}
    assert lists["not_dms"] == {encrypted, space, invited}
    assert lists["enc"] == {encrypted}
    assert lists["invites"] == {invited}
    assert lists["joined"] == {dm, encrypted, space}
    assert lists["spaces"] == {space}
    assert lists["no_spaces"] == lists["plain"] == {dm, encrypted, invited}
    assert resp["lists"]["not_dms"] == {"count": 3}
    assert resp["rooms"][dm]["is_dm"] is True and "is_dm" not in resp["rooms"][space]
    inv = resp["rooms"][invited]
    assert inv["membership"] == "invite" and "timeline" not in inv and "required_state" not in inv
    stripped = {(e["type"], e["state_key"]) for e in inv["invite_state"]}
    assert ("m.room.name", "") in stripped and ("m.room.member", a.user_id) in stripped
    assert not any(e["type"] == "m.room.message" for e in inv["invite_state"])
    # The DM has no name: heroes stand in, with their profile from the member event.
    assert [h["user_id"] for h in resp["rooms"][dm]["heroes"]] == [b.user_id]
    assert "name" not in resp["rooms"][dm]


def test_spaces_and_tags_filters(server: ServerProcess) -> None:
    (a,) = server.users(1)
    space = create(a, creation_content={"type": "m.space"})
    child, other = create(a), create(a)
    a.put(f"rooms/{space}/state/m.space.child/{child}", {"via": ["test.local"]})
    a.put(f"user/{a.user_id}/rooms/{other}/tags/m.favourite", {"order": 0.1})
    body = {"lists": {
        "in_space": {"ranges": [[0, 10]], "timeline_limit": 0, "filters": {"spaces": [space]}},
        "fav": {"ranges": [[0, 10]], "timeline_limit": 0, "filters": {"tags": ["m.favourite"]}},
        "not_fav": {"ranges": [[0, 10]], "timeline_limit": 0, "filters": {"not_tags": ["m.favourite"]}},
    }}
    resp = ss(a, body)
    assert resp["lists"] == {"in_space": {"count": 1}, "fav": {"count": 1}, "not_fav": {"count": 2}}
    assert resp["rooms"][child]["lists"] == ["in_space", "not_fav"]
    assert resp["rooms"][other]["lists"] == ["fav"]


def test_left_kicked_and_banned_rooms(server: ServerProcess) -> None:
    a, b = server.users(2)
    kicked, left = create(a, preset="public_chat"), create(a, preset="public_chat")
    for room in (kicked, left):
        b.post(f"join/{room}")
    first = ss(b, one_list([[0, 10]], limit=3))
    assert set(first["rooms"]) == {kicked, left}
    send(a, kicked, "before the kick")
    a.post(f"rooms/{kicked}/kick", {"user_id": b.user_id})
    send(a, kicked, "after the kick")
    b.post(f"rooms/{left}/leave", {})
    second = ss(b, one_list([[0, 10]], limit=3), pos=first["pos"], timeout=0)
    assert second["lists"]["all"]["count"] == 2
    gone = second["rooms"][kicked]
    assert gone["membership"] == "leave" and bodies(gone) == ["before the kick"]
    assert gone["timeline"][-1]["content"]["membership"] == "leave"
    assert second["rooms"][left]["membership"] == "leave"
    # Later, a room left by oneself drops out of the list; a kick stays listed.
    third = ss(b, one_list([[0, 10]], limit=3), pos=second["pos"], timeout=0)
    assert third["lists"]["all"]["count"] == 1 and third["rooms"] == {}
    # An invite rejected before the client saw it, and a ban without a join: never listed.
    rejected, banned = create(a), create(a, preset="public_chat")
    a.post(f"rooms/{rejected}/invite", {"user_id": b.user_id})
    b.post(f"rooms/{rejected}/leave", {})
    a.post(f"rooms/{banned}/ban", {"user_id": b.user_id})
    fourth = ss(b, one_list([[0, 10]], limit=3), pos=third["pos"], timeout=0)
    assert fourth["lists"]["all"]["count"] == 1 and fourth["rooms"] == {}
    assert set(ss(b, one_list([[0, 10]], conn_id="fresh"))["rooms"]) == {kicked}


# --- subscriptions, required_state, timelines ----------------------------------------------------

def test_room_subscription_outside_any_window(server: ServerProcess) -> None:
    a, b = server.users(2)
    old = create(a, name="old")
    send(a, old, "old message")
    recent = create(a, name="recent")
    stranger = create(b)
    body = one_list([[0, 0]])
    body["room_subscriptions"] = {
        old: {"timeline_limit": 5, "required_state": [["m.room.name", ""]]},
        stranger: {"timeline_limit": 5, "required_state": ALL},
        "!unknown:test.local": {"timeline_limit": 5},
    }
    resp = ss(a, body)
    assert set(resp["rooms"]) == {old, recent}
    sub = resp["rooms"][old]
    assert "lists" not in sub and bodies(sub) == ["old message"]
    assert state_keys(sub) == {("m.room.name", "")}
    assert resp["rooms"][recent]["lists"] == ["all"]


def test_required_state_variants(server: ServerProcess) -> None:
    a, b, c = server.users(3)
    room = create(a, preset="public_chat", name="Named", topic="A topic")
    b.post(f"join/{room}")
    c.post(f"join/{room}")
    send(c, room, "c speaks")
    send(b, room, "b speaks last")

    def required(spec: Any, limit: int = 1) -> set[tuple[str, str]]:
        return state_keys(ss(a, one_list([[0, 0]], spec, limit, conn_id=uuid.uuid4().hex))["rooms"][room])

    everything = required(ALL)
    assert {("m.room.create", ""), ("m.room.name", ""), ("m.room.topic", ""),
            ("m.room.member", a.user_id), ("m.room.member", b.user_id),
            ("m.room.member", c.user_id), ("m.room.power_levels", "")} <= everything
    assert required([["m.room.member", "$ME"]]) == {("m.room.member", a.user_id)}
    assert required([["m.room.member", "$LAZY"]]) == {("m.room.member", b.user_id)}
    assert required([["m.room.member", "$LAZY"]], limit=2) == {("m.room.member", b.user_id),
                                                               ("m.room.member", c.user_id)}
    assert required([["m.room.name", ""], ["m.room.topic", "*"]]) == {("m.room.name", ""),
                                                                      ("m.room.topic", "")}
    assert required([["m.room.member", "*"]]) == {("m.room.member", u) for u in
                                                 (a.user_id, b.user_id, c.user_id)}
    assert required([]) == set()
    # The MSC's newer form: include/exclude elements and lazy_members.
    assert required({"include": [{}], "exclude": [{"type": "m.room.member"}]}) == {
        k for k in everything if k[0] != "m.room.member"}
    assert required({"include": [{"type": "m.room.name"}], "lazy_members": True}) == {
        ("m.room.name", ""), ("m.room.member", b.user_id)}


def test_timeline_limit_prev_batch_and_visibility(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = create(a, preset="public_chat", initial_state=[
        {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}])
    for i in range(10):
        send(a, room, f"m{i}")
    got = ss(a, one_list([[0, 0]], limit=3))["rooms"][room]
    assert bodies(got) == ["m7", "m8", "m9"] and got["limited"] is True and got["num_live"] == 0
    older = a.get(f"rooms/{room}/messages", params={"from": got["prev_batch"], "dir": "b", "limit": 3}).json()
    assert [e["content"]["body"] for e in older["chunk"]] == ["m6", "m5", "m4"]
    # A late joiner sees nothing from before their join (history visibility "joined").
    b.post(f"join/{room}")
    send(a, room, "welcome")
    late = ss(b, one_list([[0, 0]], limit=20))["rooms"][room]
    assert bodies(late) == ["welcome"]
    assert any(e["type"] == "m.room.member" and e["state_key"] == b.user_id for e in late["timeline"])


def test_incremental_updates_per_connection(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = create(a, preset="public_chat", name="Before")
    quiet = create(a, name="Quiet")
    cfg = one_list([[0, 5]], [["m.room.name", ""], ["m.room.member", "$LAZY"]], 5)
    first = ss(a, cfg)
    assert set(first["rooms"]) == {room, quiet}
    send(a, room, "new")
    second = ss(a, cfg, pos=first["pos"], timeout=0)
    assert set(second["rooms"]) == {room}
    r = second["rooms"][room]
    assert "initial" not in r and bodies(r) == ["new"] and r["num_live"] == 1
    assert r["limited"] is False and "name" not in r and "required_state" not in r
    # A name change: the new name, its state event, and the room moves nothing else.
    a.put(f"rooms/{room}/state/m.room.name/", {"name": "After"})
    third = ss(a, cfg, pos=second["pos"], timeout=0)
    r = third["rooms"][room]
    assert r["name"] == "After" and state_keys(r) == {("m.room.name", "")}
    # A new member: joined_count and (being a timeline sender-target) its member event.
    b.post(f"join/{room}")
    fourth = ss(a, cfg, pos=third["pos"], timeout=0)
    r = fourth["rooms"][room]
    assert r["joined_count"] == 2 and ("m.room.member", b.user_id) in state_keys(r)
    # Nothing new: an empty answer, the same position.
    empty = ss(a, cfg, pos=fourth["pos"], timeout=0)
    assert empty["rooms"] == {}, empty
    assert empty["pos"].split("_")[0] == fourth["pos"].split("_")[0]  # the same connection state
    # Asking for more timeline sends the room at once, with older events.
    bigger = one_list([[0, 5]], [["m.room.name", ""]], 20)
    expanded = ss(a, bigger, pos=empty["pos"], timeout=0)
    assert set(expanded["rooms"]) == {room, quiet}
    r = expanded["rooms"][room]
    assert r["expanded_timeline"] is True and "new" in bodies(r) and "initial" not in r
    # Asking for more state sends the newly covered state, as it is now.
    more_state = one_list([[0, 5]], [["m.room.name", ""], ["m.room.create", ""]], 20)
    added = ss(a, more_state, pos=expanded["pos"], timeout=0)
    assert {k: state_keys(v) for k, v in added["rooms"].items()} == {
        room: {("m.room.create", "")}, quiet: {("m.room.create", "")}}
    # A retried request (its response lost) gets the same rooms again.
    again = ss(a, more_state, pos=expanded["pos"], timeout=0)
    assert set(again["rooms"]) == {room, quiet}


def test_rooms_out_of_the_window_catch_up_when_they_return(server: ServerProcess) -> None:
    (a,) = server.users(1)
    first_room, second_room = create(a), create(a)
    cfg = one_list([[0, 0]], limit=10)
    resp = ss(a, one_list([[0, 1]], limit=10))
    send(a, first_room, "one")
    resp = ss(a, cfg, pos=resp["pos"], timeout=0)
    assert set(resp["rooms"]) == {first_room}
    send(a, second_room, "two")
    send(a, first_room, "three")  # first_room is back on top, second_room missed "two"
    resp = ss(a, cfg, pos=resp["pos"], timeout=0)
    assert bodies(resp["rooms"][first_room]) == ["three"]
    send(a, second_room, "four")
    resp = ss(a, cfg, pos=resp["pos"], timeout=0)
    assert bodies(resp["rooms"][second_room]) == ["two", "four"]
    assert "initial" not in resp["rooms"][second_room]


def test_invite_then_join_is_sent_whole(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = create(a, name="Party")
    send(a, room, "hello")
    cfg = one_list([[0, 5]], ALL, 5)
    first = ss(b, cfg)
    assert first["rooms"] == {} and first["lists"]["all"]["count"] == 0
    a.post(f"rooms/{room}/invite", {"user_id": b.user_id})
    second = ss(b, cfg, pos=first["pos"], timeout=0)
    assert second["rooms"][room]["membership"] == "invite" and "invite_state" in second["rooms"][room]
    b.post(f"rooms/{room}/join", {})
    third = ss(b, cfg, pos=second["pos"], timeout=0)
    r = third["rooms"][room]
    assert r["initial"] is True and r["membership"] == "join" and r["name"] == "Party"
    assert ("m.room.create", "") in state_keys(r) and "hello" in bodies(r)
    # An invite the client has seen, then rejected: the leave, and nothing of the room.
    other = create(a, name="Secret")
    send(a, other, "not for b")
    a.post(f"rooms/{other}/invite", {"user_id": b.user_id})
    fourth = ss(b, cfg, pos=third["pos"], timeout=0)
    assert fourth["rooms"][other]["membership"] == "invite"
    b.post(f"rooms/{other}/leave", {})
    fifth = ss(b, cfg, pos=fourth["pos"], timeout=0)
    r = fifth["rooms"][other]
    assert r["membership"] == "leave" and "name" not in r
    assert "not for b" not in bodies(r)
    assert state_keys(r) == {("m.room.member", b.user_id)}
    assert r["required_state"][0]["content"]["membership"] == "leave"


# --- extensions ----------------------------------------------------------------------------------

def test_account_data_extension(server: ServerProcess) -> None:
    (a,) = server.users(1)
    room, other = create(a), create(a)
    a.put(f"user/{a.user_id}/account_data/org.example.global", {"v": 1})
    a.put(f"user/{a.user_id}/rooms/{room}/account_data/org.example.room", {"r": 1})
    a.put(f"user/{a.user_id}/rooms/{other}/account_data/org.example.room", {"r": 2})
    body = one_list([[0, 0]])
    body["extensions"] = {"account_data": {"enabled": True}}
    send(a, room, "on top")
    first = ss(a, body)
    ad = first["extensions"]["account_data"]
    assert {"type": "org.example.global", "content": {"v": 1}} in ad["global"]
    assert ad["rooms"] == {room: [{"type": "org.example.room", "content": {"r": 1}}]}
    a.put(f"user/{a.user_id}/account_data/org.example.global", {"v": 2})
    second = ss(a, body, pos=first["pos"], timeout=0)
    assert second["extensions"]["account_data"]["global"] == [
        {"type": "org.example.global", "content": {"v": 2}}]
    assert second["rooms"] == {}
    # The other room comes into the window: its account data comes with it.
    send(a, other, "now on top")
    third = ss(a, body, pos=second["pos"], timeout=0)
    assert third["extensions"]["account_data"]["rooms"] == {
        other: [{"type": "org.example.room", "content": {"r": 2}}]}
    # Disabled, or scoped to no list: nothing.
    body["extensions"] = {"account_data": {"enabled": True, "lists": [], "rooms": []}}
    a.put(f"user/{a.user_id}/rooms/{other}/account_data/org.example.room", {"r": 3})
    fourth = ss(a, body, pos=third["pos"], timeout=0)
    assert fourth["extensions"].get("account_data") is None


def test_receipts_and_typing_extensions(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = create(a, preset="public_chat")
    b.post(f"join/{room}")
    early = send(a, room, "early")
    last = send(a, room, "read me")
    assert b.post(f"rooms/{room}/receipt/m.read/{early}", {}).status_code == 200
    assert a.post(f"rooms/{room}/receipt/m.read/{last}", {}).status_code == 200
    body = one_list([[0, 0]], limit=1)
    body["extensions"] = {"receipts": {"enabled": True}, "typing": {"enabled": True}}
    first = ss(b, body)
    # Initially: the receipts on the timeline's events, and b's own wherever it is.
    receipt = first["extensions"]["receipts"]["rooms"][room]
    assert receipt["type"] == "m.receipt"
    assert set(receipt["content"]) == {early, last}
    assert set(receipt["content"][last]["m.read"]) == {a.user_id}
    assert set(receipt["content"][early]["m.read"]) == {b.user_id}
    assert "typing" not in first["extensions"]
    newer = send(a, room, "newer")
    assert a.post(f"rooms/{room}/receipt/m.read/{newer}", {}).status_code == 200
    assert a.put(f"rooms/{room}/typing/{a.user_id}", {"typing": True, "timeout": 10000}).status_code == 200
    second = ss(b, body, pos=first["pos"], timeout=0)
    assert second["extensions"]["typing"]["rooms"][room] == {
        "type": "m.typing", "content": {"user_ids": [a.user_id]}}
    content = second["extensions"]["receipts"]["rooms"][room]["content"]
    assert set(content) == {newer} and set(content[newer]["m.read"]) == {a.user_id}
    assert a.put(f"rooms/{room}/typing/{a.user_id}", {"typing": False}).status_code == 200
    third = ss(b, body, pos=second["pos"], timeout=0)
    assert third["extensions"]["typing"]["rooms"][room]["content"]["user_ids"] == []
    assert "receipts" not in third["extensions"]


def test_to_device_and_e2ee_extensions(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = create(a, invite=[b.user_id])
    b.post(f"rooms/{room}/join", {})
    body = {"extensions": {"to_device": {"enabled": True}, "e2ee": {"enabled": True}}}
    first = ss(a, body)
    e2ee = first["extensions"]["e2ee"]
    assert e2ee["device_one_time_keys_count"].get("signed_curve25519") == 0
    assert e2ee["device_unused_fallback_key_types"] == []
    assert first["extensions"]["to_device"]["events"] == []
    r = b.put(f"sendToDevice/org.example.ping/{uuid.uuid4().hex}",
              {"messages": {a.user_id: {a.device_id: {"n": 1}}}})
    assert r.status_code == 200, r.text
    since = first["extensions"]["to_device"]["next_batch"]
    body["extensions"]["to_device"]["since"] = since
    second = ss(a, body, pos=first["pos"], timeout=0)
    td = second["extensions"]["to_device"]
    assert td["events"] == [{"type": "org.example.ping", "sender": b.user_id, "content": {"n": 1}}]
    # Acknowledged by the next request's since: not delivered again.
    body["extensions"]["to_device"]["since"] = td["next_batch"]
    third = ss(a, body, pos=second["pos"], timeout=0)
    assert third["extensions"]["to_device"]["events"] == []
    # b uploads device keys: a hears of it in device_lists.changed.
    dev = Device(b.user_id, b.device_id)
    assert b.post("keys/upload", {"device_keys": dev.device_keys(),
                                  "one_time_keys": dev.one_time_keys(2)}).status_code == 200
    deadline = time.monotonic() + 10
    while True:
        fourth = ss(a, body, pos=third["pos"], timeout=0)
        if b.user_id in fourth["extensions"]["e2ee"].get("device_lists", {}).get("changed", []):
            break
        assert time.monotonic() < deadline, fourth
        time.sleep(0.05)
    counts = ss(b, {"extensions": {"e2ee": {"enabled": True}}})["extensions"]["e2ee"]
    assert counts["device_one_time_keys_count"]["signed_curve25519"] == 2


# --- long-polling and positions ------------------------------------------------------------------

def test_long_poll_wakes_on_new_message_and_times_out(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = create(a, preset="public_chat")
    b.post(f"join/{room}")
    cfg = one_list([[0, 5]], limit=5)
    pos = ss(b, cfg)["pos"]
    threading.Timer(0.5, lambda: send(a, room, "wake up")).start()
    t0 = time.monotonic()
    resp = ss(b, cfg, pos=pos, timeout=20000)
    assert time.monotonic() - t0 < 5
    assert bodies(resp["rooms"][room]) == ["wake up"]
    t0 = time.monotonic()
    quiet = ss(b, cfg, pos=resp["pos"], timeout=700)
    assert 0.6 < time.monotonic() - t0 < 5
    assert quiet["rooms"] == {} and quiet["pos"].split("_")[0] == resp["pos"].split("_")[0]
    # The timeout may come in the body too (the MSC's newer form).
    threading.Timer(0.5, lambda: a.put(f"rooms/{room}/typing/{a.user_id}", {"typing": True})).start()
    body = dict(cfg, pos=quiet["pos"], timeout=20000, extensions={"typing": {"enabled": True}})
    t0 = time.monotonic()
    woke = ss(b, body)
    assert time.monotonic() - t0 < 5 and room in woke["extensions"]["typing"]["rooms"]


def test_unknown_positions(server: ServerProcess) -> None:
    a, b = server.users(2)
    create(a)
    first = ss(a, one_list([[0, 0]], conn_id="main"))

    def unknown(c: Client, pos: str, conn_id: str = "main") -> None:
        resp = ss(c, one_list([[0, 0]], conn_id=conn_id), pos=pos, status=400)
        assert resp["errcode"] == "M_UNKNOWN_POS"

    for garbage in ("garbage", "1_x", "99999999_s1_0_0_0_0_0_0", ""):
        if garbage:
            unknown(a, garbage)
    unknown(b, first["pos"])              # another user's position
    unknown(a, first["pos"], "other")     # another connection's
    other_device = server.client()
    other_device.login(a.user_id, "correct horse battery")
    unknown(other_device, first["pos"])   # another device's
    # Continuing works; starting the connection over makes old positions unknown.
    ss(a, one_list([[0, 0]], conn_id="main"), pos=first["pos"], timeout=0)
    ss(a, one_list([[0, 0]], conn_id="main"))
    unknown(a, first["pos"])


def test_bad_requests(server: ServerProcess) -> None:
    (a,) = server.users(1)
    for body in ({"lists": {"x": {"ranges": [[2, 1]], "timeline_limit": 1}}},
                 {"lists": {"x": {"ranges": "all", "timeline_limit": 1}}},
                 {"lists": {"x": {"timeline_limit": -1}}},
                 {"lists": {"x": {"timeline_limit": 1, "required_state": [["a"]]}}},
                 {"lists": {"x": {"timeline_limit": 1, "filters": {"is_dm": "yes"}}}},
                 {"lists": {f"l{i}": {"timeline_limit": 1} for i in range(101)}},
                 {"room_subscriptions": {"not-a-room": {"timeline_limit": 1}}},
                 {"extensions": {"to_device": {"enabled": True, "since": "abc"}}},
                 {"conn_id": 5}):
        resp = ss(a, body, status=400)
        assert resp["errcode"] == "M_INVALID_PARAM", body
    r = a.post(PATH, {}, params={"timeout": "soon"}, validate=False)
    assert r.status_code == 400
    assert a.post(PATH, {}, token=None, validate=False).status_code == 401


def test_positions_survive_a_restart(make_server) -> None:  # type: ignore[no-untyped-def]
    srv = make_server()
    (a,) = srv.users(1)
    room = create(a)
    cfg = one_list([[0, 0]], limit=5)
    first = ss(a, cfg)
    srv.restart()
    send(a, room, "after restart")
    resp = ss(a, cfg, pos=first["pos"], timeout=0)
    assert "initial" not in resp["rooms"][room] and bodies(resp["rooms"][room]) == ["after restart"]


# --- connection bookkeeping, in-process ----------------------------------------------------------

class _FakeClock(Clock):
    def __init__(self) -> None:
        super().__init__(reactor)
        self.now = 1_000_000

    def time_msec(self) -> int:
        return self.now


async def _unknown(conns: SlidingConnections, *args: Any) -> None:
    try:
        await conns.resume(*args)
    except MatrixError as e:
        assert (e.status, e.errcode) == (400, "M_UNKNOWN_POS")
    else:
        raise AssertionError(f"position {args} should be unknown")


@pytest_twisted.ensureDeferred
async def test_connection_positions_expiry_and_devices(db: Database) -> None:  # noqa: F811
    store = SlidingSyncStore(db)
    await store.load()
    clock = _FakeClock()
    conns = SlidingConnections(store, clock)
    state = ConnectionState(rooms={"!r:x": None})
    p1 = await conns.record(None, "@a:x", "D1", "main", state)
    conn = await conns.resume("@a:x", "D1", "main", p1)
    assert conn.state.rooms == {"!r:x": None}
    # Unchanged state keeps the position; a change makes a new one, the old stays until used.
    assert await conns.record(conn, "@a:x", "D1", "main", conn.state.copy()) == p1
    changed = conn.state.copy()
    changed.rooms["!s:x"] = 5
    p2 = await conns.record(conn, "@a:x", "D1", "main", changed)
    assert p2 > p1
    await conns.resume("@a:x", "D1", "main", p1)        # a retry: p2 is forgotten
    await _unknown(conns, "@a:x", "D1", "main", p2)
    # Another device's connection goes with its device.
    other = await conns.record(None, "@a:x", "D2", "main", state)
    await conns.devices_deleted("@a:x", ["D2"])
    await _unknown(conns, "@a:x", "D2", "main", other)
    await conns.resume("@a:x", "D1", "main", p1)
    # Ids are never handed out twice, across a restart too, though rows are deleted.
    fresh = SlidingSyncStore(db)
    await fresh.load()
    again = await SlidingConnections(fresh, clock).record(None, "@b:x", "D1", "main", state)
    assert again > other
    # A week unused: expired.
    clock.now += 8 * 24 * 3600 * 1000
    await conns.expire_idle()
    await _unknown(conns, "@a:x", "D1", "main", p1)
