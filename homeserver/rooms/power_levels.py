"""Power levels of a room: value parsing per room version, defaults, and the room creators."""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

from crypto.room_versions import RoomVersion
from homeserver.rooms.events import Event

__all__ = [
    "LEVEL_KEYS",
    "NAMED_LEVEL_DEFAULTS",
    "parse_power_level",
    "room_creators",
    "get_power_level",
    "get_required_level",
    "get_named_level",
    "get_notification_level",
]

# The top-level integer properties of m.room.power_levels content that the auth rules compare.
LEVEL_KEYS = (
    "users_default", "events_default", "state_default", "ban", "redact", "kick", "invite",
)

# Server-server spec "Definitions": the invite level defaults to 0; kick, ban, redact to 50.
NAMED_LEVEL_DEFAULTS: Mapping[str, int] = {"invite": 0, "kick": 50, "ban": 50, "redact": 50}

# m.room.power_levels schema: state_default 50 and events_default 0, with or without the event.
STATE_DEFAULT = 50
EVENTS_DEFAULT = 0
USERS_DEFAULT = 0
# v1-v11: with no m.room.power_levels event the creator has 100 (m.room.power_levels schema).
CREATOR_DEFAULT = 100
# notifications.room defaults to 50 (m.room.power_levels schema).
NOTIFICATION_DEFAULTS: Mapping[str, int] = {"room": 50}

# Rooms v1-v9 "m.room.power_levels events accept values as strings": optional sign, base-10
# digits (leading zeroes allowed), surrounded by any whitespace.
_STRINGY_INT = re.compile(r"[+-]?[0-9]+")


def parse_power_level(value: Any, room_version: RoomVersion) -> int | None:
    """Return the integer a power level value stands for in this room version, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and not room_version.enforce_int_power_levels:
        text = value.strip()
        return int(text) if _STRINGY_INT.fullmatch(text) else None
    if isinstance(value, float) and not room_version.strict_canonical_json:
        # Rooms v1-v5 "accept values as floats": truncated at the decimal point;
        # infinities and NaN (values outside a double's range) are invalid.
        return int(value) if math.isfinite(value) else None
    return None


def room_creators(create_event: Event) -> frozenset[str]:
    """The users the room version considers the room's creators."""
    rv = create_event.room_version
    if rv.privileged_room_creators:
        # v12 (MSC4289): the sender plus content.additional_creators.
        extra = create_event.content.get("additional_creators")
        extra_ids = [u for u in extra if isinstance(u, str)] if isinstance(extra, list) else []
        return frozenset([create_event.sender, *extra_ids])
    if rv.implicit_room_creator:
        return frozenset([create_event.sender])  # v11 (MSC2175)
    creator = create_event.content.get("creator")
    return frozenset([creator]) if isinstance(creator, str) else frozenset()


def get_power_level(
    user_id: str, power_levels_event: Event | None, create_event: Event | None
) -> int | float:
    """A user's power level; ``math.inf`` for the room creators in rooms v12 and later.

    Without ``create_event`` nobody is treated as a creator (no 100 default, no infinity).
    """
    if create_event is not None and user_id in room_creators(create_event):
        if create_event.room_version.privileged_room_creators:
            return math.inf
        if power_levels_event is None:
            return CREATOR_DEFAULT
    if power_levels_event is None:
        return USERS_DEFAULT
    rv = power_levels_event.room_version
    content = power_levels_event.content
    users = content.get("users")
    if isinstance(users, Mapping) and user_id in users:
        level = parse_power_level(users[user_id], rv)
        if level is not None:
            return level
    level = parse_power_level(content.get("users_default"), rv)
    return USERS_DEFAULT if level is None else level


def get_required_level(event_type: str, is_state: bool, power_levels_event: Event | None) -> int:
    """The "required power level" to send an event of this type (server-server "Definitions")."""
    if power_levels_event is None:
        return STATE_DEFAULT if is_state else EVENTS_DEFAULT
    rv = power_levels_event.room_version
    content = power_levels_event.content
    events = content.get("events")
    if isinstance(events, Mapping) and event_type in events:
        level = parse_power_level(events[event_type], rv)
        if level is not None:
            return level
    if is_state:
        level = parse_power_level(content.get("state_default"), rv)
        return STATE_DEFAULT if level is None else level
    level = parse_power_level(content.get("events_default"), rv)
    return EVENTS_DEFAULT if level is None else level


def get_named_level(name: str, power_levels_event: Event | None) -> int:
    """The invite, kick, ban or redact level, with the spec's defaults (0, 50, 50, 50)."""
    default = NAMED_LEVEL_DEFAULTS[name]
    if power_levels_event is None:
        return default
    level = parse_power_level(power_levels_event.content.get(name), power_levels_event.room_version)
    return default if level is None else level


def get_notification_level(key: str, power_levels_event: Event | None) -> int:
    """The level needed to trigger a notification kind such as "room" (@room), default 50."""
    default = NOTIFICATION_DEFAULTS.get(key, 50)
    if power_levels_event is None:
        return default
    notifications = power_levels_event.content.get("notifications")
    if not isinstance(notifications, Mapping):
        return default
    level = parse_power_level(notifications.get(key), power_levels_event.room_version)
    return default if level is None else level
