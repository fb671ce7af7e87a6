"""/notifications over HTTP on both engines: what the default rules notify, highlight and
suppress for each member, pagination, only=highlight, and read state moved by receipts (main
timeline and threads) and by the user's own events."""

from __future__ import annotations

import time
import uuid
from typing import Any

from tests.harness import Client, ServerProcess


def users(server: ServerProcess, n: int) -> list[Client]:
    out = []
    for _ in range(n):
        c = server.client()
        c.register()
        out.append(c)
    return out


def room_with(a: Client, *others: Client, preset: str = "public_chat") -> str:
    r = a.post("createRoom", {"preset": preset})
    assert r.status_code == 200, r.text
    room = r.json()["room_id"]
    for c in others:
        if preset != "public_chat":
            assert a.post(f"rooms/{room}/invite", {"user_id": c.user_id}).status_code == 200
        assert c.post(f"join/{room}").status_code == 200, c.user_id
    return room


def send(c: Client, room: str, body: str = "hi", etype: str = "m.room.message",
         content: dict[str, Any] | None = None, **extra: Any) -> str:
    r = c.put(f"rooms/{room}/send/{etype}/{uuid.uuid4().hex}",
              content if content is not None else {"msgtype": "m.text", "body": body, **extra})
    assert r.status_code == 200, r.text
    return r.json()["event_id"]


def notifications(c: Client, **params: Any) -> dict[str, Any]:
    r = c.get("notifications", params=params or None)
    assert r.status_code == 200, r.text
    return r.json()


def settle(c: Client, marker_room: str, sender: Client) -> None:
    """Wait until every earlier event has been evaluated for ``c``: a marker message (which
    always notifies in a group room) shows up last."""
    marker = send(sender, marker_room, "marker")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = notifications(c, limit=1)["notifications"]
        if got and got[0]["event"]["event_id"] == marker:
            return
        time.sleep(0.05)
    raise AssertionError("evaluation did not finish")


def event_ids(c: Client, **params: Any) -> list[str]:
    return [n["event"]["event_id"] for n in notifications(c, **params)["notifications"]]


def test_messages_notify_other_members_not_the_sender(server: ServerProcess) -> None:
    a, b, c = users(server, 3)
    room = room_with(a, b, c)
    ev = send(a, room, "hello")
    settle(b, room, c)
    got = notifications(b)["notifications"]
    first = next(n for n in got if n["event"]["event_id"] == ev)
    assert first["actions"] == ["notify"]
    assert first["read"] is False
    assert first["room_id"] == room
    assert isinstance(first["ts"], int)
    assert "room_id" not in first["event"]
    assert first["event"]["content"]["body"] == "hello"
    assert first["event"]["sender"] == a.user_id
    assert ev in event_ids(c)
    assert ev not in event_ids(a)  # never for one's own events


def test_default_rules_in_a_group_room(server: ServerProcess) -> None:
    a, b, c = users(server, 3)
    room = room_with(a, b, c)
    mention = send(a, room, "hey b", **{"m.mentions": {"user_ids": [b.user_id]}})
    room_mention_admin = send(a, room, "@room", **{"m.mentions": {"room": True}})
    room_mention_user = send(c, room, "@room", **{"m.mentions": {"room": True}})
    notice = send(a, room, "bot", msgtype="m.notice")
    edit = send(a, room, content={"msgtype": "m.text", "body": "* fixed", "m.new_content": {
        "msgtype": "m.text", "body": "fixed"}, "m.relates_to": {"rel_type": "m.replace",
                                                                "event_id": mention}})
    reaction = send(a, room, etype="m.reaction", content={
        "m.relates_to": {"rel_type": "m.annotation", "event_id": mention, "key": "x"}})
    custom = send(a, room, etype="org.example.custom", content={"body": "hi"})
    settle(b, room, c)
    got = {n["event"]["event_id"]: n for n in notifications(b)["notifications"]}
    assert got[mention]["actions"] == ["notify", {"set_tweak": "sound", "value": "default"},
                                       {"set_tweak": "highlight"}]
    # The creator has power 100 >= notifications.room (50): @room highlights ...
    assert got[room_mention_admin]["actions"] == ["notify", {"set_tweak": "highlight"}]
    # ... a member at power 0 only gets a plain message notification.
    assert got[room_mention_user]["actions"] == ["notify"]
    for suppressed in (notice, edit, reaction, custom):
        assert suppressed not in got
    # The mention of b is not a highlight for c.
    assert [n for n in notifications(c)["notifications"]
            if n["event"]["event_id"] == mention][0]["actions"] == ["notify"]
    assert event_ids(b, only="highlight") == [room_mention_admin, mention]


