"""Each push rule condition kind, from the spec's own examples ("Conditions" in the push module,
appendices "Glob-style matching" and "Dot-separated property paths"), plus the edges around them."""

from __future__ import annotations

import time
from typing import Any

import pytest

from homeserver.push.evaluator import (USER, ContainsDisplayName, EventView, Glob, Never, compile_condition,
                                       contains_words, glob_matches, parse_path)


def holds(cond: dict[str, Any], event: dict[str, Any], **ctx: Any) -> bool:
    c = compile_condition(cond)
    assert not c.user_dependent
    return EventView(event, **ctx).holds(c)


def topic_event(topic: Any) -> dict[str, Any]:
    return {"content": {"topic": topic}, "event_id": "$143273582443PhrSn:example.org",
            "room_id": "!636q39766251:example.com", "sender": "@example:example.org",
            "state_key": "", "type": "m.room.topic"}


def body_event(body: Any) -> dict[str, Any]:
    return {"content": {"body": body}, "event_id": "$143273976499sgjks:example.org",
            "room_id": "!636q39766251:example.com", "sender": "@example:example.org",
            "type": "m.room.message"}


# --- event_match -------------------------------------------------------------------------------

LUNCH = {"kind": "event_match", "key": "content.topic", "pattern": "lunc?*"}


@pytest.mark.parametrize("topic", ["Lunch plans", "LUNCH", "lunch", "lunchtime!"])
def test_event_match_spec_example_matches(topic: str) -> None:
    assert holds(LUNCH, topic_event(topic))


@pytest.mark.parametrize("topic", [" lunch", "lunc", None, 5, ["lunch"], {"x": "lunch"}])
def test_event_match_spec_example_does_not_match(topic: Any) -> None:
    assert not holds(LUNCH, topic_event(topic))


def test_event_match_absent_property_never_matches_even_star() -> None:
    assert not holds({"kind": "event_match", "key": "content.topic", "pattern": "*"},
                     {"type": "m.room.topic", "content": {}})
    assert holds({"kind": "event_match", "key": "content.topic", "pattern": "*"}, topic_event(""))


EXPLE = {"kind": "event_match", "key": "content.body", "pattern": "ex*ple"}


@pytest.mark.parametrize("body", ["An example event.", "exple", "An exciting triple-whammy",
                                  "EXAMPLE", "(example)"])
def test_event_match_body_spec_example_matches(body: str) -> None:
    assert holds(EXPLE, body_event(body))


@pytest.mark.parametrize("body", ["examples", "anexample", "exa", "ple ex", "ex-ples"])
def test_event_match_body_needs_word_boundaries(body: str) -> None:
    assert not holds(EXPLE, body_event(body))


def test_event_match_whole_value_outside_body() -> None:
    # Only content.body matches substrings; any other key matches the whole value.
    ev = {"type": "m.room.message", "content": {"msgtype": "m.notice", "body": "m.notice"}}
    assert holds({"kind": "event_match", "key": "content.body", "pattern": "notice"}, ev)
    assert not holds({"kind": "event_match", "key": "content.msgtype", "pattern": "notice"}, ev)
    assert holds({"kind": "event_match", "key": "content.msgtype", "pattern": "m.notice"}, ev)
    assert holds({"kind": "event_match", "key": "type", "pattern": "m.room.*"}, ev)
    assert not holds({"kind": "event_match", "key": "type", "pattern": "m.room"}, ev)


def test_event_match_no_implicit_state_key() -> None:
    tomb = {"kind": "event_match", "key": "state_key", "pattern": ""}
    assert holds(tomb, {"type": "m.room.tombstone", "state_key": "", "content": {}})
    assert not holds(tomb, {"type": "m.room.tombstone", "content": {}})


def test_globs() -> None:
    cases = [("*", "", True), ("?", "", False), ("?", "é", True), ("a*b*c", "aXbYc", True),
             ("a*b*c", "acb", False), ("*a*", "bab", True), ("a?c", "abc", True),
             ("a?c", "ac", False), ("a**c", "ac", True), ("[ab]", "[ab]", True),
             ("[ab]", "a", False), ("a.c", "abc", False), ("a\\*", "a\\xyz", True),
             ("Straße", "STRASSE", False), ("ÄBC", "äbc", True)]
    for pattern, value, expected in cases:
        assert glob_matches(pattern, value) is expected, (pattern, value)
    assert glob_matches("cake*lie", "the cake is a lie!", words=True)
    assert not glob_matches("cake*lie", "the cake is a lier", words=True)
    assert glob_matches("cake*lie", "the cake is a lier but a lie", words=True)
    assert glob_matches("*", "anything", words=True)
    assert glob_matches("b?d", "a bad day", words=True)
    assert not glob_matches("b?d", "a badday", words=True)


