"""The spec's predefined rules ("Predefined Rules" in the push module, v1.17+) and what they do to
typical events, and how a user's own rules and changes combine with them."""

from __future__ import annotations

from typing import Any

from homeserver.push.evaluator import EventView
from homeserver.push.rules import (DEFAULT_RULESET, compile_ruleset, default_rules, effective_rules,
                                   user_ruleset)
from storage.push_rules import DefaultChange, StoredRule, UserRules

ME = "@me:test.local"
SOUND = {"set_tweak": "sound", "value": "default"}
HIGHLIGHT = {"set_tweak": "highlight"}


def m(key: str, pattern: str) -> dict[str, Any]:
    return {"kind": "event_match", "key": key, "pattern": pattern}


# Transcribed from the spec's definitions, in its order.
SPEC_OVERRIDE = [
    (".m.rule.master", False, [], []),
    (".m.rule.suppress_notices", True, [m("content.msgtype", "m.notice")], []),
    (".m.rule.invite_for_me", True, [m("type", "m.room.member"), m("content.membership", "invite"),
                                     m("state_key", ME)], ["notify", SOUND]),
    (".m.rule.member_event", True, [m("type", "m.room.member")], []),
    (".m.rule.is_user_mention", True, [{"kind": "event_property_contains",
                                        "key": "content.m\\.mentions.user_ids", "value": ME}],
     ["notify", SOUND, HIGHLIGHT]),
    (".m.rule.is_room_mention", True, [
        {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
        {"kind": "sender_notification_permission", "key": "room"}], ["notify", HIGHLIGHT]),
    (".m.rule.tombstone", True, [m("type", "m.room.tombstone"), m("state_key", "")],
     ["notify", HIGHLIGHT]),
    (".m.rule.reaction", True, [m("type", "m.reaction")], []),
    (".m.rule.room.server_acl", True, [m("type", "m.room.server_acl"), m("state_key", "")], []),
    (".m.rule.suppress_edits", True, [{"kind": "event_property_is",
                                       "key": "content.m\\.relates_to.rel_type",
                                       "value": "m.replace"}], []),
]
SPEC_UNDERRIDE = [
    (".m.rule.call", True, [m("type", "m.call.invite")],
     ["notify", {"set_tweak": "sound", "value": "ring"}]),
    (".m.rule.encrypted_room_one_to_one", True, [{"kind": "room_member_count", "is": "2"},
                                                 m("type", "m.room.encrypted")], ["notify", SOUND]),
    (".m.rule.room_one_to_one", True, [{"kind": "room_member_count", "is": "2"},
                                       m("type", "m.room.message")], ["notify", SOUND]),
    (".m.rule.message", True, [m("type", "m.room.message")], ["notify"]),
    (".m.rule.encrypted", True, [m("type", "m.room.encrypted")], ["notify"]),
]


def test_defaults_match_the_spec_exactly() -> None:
    rules = default_rules(ME)
    for kind, spec in (("override", SPEC_OVERRIDE), ("underride", SPEC_UNDERRIDE)):
        assert rules[kind] == [{"rule_id": rid, "default": True, "enabled": enabled,
                                "conditions": conds, "actions": actions}
                               for rid, enabled, conds, actions in spec]
    assert rules["content"] == rules["room"] == rules["sender"] == []


def msg(body: str = "hello", sender: str = "@other:test.local", **content: Any) -> dict[str, Any]:
    return {"type": "m.room.message", "sender": sender, "room_id": "!r:test.local",
            "event_id": "$e", "content": {"msgtype": "m.text", "body": body, **content}}


def outcome(event: dict[str, Any], *, members: int = 5, power: float = 0,
            ruleset: Any = DEFAULT_RULESET, user: str = ME) -> tuple[str, list[Any]] | None:
    view = EventView(event, member_count=members, sender_power=power,
                     notification_level=lambda k: 50,
                     opaque_content=event["type"] == "m.room.encrypted")
    rule = ruleset.evaluate_one(view, user)
    return (rule.rule_id, list(rule.actions)) if rule else None


def test_what_the_defaults_do() -> None:
    assert outcome(msg()) == (".m.rule.message", ["notify"])
    assert outcome(msg(), members=2) == (".m.rule.room_one_to_one", ["notify", SOUND])
    assert outcome(msg(msgtype="m.notice")) == (".m.rule.suppress_notices", [])
    mention = msg(**{"m.mentions": {"user_ids": [ME]}})
    assert outcome(mention) == (".m.rule.is_user_mention", ["notify", SOUND, HIGHLIGHT])
    assert outcome(mention, user="@else:test.local") == (".m.rule.message", ["notify"])
    room = msg(**{"m.mentions": {"room": True}})
    assert outcome(room, power=50) == (".m.rule.is_room_mention", ["notify", HIGHLIGHT])
    assert outcome(room, power=49) == (".m.rule.message", ["notify"])
    # The body alone no longer mentions anyone (v1.17 removed the legacy body rules).
    assert outcome(msg(f"hey {ME} and @room")) == (".m.rule.message", ["notify"])
    edit = msg(**{"m.relates_to": {"rel_type": "m.replace", "event_id": "$o"}})
    assert outcome(edit) == (".m.rule.suppress_edits", [])
    edit_mention = msg(**{"m.mentions": {"user_ids": [ME]},
                          "m.relates_to": {"rel_type": "m.replace", "event_id": "$o"}})
    assert outcome(edit_mention)[0] == ".m.rule.is_user_mention"  # the spec's order
    assert outcome({"type": "m.reaction", "content": {}}) == (".m.rule.reaction", [])
    assert outcome({"type": "m.call.invite", "content": {}}) == (
        ".m.rule.call", ["notify", {"set_tweak": "sound", "value": "ring"}])
    tomb = {"type": "m.room.tombstone", "state_key": "", "content": {"body": "moved"}}
    assert outcome(tomb) == (".m.rule.tombstone", ["notify", HIGHLIGHT])
    assert outcome({**tomb, "state_key": "x"}) is None
    assert outcome({"type": "m.room.server_acl", "state_key": "", "content": {}}) == (
        ".m.rule.room.server_acl", [])
    invite = {"type": "m.room.member", "state_key": ME, "content": {"membership": "invite"}}
    assert outcome(invite) == (".m.rule.invite_for_me", ["notify", SOUND])
    assert outcome({**invite, "state_key": "@x:test.local"}) == (".m.rule.member_event", [])
    assert outcome({"type": "m.room.member", "state_key": ME, "content": {"membership": "join"}}) == (
        ".m.rule.member_event", [])
    assert outcome({"type": "m.room.topic", "state_key": "", "content": {"topic": "x"}}) is None
    enc = {"type": "m.room.encrypted", "content": {"algorithm": "m.megolm.v1.aes-sha2",
                                                   "ciphertext": "x", "msgtype": "m.notice",
                                                   "m.mentions": {"user_ids": [ME]}}}
    assert outcome(enc) == (".m.rule.encrypted", ["notify"])
    assert outcome(enc, members=2) == (".m.rule.encrypted_room_one_to_one", ["notify", SOUND])


def test_own_rules_come_before_defaults_but_after_master() -> None:
    stored = UserRules(rules=[
        StoredRule("override", "loud", 2, [m("content.body", "fire")], None,
                   ["notify", {"set_tweak": "sound", "value": "siren"}], True),
        StoredRule("override", "off", 1, [m("content.body", "never")], None, [], False),
        StoredRule("content", "cake", 1, None, "cake", ["notify", HIGHLIGHT], True),
        StoredRule("room", "!quiet:test.local", 1, None, None, [], True),
        StoredRule("sender", "@bot:test.local", 1, None, None, [], True),
        StoredRule("underride", "custom", 1, [m("type", "org.example")], None, ["notify"], True),
    ], defaults={("underride", ".m.rule.message"): DefaultChange(None, ["notify", SOUND]),
                 ("override", ".m.rule.suppress_notices"): DefaultChange(False, None)})
    rules = effective_rules(ME, stored)
    assert [r["rule_id"] for r in rules["override"]][:4] == [
        ".m.rule.master", "loud", "off", ".m.rule.suppress_notices"]
    assert [r["rule_id"] for r in rules["underride"]][0] == "custom"
    rs = user_ruleset(stored)
    assert outcome(msg("fire!"), ruleset=rs)[0] == "loud"
    assert outcome(msg("never"), ruleset=rs) == (".m.rule.message", ["notify", SOUND])
    assert outcome(msg("I want Cake"), ruleset=rs) == ("cake", ["notify", HIGHLIGHT])
    assert outcome({**msg("cake"), "room_id": "!quiet:test.local"}, ruleset=rs)[0] == "cake"
    assert outcome({**msg("hi"), "room_id": "!quiet:test.local"}, ruleset=rs) == (
        "!quiet:test.local", [])
    assert outcome(msg("hi", sender="@bot:test.local"), ruleset=rs) == ("@bot:test.local", [])
    # suppress_notices is disabled, so a notice falls through to the underrides.
    assert outcome(msg("n", msgtype="m.notice"), ruleset=rs) == (".m.rule.message", ["notify", SOUND])
    assert outcome({"type": "org.example", "content": {}}, ruleset=rs) == ("custom", ["notify"])
    # Master on: nothing else is looked at.
    stored.defaults[("override", ".m.rule.master")] = DefaultChange(True, None)
    assert outcome(msg("fire!"), ruleset=user_ruleset(stored)) == (".m.rule.master", [])


def test_unchanged_users_share_the_default_ruleset() -> None:
    assert user_ruleset(UserRules()) is DEFAULT_RULESET
    assert user_ruleset(UserRules(defaults={("override", ".m.rule.master"): DefaultChange(True, None)})
                        ) is not DEFAULT_RULESET


def test_historical_actions_are_ignored() -> None:
    rs = compile_ruleset({"override": [{"rule_id": "x", "enabled": True, "conditions": [],
                                        "actions": ["dont_notify", "coalesce"]}]})
    rule = rs.evaluate_one(EventView(msg()), ME)
    assert rule is not None and rule.actions == () and not rule.notify


def test_one_pass_for_many_users_gives_each_their_own_result() -> None:
    users = [f"@u{i}:test.local" for i in range(50)]
    ev = {**msg(**{"m.mentions": {"user_ids": users[:3]}})}
    out = DEFAULT_RULESET.evaluate(EventView(ev), users)
    assert {u for u, r in out.items() if r.highlight} == set(users[:3])
    assert {u for u, r in out.items() if r.rule_id == ".m.rule.message"} == set(users[3:])
    invite = {"type": "m.room.member", "state_key": users[7], "content": {"membership": "invite"}}
    out = DEFAULT_RULESET.evaluate(EventView(invite), users)
    assert out[users[7]].rule_id == ".m.rule.invite_for_me"
    assert {r.rule_id for u, r in out.items() if u != users[7]} == {".m.rule.member_event"}
