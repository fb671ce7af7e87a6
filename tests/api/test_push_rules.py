"""/pushrules/ over HTTP on both engines: the spec's default rules per user, CRUD with ordering,
enabled and actions, errors, m.push_rules in /sync, and rules taking effect on notifications."""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import quote

from tests.harness import Client, ServerProcess

DEFAULT_OVERRIDE = [".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me",
                    ".m.rule.member_event", ".m.rule.is_user_mention", ".m.rule.is_room_mention",
                    ".m.rule.tombstone", ".m.rule.reaction", ".m.rule.room.server_acl",
                    ".m.rule.suppress_edits"]
DEFAULT_UNDERRIDE = [".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one",
                     ".m.rule.message", ".m.rule.encrypted"]


def users(server: ServerProcess, n: int) -> list[Client]:
    out = []
    for _ in range(n):
        c = server.client()
        c.register()
        out.append(c)
    return out


def ids(rules: list[dict[str, Any]]) -> list[str]:
    return [r["rule_id"] for r in rules]


def assert_error(r: Any, status: int, errcode: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["errcode"] == errcode, r.text


def send(c: Client, room: str, body: str = "hi", **extra: Any) -> str:
    r = c.put(f"rooms/{room}/send/m.room.message/{uuid.uuid4().hex}",
              {"msgtype": "m.text", "body": body, **extra})
    assert r.status_code == 200, r.text
    return r.json()["event_id"]


def notified_events(c: Client, expect: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The user's notifications once there are at least ``expect`` (evaluation is async)."""
    deadline = time.monotonic() + timeout
    while True:
        got = c.get("notifications").json()["notifications"]
        if len(got) >= expect or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_default_rules_are_the_specs(user: Client) -> None:
    r = user.get("pushrules/")
    assert r.status_code == 200, r.text
    rules = r.json()["global"]
    assert ids(rules["override"]) == DEFAULT_OVERRIDE
    assert ids(rules["underride"]) == DEFAULT_UNDERRIDE
    assert rules["content"] == [] and rules["room"] == [] and rules["sender"] == []
    by_id = {r["rule_id"]: r for k in ("override", "underride") for r in rules[k]}
    assert all(r["default"] is True for r in by_id.values())
    assert by_id[".m.rule.master"] == {"rule_id": ".m.rule.master", "default": True,
                                       "enabled": False, "conditions": [], "actions": []}
    assert by_id[".m.rule.is_user_mention"]["conditions"] == [
        {"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids",
         "value": user.user_id}]
    assert by_id[".m.rule.is_user_mention"]["actions"] == [
        "notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]
    assert by_id[".m.rule.invite_for_me"]["conditions"][2] == {
        "kind": "event_match", "key": "state_key", "pattern": user.user_id}
    assert by_id[".m.rule.is_room_mention"]["conditions"] == [
        {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
        {"kind": "sender_notification_permission", "key": "room"}]
    assert by_id[".m.rule.suppress_edits"]["conditions"] == [
        {"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"}]
    assert by_id[".m.rule.encrypted_room_one_to_one"]["conditions"] == [
        {"kind": "room_member_count", "is": "2"},
        {"kind": "event_match", "key": "type", "pattern": "m.room.encrypted"}]
    assert user.get("pushrules/global/").json() == rules


def test_get_single_rules_enabled_and_actions(user: Client) -> None:
    r = user.get("pushrules/global/override/.m.rule.suppress_notices")
    assert r.status_code == 200, r.text
    assert r.json()["conditions"] == [{"kind": "event_match", "key": "content.msgtype",
                                       "pattern": "m.notice"}]
    assert user.get("pushrules/global/override/.m.rule.master/enabled").json() == {"enabled": False}
    assert user.get("pushrules/global/underride/.m.rule.call/actions").json() == {
        "actions": ["notify", {"set_tweak": "sound", "value": "ring"}]}
    # The kind is part of the rule's identity.
    assert_error(user.get("pushrules/global/underride/.m.rule.master"), 404, "M_NOT_FOUND")
    assert_error(user.get("pushrules/global/room/nothing"), 404, "M_NOT_FOUND")
    assert_error(user.get("pushrules/global/room/nothing/enabled"), 404, "M_NOT_FOUND")
    assert_error(user.get("pushrules/global/room/nothing/actions"), 404, "M_NOT_FOUND")
    r = user.get("pushrules/global/underride/", validate=False)  # listed per kind, as Synapse does
    assert ids(r.json()) == DEFAULT_UNDERRIDE


def test_create_update_and_delete_each_kind(user: Client) -> None:
    room = "!aroom:test.local"
    sender = "@spambot:test.local"
    assert user.put(f"pushrules/global/room/{quote(room)}", {"actions": []}).status_code == 200
    assert user.put(f"pushrules/global/sender/{quote(sender)}", {"actions": []}).status_code == 200
    assert user.put("pushrules/global/content/cake", {
        "pattern": "cake", "actions": ["notify", {"set_tweak": "sound", "value": "cakealarm.wav"}]}
    ).status_code == 200
    cond = [{"kind": "event_match", "key": "content.body", "pattern": "beer"},
            {"kind": "room_member_count", "is": "<=10"}]
    assert user.put("pushrules/global/override/beer", {
        "conditions": cond, "actions": ["notify"]}).status_code == 200
    assert user.put("pushrules/global/underride/low", {"actions": ["dont_notify"]}).status_code == 200

    rules = user.get("pushrules/").json()["global"]
    assert rules["room"] == [{"rule_id": room, "default": False, "enabled": True, "actions": []}]
    assert rules["sender"] == [{"rule_id": sender, "default": False, "enabled": True, "actions": []}]
    assert rules["content"] == [{"rule_id": "cake", "default": False, "enabled": True,
                                 "pattern": "cake", "actions": [
                                     "notify", {"set_tweak": "sound", "value": "cakealarm.wav"}]}]
    # User override rules come after .m.rule.master and before the other defaults.
    assert ids(rules["override"]) == [".m.rule.master", "beer"] + DEFAULT_OVERRIDE[1:]
    assert rules["override"][1] == {"rule_id": "beer", "default": False, "enabled": True,
                                    "conditions": cond, "actions": ["notify"]}
    # Historical actions are dropped; user underride rules come before the defaults.
    assert rules["underride"][0] == {"rule_id": "low", "default": False, "enabled": True,
                                     "conditions": [], "actions": []}

    # Updating keeps the rule where it is and changes its body.
    assert user.put("pushrules/global/content/cake", {"pattern": "pie", "actions": []}).status_code == 200
    assert user.get("pushrules/global/content/cake").json()["pattern"] == "pie"

    for kind, rid in (("room", room), ("sender", sender), ("content", "cake"),
                      ("override", "beer"), ("underride", "low")):
        r = user.delete(f"pushrules/global/{kind}/{quote(rid)}")
        assert r.status_code == 200 and r.json() == {}, r.text
        assert_error(user.get(f"pushrules/global/{kind}/{quote(rid)}"), 404, "M_NOT_FOUND")
        assert_error(user.delete(f"pushrules/global/{kind}/{quote(rid)}"), 404, "M_NOT_FOUND")
    assert user.get("pushrules/").json()["global"] == {
        **rules, "room": [], "sender": [], "content": [],
        "override": [r for r in rules["override"] if r["rule_id"] != "beer"],
        "underride": [r for r in rules["underride"] if r["rule_id"] != "low"]}


def test_ordering_with_before_and_after(user: Client) -> None:
    def put(rid: str, **params: str) -> Any:
        return user.put(f"pushrules/global/content/{rid}", {"pattern": rid, "actions": ["notify"]},
                        params=params or None)

    def order() -> list[str]:
        return ids(user.get("pushrules/").json()["global"]["content"])

    assert put("a").status_code == 200
    assert put("b").status_code == 200          # new rules go first
    assert order() == ["b", "a"]
    assert put("c", after="a").status_code == 200
    assert order() == ["b", "a", "c"]
    assert put("d", before="a").status_code == 200
    assert order() == ["b", "d", "a", "c"]
    assert put("b", after="c").status_code == 200   # moving an existing rule
    assert order() == ["d", "a", "c", "b"]
    assert put("e", before="c", after="d").status_code == 200   # before wins
    assert order() == ["d", "a", "e", "c", "b"]
    assert put("a").status_code == 200          # an update without before/after stays put
    assert order() == ["d", "a", "e", "c", "b"]
    r = put("f", before="nope")
    assert_error(r, 400, "M_UNKNOWN")
    assert "nope" in r.json()["error"]
    assert_error(put("f", after=".m.rule.master"), 400, "M_INVALID_PARAM")
    assert order() == ["d", "a", "e", "c", "b"]


def test_enabled_and_actions_of_user_and_default_rules(user: Client) -> None:
    base = "pushrules/global/override/.m.rule.master"
    assert user.put(f"{base}/enabled", {"enabled": True}).status_code == 200
    assert user.get(f"{base}/enabled").json() == {"enabled": True}
    assert user.get(base).json()["enabled"] is True
    assert user.put(f"{base}/enabled", {"enabled": False}).status_code == 200
    assert user.get(f"{base}/enabled").json() == {"enabled": False}

    msg = "pushrules/global/underride/.m.rule.message"
    new_actions = ["notify", {"set_tweak": "sound", "value": "bing"}]
    assert user.put(f"{msg}/actions", {"actions": new_actions}).status_code == 200
    assert user.get(f"{msg}/actions").json() == {"actions": new_actions}
    rule = user.get(msg).json()
    assert rule["default"] is True and rule["actions"] == new_actions

    assert user.put("pushrules/global/sender/%40x%3Atest.local", {"actions": ["notify"]}).status_code == 200
    path = "pushrules/global/sender/%40x%3Atest.local"
    assert user.put(f"{path}/enabled", {"enabled": False}).status_code == 200
    assert user.get(path).json()["enabled"] is False
    assert user.put(f"{path}/actions", {"actions": []}).status_code == 200
    assert user.get(f"{path}/actions").json() == {"actions": []}
    # Updating the rule keeps it disabled.
    assert user.put(path, {"actions": ["notify"]}).status_code == 200
    assert user.get(path).json() == {"rule_id": "@x:test.local", "default": False,
                                     "enabled": False, "actions": ["notify"]}

    assert_error(user.put("pushrules/global/room/nothing/enabled", {"enabled": True}), 404, "M_NOT_FOUND")
    assert_error(user.put("pushrules/global/room/nothing/actions", {"actions": []}), 404, "M_NOT_FOUND")
    assert_error(user.put(f"{base}/enabled", {"enabled": "yes"}), 400, "M_INVALID_PARAM")
    assert_error(user.put(f"{base}/enabled", {}), 400, "M_MISSING_PARAM")
    assert_error(user.put(f"{msg}/actions", {"actions": "notify"}), 400, "M_INVALID_PARAM")
    assert_error(user.put(f"{msg}/actions", {"actions": ["explode"]}), 400, "M_INVALID_PARAM")


def test_bad_requests_change_nothing(user: Client) -> None:
    before = user.get("pushrules/").json()
    cases = [
        ("pushrules/global/override/.mine", {"actions": []}, "M_INVALID_PARAM"),
        ("pushrules/global/override/.m.rule.master", {"actions": []}, "M_INVALID_PARAM"),
        ("pushrules/global/override/a%2Fb", {"actions": []}, "M_INVALID_PARAM"),
        ("pushrules/global/override/a%5Cb", {"actions": []}, "M_INVALID_PARAM"),
        ("pushrules/global/override/x", {}, "M_MISSING_PARAM"),
        ("pushrules/global/override/x", {"actions": [1]}, "M_INVALID_PARAM"),
        ("pushrules/global/override/x", {"actions": [{"value": 1}]}, "M_INVALID_PARAM"),
        ("pushrules/global/override/x", {"actions": [], "conditions": {}}, "M_INVALID_PARAM"),
        ("pushrules/global/override/x", {"actions": [], "conditions": [{"key": "type"}]}, "M_INVALID_PARAM"),
        ("pushrules/global/override/x", {"actions": [], "conditions": [{"kind": "event_match", "key": "type"}]},
         "M_INVALID_PARAM"),
        ("pushrules/global/override/x", {"actions": [], "conditions": [
            {"kind": "event_property_is", "key": "a", "value": {"x": 1}}]}, "M_INVALID_PARAM"),
        ("pushrules/global/content/x", {"actions": []}, "M_MISSING_PARAM"),
        ("pushrules/global/content/x", {"actions": [], "pattern": 5}, "M_INVALID_PARAM"),
        ("pushrules/global/nokind/x", {"actions": []}, "M_INVALID_PARAM"),
        ("pushrules/device/override/x", {"actions": []}, "M_INVALID_PARAM"),
    ]
    for path, body, errcode in cases:
        assert_error(user.put(path, body), 400, errcode)
    assert_error(user.put("pushrules/global/override/x", data=b"{nope"), 400, "M_NOT_JSON")
    assert_error(user.put("pushrules/global/override/x", data=b"[]"), 400, "M_BAD_JSON")
    assert_error(user.delete("pushrules/global/override/.m.rule.master"), 400, "M_INVALID_PARAM")
    assert_error(user.get("pushrules/global/nokind/x"), 400, "M_INVALID_PARAM")
    assert_error(user.get("pushrules/device/"), 400, "M_INVALID_PARAM")
    # Unknown condition kinds are accepted (they never match).
    assert user.put("pushrules/global/override/future", {
        "actions": ["notify"], "conditions": [{"kind": "org.example.future"}]}).status_code == 200
    assert user.delete("pushrules/global/override/future").status_code == 200
    assert user.get("pushrules/").json() == before
    assert user.get("pushrules/", token=None).status_code == 401


def test_rules_are_per_user(server: ServerProcess) -> None:
    a, b = users(server, 2)
    assert a.put("pushrules/global/content/mine", {"pattern": "x", "actions": []}).status_code == 200
    assert b.get("pushrules/").json()["global"]["content"] == []
    assert_error(b.get("pushrules/global/content/mine"), 404, "M_NOT_FOUND")
    assert_error(b.delete("pushrules/global/content/mine"), 404, "M_NOT_FOUND")


def test_changes_appear_in_sync_account_data(user: Client) -> None:
    first = user.get("sync").json()
    since = first["next_batch"]
    assert user.put("pushrules/global/content/tea", {"pattern": "tea", "actions": ["notify"]}).status_code == 200
    r = user.get("sync", params={"since": since, "timeout": 5000})
    events = [e for e in r.json()["account_data"]["events"] if e["type"] == "m.push_rules"]
    assert len(events) == 1
    content = events[0]["content"]
    assert content == {"global": user.get("pushrules/").json()["global"]}
    assert ids(content["global"]["content"]) == ["tea"]
    # The account data API still refuses client writes of m.push_rules, but reads it.
    path = f"user/{user.user_id}/account_data/m.push_rules"
    assert user.get(path).json() == content
    assert user.put(path, {"global": {}}).status_code == 405
    # A long-polling /sync is woken by a change.
    since = r.json()["next_batch"]
    import threading
    threading.Timer(0.5, lambda: user.put(
        "pushrules/global/override/.m.rule.master/enabled", {"enabled": True})).start()
    started = time.monotonic()
    r = user.get("sync", params={"since": since, "timeout": 20000})
    assert time.monotonic() - started < 10
    content = next(e["content"] for e in r.json()["account_data"]["events"]
                   if e["type"] == "m.push_rules")
    assert content["global"]["override"][0] == {"rule_id": ".m.rule.master", "default": True,
                                                "enabled": True, "conditions": [], "actions": []}


def test_rules_take_effect(server: ServerProcess) -> None:
    a, b, c = users(server, 3)
    room = a.post("createRoom", {"preset": "public_chat"}).json()["room_id"]
    quiet = a.post("createRoom", {"preset": "public_chat"}).json()["room_id"]
    for r in (room, quiet):
        assert b.post(f"join/{r}").status_code == 200
        assert c.post(f"join/{r}").status_code == 200
    # b mutes one room, mutes c, and highlights "cake".
    assert b.put(f"pushrules/global/room/{quote(quiet)}", {"actions": []}).status_code == 200
    assert b.put(f"pushrules/global/sender/{quote(c.user_id)}", {"actions": []}).status_code == 200
    assert b.put("pushrules/global/content/cake", {
        "pattern": "cake", "actions": ["notify", {"set_tweak": "highlight"}]}).status_code == 200
    send(a, quiet, "nobody hears this")
    send(c, room, "muted sender")
    plain = send(a, room, "hello")
    cake = send(a, room, "I like CAKE!")
    got = notified_events(b, 2)
    time.sleep(0.3)
    got = b.get("notifications").json()["notifications"]
    assert [n["event"]["event_id"] for n in got] == [cake, plain]
    assert got[0]["actions"] == ["notify", {"set_tweak": "highlight"}]
    assert got[1]["actions"] == ["notify"]
    # The master rule switches everything off.
    assert b.put("pushrules/global/override/.m.rule.master/enabled", {"enabled": True}).status_code == 200
    send(a, room, "after master")
    last = send(c, room, "cake from c")  # the sender rule of c comes after master too
    time.sleep(0.5)
    assert [n["event"]["event_id"] for n in b.get("notifications").json()["notifications"]] == [cake, plain]
    assert last
