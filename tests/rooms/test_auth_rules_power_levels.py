"""Tests for the power level helpers the auth rules use (homeserver.rooms.power_levels)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest

from crypto.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.rooms import auth_rules
from homeserver.rooms.events import Event
from homeserver.rooms.power_levels import (
    get_named_level,
    get_notification_level,
    get_power_level,
    get_required_level,
    parse_power_level,
    room_creators,
)

ALICE = "@alice:a.test"
BOB = "@bob:b.test"
CAROL = "@carol:c.test"

_counter = itertools.count(1)


def _event(version: str, event_type: str, sender: str, content: dict[str, Any]) -> Event:
    n = next(_counter)
    pdu: dict[str, Any] = {
        "type": event_type, "sender": sender, "content": content, "state_key": "",
        "depth": n, "origin_server_ts": n, "prev_events": [], "auth_events": [],
    }
    rv = KNOWN_ROOM_VERSIONS[version]
    if not (rv.room_id_is_create_event_hash and event_type == "m.room.create"):
        pdu["room_id"] = "!r:a.test"
    if not rv.event_id_is_reference_hash:
        pdu["event_id"] = f"${n}:a.test"
    return Event.from_pdu(pdu, rv)


def _create(version: str, **content: Any) -> Event:
    return _event(version, "m.room.create", ALICE, content)


def _levels(version: str, **content: Any) -> Event:
    return _event(version, "m.room.power_levels", ALICE, content)


@pytest.mark.parametrize("value, expected", [
    (50, 50), (-3, -3), ("50", 50), (" +007 ", 7), ("-10", -10), ("\t100\n", 100),
    ("1.5", None), ("1e3", None), ("", None), ("+-1", None), ("1_000", None), ("٣", None),
    (True, None), (None, None), ([1], None), ({"a": 1}, None),
])
def test_parse_power_level_v1(value: Any, expected: int | None) -> None:
    assert parse_power_level(value, KNOWN_ROOM_VERSIONS["1"]) == expected


def test_parse_power_level_floats_only_v1_to_v5() -> None:
    v5, v6 = KNOWN_ROOM_VERSIONS["5"], KNOWN_ROOM_VERSIONS["6"]
    assert parse_power_level(51146.98, v5) == 51146
    assert parse_power_level(-0.5, v5) == 0
    assert parse_power_level(math.inf, v5) is None
    assert parse_power_level(math.nan, v5) is None
    assert parse_power_level(50.0, v6) is None


def test_parse_power_level_integers_only_from_v10() -> None:
    v9, v10 = KNOWN_ROOM_VERSIONS["9"], KNOWN_ROOM_VERSIONS["10"]
    assert parse_power_level("50", v9) == 50
    assert parse_power_level("50", v10) is None
    assert parse_power_level(50, v10) == 50


def test_room_creators() -> None:
    assert room_creators(_create("1", creator=BOB)) == {BOB}
    assert room_creators(_create("10")) == set()
    assert room_creators(_create("11", creator=BOB, additional_creators=[CAROL])) == {ALICE}
    assert room_creators(_create("12", additional_creators=[BOB, CAROL])) == {ALICE, BOB, CAROL}
    assert room_creators(_create("12")) == {ALICE}


@pytest.mark.parametrize("version", ["1", "11"])
def test_get_power_level_without_power_levels_event(version: str) -> None:
    create = _create(version, creator=ALICE)
    assert get_power_level(ALICE, None, create) == 100
    assert get_power_level(BOB, None, create) == 0
    assert get_power_level(ALICE, None, None) == 0


def test_get_power_level_with_power_levels_event() -> None:
    create = _create("10", creator=ALICE)
    levels = _levels("10", users={BOB: 42}, users_default=7)
    assert get_power_level(BOB, levels, create) == 42
    assert get_power_level(CAROL, levels, create) == 7
    # The creator only gets 100 when there is no power levels event.
    assert get_power_level(ALICE, levels, create) == 7
    assert get_power_level(CAROL, _levels("10", users={}), create) == 0


def test_get_power_level_strings_before_v10() -> None:
    levels = _levels("9", users={BOB: "42"}, users_default=" 3 ")
    assert get_power_level(BOB, levels, None) == 42
    assert get_power_level(CAROL, levels, None) == 3


def test_get_power_level_v12_creators_infinite() -> None:
    create = _create("12", additional_creators=[BOB])
    levels = _levels("12", users={CAROL: 100}, users_default=5)
    for pl in (None, levels):
        assert get_power_level(ALICE, pl, create) == math.inf
        assert get_power_level(BOB, pl, create) == math.inf
    assert get_power_level(CAROL, levels, create) == 100
    assert get_power_level(CAROL, None, create) == 0
    assert get_power_level("@dave:d.test", levels, create) == 5


def test_get_required_level() -> None:
    assert get_required_level("m.room.name", True, None) == 50
    assert get_required_level("m.room.message", False, None) == 0
    levels = _levels("10", events={"m.room.name": 20, "x.msg": 30}, state_default=40,
                     events_default=5)
    assert get_required_level("m.room.name", True, levels) == 20
    assert get_required_level("x.msg", False, levels) == 30
    assert get_required_level("m.room.topic", True, levels) == 40
    assert get_required_level("m.room.message", False, levels) == 5
    assert get_required_level("m.room.topic", True, _levels("10")) == 50
    assert get_required_level("m.room.message", False, _levels("10")) == 0
    assert get_required_level("m.room.topic", True, _levels("1", state_default="12")) == 12


def test_get_named_level_defaults() -> None:
    empty = _levels("10")
    for pl in (None, empty):
        assert get_named_level("invite", pl) == 0
        assert get_named_level("kick", pl) == 50
        assert get_named_level("ban", pl) == 50
        assert get_named_level("redact", pl) == 50
    levels = _levels("10", invite=1, kick=2, ban=3, redact=4)
    assert [get_named_level(n, levels) for n in ("invite", "kick", "ban", "redact")] == [1, 2, 3, 4]


def test_get_notification_level() -> None:
    assert get_notification_level("room", None) == 50
    assert get_notification_level("room", _levels("10", notifications={"room": 20})) == 20
    assert get_notification_level("room", _levels("10", notifications={"other": 20})) == 50


def test_helpers_reexported_from_auth_rules() -> None:
    for name in ("get_power_level", "get_required_level", "get_named_level",
                 "get_notification_level", "room_creators"):
        assert getattr(auth_rules, name) is globals()[name]