def test_glob_does_not_backtrack_exponentially() -> None:
    g = Glob("*a*a*a*a*a*a*a*a*a*b")
    text = "a" * 20000
    started = time.monotonic()
    assert not g.fullmatch(text)
    assert not g.search_words(text)
    assert time.monotonic() - started < 1.0


# --- dot-separated paths -----------------------------------------------------------------------

def test_paths_escape_dots_and_backslashes() -> None:
    assert parse_path("content.body") == ("content", "body")
    assert parse_path("content.m\\.relates_to") == ("content", "m.relates_to")
    assert parse_path("content.m\\\\foo") == ("content", "m\\foo")
    assert parse_path("content.m\\xfoo") == ("content", "m\\xfoo")
    assert parse_path("content.") == ("content", "")
    ev = {"type": "x", "content": {"m.relates_to": {"rel_type": "m.thread"},
                                   "m": {"relates_to": {"rel_type": "wrong"}}, "m\\foo": "bs"}}
    assert holds({"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type",
                  "value": "m.thread"}, ev)
    assert holds({"kind": "event_property_is", "key": "content.m.relates_to.rel_type",
                  "value": "wrong"}, ev)
    assert holds({"kind": "event_match", "key": "content.m\\\\foo", "pattern": "bs"}, ev)


# --- event_property_is -------------------------------------------------------------------------

CREATE = {"content": {"creator": "@example:example.org", "m.federate": True,
                      "predecessor": {"event_id": "$something:example.org",
                                      "room_id": "!oldroom:example.org"}, "room_version": "1"},
          "event_id": "$143273582443PhrSn:example.org", "room_id": "!636q39766251:example.com",
          "sender": "@example:example.org", "state_key": "", "type": "m.room.create"}
FEDERATE = {"kind": "event_property_is", "key": "content.m\\.federate", "value": True}


def test_event_property_is_spec_example() -> None:
    assert holds(FEDERATE, CREATE)
    for value in ("true", 1):
        ev = {**CREATE, "content": {**CREATE["content"], "m.federate": value}}
        assert not holds(FEDERATE, ev), value


def test_event_property_is_exact_types() -> None:
    ev = {"type": "t", "content": {"n": 1, "z": None, "s": "1", "f": 1.0, "big": 2 ** 60,
                                   "obj": {"a": 1}, "list": [1]}}

    def prop(key: str, value: Any) -> bool:
        return holds({"kind": "event_property_is", "key": f"content.{key}", "value": value}, ev)
    assert prop("n", 1) and not prop("n", True) and not prop("n", "1")
    assert prop("z", None) and not prop("missing", None)
    assert prop("s", "1") and not prop("s", 1)
    assert not prop("f", 1)            # floats are not canonical JSON
    assert not prop("big", 2 ** 60)     # outside the canonical JSON integer range
    assert not prop("obj", None) and not prop("list", 1)
    # A compound value in the rule never matches anything.
    assert isinstance(compile_condition({"kind": "event_property_is", "key": "a", "value": [1]}), Never)


def test_true_and_one_are_different_conditions_in_the_cache() -> None:
    view = EventView({"type": "t", "content": {"v": True}})
    one = compile_condition({"kind": "event_property_is", "key": "content.v", "value": 1})
    true = compile_condition({"kind": "event_property_is", "key": "content.v", "value": True})
    assert view.holds(true) and not view.holds(one)
    assert view.holds(true)


# --- event_property_contains -------------------------------------------------------------------

ALIASES = {"content": {"alias": "#somewhere:localhost",
                       "alt_aliases": ["#somewhere:example.org", "#myroom:example.com"]},
           "event_id": "$143273582443PhrSn:example.org", "origin_server_ts": 1432735824653,
           "room_id": "!jEsUZKDJdhlrceRyVU:example.org", "sender": "@example:example.org",
           "state_key": "", "type": "m.room.canonical_alias", "unsigned": {"age": 1234}}


def test_event_property_contains_spec_example() -> None:
    cond = {"kind": "event_property_contains", "key": "content.alt_aliases",
            "value": "#myroom:example.com"}
    assert holds(cond, ALIASES)
    assert not holds({**cond, "value": ":example.com"}, ALIASES)
    assert not holds({**cond, "key": "content.alias", "value": "#somewhere:localhost"}, ALIASES)


def test_event_property_contains_exact_scalars_only() -> None:
    ev = {"type": "t", "content": {"xs": [1, "a", None, True, {"k": 1}, [2], 1.5]}}

    def contains(value: Any) -> bool:
        return holds({"kind": "event_property_contains", "key": "content.xs", "value": value}, ev)
    assert contains(1) and contains("a") and contains(None) and contains(True)
    assert not contains("1") and not contains(2) and not contains(False)


