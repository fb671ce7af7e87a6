"""/pushers and /pushers/set over HTTP on both engines, and delivery to a small push gateway the
test runs on loopback: the Push Gateway API's body (checked against its spec), event_id_only,
counts, retry with backoff, rejected pushkeys, badge updates after receipts, logout."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest

from tests.harness import Client, ServerProcess
from tests.spec_validation import validate_request_body

NOTIFY = "/_matrix/push/v1/notify"


class PushGateway:
    """Records every /notify body; answers from a queue of (status, body), else 200 with the
    pushkeys listed in ``reject`` as rejected."""

    def __init__(self) -> None:
        self.requests: list[tuple[float, dict[str, Any]]] = []
        self.answers: list[tuple[int, Any]] = []
        self.reject: set[str] = set()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with gateway._lock:
                    if self.path != NOTIFY:
                        gateway.errors.append(f"unexpected path {self.path}")
                    gateway.requests.append((time.monotonic(), body))
                    status, answer = gateway.answers.pop(0) if gateway.answers else (200, None)
                if answer is None:
                    keys = [d.get("pushkey") for d in body.get("notification", {}).get("devices", [])]
                    answer = {"rejected": [k for k in keys if k in gateway.reject]}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{NOTIFY}"

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [b for _, b in self.requests]

    def wait(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0
             ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.bodies()
            if predicate(got):
                return got
            time.sleep(0.05)
        raise AssertionError(f"gateway never saw what was expected; got {self.bodies()}")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def gateway() -> Iterator[PushGateway]:
    g = PushGateway()
    yield g
    g.close()
    assert not g.errors, g.errors
    for body in g.bodies():
        validate_request_body("POST", NOTIFY, body, api="push-gateway")


def users(server: ServerProcess, n: int) -> list[Client]:
    out = []
    for _ in range(n):
        c = server.client()
        c.register()
        out.append(c)
    return out


def pusher_body(url: str, pushkey: str | None = None, **extra: Any) -> dict[str, Any]:
    body = {"kind": "http", "app_id": "org.example.app.ios", "pushkey": pushkey or uuid.uuid4().hex,
            "app_display_name": "Example", "device_display_name": "Phone", "lang": "en",
            "data": {"url": url}}
    body.update(extra)
    return body


def set_pusher(c: Client, body: dict[str, Any]) -> None:
    r = c.post("pushers/set", body)
    assert r.status_code == 200, r.text
    assert r.json() == {}


def send(c: Client, room: str, body: str = "hi", **extra: Any) -> str:
    r = c.put(f"rooms/{room}/send/m.room.message/{uuid.uuid4().hex}",
              {"msgtype": "m.text", "body": body, **extra})
    assert r.status_code == 200, r.text
    return r.json()["event_id"]


def group_room(a: Client, *others: Client, name: str | None = None) -> str:
    body: dict[str, Any] = {"preset": "public_chat"}
    if name:
        body["name"] = name
    room = a.post("createRoom", body).json()["room_id"]
    for c in others:
        assert c.post(f"join/{room}").status_code == 200
    return room


def for_event(event_id: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda got: any(b["notification"].get("event_id") == event_id for b in got)


def assert_error(r: Any, status: int, errcode: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["errcode"] == errcode, r.text


# --- /pushers and /pushers/set -----------------------------------------------------------------

def test_set_list_update_and_delete(user: Client, gateway: PushGateway) -> None:
    assert user.get("pushers").json() == {"pushers": []}
    body = pusher_body(gateway.url, pushkey="key1", profile_tag="xyz",
                       data={"url": gateway.url, "format": "event_id_only", "custom": 1})
    set_pusher(user, body)
    expected = {k: v for k, v in body.items()}
    assert user.get("pushers").json() == {"pushers": [expected]}
    # Same app id and pushkey: an update.
    set_pusher(user, {**body, "device_display_name": "Tablet", "lang": "de"})
    got = user.get("pushers").json()["pushers"]
    assert len(got) == 1 and got[0]["device_display_name"] == "Tablet" and got[0]["lang"] == "de"
    set_pusher(user, pusher_body(gateway.url, pushkey="key2"))
    assert sorted(p["pushkey"] for p in user.get("pushers").json()["pushers"]) == ["key1", "key2"]
    set_pusher(user, {"kind": None, "app_id": body["app_id"], "pushkey": "key1"})
    assert [p["pushkey"] for p in user.get("pushers").json()["pushers"]] == ["key2"]
    # Deleting a pusher that does not exist is fine.
    set_pusher(user, {"kind": None, "app_id": "nothing", "pushkey": "none"})
    assert user.get("pushers", token=None).status_code == 401


def test_set_pusher_errors_change_nothing(user: Client, gateway: PushGateway) -> None:
    good = pusher_body(gateway.url, pushkey="k")
    cases: list[tuple[dict[str, Any], str]] = [
        ({k: v for k, v in good.items() if k != "kind"}, "M_MISSING_PARAM"),
        ({k: v for k, v in good.items() if k != "app_id"}, "M_MISSING_PARAM"),
        ({k: v for k, v in good.items() if k != "pushkey"}, "M_MISSING_PARAM"),
        ({k: v for k, v in good.items() if k not in ("lang", "data")}, "M_MISSING_PARAM"),
        ({**good, "data": {}}, "M_MISSING_PARAM"),
        ({**good, "data": {"url": "http://127.0.0.1/elsewhere"}}, "M_INVALID_PARAM"),
        ({**good, "data": {"url": "ftp://127.0.0.1" + NOTIFY}}, "M_INVALID_PARAM"),
        ({**good, "data": {"url": NOTIFY}}, "M_INVALID_PARAM"),
        ({**good, "data": {"url": 5}}, "M_INVALID_PARAM"),
        ({**good, "data": {"url": gateway.url, "format": 1}}, "M_INVALID_PARAM"),
        ({**good, "data": "x"}, "M_INVALID_PARAM"),
        ({**good, "app_id": "a" * 65}, "M_INVALID_PARAM"),
        ({**good, "pushkey": "é" * 257}, "M_INVALID_PARAM"),
        ({**good, "kind": "email"}, "M_INVALID_PARAM"),
        ({**good, "kind": 3}, "M_INVALID_PARAM"),
        ({**good, "append": "yes"}, "M_INVALID_PARAM"),
        ({**good, "lang": 1}, "M_INVALID_PARAM"),
        ({**good, "profile_tag": 1}, "M_INVALID_PARAM"),
    ]
    for body, errcode in cases:
        assert_error(user.post("pushers/set", body), 400, errcode)
    assert_error(user.post("pushers/set", data=b"nope"), 400, "M_NOT_JSON")
    assert user.get("pushers").json() == {"pushers": []}
    # Limits are inclusive.
    set_pusher(user, {**good, "app_id": "a" * 64, "pushkey": "é" * 256})


def test_append_and_replace_across_users(server: ServerProcess, gateway: PushGateway) -> None:
    a, b, c = users(server, 3)
    body = pusher_body(gateway.url, pushkey="shared-key")
    set_pusher(a, body)
    set_pusher(b, {**body, "append": True})
    assert len(a.get("pushers").json()["pushers"]) == 1
    assert len(b.get("pushers").json()["pushers"]) == 1
    set_pusher(c, body)  # append false: the others' pushers with this app id and pushkey go
    assert a.get("pushers").json()["pushers"] == []
    assert b.get("pushers").json()["pushers"] == []
    assert len(c.get("pushers").json()["pushers"]) == 1


def test_logout_removes_the_devices_pushers(server: ServerProcess, gateway: PushGateway) -> None:
    a, = users(server, 1)
    other = server.client()
    other.login(a.user_id, "correct horse battery")
    set_pusher(a, pusher_body(gateway.url, pushkey="from-a"))
    set_pusher(other, pusher_body(gateway.url, pushkey="from-other"))
    assert other.post("logout", {}).status_code == 200
    assert [p["pushkey"] for p in a.get("pushers").json()["pushers"]] == ["from-a"]


# --- delivery ----------------------------------------------------------------------------------

def test_full_notification_to_the_gateway(server: ServerProcess, gateway: PushGateway) -> None:
    a, b, c = users(server, 3)
    assert a.put(f"profile/{a.user_id}/displayname", {"displayname": "Alice"}).status_code == 200
    room = group_room(a, b, c, name="Tea room")
    set_pusher(b, pusher_body(gateway.url, pushkey="bkey",
                              data={"url": gateway.url, "custom": {"x": 1}}))
    plain = send(a, room, "hello")
    got = gateway.wait(for_event(plain))
    n = next(x for x in got if x["notification"].get("event_id") == plain)["notification"]
    assert n["room_id"] == room
    assert n["type"] == "m.room.message"
    assert n["sender"] == a.user_id
    assert n["sender_display_name"] == "Alice"
    assert n["room_name"] == "Tea room"
    assert n["content"] == {"msgtype": "m.text", "body": "hello"}
    assert n["counts"] == {"unread": 1}
    assert n["prio"] == "low"
    device = n["devices"][0]
    assert device["app_id"] == "org.example.app.ios" and device["pushkey"] == "bkey"
    assert device["data"] == {"custom": {"x": 1}}  # everything but the url
    assert device["tweaks"] == {}
    assert isinstance(device["pushkey_ts"], int) and device["pushkey_ts"] < 10 ** 11  # seconds
    mention = send(a, room, "b!", **{"m.mentions": {"user_ids": [b.user_id]}})
    got = gateway.wait(for_event(mention))
    n = next(x for x in got if x["notification"].get("event_id") == mention)["notification"]
    assert n["devices"][0]["tweaks"] == {"sound": "default", "highlight": True}
    assert n["prio"] == "high"
    assert n["counts"] == {"unread": 2}
    # Nothing for a's own pushers, nor for events that do not notify.
    send(a, room, "notice", msgtype="m.notice")
    last = send(c, room, "last")
    got = gateway.wait(for_event(last))
    assert [x["notification"].get("event_id") for x in got] == [plain, mention, last]


def test_event_id_only_format(server: ServerProcess, gateway: PushGateway) -> None:
    a, b = users(server, 2)
    room = group_room(a, b)
    c, = users(server, 1)
    assert c.post(f"join/{room}").status_code == 200
    set_pusher(b, pusher_body(gateway.url, data={"url": gateway.url, "format": "event_id_only"}))
    ev = send(a, room)
    got = gateway.wait(for_event(ev))
    n = got[-1]["notification"]
    assert set(n) == {"event_id", "room_id", "counts", "prio", "devices"}
    assert n["devices"][0]["data"] == {"format": "event_id_only"}


def test_retry_with_backoff_then_success(server: ServerProcess, gateway: PushGateway) -> None:
    a, b, c = users(server, 3)
    room = group_room(a, b, c)
    set_pusher(b, pusher_body(gateway.url))
    gateway.answers = [(500, {"error": "down"}), (503, {"error": "still down"})]
    ev = send(a, room)
    got = gateway.wait(lambda g: len(g) >= 3, timeout=15)
    assert [x["notification"]["event_id"] for x in got] == [ev, ev, ev]
    times = [t for t, _ in gateway.requests]
    assert times[1] - times[0] >= 0.8   # 1 s, then 2 s
    assert times[2] - times[1] >= 1.6
    # Once the gateway is back, later notifications flow at once, in order.
    nxt = send(a, room, "next")
    got = gateway.wait(for_event(nxt))
    assert [x["notification"]["event_id"] for x in got] == [ev, ev, ev, nxt]


def test_permanent_gateway_error_skips_the_notification(server: ServerProcess,
                                                        gateway: PushGateway) -> None:
    a, b, c = users(server, 3)
    room = group_room(a, b, c)
    set_pusher(b, pusher_body(gateway.url))
    gateway.answers = [(400, {"error": "bad"})]
    first = send(a, room, "refused")
    gateway.wait(for_event(first))
    second = send(a, room, "accepted")
    got = gateway.wait(for_event(second))
    assert [x["notification"]["event_id"] for x in got] == [first, second]


def test_rejected_pushkey_removes_the_pusher(server: ServerProcess, gateway: PushGateway) -> None:
    a, b, c = users(server, 3)
    room = group_room(a, b, c)
    set_pusher(b, pusher_body(gateway.url, pushkey="dead"))
    set_pusher(b, pusher_body(gateway.url, pushkey="alive"))
    gateway.reject.add("dead")
    ev = send(a, room)
    gateway.wait(lambda g: sum(1 for x in g if x["notification"].get("event_id") == ev) == 2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(b.get("pushers").json()["pushers"]) != 1:
        time.sleep(0.05)
    assert [p["pushkey"] for p in b.get("pushers").json()["pushers"]] == ["alive"]
    nxt = send(a, room, "next")
    got = gateway.wait(for_event(nxt))
    keys = [x["notification"]["devices"][0]["pushkey"] for x in got
            if x["notification"].get("event_id") == nxt]
    assert keys == ["alive"]


def test_read_receipt_sends_the_new_badge_count(server: ServerProcess, gateway: PushGateway) -> None:
    a, b, c = users(server, 3)
    room = group_room(a, b, c)
    set_pusher(b, pusher_body(gateway.url))
    first, second = send(a, room, "1"), send(a, room, "2")
    got = gateway.wait(for_event(second))
    assert [x["notification"]["counts"] for x in got] == [{"unread": 1}, {"unread": 2}]
    assert b.post(f"rooms/{room}/receipt/m.read/{first}", {}).status_code == 200
    got = gateway.wait(lambda g: len(g) >= 3)
    assert got[2]["notification"]["counts"] == {"unread": 1}
    assert "event_id" not in got[2]["notification"]
    assert b.post(f"rooms/{room}/receipt/m.read/{second}", {}).status_code == 200
    got = gateway.wait(lambda g: len(g) >= 4)
    assert got[3]["notification"]["counts"] == {"unread": 0}
    # A receipt that clears nothing sends nothing.
    assert b.post(f"rooms/{room}/receipt/m.read.private/{second}", {}).status_code == 200
    time.sleep(0.5)
    assert len(gateway.bodies()) == 4


def test_pushers_survive_a_restart(make_server: Callable[..., ServerProcess],
                                   gateway: PushGateway) -> None:
    server = make_server()
    a, b, c = users(server, 3)
    room = group_room(a, b, c)
    set_pusher(b, pusher_body(gateway.url, pushkey="persistent"))
    first = send(a, room, "before")
    gateway.wait(for_event(first))
    server.restart()
    assert [p["pushkey"] for p in b.get("pushers").json()["pushers"]] == ["persistent"]
    after = send(a, room, "after")
    got = gateway.wait(for_event(after))
    # Not sent twice: delivery resumed after the last notification handled.
    assert [x["notification"]["event_id"] for x in got] == [first, after]
