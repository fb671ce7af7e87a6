"""Room version definitions (spec "Room Versions", v1 to v12) and their differing flags."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

__all__ = [
    "EventIdFormat",
    "StateResAlgorithm",
    "RoomVersion",
    "RoomVersions",
    "UnknownRoomVersionError",
    "KNOWN_ROOM_VERSIONS",
    "DEFAULT_ROOM_VERSION",
    "get_room_version",
]


class EventIdFormat(enum.Enum):
    """How event IDs are formed in a room version."""

    # v1, v2: "$opaque_id:domain", chosen by the originating server.
    SERVER_GENERATED = "v1"
    # v3: "$" + unpadded standard base64 of the reference hash.
    REFERENCE_HASH_BASE64 = "v3"
    # v4+: "$" + unpadded URL-safe base64 of the reference hash.
    REFERENCE_HASH_URLSAFE = "v4"


class StateResAlgorithm(enum.Enum):
    """Which state resolution algorithm a room version uses."""

    V1 = "v1"
    V2 = "v2"
    # v12 (MSC4297): v2 starting from an empty state map and with the conflicted state subgraph.
    V2_1 = "v2.1"


@dataclass(frozen=True)
class RoomVersion:
    """The algorithm choices that distinguish one room version from another."""

    identifier: str
    event_id_format: EventIdFormat
    state_res: StateResAlgorithm
    # v5+: respect valid_until_ts of signing keys when checking event signatures.
    enforce_key_validity: bool
    # v1-v5: m.room.aliases has its own auth rule and keeps "aliases" through redaction.
    special_case_aliases_auth: bool
    # v6+: events must be strictly canonical JSON (no floats, ints within +/-(2**53-1)).
    strict_canonical_json: bool
    # v6+: the "notifications" map of m.room.power_levels is checked by the auth rules.
    limit_notifications_power_levels: bool
    # v7+: "knock" join rule and membership (MSC2403).
    knock_join_rule: bool
    # v8+: "restricted" join rule (MSC3083); m.room.join_rules keeps "allow" through redaction.
    restricted_join_rule: bool
    # v9+: m.room.member keeps "join_authorised_via_users_server" through redaction (MSC3375).
    restricted_join_rule_fix: bool
    # v10+: "knock_restricted" join rule (MSC3787).
    knock_restricted_join_rule: bool
    # v10+: power level values must be integers, not strings (MSC3667).
    enforce_int_power_levels: bool
    # v11+: m.room.create has no "creator"; the sender is the creator (MSC2175).
    implicit_room_creator: bool
    # v11+: m.room.redaction carries "redacts" inside content (MSC2174).
    redacts_in_content: bool
    # v11+: updated redaction rules (MSC2176): create keeps all content, power levels keep
    # "invite", redaction keeps content "redacts", top-level "membership"/"prev_state" dropped.
    updated_redaction_rules: bool
    # v11+: m.room.member keeps content.third_party_invite.signed through redaction (MSC3821).
    keep_third_party_invite_signed: bool
    # v11+: the top-level "origin" key is no longer kept by redaction (MSC3989).
    redact_origin: bool
    # v12+: room ID is "!" + URL-safe reference hash of the create event, which itself
    # carries no room_id (MSC4291).
    room_id_is_create_event_hash: bool
    # v12+: the create event's sender and content.additional_creators have infinite power (MSC4289).
    privileged_room_creators: bool

    @property
    def event_id_is_reference_hash(self) -> bool:
        """True if event IDs are derived from the event's reference hash (v3+)."""
        return self.event_id_format is not EventIdFormat.SERVER_GENERATED

    @property
    def event_id_domain_signature_required(self) -> bool:
        """True if the server named in the event ID must also sign the event (v1, v2)."""
        return self.event_id_format is EventIdFormat.SERVER_GENERATED


class UnknownRoomVersionError(ValueError):
    """Raised when a room version identifier is not one this server knows."""


class RoomVersions:
    """Namespace holding one RoomVersion instance per known version."""

    V1 = RoomVersion(
        identifier="1",
        event_id_format=EventIdFormat.SERVER_GENERATED,
        state_res=StateResAlgorithm.V1,
        enforce_key_validity=False,
        special_case_aliases_auth=True,
        strict_canonical_json=False,
        limit_notifications_power_levels=False,
        knock_join_rule=False,
        restricted_join_rule=False,
        restricted_join_rule_fix=False,
        knock_restricted_join_rule=False,
        enforce_int_power_levels=False,
        implicit_room_creator=False,
        redacts_in_content=False,
        updated_redaction_rules=False,
        keep_third_party_invite_signed=False,
        redact_origin=False,
        room_id_is_create_event_hash=False,
        privileged_room_creators=False,
    )
    # v2: new state resolution algorithm.
    V2 = replace(V1, identifier="2", state_res=StateResAlgorithm.V2)
    # v3: event IDs become the reference hash (standard base64).
    V3 = replace(V2, identifier="3", event_id_format=EventIdFormat.REFERENCE_HASH_BASE64)
    # v4: URL-safe base64 event IDs.
    V4 = replace(V3, identifier="4", event_id_format=EventIdFormat.REFERENCE_HASH_URLSAFE)
    # v5: signing key validity periods are enforced.
    V5 = replace(V4, identifier="5", enforce_key_validity=True)
    # v6: aliases special case removed, strict canonical JSON, notifications power levels.
    V6 = replace(
        V5,
        identifier="6",
        special_case_aliases_auth=False,
        strict_canonical_json=True,
        limit_notifications_power_levels=True,
    )
    # v7: knocking.
    V7 = replace(V6, identifier="7", knock_join_rule=True)
    # v8: restricted join rule.
    V8 = replace(V7, identifier="8", restricted_join_rule=True)
    # v9: join_authorised_via_users_server survives redaction.
    V9 = replace(V8, identifier="9", restricted_join_rule_fix=True)
    # v10: knock_restricted and integer-only power levels.
    V10 = replace(
        V9, identifier="10", knock_restricted_join_rule=True, enforce_int_power_levels=True
    )
    # v11: redaction and event format clean-ups.
    V11 = replace(
        V10,
        identifier="11",
        implicit_room_creator=True,
        redacts_in_content=True,
        updated_redaction_rules=True,
        keep_third_party_invite_signed=True,
        redact_origin=True,
    )
    # v12: hashed room IDs, privileged creators, state resolution tweaks.
    V12 = replace(
        V11,
        identifier="12",
        state_res=StateResAlgorithm.V2_1,
        room_id_is_create_event_hash=True,
        privileged_room_creators=True,
    )


KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {
    v.identifier: v
    for v in (
        RoomVersions.V1,
        RoomVersions.V2,
        RoomVersions.V3,
        RoomVersions.V4,
        RoomVersions.V5,
        RoomVersions.V6,
        RoomVersions.V7,
        RoomVersions.V8,
        RoomVersions.V9,
        RoomVersions.V10,
        RoomVersions.V11,
        RoomVersions.V12,
    )
}

DEFAULT_ROOM_VERSION = "12"


def get_room_version(room_version: RoomVersion | str) -> RoomVersion:
    """Return the RoomVersion for an identifier (or pass a RoomVersion through)."""
    if isinstance(room_version, RoomVersion):
        return room_version
    try:
        return KNOWN_ROOM_VERSIONS[room_version]
    except (KeyError, TypeError):
        raise UnknownRoomVersionError(f"unknown room version {room_version!r}") from None