def test_user_dependent_conditions_narrow_sets() -> None:
    mentions = compile_condition({"kind": "event_property_contains",
                                  "key": "content.m\\.mentions.user_ids", "value": USER})
    assert mentions.user_dependent
    view = EventView({"type": "m.room.message", "content": {
        "m.mentions": {"user_ids": ["@a:hs", "@c:hs", 5]}}})
    assert mentions.matching_users(view, {"@a:hs", "@b:hs"}) == {"@a:hs"}
    target = compile_condition({"kind": "event_match", "key": "state_key", "pattern": USER})
    invite = EventView({"type": "m.room.member", "state_key": "@B:hs", "content": {}})
    assert target.matching_users(invite, {"@a:hs", "@b:hs"}) == {"@b:hs"}  # case-insensitive
    is_me = compile_condition({"kind": "event_property_is", "key": "sender", "value": USER})
    assert is_me.matching_users(EventView({"sender": "@a:hs"}), {"@a:hs", "@b:hs"}) == {"@a:hs"}


# --- contains_display_name ---------------------------------------------------------------------

def test_contains_display_name() -> None:
    cond = compile_condition({"kind": "contains_display_name"})
    assert isinstance(cond, ContainsDisplayName)
    names = {"@a:hs": "Alice", "@b:hs": "Bob Smith", "@c:hs": "c*", "@d:hs": "  ", "@e:hs": "Al"}

    def who(body: Any) -> set[str]:
        view = EventView({"type": "m.room.message", "content": {"body": body}}, display_names=names)
        return cond.matching_users(view, set(names) | {"@noname:hs"})
    assert who("hi alice!") == {"@a:hs"}
    assert who("hello BOB SMITH") == {"@b:hs"}
    assert who("alicemania") == set()
    assert who("c* is literal") == {"@c:hs"}
    assert who("cx") == set()
    assert who(None) == set()
    assert contains_words("hi al, hi", "al") and not contains_words("alice", "al")


# --- room_member_count -------------------------------------------------------------------------

@pytest.mark.parametrize("is_,count,expected", [
    ("2", 2, True), ("2", 3, False), ("==2", 2, True), ("<2", 1, True), ("<2", 2, False),
    (">2", 3, True), (">2", 2, False), (">=2", 2, True), ("<=10", 10, True), ("<=10", 11, False),
])
def test_room_member_count(is_: str, count: int, expected: bool) -> None:
    assert holds({"kind": "room_member_count", "is": is_}, {"type": "t"}, member_count=count) is expected


@pytest.mark.parametrize("is_", ["", "two", "=2", "!=2", " 2", "2.0", "-1", None, 2])
def test_room_member_count_malformed_never_matches(is_: Any) -> None:
    cond: dict[str, Any] = {"kind": "room_member_count"}
    if is_ is not None:
        cond["is"] = is_
    assert isinstance(compile_condition(cond), Never)


# --- sender_notification_permission ------------------------------------------------------------

def test_sender_notification_permission() -> None:
    levels = {"room": 50, "custom": 10}
    cond = {"kind": "sender_notification_permission", "key": "room"}

    def ok(power: float, key: str = "room") -> bool:
        return holds({**cond, "key": key}, {"type": "t"}, sender_power=power,
                     notification_level=lambda k: levels.get(k, 50))
    assert ok(50) and ok(100) and ok(float("inf")) and not ok(49)
    assert ok(10, "custom") and not ok(9, "custom")
    assert isinstance(compile_condition({"kind": "sender_notification_permission"}), Never)


# --- unknown and malformed ---------------------------------------------------------------------

@pytest.mark.parametrize("cond", [
    {"kind": "org.example.unknown"}, {}, "event_match", {"kind": "event_match", "key": "type"},
    {"kind": "event_match", "pattern": "x"}, {"kind": "event_property_is", "key": "type"},
    {"kind": "event_match", "key": 5, "pattern": "x"},
])
def test_unrecognised_conditions_never_match(cond: Any) -> None:
    c = compile_condition(cond)
    assert isinstance(c, Never)
    assert not EventView({"type": "x"}).holds(c)


def test_encrypted_content_is_opaque_except_relations() -> None:
    ev = {"type": "m.room.encrypted", "content": {
        "algorithm": "m.megolm.v1.aes-sha2", "body": "forged", "msgtype": "m.notice",
        "m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}}}
    view = EventView(ev, opaque_content=True)
    assert not view.holds(compile_condition({"kind": "event_match", "key": "content.body",
                                             "pattern": "forged"}))
    assert not view.holds(compile_condition({"kind": "event_match", "key": "content.algorithm",
                                             "pattern": "*"}))
    assert view.holds(compile_condition({"kind": "event_property_is",
                                         "key": "content.m\\.relates_to.rel_type",
                                         "value": "m.replace"}))
    assert view.holds(compile_condition({"kind": "event_match", "key": "type",
                                         "pattern": "m.room.encrypted"}))
