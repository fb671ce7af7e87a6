"""Checks every received PDU passes before it may be stored (spec: "Checks performed on receipt
of a PDU", steps 1-3): well-formed for its room version, signed by the servers that must sign
it, and its content hash — an event whose hash does not match is kept in its redacted form.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Mapping

from crypto.canonical_json import CanonicalJsonError, encode_canonical_json
from crypto.hashes import check_content_hash
from crypto.redaction import redact_event
from crypto.room_versions import RoomVersion
from homeserver.rooms.events import Event, EventFormatError

logger = logging.getLogger(__name__)

MAX_PDU_BYTES = 65_536
# Spec "Size limits": these fields are at most 255 bytes. Rooms before v11 have always been
# checked in characters by other servers, so they are here too (no event they took is refused).
MAX_FIELD_BYTES = 255
_SIZED_FIELDS = ("type", "state_key", "sender", "room_id", "event_id")
_FIELD_LIMIT_IN_CHARACTERS = frozenset(str(v) for v in range(1, 11))

# Verifies the signatures an event must carry; raises ValueError when one is missing or bad.
SignatureVerifier = Callable[[Event], Awaitable[None]]


class PduRejected(ValueError):
    """A PDU that must not be stored at all (malformed, too large, or badly signed)."""


def parse_pdu(pdu: Any, rv: RoomVersion, room_id: str | None = None) -> Event:
    """A well-formed Event of ``rv``, or PduRejected saying why not."""
    if not isinstance(pdu, Mapping):
        raise PduRejected("PDU is not a JSON object")
    try:
        size = len(encode_canonical_json(pdu, strict=rv.strict_canonical_json))
    except CanonicalJsonError as e:
        raise PduRejected(f"PDU is not canonical JSON: {e}") from None
    if size > MAX_PDU_BYTES:
        raise PduRejected(f"PDU is {size} bytes, over the {MAX_PDU_BYTES}-byte limit")
    # A sender's "unsigned" (age, invite_room_state, ...) is not part of the signed event and
    # is not ours to pass on.
    pdu = {k: v for k, v in pdu.items() if k != "unsigned"}
    try:
        event = Event.from_pdu(pdu, rv)
    except (EventFormatError, ValueError, TypeError, KeyError) as e:
        raise PduRejected(f"malformed PDU: {e}") from None
    if not isinstance(pdu.get("hashes"), Mapping) or not isinstance(pdu["hashes"].get("sha256"), str):
        raise PduRejected("PDU has no sha256 content hash")
    if not isinstance(pdu.get("signatures"), Mapping):
        raise PduRejected("PDU is not signed")
    if room_id is not None and event.room_id != room_id:
        raise PduRejected(f"PDU belongs to {event.room_id}, not {room_id}")
    for key in ("sender",):
        value = pdu.get(key)
        if not isinstance(value, str) or not value.startswith("@") or ":" not in value:
            raise PduRejected(f"'{key}' is not a user id")
    in_characters = rv.identifier in _FIELD_LIMIT_IN_CHARACTERS
    for key in _SIZED_FIELDS:
        value = pdu.get(key)
        if isinstance(value, str) and (len(value) if in_characters else
                                       len(value.encode("utf-8"))) > MAX_FIELD_BYTES:
            raise PduRejected(f"'{key}' is over {MAX_FIELD_BYTES} bytes")
    return event


async def check_pdu(pdu: Any, rv: RoomVersion, verify: SignatureVerifier,
                    room_id: str | None = None) -> Event:
    """Steps 1-3 of the receipt checks: the event to store (redacted on a hash mismatch)."""
    event = parse_pdu(pdu, rv, room_id)
    try:
        await verify(event)
    except ValueError as e:
        raise PduRejected(f"bad signature on {event.event_id}: {e}") from None
    try:
        hash_ok = check_content_hash(event.pdu, strict=rv.strict_canonical_json)
    except (CanonicalJsonError, ValueError, TypeError):
        hash_ok = False
    if not hash_ok:
        # Spec: "If the hash check fails, the event is redacted before being processed".
        logger.info("content hash mismatch on %s: storing it redacted", event.event_id)
        event = Event(event.event_id, rv, redact_event(event.pdu, rv))
    return event
