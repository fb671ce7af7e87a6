"""Tests for crypto.room_versions."""

from __future__ import annotations

import dataclasses

import pytest

from crypto.room_versions import (
    DEFAULT_ROOM_VERSION,
    KNOWN_ROOM_VERSIONS,
    EventIdFormat,
    RoomVersion,
    RoomVersions,
    StateResAlgorithm,
    UnknownRoomVersionError,
    get_room_version,
)

ALL = [str(n) for n in range(1, 13)]


def _from(first: int) -> set[str]:
    return {str(n) for n in range(first, 13)}


def _upto(last: int) -> set[str]:
    return {str(n) for n in range(1, last + 1)}


# For each boolean flag, the room versions in which it is true (from content/rooms/vN.md).
FLAG_TABLE = {
    "enforce_key_validity": _from(5),
    "special_case_aliases_auth": _upto(5),
    "strict_canonical_json": _from(6),
    "limit_notifications_power_levels": _from(6),
    "knock_join_rule": _from(7),
    "restricted_join_rule": _from(8),
    "restricted_join_rule_fix": _from(9),
    "knock_restricted_join_rule": _from(10),
    "enforce_int_power_levels": _from(10),
    "implicit_room_creator": _from(11),
    "redacts_in_content": _from(11),
    "updated_redaction_rules": _from(11),
    "keep_third_party_invite_signed": _from(11),
    "redact_origin": _from(11),
    "room_id_is_create_event_hash": _from(12),
    "privileged_room_creators": _from(12),
}


def test_known_versions_are_1_to_12() -> None:
    assert isinstance(KNOWN_ROOM_VERSIONS, dict)
    assert list(KNOWN_ROOM_VERSIONS) == ALL
    for key, version in KNOWN_ROOM_VERSIONS.items():
        assert version.identifier == key


def test_default_room_version() -> None:
    assert DEFAULT_ROOM_VERSION == "12"
    assert DEFAULT_ROOM_VERSION in KNOWN_ROOM_VERSIONS


def test_flag_table_covers_every_boolean_field() -> None:
    bool_fields = {f.name for f in dataclasses.fields(RoomVersion) if f.type in ("bool", bool)}
    assert bool_fields == set(FLAG_TABLE)


@pytest.mark.parametrize("flag", sorted(FLAG_TABLE))
def test_flag_per_version(flag: str) -> None:
    enabled = {v for v, rv in KNOWN_ROOM_VERSIONS.items() if getattr(rv, flag)}
    assert enabled == FLAG_TABLE[flag]


def test_event_id_formats() -> None:
    formats = {v: rv.event_id_format for v, rv in KNOWN_ROOM_VERSIONS.items()}
    assert formats == {
        **{v: EventIdFormat.SERVER_GENERATED for v in ("1", "2")},
        "3": EventIdFormat.REFERENCE_HASH_BASE64,
        **{v: EventIdFormat.REFERENCE_HASH_URLSAFE for v in _from(4)},
    }
    assert not RoomVersions.V2.event_id_is_reference_hash
    assert RoomVersions.V3.event_id_is_reference_hash
    assert RoomVersions.V1.event_id_domain_signature_required
    assert not RoomVersions.V3.event_id_domain_signature_required


def test_state_resolution_algorithms() -> None:
    algos = {v: rv.state_res for v, rv in KNOWN_ROOM_VERSIONS.items()}
    assert algos["1"] is StateResAlgorithm.V1
    assert all(algos[v] is StateResAlgorithm.V2 for v in map(str, range(2, 12)))
    assert algos["12"] is StateResAlgorithm.V2_1


def test_room_version_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        RoomVersions.V1.strict_canonical_json = True  # type: ignore[misc]


def test_get_room_version() -> None:
    assert get_room_version("10") is RoomVersions.V10
    assert get_room_version(RoomVersions.V4) is RoomVersions.V4
    with pytest.raises(UnknownRoomVersionError):
        get_room_version("13")
    with pytest.raises(UnknownRoomVersionError):
        get_room_version("org.example.custom")
