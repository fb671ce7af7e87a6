"""Building local PDUs: fields of the room version, hashes, our server's signature, the event id."""

from __future__ import annotations

import secrets
from typing import Any, Mapping

from crypto.canonical_json import CanonicalJsonError, encode_canonical_json
from crypto.event_signing import hash_and_sign_event
from crypto.keys import SigningKey
from crypto.room_versions import RoomVersion
from homeserver.rooms.events import Event

MAX_PDU_BYTES = 65_536


class EventTooLarge(ValueError):
    """The event is over the spec's 65,536-byte limit for a PDU."""


class EventBuilder:
    def __init__(self, server_name: str, signing_key: SigningKey) -> None:
        self.server_name = server_name
        self.signing_key = signing_key

    def build(self, *, room_version: RoomVersion, room_id: str | None, event_type: str, sender: str,
              content: Mapping[str, Any], state_key: str | None, prev_events: list[Event],
              auth_events: list[Event], depth: int, origin_server_ts: int,
              redacts: str | None = None, unsigned: dict[str, Any] | None = None) -> Event:
        """A signed, hashed PDU ready for authorisation and persistence."""
        pdu: dict[str, Any] = {
            "type": event_type,
            "sender": sender,
            "content": dict(content),
            "depth": depth,
            "origin_server_ts": origin_server_ts,
            "prev_events": event_refs(prev_events, room_version),
            "auth_events": event_refs(auth_events, room_version),
        }
        if room_id is not None:
            pdu["room_id"] = room_id
        if state_key is not None:
            pdu["state_key"] = state_key
        if not room_version.redact_origin:
            pdu["origin"] = self.server_name
        if redacts is not None:
            if room_version.redacts_in_content:
                pdu["content"]["redacts"] = redacts
            else:
                pdu["redacts"] = redacts
        if not room_version.event_id_is_reference_hash:
            pdu["event_id"] = f"${secrets.token_urlsafe(18)}:{self.server_name}"
        hash_and_sign_event(pdu, self.server_name, self.signing_key, room_version)
        try:
            size = len(encode_canonical_json(pdu, strict=room_version.strict_canonical_json))
        except CanonicalJsonError as e:
            raise ValueError(f"event content is not valid canonical JSON: {e}") from None
        if size > MAX_PDU_BYTES:
            raise EventTooLarge(f"event is {size} bytes; the limit is {MAX_PDU_BYTES}")
        event = Event.from_pdu(pdu, room_version)
        if unsigned:
            event.unsigned.update(unsigned)
        return event


def event_refs(events: list[Event], rv: RoomVersion) -> list[Any]:
    """prev_events/auth_events entries: ids, or in v1/v2 [event_id, {"sha256": hash}] pairs."""
    if rv.event_id_is_reference_hash:
        return [e.event_id for e in events]
    return [[e.event_id, {"sha256": e.pdu.get("hashes", {}).get("sha256", "")}] for e in events]
