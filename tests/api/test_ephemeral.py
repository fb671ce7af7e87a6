"""Typing, receipts, read markers and presence over HTTP on both engines: each endpoint, its
errors, the fully read marker in room account data, and who may see whose presence."""

from __future__ import annotations

import uuid
from typing import Any, Callable

from tests.harness import Client, ServerProcess




def room_with(a: Client, *others: Client, history: str = "shared") -> str:
    r = a.post("createRoom", {"preset": "public_chat", "initial_state": [
        {"type": "m.room.history_visibility", "content": {"history_visibility": history}}]})
    assert r.status_code == 200, r.text
    room = r.json()["room_id"]
    for c in others:
        assert c.post(f"join/{room}").status_code == 200
    return room


def send(c: Client, room: str, body: str = "hi", **extra: Any) -> str:
    r = c.put(f"rooms/{room}/send/m.room.message/{uuid.uuid4().hex}",
              {"msgtype": "m.text", "body": body, **extra})
    assert r.status_code == 200, r.text
    return r.json()["event_id"]


def thread_reply(c: Client, room: str, root: str) -> str:
    return send(c, room, "in thread", **{"m.relates_to": {"rel_type": "m.thread", "event_id": root}})


def assert_error(r: Any, status: int, errcode: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["errcode"] == errcode, r.text


# --- typing ------------------------------------------------------------------------------------

def test_typing_start_refresh_and_stop(server: ServerProcess) -> None:
    (a,) = server.users(1)
    room = room_with(a)
    path = f"rooms/{room}/typing/{a.user_id}"
    for body in ({"typing": True, "timeout": 10000}, {"typing": True, "timeout": 10 ** 9},
                 {"typing": True}, {"typing": False}, {"typing": False}):
        r = a.put(path, body)
        assert r.status_code == 200, r.text
        assert r.json() == {}


def test_typing_errors(server: ServerProcess) -> None:
    a, b, outsider = server.users(3)
    room = room_with(a, b)
    assert_error(a.put(f"rooms/{room}/typing/{b.user_id}", {"typing": True}), 403, "M_FORBIDDEN")
    assert_error(outsider.put(f"rooms/{room}/typing/{outsider.user_id}", {"typing": True}),
                 403, "M_FORBIDDEN")
    unknown_room = "!nowhere:test.local"
    assert_error(a.put(f"rooms/{unknown_room}/typing/{a.user_id}", {"typing": True}), 403, "M_FORBIDDEN")
    path = f"rooms/{room}/typing/{a.user_id}"
    assert_error(a.put(path, {}), 400, "M_MISSING_PARAM")
    assert_error(a.put(path, {"typing": "yes"}), 400, "M_INVALID_PARAM")
    assert_error(a.put(path, {"typing": True, "timeout": "soon"}), 400, "M_INVALID_PARAM")
    assert_error(a.put(path, {"typing": True, "timeout": -1}), 400, "M_INVALID_PARAM")
    assert_error(a.put(path, data=b"not json"), 400, "M_NOT_JSON")
    assert_error(a.put(f"rooms/notaroom/typing/{a.user_id}", {"typing": True}), 400, "M_INVALID_PARAM")
    assert_error(a.put(f"rooms/{room}/typing/notauser", {"typing": True}), 400, "M_INVALID_PARAM")
    assert a.put(path, {"typing": True}, token=None).status_code == 401


def test_typing_after_leaving_is_forbidden(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = room_with(a, b)
    assert b.put(f"rooms/{room}/typing/{b.user_id}", {"typing": True}).status_code == 200
    assert b.post(f"rooms/{room}/leave", {}).status_code == 200
    assert_error(b.put(f"rooms/{room}/typing/{b.user_id}", {"typing": True}), 403, "M_FORBIDDEN")


# --- receipts ----------------------------------------------------------------------------------

def fully_read(c: Client, room: str) -> Any:
    r = c.get(f"user/{c.user_id}/rooms/{room}/account_data/m.fully_read")
    return r.json().get("event_id") if r.status_code == 200 else r.status_code


def test_receipts_of_each_type(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = room_with(a, b)
    ev = send(a, room)
    for rtype, body in (("m.read", {}), ("m.read", {"thread_id": "main"}),
                        ("m.read.private", {}), ("m.read.private", {"thread_id": "main"}),
                        ("m.fully_read", {})):
        r = b.post(f"rooms/{room}/receipt/{rtype}/{ev}", body)
        assert r.status_code == 200, (rtype, r.text)
        assert r.json() == {}
    # No body at all, as older clients send, counts as {}.
    assert b.post(f"rooms/{room}/receipt/m.read/{ev}", data=b"").status_code == 200
    assert fully_read(b, room) == ev


def test_fully_read_marker_never_moves_back(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = room_with(a, b)
    first, second = send(a, room, "1"), send(a, room, "2")
    assert fully_read(b, room) == 404
    assert b.post(f"rooms/{room}/receipt/m.fully_read/{second}", {}).status_code == 200
    assert b.post(f"rooms/{room}/receipt/m.fully_read/{first}", {}).status_code == 200
    assert fully_read(b, room) == second
    assert b.post(f"rooms/{room}/read_markers", {"m.fully_read": first}).status_code == 200
    assert fully_read(b, room) == second
    # Clients cannot set the marker as plain account data.
    r = b.put(f"user/{b.user_id}/rooms/{room}/account_data/m.fully_read", {"event_id": first})
    assert r.status_code >= 400
    assert fully_read(b, room) == second


def test_receipt_errors(server: ServerProcess) -> None:
    a, b, outsider = server.users(3)
    room = room_with(a, b)
    other_room = room_with(a)
    ev = send(a, room)
    elsewhere = send(a, other_room)
    assert_error(b.post(f"rooms/{room}/receipt/m.unread/{ev}", {}), 400, "M_INVALID_PARAM")
    assert_error(b.post(f"rooms/{room}/receipt/m.read/$nope:test.local", {}), 404, "M_NOT_FOUND")
    assert_error(b.post(f"rooms/{room}/receipt/m.read/notanevent", {}), 404, "M_NOT_FOUND")
    assert_error(b.post(f"rooms/{room}/receipt/m.read/{elsewhere}", {}), 404, "M_NOT_FOUND")
    assert_error(outsider.post(f"rooms/{room}/receipt/m.read/{ev}", {}), 403, "M_FORBIDDEN")
    assert_error(b.post(f"rooms/notaroom/receipt/m.read/{ev}", {}), 400, "M_INVALID_PARAM")
    assert_error(b.post(f"rooms/{room}/receipt/m.read/{ev}", [1]), 400, "M_BAD_JSON")
    assert b.post(f"rooms/{room}/receipt/m.read/{ev}", {}, token=None).status_code == 401


def test_bad_thread_ids(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = room_with(a, b)
    root = send(a, room, "root")
    reply = thread_reply(a, room, root)
    other_root = send(a, room, "another root")
    plain = send(a, room, "plain")

    def post(rtype: str, event_id: str, thread_id: Any) -> Any:
        return b.post(f"rooms/{room}/receipt/{rtype}/{event_id}", {"thread_id": thread_id})

    for bad in ("", 5, None, ["main"], {"x": 1}, "not-an-event-id"):
        assert_error(post("m.read", plain, bad), 400, "M_INVALID_PARAM")
    assert_error(post("m.fully_read", plain, "main"), 400, "M_INVALID_PARAM")
    assert_error(post("m.read", reply, "main"), 400, "M_INVALID_PARAM")  # the reply is in a thread
    assert_error(post("m.read", reply, other_root), 400, "M_INVALID_PARAM")
    assert_error(post("m.read.private", plain, root), 400, "M_INVALID_PARAM")
    assert post("m.read", reply, root).status_code == 200
    assert post("m.read.private", reply, root).status_code == 200
    assert post("m.read", root, root).status_code == 200   # the root, in its own thread's view
    assert post("m.read", root, "main").status_code == 200  # and in the main timeline
    assert post("m.read", plain, "main").status_code == 200
    # An edit of a thread reply is in that thread too.
    edit = send(a, room, "* edited", **{"m.new_content": {"msgtype": "m.text", "body": "edited"},
                                        "m.relates_to": {"rel_type": "m.replace", "event_id": reply}})
    assert post("m.read", edit, root).status_code == 200
    assert_error(post("m.read", edit, "main"), 400, "M_INVALID_PARAM")


def test_receipt_needs_a_visible_event(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = room_with(a, history="joined")
    before = send(a, room, "before b joined")
    assert b.post(f"join/{room}").status_code == 200
    after = send(a, room, "after")
    assert_error(b.post(f"rooms/{room}/receipt/m.read/{before}", {}), 404, "M_NOT_FOUND")
    assert_error(b.post(f"rooms/{room}/read_markers", {"m.fully_read": before}), 404, "M_NOT_FOUND")
    assert b.post(f"rooms/{room}/receipt/m.read/{after}", {}).status_code == 200


def test_read_markers(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = room_with(a, b)
    one, two, three = send(a, room, "1"), send(a, room, "2"), send(a, room, "3")
    r = b.post(f"rooms/{room}/read_markers", {"m.fully_read": one, "m.read": two,
                                              "m.read.private": three})
    assert r.status_code == 200, r.text
    assert fully_read(b, room) == one
    assert b.post(f"rooms/{room}/read_markers", {}).status_code == 200
    assert b.post(f"rooms/{room}/read_markers", {"m.read": three}).status_code == 200
    assert fully_read(b, room) == one
    # A bad or unknown event changes nothing, not even the markers that were fine.
    assert_error(b.post(f"rooms/{room}/read_markers", {"m.fully_read": 3}), 400, "M_INVALID_PARAM")
    assert_error(b.post(f"rooms/{room}/read_markers", {"m.fully_read": three,
                                                       "m.read": "$missing:test.local"}),
                 404, "M_NOT_FOUND")
    assert fully_read(b, room) == one
    (outsider,) = server.users(1)
    assert_error(outsider.post(f"rooms/{room}/read_markers", {"m.fully_read": one}), 403, "M_FORBIDDEN")
    assert_error(b.post("rooms/notaroom/read_markers", {}), 400, "M_INVALID_PARAM")


# --- presence ----------------------------------------------------------------------------------

def presence_of(observer: Client, user_id: str) -> Any:
    return observer.get(f"presence/{user_id}/status")


def test_set_and_get_own_presence(server: ServerProcess) -> None:
    (a,) = server.users(1)
    r = presence_of(a, a.user_id)
    assert r.status_code == 200 and r.json()["presence"] == "offline", r.text
    r = a.put(f"presence/{a.user_id}/status", {"presence": "online", "status_msg": "working"})
    assert r.status_code == 200 and r.json() == {}, r.text
    body = presence_of(a, a.user_id).json()
    assert body["presence"] == "online" and body["status_msg"] == "working"
    assert body["currently_active"] is True
    assert 0 <= body["last_active_ago"] < 60_000
    assert a.put(f"presence/{a.user_id}/status", {"presence": "unavailable"}).status_code == 200
    body = presence_of(a, a.user_id).json()
    assert body["presence"] == "unavailable" and "status_msg" not in body
    assert "currently_active" not in body
    assert a.put(f"presence/{a.user_id}/status", {"presence": "offline",
                                                   "status_msg": "gone"}).status_code == 200
    body = presence_of(a, a.user_id).json()
    assert body["presence"] == "offline" and body["status_msg"] == "gone"


def test_presence_errors(server: ServerProcess) -> None:
    a, b = server.users(2)
    assert_error(a.put(f"presence/{b.user_id}/status", {"presence": "online"}), 403, "M_FORBIDDEN")
    path = f"presence/{a.user_id}/status"
    assert_error(a.put(path, {}), 400, "M_MISSING_PARAM")
    assert_error(a.put(path, {"presence": "dancing"}), 400, "M_INVALID_PARAM")
    assert_error(a.put(path, {"presence": "online", "status_msg": 7}), 400, "M_INVALID_PARAM")
    assert_error(a.put(path, {"presence": "online", "status_msg": "x" * 5000}), 400, "M_INVALID_PARAM")
    assert_error(a.get("presence/notauser/status"), 400, "M_INVALID_PARAM")
    assert a.get(path, token=None).status_code == 401


def test_presence_visible_only_to_users_sharing_a_room(server: ServerProcess) -> None:
    a, b, c = server.users(3)
    assert a.put(f"presence/{a.user_id}/status", {"presence": "online",
                                                   "status_msg": "hello"}).status_code == 200
    assert_error(presence_of(b, a.user_id), 403, "M_FORBIDDEN")
    assert_error(presence_of(b, "@nobody:test.local"), 403, "M_FORBIDDEN")
    room = room_with(a, b)
    body = presence_of(b, a.user_id).json()
    assert body["presence"] == "online" and body["status_msg"] == "hello"
    # c is invited only: an invite is not a shared room.
    assert a.post(f"rooms/{room}/invite", {"user_id": c.user_id}).status_code == 200
    assert_error(presence_of(c, a.user_id), 403, "M_FORBIDDEN")
    # A user who never set presence but shares a room is offline.
    r = presence_of(a, b.user_id)
    assert r.status_code == 200 and r.json()["presence"] == "offline"
    assert b.post(f"rooms/{room}/leave", {}).status_code == 200
    assert_error(presence_of(b, a.user_id), 403, "M_FORBIDDEN")


def test_presence_survives_a_restart(make_server: Callable[..., ServerProcess]) -> None:
    srv = make_server()
    a = srv.client()
    a.register()
    assert a.put(f"presence/{a.user_id}/status", {"presence": "unavailable",
                                                   "status_msg": "lunch"}).status_code == 200
    srv.restart()
    body = presence_of(a, a.user_id).json()
    assert body["presence"] == "unavailable" and body["status_msg"] == "lunch"


def test_presence_disabled(make_server: Callable[..., ServerProcess]) -> None:
    srv = make_server({"presence": {"enabled": False}})
    a = srv.client()
    a.register()
    r = a.put(f"presence/{a.user_id}/status", {"presence": "online", "status_msg": "here"})
    assert r.status_code == 200, r.text
    assert presence_of(a, a.user_id).json() == {"presence": "offline"}
    # Bad requests are still refused.
    assert_error(a.put(f"presence/{a.user_id}/status", {"presence": "dancing"}), 400, "M_INVALID_PARAM")
