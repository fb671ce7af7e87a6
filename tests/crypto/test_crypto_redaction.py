"""Tests for crypto.redaction: the per-room-version redaction algorithm."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from crypto.redaction import allowed_content_keys, allowed_top_level_keys, redact_event

ALL = [str(n) for n in range(1, 13)]

# The lists below are transcribed from the spec's redaction fragments
# (content/rooms/fragments/v1-, v6-, v9-, v11-redactions.md and rooms/v8.md).
_OLD_TOP = {
    "event_id", "type", "room_id", "sender", "state_key", "content", "hashes",
    "signatures", "depth", "prev_events", "prev_state", "auth_events", "origin",
    "origin_server_ts", "membership",
}
_V11_TOP = {
    "event_id", "type", "room_id", "sender", "state_key", "content", "hashes",
    "signatures", "depth", "prev_events", "auth_events", "origin_server_ts",
}
_PL = {"ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"}
_V1_CONTENT: dict[str, set[str] | None] = {
    "m.room.member": {"membership"},
    "m.room.create": {"creator"},
    "m.room.join_rules": {"join_rule"},
    "m.room.power_levels": _PL,
    "m.room.aliases": {"aliases"},
    "m.room.history_visibility": {"history_visibility"},
}
_V6_CONTENT = {k: v for k, v in _V1_CONTENT.items() if k != "m.room.aliases"}
_V8_CONTENT = {**_V6_CONTENT, "m.room.join_rules": {"join_rule", "allow"}}
_V9_CONTENT = {**_V8_CONTENT, "m.room.member": {"membership", "join_authorised_via_users_server"}}
_V11_CONTENT = {
    **_V9_CONTENT,
    "m.room.create": None,  # all keys
    "m.room.power_levels": _PL | {"invite"},
    "m.room.redaction": {"redacts"},
}
SPEC_RULES: dict[str, tuple[set[str], dict[str, set[str] | None]]] = {
    **{v: (_OLD_TOP, _V1_CONTENT) for v in ("1", "2", "3", "4", "5")},
    **{v: (_OLD_TOP, _V6_CONTENT) for v in ("6", "7")},
    "8": (_OLD_TOP, _V8_CONTENT),
    **{v: (_OLD_TOP, _V9_CONTENT) for v in ("9", "10")},
    **{v: (_V11_TOP, _V11_CONTENT) for v in ("11", "12")},
}

EVENT_TYPES = [
    "m.room.member", "m.room.create", "m.room.join_rules", "m.room.power_levels",
    "m.room.aliases", "m.room.history_visibility", "m.room.redaction", "m.room.message",
    "m.room.topic", "m.room.name",
]
EVERY_CONTENT_KEY = {
    "membership", "join_authorised_via_users_server", "creator", "room_version",
    "join_rule", "allow", "ban", "events", "events_default", "invite", "kick", "redact",
    "state_default", "users", "users_default", "notifications", "aliases",
    "history_visibility", "redacts", "body", "topic", "name", "displayname",
}
EVERY_TOP_LEVEL_KEY = _OLD_TOP | {"unsigned", "redacts", "age_ts", "age", "user_id", "custom"}


def _event(event_type: str, **content: Any) -> dict[str, Any]:
    return {
        "event_id": "$ev:example.org",
        "type": event_type,
        "room_id": "!room:example.org",
        "sender": "@alice:example.org",
        "state_key": "",
        "content": content,
        "hashes": {"sha256": "abc"},
        "signatures": {"example.org": {"ed25519:1": "sig"}},
        "depth": 5,
        "prev_events": ["$prev"],
        "auth_events": ["$auth"],
        "origin_server_ts": 1234,
        "origin": "example.org",
        "membership": "join",
        "prev_state": [],
        "unsigned": {"age": 5},
    }


@pytest.mark.parametrize("version", ALL)
def test_top_level_keys_match_spec(version: str) -> None:
    assert allowed_top_level_keys(version) == SPEC_RULES[version][0]
    event = {key: f"value-{key}" for key in EVERY_TOP_LEVEL_KEY}
    event["type"] = "m.room.message"
    event["content"] = {"body": "x"}
    redacted = redact_event(event, version)
    assert set(redacted) == SPEC_RULES[version][0]


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_content_keys_match_spec(version: str, event_type: str) -> None:
    expected = SPEC_RULES[version][1].get(event_type, set())
    content = {key: f"v-{key}" for key in EVERY_CONTENT_KEY}
    redacted = redact_event({"type": event_type, "content": content}, version)
    if expected is None:
        assert redacted["content"] == content
        assert allowed_content_keys(event_type, version) is None
    else:
        assert set(redacted["content"]) == expected
        assert allowed_content_keys(event_type, version) == expected


# --- One test per rule that differs between room versions. ---


@pytest.mark.parametrize("version", ALL)
def test_origin_kept_until_v11(version: str) -> None:
    redacted = redact_event(_event("m.room.message", body="hi"), version)
    assert ("origin" in redacted) == (int(version) < 11)


@pytest.mark.parametrize("version", ALL)
def test_top_level_membership_and_prev_state_kept_until_v11(version: str) -> None:
    redacted = redact_event(_event("m.room.member", membership="join"), version)
    kept = int(version) < 11
    assert ("membership" in redacted) == kept
    assert ("prev_state" in redacted) == kept
    # The content membership is always kept.
    assert redacted["content"] == {"membership": "join"}


@pytest.mark.parametrize("version", ALL)
def test_aliases_content_kept_only_v1_to_v5(version: str) -> None:
    redacted = redact_event(_event("m.room.aliases", aliases=["#a:example.org"]), version)
    expected = {"aliases": ["#a:example.org"]} if int(version) <= 5 else {}
    assert redacted["content"] == expected


@pytest.mark.parametrize("version", ALL)
def test_join_rules_allow_kept_from_v8(version: str) -> None:
    allow = [{"type": "m.room_membership", "room_id": "!space:example.org"}]
    redacted = redact_event(
        _event("m.room.join_rules", join_rule="restricted", allow=allow, extra=1), version
    )
    expected: dict[str, Any] = {"join_rule": "restricted"}
    if int(version) >= 8:
        expected["allow"] = allow
    assert redacted["content"] == expected


@pytest.mark.parametrize("version", ALL)
def test_join_authorised_via_users_server_kept_from_v9(version: str) -> None:
    event = _event(
        "m.room.member",
        membership="join",
        join_authorised_via_users_server="@admin:example.org",
        displayname="Alice",
    )
    redacted = redact_event(event, version)
    expected = {"membership": "join"}
    if int(version) >= 9:
        expected["join_authorised_via_users_server"] = "@admin:example.org"
    assert redacted["content"] == expected


@pytest.mark.parametrize("version", ALL)
def test_create_keeps_all_content_from_v11(version: str) -> None:
    content = {
        "creator": "@alice:example.org",
        "room_version": version,
        "m.federate": False,
        "predecessor": {"room_id": "!old:example.org"},
        "additional_creators": ["@bob:example.org"],
    }
    redacted = redact_event(_event("m.room.create", **content), version)
    if int(version) >= 11:
        assert redacted["content"] == content
    else:
        assert redacted["content"] == {"creator": "@alice:example.org"}


@pytest.mark.parametrize("version", ALL)
def test_power_levels_invite_kept_from_v11(version: str) -> None:
    content = {
        "ban": 50, "events": {"m.room.name": 50}, "events_default": 0, "invite": 0,
        "kick": 50, "redact": 50, "state_default": 50, "users": {"@a:b": 100},
        "users_default": 0, "notifications": {"room": 50},
    }
    redacted = redact_event(_event("m.room.power_levels", **content), version)
    expected = {k: v for k, v in content.items() if k not in ("invite", "notifications")}
    if int(version) >= 11:
        expected["invite"] = 0
    # "notifications" is never protected from redaction.
    assert redacted["content"] == expected


@pytest.mark.parametrize("version", ALL)
def test_redaction_redacts_key(version: str) -> None:
    event = _event("m.room.redaction", redacts="$target", reason="spam")
    del event["state_key"]
    event["redacts"] = "$target"
    redacted = redact_event(event, version)
    # The top-level "redacts" is never protected; content "redacts" is from v11.
    assert "redacts" not in redacted
    assert redacted["content"] == ({"redacts": "$target"} if int(version) >= 11 else {})


@pytest.mark.parametrize("version", ALL)
def test_third_party_invite_signed_kept_from_v11(version: str) -> None:
    signed = {"mxid": "@bob:example.org", "token": "tok", "signatures": {"id.example": {"ed25519:0": "s"}}}
    event = _event(
        "m.room.member",
        membership="invite",
        third_party_invite={"display_name": "bob@example.com", "signed": signed},
    )
    redacted = redact_event(event, version)
    expected: dict[str, Any] = {"membership": "invite"}
    if int(version) >= 11:
        expected["third_party_invite"] = {"signed": signed}
    assert redacted["content"] == expected


def test_third_party_invite_without_signed_v11() -> None:
    event = _event("m.room.member", membership="invite", third_party_invite={"display_name": "x"})
    assert redact_event(event, "11")["content"] == {"membership": "invite", "third_party_invite": {}}
    event = _event("m.room.member", membership="invite", third_party_invite="not an object")
    assert redact_event(event, "11")["content"] == {"membership": "invite"}


# --- Rules common to every version. ---


@pytest.mark.parametrize("version", ALL)
def test_history_visibility_kept(version: str) -> None:
    redacted = redact_event(
        _event("m.room.history_visibility", history_visibility="shared", x=1), version
    )
    assert redacted["content"] == {"history_visibility": "shared"}


@pytest.mark.parametrize("version", ALL)
def test_other_event_content_is_emptied(version: str) -> None:
    redacted = redact_event(_event("m.room.message", body="secret", msgtype="m.text"), version)
    assert redacted["content"] == {}
    assert "unsigned" not in redacted


@pytest.mark.parametrize("version", ALL)
def test_redact_does_not_mutate_input(version: str) -> None:
    event = _event("m.room.power_levels", users={"@a:b": 100}, topic="x")
    original = copy.deepcopy(event)
    redacted = redact_event(event, version)
    redacted["content"]["users"]["@c:d"] = 1
    redacted["signatures"]["x"] = {}
    assert event == original


@pytest.mark.parametrize("version", ALL)
def test_redaction_is_idempotent(version: str) -> None:
    event = _event("m.room.member", membership="join", displayname="A",
                   join_authorised_via_users_server="@x:y")
    once = redact_event(event, version)
    assert redact_event(once, version) == once


def test_malformed_content_becomes_empty() -> None:
    event = _event("m.room.member")
    event["content"] = ["not", "an", "object"]
    assert redact_event(event, "10")["content"] == {}
