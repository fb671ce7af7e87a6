"""/sync on both engines: sections, timelines, state, leaving, visibility and long-polling."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from tests.harness import Client, ServerProcess




def send(c: Client, room: str, body: str) -> str:
    r = c.put(f"rooms/{room}/send/m.room.message/{uuid.uuid4().hex}", {"msgtype": "m.text", "body": body})
    assert r.status_code == 200, r.text
    return r.json()["event_id"]


def sync(c: Client, since: str | None = None, **params: Any) -> dict:
    if since:
        params["since"] = since
    r = c.get("sync", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def sync_until(c: Client, since: str, predicate: Any, timeout_s: float = 10, **params: Any) -> dict:
    """Long-poll until a response satisfies ``predicate`` (other streams, such as device-list
    changes from a join, may legitimately wake the request first)."""
    deadline = time.monotonic() + timeout_s
    while True:
        resp = sync(c, since, timeout=int(max(0.1, deadline - time.monotonic()) * 1000), **params)
        if predicate(resp) or time.monotonic() > deadline:
            return resp
        since = resp["next_batch"]


def timeline(resp: dict, room: str, section: str = "join") -> list[str]:
    events = resp.get("rooms", {}).get(section, {}).get(room, {}).get("timeline", {}).get("events", [])
    return [e["content"].get("body") for e in events if e["type"] == "m.room.message"]


def test_initial_sync_has_joined_room_with_state_and_timeline(server: ServerProcess) -> None:
    (a,) = server.users(1)
    room = a.post("createRoom", {"name": "Room"}).json()["room_id"]
    send(a, room, "one")
    resp = sync(a)
    joined = resp["rooms"]["join"][room]
    assert timeline(resp, room) == ["one"]
    types = {e["type"] for e in joined["state"]["events"]} | {e["type"] for e in joined["timeline"]["events"]}
    assert {"m.room.create", "m.room.power_levels", "m.room.name", "m.room.member"} <= types
    assert joined["summary"]["m.joined_member_count"] == 1
    assert resp["next_batch"].startswith("s")


def test_limited_timeline_and_prev_batch(server: ServerProcess) -> None:
    (a,) = server.users(1)
    room = a.post("createRoom", {}).json()["room_id"]
    for i in range(15):
        send(a, room, f"m{i}")
    resp = sync(a, filter='{"room": {"timeline": {"limit": 5}}}')
    tl = resp["rooms"]["join"][room]["timeline"]
    assert [e["content"].get("body") for e in tl["events"]] == [f"m{i}" for i in range(10, 15)]
    assert tl["limited"] is True
    # State covers what the timeline does not: the create event is in state, not timeline.
    assert any(e["type"] == "m.room.create" for e in resp["rooms"]["join"][room]["state"]["events"])
    older = a.get(f"rooms/{room}/messages", params={"from": tl["prev_batch"], "dir": "b", "limit": 3}).json()
    assert [e["content"]["body"] for e in older["chunk"]] == ["m9", "m8", "m7"]


def test_incremental_sync_only_new_events(server: ServerProcess) -> None:
    (a,) = server.users(1)
    room = a.post("createRoom", {}).json()["room_id"]
    send(a, room, "old")
    first = sync(a)
    send(a, room, "new")
    second = sync(a, first["next_batch"])
    assert timeline(second, room) == ["new"]
    assert second["rooms"]["join"][room]["timeline"]["limited"] is False
    assert second["rooms"]["join"][room]["state"]["events"] == []
    third = sync(a, second["next_batch"])
    assert room not in third.get("rooms", {}).get("join", {})


def test_invite_then_join_then_leave_sections(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = a.post("createRoom", {"name": "Secret"}).json()["room_id"]
    send(a, room, "before invite")
    start = sync(b)
    a.post(f"rooms/{room}/invite", {"user_id": b.user_id})
    r1 = sync(b, start["next_batch"])
    invite_state = r1["rooms"]["invite"][room]["invite_state"]["events"]
    assert {e["type"] for e in invite_state} >= {"m.room.create", "m.room.name", "m.room.member"}
    assert not any(e["type"] == "m.room.message" for e in invite_state)
    b.post(f"rooms/{room}/join", {})
    r2 = sync(b, r1["next_batch"])
    assert room in r2["rooms"]["join"]
    assert "before invite" in timeline(r2, room)  # shared history, newly joined: full state + timeline
    send(a, room, "while joined")
    b.post(f"rooms/{room}/leave", {})
    send(a, room, "after leaving")
    r3 = sync(b, r2["next_batch"])
    assert room not in r3["rooms"].get("join", {})
    assert timeline(r3, room, "leave") == ["while joined"]
    # Nothing after the leave, in later syncs either.
    send(a, room, "much later")
    r4 = sync(b, r3["next_batch"])
    assert room not in r4.get("rooms", {}).get("leave", {}) and room not in r4.get("rooms", {}).get("join", {})


def test_kicked_user_sees_the_kick_and_nothing_later(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = a.post("createRoom", {"preset": "public_chat"}).json()["room_id"]
    b.post(f"join/{room}")
    base = sync(b)
    send(a, room, "last one you see")
    a.post(f"rooms/{room}/kick", {"user_id": b.user_id, "reason": "bye"})
    send(a, room, "secret")
    r = sync(b, base["next_batch"])
    left = r["rooms"]["leave"][room]
    assert timeline(r, room, "leave") == ["last one you see"]
    assert left["timeline"]["events"][-1]["content"]["membership"] == "leave"


def test_newly_joined_with_joined_visibility_sees_no_history(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = a.post("createRoom", {"preset": "public_chat", "initial_state": [
        {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}]}).json()["room_id"]
    send(a, room, "private past")
    b.post(f"join/{room}")
    send(a, room, "present")
    assert timeline(sync(b), room) == ["present"]


def test_include_leave_filter_for_initial_sync(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = a.post("createRoom", {"preset": "public_chat"}).json()["room_id"]
    b.post(f"join/{room}")
    b.post(f"rooms/{room}/leave", {})
    assert room not in sync(b).get("rooms", {}).get("leave", {})
    assert room in sync(b, filter='{"room": {"include_leave": true}}')["rooms"]["leave"]


def test_long_poll_wakes_on_message_and_invite(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = a.post("createRoom", {"preset": "public_chat"}).json()["room_id"]
    b.post(f"join/{room}")
    token = sync(b)["next_batch"]

    def later(fn: Any) -> None:
        threading.Timer(0.5, fn).start()

    later(lambda: send(a, room, "wake up"))
    t0 = time.monotonic()
    r = sync_until(b, token, lambda resp: timeline(resp, room))
    assert timeline(r, room) == ["wake up"]
    assert time.monotonic() - t0 < 5
    room2 = a.post("createRoom", {}).json()["room_id"]
    token = r["next_batch"]
    later(lambda: a.post(f"rooms/{room2}/invite", {"user_id": b.user_id}))
    t0 = time.monotonic()
    r = sync_until(b, token, lambda resp: room2 in resp.get("rooms", {}).get("invite", {}))
    assert room2 in r["rooms"]["invite"]
    assert time.monotonic() - t0 < 5


def test_long_poll_times_out_empty(make_server) -> None:
    (a,) = make_server().users(1)  # a server of its own: nothing else happens there
    token = sync(a)["next_batch"]
    t0 = time.monotonic()
    r = sync(a, token, timeout=700)
    assert 0.6 < time.monotonic() - t0 < 5
    assert not r.get("rooms")
    assert r["next_batch"] == token


def test_since_token_survives_restart(make_server) -> None:
    srv = make_server()
    a = srv.client()
    a.register()
    room = a.post("createRoom", {}).json()["room_id"]
    token = sync(a)["next_batch"]
    srv.restart()
    send(a, room, "after restart")
    assert timeline(sync(a, token), room) == ["after restart"]


def test_bad_tokens(server: ServerProcess) -> None:
    (a,) = server.users(1)
    r = a.get("sync", params={"since": "garbage"})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_INVALID_PARAM")
    r = a.get("sync", params={"set_presence": "dancing"})
    assert r.status_code == 400


def test_filters_by_id_types_and_event_fields(server: ServerProcess) -> None:
    (a,) = server.users(1)
    room = a.post("createRoom", {}).json()["room_id"]
    send(a, room, "text")
    a.put(f"rooms/{room}/send/org.example.other/x", {"v": 1})
    fid = a.post(f"user/{a.user_id}/filter", {
        "event_fields": ["type", "content.body"],
        "room": {"timeline": {"types": ["m.room.message"]}, "state": {"types": ["m.room.create"]}}}).json()["filter_id"]
    # event_fields strips fields the spec's schema marks required, so this one answer is not
    # schema-checked (the spec asks for exactly this stripping).
    resp = a.get("sync", params={"filter": fid}, validate=False).json()
    joined = resp["rooms"]["join"][room]
    assert joined["timeline"]["events"] == [{"type": "m.room.message", "content": {"body": "text"}}]
    assert [e["type"] for e in joined["state"]["events"]] == ["m.room.create"]
    not_mine = sync(a, filter='{"room": {"not_rooms": ["%s"]}}' % room)
    assert room not in not_mine.get("rooms", {}).get("join", {})
    assert a.get("sync", params={"filter": "999999"}).status_code == 404


def test_lazy_loading_members(server: ServerProcess) -> None:
    a, b, c = server.users(3)
    room = a.post("createRoom", {"preset": "public_chat"}).json()["room_id"]
    b.post(f"join/{room}")
    c.post(f"join/{room}")
    for i in range(12):
        send(b, room, f"b{i}")
    resp = sync(a, filter='{"room": {"state": {"lazy_load_members": true}, "timeline": {"limit": 5}}}')
    members = {e["state_key"] for e in resp["rooms"]["join"][room]["state"]["events"]
               if e["type"] == "m.room.member"}
    assert members == {a.user_id, b.user_id}  # c sent nothing in the timeline


def test_account_data_and_tags_in_sync(server: ServerProcess) -> None:
    (a,) = server.users(1)
    room = a.post("createRoom", {}).json()["room_id"]
    a.put(f"user/{a.user_id}/account_data/org.example.settings", {"theme": "dark"})
    first = sync(a)
    assert {"type": "org.example.settings", "content": {"theme": "dark"}} in first["account_data"]["events"]
    a.put(f"user/{a.user_id}/rooms/{room}/tags/m.favourite", {"order": 0.5})
    a.put(f"user/{a.user_id}/rooms/{room}/account_data/org.example.r", {"x": 1})
    second = sync(a, first["next_batch"])
    events = {e["type"]: e["content"] for e in second["rooms"]["join"][room]["account_data"]["events"]}
    assert events == {"m.tag": {"tags": {"m.favourite": {"order": 0.5}}}, "org.example.r": {"x": 1}}
    assert second["account_data"]["events"] == []
    token = second["next_batch"]
    threading.Timer(0.5, lambda: a.put(f"user/{a.user_id}/account_data/org.example.settings",
                                       {"theme": "light"})).start()
    t0 = time.monotonic()
    third = sync_until(a, token, lambda resp: resp["account_data"]["events"])
    assert time.monotonic() - t0 < 5
    assert third["account_data"]["events"] == [{"type": "org.example.settings", "content": {"theme": "light"}}]


def test_typing_receipts_and_presence_in_sync(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = a.post("createRoom", {"preset": "public_chat"}).json()["room_id"]
    b.post(f"join/{room}")
    ev = send(a, room, "read me")
    token = sync(b)["next_batch"]
    threading.Timer(0.5, lambda: a.put(f"rooms/{room}/typing/{a.user_id}",
                                       {"typing": True, "timeout": 10000})).start()
    t0 = time.monotonic()
    r = sync_until(b, token, lambda resp: resp.get("rooms", {}).get("join", {}).get(room, {})
                   .get("ephemeral", {}).get("events"))
    assert time.monotonic() - t0 < 5
    eph = r["rooms"]["join"][room]["ephemeral"]["events"]
    assert {"type": "m.typing", "content": {"user_ids": [a.user_id]}} in eph
    token = r["next_batch"]
    threading.Timer(0.5, lambda: a.post(f"rooms/{room}/receipt/m.read/{ev}", {})).start()
    t0 = time.monotonic()
    r = sync_until(b, token, lambda resp: any(
        e["type"] == "m.receipt" for e in resp.get("rooms", {}).get("join", {}).get(room, {})
        .get("ephemeral", {}).get("events", [])))
    assert time.monotonic() - t0 < 5
    receipts = [e for e in r["rooms"]["join"][room]["ephemeral"]["events"] if e["type"] == "m.receipt"]
    assert receipts and a.user_id in receipts[0]["content"][ev]["m.read"]
    # Private receipts reach only their owner.
    a.post(f"rooms/{room}/receipt/m.read.private/{ev}", {})
    r2 = sync(b, r["next_batch"])
    assert not any("m.read.private" in str(e) for e in
                   r2.get("rooms", {}).get("join", {}).get(room, {}).get("ephemeral", {}).get("events", []))
    # Presence of someone sharing a room.
    a.put(f"presence/{a.user_id}/status", {"presence": "online", "status_msg": "here"})
    r3 = sync(b, r2["next_batch"])
    mine = [e for e in r3["presence"]["events"] if e["sender"] == a.user_id]
    assert mine and mine[-1]["content"]["presence"] == "online"


def test_to_device_exactly_once_and_wakes(server: ServerProcess) -> None:
    a, b = server.users(2)
    token = sync(b)["next_batch"]
    threading.Timer(0.5, lambda: a.put("sendToDevice/m.test/t1", {
        "messages": {b.user_id: {b.device_id: {"n": 1}}}})).start()
    t0 = time.monotonic()
    r1 = sync(b, token, timeout=20000)
    assert time.monotonic() - t0 < 5
    assert r1["to_device"]["events"] == [{"type": "m.test", "sender": a.user_id, "content": {"n": 1}}]
    # Retrying the same sync (the response was lost) delivers it again; acknowledging does not.
    again = sync(b, token)
    assert again["to_device"]["events"] == r1["to_device"]["events"]
    r2 = sync(b, r1["next_batch"])
    assert r2.get("to_device", {}).get("events", []) == []
    a.put("sendToDevice/m.test/t1", {"messages": {b.user_id: {b.device_id: {"n": 1}}}})  # same txn id
    assert sync(b, r2["next_batch"]).get("to_device", {}).get("events", []) == []


def test_device_lists_and_key_counts_in_sync(server: ServerProcess) -> None:
    import olm
    from canonicaljson import encode_canonical_json
    a, b = server.users(2)
    room = a.post("createRoom", {"preset": "public_chat"}).json()["room_id"]
    b.post(f"join/{room}")
    first = sync(b)
    assert first["device_one_time_keys_count"]["signed_curve25519"] == 0
    assert "device_unused_fallback_key_types" in first
    # Sharing a room is itself a device-list change; let it pass before the key upload.
    first = sync_until(b, first["next_batch"], lambda resp: "device_lists" in resp, timeout_s=3)
    quiet = sync(b, first["next_batch"])
    assert "device_lists" not in quiet
    first = quiet
    account = olm.Account()
    keys = account.identity_keys
    device_keys = {"user_id": a.user_id, "device_id": a.device_id,
                   "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
                   "keys": {f"curve25519:{a.device_id}": keys["curve25519"],
                            f"ed25519:{a.device_id}": keys["ed25519"]}}
    device_keys["signatures"] = {a.user_id: {f"ed25519:{a.device_id}": account.sign(
        encode_canonical_json(device_keys).decode())}}
    token = first["next_batch"]
    threading.Timer(0.5, lambda: a.post("keys/upload", {"device_keys": device_keys})).start()
    t0 = time.monotonic()
    r = sync(b, token, timeout=20000)
    assert time.monotonic() - t0 < 5, "a device-list change must wake the long-poll"
    assert a.user_id in r["device_lists"]["changed"]


def test_notification_counts_and_push_rules_in_sync(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = a.post("createRoom", {"preset": "public_chat"}).json()["room_id"]
    b.post(f"join/{room}")
    first = sync(b)
    assert any(e["type"] == "m.push_rules" for e in first["account_data"]["events"])
    ev = send(a, room, "ping")
    a.put(f"rooms/{room}/send/m.room.message/mention", {
        "msgtype": "m.text", "body": "hey you", "m.mentions": {"user_ids": [b.user_id]}})
    r = sync_until(b, first["next_batch"],
                   lambda resp: resp.get("rooms", {}).get("join", {}).get(room, {})
                   .get("unread_notifications", {}).get("highlight_count"))
    counts = r["rooms"]["join"][room]["unread_notifications"]
    assert counts == {"notification_count": 2, "highlight_count": 1}
    b.post(f"rooms/{room}/receipt/m.read/{ev}", {})
    r2 = sync_until(b, r["next_batch"], lambda resp: room in resp.get("rooms", {}).get("join", {}))
    assert r2["rooms"]["join"][room]["unread_notifications"]["notification_count"] == 1


def test_lazy_members_for_new_senders_in_incremental_sync(server: ServerProcess) -> None:
    a, b, c = server.users(3)
    room = a.post("createRoom", {"preset": "public_chat"}).json()["room_id"]
    b.post(f"join/{room}")
    c.post(f"join/{room}")
    send(b, room, "b speaks")
    lazy = '{"room": {"state": {"lazy_load_members": true}}}'
    first = sync(a, filter=lazy)
    send(c, room, "c speaks for the first time")
    second = sync_until(a, first["next_batch"], lambda resp: timeline(resp, room), timeout_s=5,
                        filter=lazy)
    members = {e["state_key"] for e in second["rooms"]["join"][room]["state"]["events"]
               if e["type"] == "m.room.member"}
    assert c.user_id in members
