"""Hashing and signing whole events, and checking event signatures (spec "Signing Events")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .hashes import compute_content_hash
from .keys import SigningKey, VerifyKey
from .redaction import redact_event
from .room_versions import RoomVersion, get_room_version
from .signing import sign_json, verify_json

__all__ = ["hash_and_sign_event", "sign_event", "verify_event_signature"]


def sign_event(
    event_dict: dict[str, Any],
    server_name: str,
    signing_key: SigningKey,
    room_version: RoomVersion | str,
) -> dict[str, Any]:
    """Sign the redacted form of event_dict and merge the signature into it in place."""
    rv = get_room_version(room_version)
    redacted = redact_event(event_dict, rv)
    sign_json(redacted, server_name, signing_key, strict=rv.strict_canonical_json)
    event_dict["signatures"] = redacted["signatures"]
    return event_dict


def hash_and_sign_event(
    event_dict: dict[str, Any],
    server_name: str,
    signing_key: SigningKey,
    room_version: RoomVersion | str,
) -> dict[str, Any]:
    """Add hashes.sha256, then sign the redacted event; mutates and returns event_dict."""
    rv = get_room_version(room_version)
    content_hash = compute_content_hash(event_dict, strict=rv.strict_canonical_json)
    hashes = event_dict.get("hashes")
    hashes = dict(hashes) if isinstance(hashes, Mapping) else {}
    hashes["sha256"] = content_hash
    event_dict["hashes"] = hashes
    return sign_event(event_dict, server_name, signing_key, rv)


def verify_event_signature(
    event_dict: Mapping[str, Any],
    server_name: str,
    verify_key: VerifyKey,
    room_version: RoomVersion | str,
) -> None:
    """Raise SignatureError unless the redacted event is validly signed by server_name's key."""
    rv = get_room_version(room_version)
    redacted = redact_event(event_dict, rv)
    verify_json(redacted, server_name, verify_key, strict=rv.strict_canonical_json)
