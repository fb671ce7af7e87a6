"""The event model: a PDU of its room version, kept as received, with typed accessors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from crypto.hashes import compute_event_id
from crypto.room_versions import RoomVersion, get_room_version

StateKey = tuple[str, str]  # (event type, state key)


class EventFormatError(ValueError):
    """A PDU that is not well-formed for its room version."""


@dataclass(frozen=True, eq=False)
class Event:
    """One PDU. ``pdu`` is the event exactly as signed (never mutated); ``unsigned`` is local."""

    event_id: str
    room_version: RoomVersion
    pdu: Mapping[str, Any]
    unsigned: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_pdu(cls, pdu: Mapping[str, Any], room_version: RoomVersion | str) -> "Event":
        """Wrap a PDU, computing its event id from the reference hash in rooms v3 and later."""
        rv = get_room_version(room_version)
        if not isinstance(pdu, Mapping):
            raise EventFormatError("event must be a JSON object")
        if rv.event_id_is_reference_hash:
            event_id = compute_event_id(pdu, rv)
        else:
            event_id = pdu.get("event_id")
            if not isinstance(event_id, str) or not event_id.startswith("$"):
                raise EventFormatError("event_id missing or malformed")
        ev = cls(event_id, rv, pdu)
        ev.check_format()
        return ev

    def check_format(self) -> None:
        """The fields every PDU must carry, with the right types."""
        p = self.pdu
        for key, typ in (("type", str), ("sender", str), ("content", dict), ("depth", int),
                         ("origin_server_ts", int), ("prev_events", list), ("auth_events", list)):
            if not isinstance(p.get(key), typ) or isinstance(p.get(key), bool):
                raise EventFormatError(f"'{key}' missing or of the wrong type")
        if "state_key" in p and not isinstance(p["state_key"], str):
            raise EventFormatError("'state_key' must be a string")
        if not (self.room_version.room_id_is_create_event_hash and self.type == "m.room.create"):
            if not isinstance(p.get("room_id"), str):
                raise EventFormatError("'room_id' missing")
        for key in ("prev_events", "auth_events"):
            for item in p[key]:
                ok = isinstance(item, str) if self.room_version.event_id_is_reference_hash else (
                    isinstance(item, list) and len(item) == 2 and isinstance(item[0], str))
                if not ok:
                    raise EventFormatError(f"'{key}' has a malformed entry")

    # --- accessors -----------------------------------------------------------------------------

    @property
    def type(self) -> str:
        return self.pdu["type"]

    @property
    def sender(self) -> str:
        return self.pdu["sender"]

    @property
    def content(self) -> Mapping[str, Any]:
        return self.pdu["content"]

    @property
    def state_key(self) -> str | None:
        return self.pdu.get("state_key")

    @property
    def is_state(self) -> bool:
        return "state_key" in self.pdu

    @property
    def key(self) -> StateKey:
        """The (type, state_key) this state event sets."""
        return (self.type, self.pdu["state_key"])

    @property
    def room_id(self) -> str:
        if self.room_version.room_id_is_create_event_hash and self.type == "m.room.create":
            return "!" + self.event_id[1:]
        return self.pdu["room_id"]

    @property
    def depth(self) -> int:
        return self.pdu["depth"]

    @property
    def origin_server_ts(self) -> int:
        return self.pdu["origin_server_ts"]

    @property
    def prev_event_ids(self) -> list[str]:
        return _ids(self.pdu["prev_events"], self.room_version)

    @property
    def auth_event_ids(self) -> list[str]:
        return _ids(self.pdu["auth_events"], self.room_version)

    @property
    def membership(self) -> str | None:
        m = self.content.get("membership") if self.type == "m.room.member" else None
        return m if isinstance(m, str) else None

    @property
    def redacts(self) -> str | None:
        if self.type != "m.room.redaction":
            return None
        value = self.content.get("redacts") if self.room_version.redacts_in_content else None
        if value is None:
            value = self.pdu.get("redacts")
        return value if isinstance(value, str) else None

    def get(self, key: str, default: Any = None) -> Any:
        return self.pdu.get(key, default)

    def __repr__(self) -> str:
        sk = f", state_key={self.state_key!r}" if self.is_state else ""
        return f"<Event {self.event_id} {self.type}{sk} from {self.sender}>"


def _ids(entries: list[Any], rv: RoomVersion) -> list[str]:
    if rv.event_id_is_reference_hash:
        return list(entries)
    return [e[0] for e in entries]
