"""The event redaction algorithm for each room version (spec rooms/vN "Redactions")."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from .room_versions import RoomVersion, get_room_version

__all__ = ["redact_event", "allowed_top_level_keys", "allowed_content_keys"]

# Top-level keys kept by every room version.
_BASE_TOP_LEVEL_KEYS = frozenset(
    {
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "auth_events",
        "origin_server_ts",
    }
)

_POWER_LEVELS_KEYS = frozenset(
    {"ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"}
)


def allowed_top_level_keys(room_version: RoomVersion | str) -> frozenset[str]:
    """Return the top-level event keys that survive redaction in this room version."""
    rv = get_room_version(room_version)
    keys = set(_BASE_TOP_LEVEL_KEYS)
    if not rv.updated_redaction_rules:
        keys |= {"prev_state", "membership"}
    if not rv.redact_origin:
        keys.add("origin")
    return frozenset(keys)


def allowed_content_keys(event_type: str, room_version: RoomVersion | str) -> frozenset[str] | None:
    """Return the content keys kept for event_type, or None if all content is kept."""
    rv = get_room_version(room_version)
    if event_type == "m.room.member":
        keys = {"membership"}
        if rv.restricted_join_rule_fix:
            keys.add("join_authorised_via_users_server")
        # third_party_invite.signed (v11+) is handled separately as it is a nested key.
        return frozenset(keys)
    if event_type == "m.room.create":
        return None if rv.updated_redaction_rules else frozenset({"creator"})
    if event_type == "m.room.join_rules":
        return frozenset({"join_rule", "allow"} if rv.restricted_join_rule else {"join_rule"})
    if event_type == "m.room.power_levels":
        if rv.updated_redaction_rules:
            return _POWER_LEVELS_KEYS | {"invite"}
        return _POWER_LEVELS_KEYS
    if event_type == "m.room.aliases" and rv.special_case_aliases_auth:
        return frozenset({"aliases"})
    if event_type == "m.room.history_visibility":
        return frozenset({"history_visibility"})
    if event_type == "m.room.redaction" and rv.updated_redaction_rules:
        return frozenset({"redacts"})
    return frozenset()


def _redact_content(event_type: Any, content: Any, rv: RoomVersion) -> dict[str, Any]:
    """Return the redacted copy of an event's content."""
    if not isinstance(content, Mapping):
        return {}
    if not isinstance(event_type, str):
        return {}
    allowed = allowed_content_keys(event_type, rv)
    if allowed is None:
        return copy.deepcopy(dict(content))
    new_content = {k: copy.deepcopy(v) for k, v in content.items() if k in allowed}
    if event_type == "m.room.member" and rv.keep_third_party_invite_signed:
        third_party_invite = content.get("third_party_invite")
        if isinstance(third_party_invite, Mapping):
            kept: dict[str, Any] = {}
            if "signed" in third_party_invite:
                kept["signed"] = copy.deepcopy(third_party_invite["signed"])
            new_content["third_party_invite"] = kept
    return new_content


def redact_event(event_dict: Mapping[str, Any], room_version: RoomVersion | str) -> dict[str, Any]:
    """Return a new dict holding the redacted form of event_dict for room_version."""
    rv = get_room_version(room_version)
    top_level = allowed_top_level_keys(rv)
    redacted = {k: copy.deepcopy(v) for k, v in event_dict.items() if k in top_level}
    redacted["content"] = _redact_content(event_dict.get("type"), event_dict.get("content"), rv)
    return redacted
