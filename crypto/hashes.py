"""Content hashes, reference hashes, event IDs and (v12) room IDs of events."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from .base64 import Base64DecodeError, decode_base64, encode_base64, encode_urlsafe_base64
from .canonical_json import encode_canonical_json
from .redaction import redact_event
from .room_versions import EventIdFormat, RoomVersion, RoomVersions, get_room_version

__all__ = [
    "compute_content_hash",
    "check_content_hash",
    "compute_reference_hash",
    "compute_event_id",
    "room_id_from_create_event",
]

_CONTENT_HASH_EXCLUDED = frozenset({"unsigned", "signatures", "hashes"})
_REFERENCE_HASH_EXCLUDED = ("signatures", "unsigned", "age_ts")


def compute_content_hash(event_dict: Mapping[str, Any], *, strict: bool = True) -> str:
    """Return the unpadded base64 SHA-256 content hash (ignoring unsigned, signatures, hashes)."""
    stripped = {k: v for k, v in event_dict.items() if k not in _CONTENT_HASH_EXCLUDED}
    return encode_base64(hashlib.sha256(encode_canonical_json(stripped, strict=strict)).digest())


def check_content_hash(event_dict: Mapping[str, Any], *, strict: bool = True) -> bool:
    """Return True if event_dict["hashes"]["sha256"] matches the event's content hash."""
    hashes = event_dict.get("hashes")
    if not isinstance(hashes, Mapping):
        return False
    claimed = hashes.get("sha256")
    if not isinstance(claimed, str):
        return False
    try:
        claimed_bytes = decode_base64(claimed)
    except Base64DecodeError:
        return False
    expected = decode_base64(compute_content_hash(event_dict, strict=strict))
    return claimed_bytes == expected


def compute_reference_hash(event_dict: Mapping[str, Any], room_version: RoomVersion | str) -> bytes:
    """Return the raw SHA-256 reference hash: redact, drop signatures/unsigned/age_ts, hash."""
    rv = get_room_version(room_version)
    redacted = redact_event(event_dict, rv)
    for key in _REFERENCE_HASH_EXCLUDED:
        redacted.pop(key, None)
    return hashlib.sha256(encode_canonical_json(redacted, strict=rv.strict_canonical_json)).digest()


def compute_event_id(event_dict: Mapping[str, Any], room_version: RoomVersion | str) -> str:
    """Return the event ID ("$" + reference hash) for room versions 3 and later."""
    rv = get_room_version(room_version)
    if rv.event_id_format is EventIdFormat.SERVER_GENERATED:
        raise ValueError(
            f"room version {rv.identifier} uses server-generated event IDs, not reference hashes"
        )
    digest = compute_reference_hash(event_dict, rv)
    if rv.event_id_format is EventIdFormat.REFERENCE_HASH_BASE64:
        return "$" + encode_base64(digest)
    return "$" + encode_urlsafe_base64(digest)


def room_id_from_create_event(
    create_event: Mapping[str, Any], room_version: RoomVersion | str = RoomVersions.V12
) -> str:
    """Return the v12+ room ID: "!" + URL-safe base64 reference hash of the m.room.create event."""
    rv = get_room_version(room_version)
    if not rv.room_id_is_create_event_hash:
        raise ValueError(
            f"room version {rv.identifier} does not derive room IDs from the create event"
        )
    if create_event.get("type") != "m.room.create" or create_event.get("state_key") != "":
        raise ValueError("not an m.room.create event")
    if "room_id" in create_event:
        raise ValueError("an m.room.create event in this room version must not have a room_id")
    return "!" + compute_event_id(create_event, rv)[1:]