def test_one_to_one_and_invites(server: ServerProcess) -> None:
    a, b = users(server, 2)
    r = a.post("createRoom", {"preset": "private_chat", "invite": [b.user_id]})
    room = r.json()["room_id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not notifications(b)["notifications"]:
        time.sleep(0.05)
    invite = notifications(b)["notifications"][0]
    assert invite["event"]["type"] == "m.room.member"
    assert invite["event"]["state_key"] == b.user_id
    assert invite["actions"] == ["notify", {"set_tweak": "sound", "value": "default"}]
    assert b.post(f"join/{room}").status_code == 200
    msg = send(a, room, "just us")
    enc = send(a, room, etype="m.room.encrypted", content={
        "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA", "sender_key": "k",
        "device_id": "D", "session_id": "s"})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(notifications(b)["notifications"]) < 3:
        time.sleep(0.05)
    got = {n["event"]["event_id"]: n for n in notifications(b)["notifications"]}
    assert got[msg]["actions"] == ["notify", {"set_tweak": "sound", "value": "default"}]
    assert got[enc]["actions"] == ["notify", {"set_tweak": "sound", "value": "default"}]
    # The joiner's own join is not a notification for anyone; a's join of their room neither.
    assert [n["event"]["type"] for n in notifications(a)["notifications"]] == []


def test_encrypted_events_in_group_rooms_cannot_be_read(server: ServerProcess) -> None:
    a, b, c = users(server, 3)
    room = room_with(a, b, c)
    # Plaintext smuggled into an encrypted event's content is not looked at: only the encrypted
    # rules apply (no mention highlight); m.relates_to stays readable, so edits stay quiet.
    forged = send(a, room, etype="m.room.encrypted", content={
        "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA", "msgtype": "m.notice",
        "body": "b", "m.mentions": {"user_ids": [b.user_id]}})
    enc_edit = send(a, room, etype="m.room.encrypted", content={
        "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgB",
        "m.relates_to": {"rel_type": "m.replace", "event_id": forged}})
    settle(b, room, c)
    got = {n["event"]["event_id"]: n for n in notifications(b)["notifications"]}
    assert got[forged]["actions"] == ["notify"]
    assert enc_edit not in got


def test_pagination_and_limits(server: ServerProcess) -> None:
    a, b = users(server, 2)
    room = room_with(a, b)
    c, = users(server, 1)
    assert c.post(f"join/{room}").status_code == 200
    sent = [send(a, room, f"m{i}") for i in range(5)]
    settle(b, room, c)
    everything = event_ids(b)
    assert everything[1:6] == list(reversed(sent))
    page = notifications(b, limit=2)
    assert len(page["notifications"]) == 2
    seen = [n["event"]["event_id"] for n in page["notifications"]]
    while "next_token" in page:
        page = notifications(b, limit=2, **{"from": page["next_token"]})
        seen += [n["event"]["event_id"] for n in page["notifications"]]
    assert seen == everything
    assert notifications(b, limit=0)["notifications"] == []
    for bad in ({"from": "xyz"}, {"limit": "many"}, {"limit": "-1"}):
        r = b.get("notifications", params=bad)
        assert r.status_code == 400 and r.json()["errcode"] == "M_INVALID_PARAM", r.text
    assert b.get("notifications", token=None).status_code == 401


def test_read_receipts_and_own_events_mark_read(server: ServerProcess) -> None:
    a, b, c = users(server, 3)
    room = room_with(a, b, c)
    first = send(a, room, "one")
    second = send(a, room, "two")
    settle(b, room, c)

    def read_state() -> dict[str, bool]:
        return {n["event"]["event_id"]: n["read"] for n in notifications(b)["notifications"]}
    assert read_state()[first] is False and read_state()[second] is False
    assert b.post(f"rooms/{room}/receipt/m.read.private/{first}", {}).status_code == 200
    state = read_state()
    assert state[first] is True and state[second] is False
    # A receipt further back changes nothing; a later m.read moves on.
    assert b.post(f"rooms/{room}/receipt/m.read/{second}", {}).status_code == 200
    assert read_state()[second] is True
    third = send(a, room, "three")
    settle(b, room, c)
    assert read_state()[third] is False
    # b's own message counts as having read everything before it.
    send(b, room, "my reply")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not read_state()[third]:
        time.sleep(0.05)
    assert read_state()[third] is True


def test_threaded_receipts_only_clear_their_thread(server: ServerProcess) -> None:
    a, b, c = users(server, 3)
    room = room_with(a, b, c)
    root = send(a, room, "root")
    in_thread = send(a, room, "in thread", **{"m.relates_to": {"rel_type": "m.thread",
                                                                "event_id": root}})
    main = send(a, room, "main timeline")
    settle(b, room, c)

    def read_state() -> dict[str, bool]:
        return {n["event"]["event_id"]: n["read"] for n in notifications(b)["notifications"]}
    assert b.post(f"rooms/{room}/receipt/m.read/{main}", {"thread_id": "main"}).status_code == 200
    state = read_state()
    assert state[root] is True and state[main] is True and state[in_thread] is False
    assert b.post(f"rooms/{room}/receipt/m.read/{in_thread}", {"thread_id": root}).status_code == 200
    assert read_state()[in_thread] is True
    # An unthreaded receipt clears every thread.
    later_thread = send(a, room, "more", **{"m.relates_to": {"rel_type": "m.thread", "event_id": root}})
    later_main = send(a, room, "more main")
    settle(b, room, c)
    marker = notifications(b, limit=1)["notifications"][0]["event"]["event_id"]
    assert b.post(f"rooms/{room}/receipt/m.read/{marker}", {}).status_code == 200
    state = read_state()
    assert state[later_thread] is True and state[later_main] is True


def test_members_who_left_or_are_only_invited_get_nothing(server: ServerProcess) -> None:
    a, b, c, d = users(server, 4)
    room = room_with(a, b, c)
    assert b.post(f"rooms/{room}/leave", {}).status_code == 200
    assert a.post(f"rooms/{room}/invite", {"user_id": d.user_id}).status_code == 200
    ev = send(a, room, "after b left")
    settle(c, room, a)
    assert ev not in event_ids(b)
    assert ev not in event_ids(d)
    assert ev in event_ids(c)


def test_leaving_a_room_reads_its_notifications(server: ServerProcess) -> None:
    a, b, c = users(server, 3)
    room = room_with(a, b, c)
    ev = send(a, room, "before b leaves")
    settle(b, room, c)
    assert {n["event"]["event_id"]: n["read"] for n in notifications(b)["notifications"]}[ev] is False
    assert b.post(f"rooms/{room}/leave", {}).status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(not n["read"] for n in notifications(b)["notifications"]):
        time.sleep(0.05)
    assert all(n["read"] for n in notifications(b)["notifications"])
