"""Filters (spec "Filtering"): validation, an immutable parsed form, and the matching rules.

A ``SyncFilter`` comes from a JSON object (an upload or the inline ``filter`` parameter of
/sync) or from a filter id stored for the user (``FilterService``). Everything that decides
whether an event, room or field passes a filter is a pure function here, so /sync, /messages
and /context apply the same rules.

Choices the spec leaves open:
- ``limit`` defaults to 10 and is capped at 100 (``MAX_LIMIT``); 0 is accepted (no events),
  although the spec asks for "greater than 0", because clients send it to skip the timeline.
- A key whose value is null counts as absent; unknown keys are ignored and kept when stored.
- Badly typed values are 400 M_BAD_JSON; inline JSON that does not parse is 400 M_NOT_JSON.
"""

from __future__ import annotations

import copy
import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence, TypeVar, Union

from homeserver.field_paths import parse_path as split_field_path
from homeserver.http.errors import bad_json, not_found
from homeserver.http.jsonbody import parse_json

if TYPE_CHECKING:
    from homeserver.rooms.events import Event
    from storage.filters import FilterStore

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
EVENT_FORMATS = ("client", "federation")
# Filter ids are decimal numbers per user; longer strings cannot be ours (and overflow BIGINT).
_FILTER_ID = re.compile(r"^[0-9]{1,18}$")

# An event as the matching functions accept it: a client event / PDU dict, or an Event.
EventLike = Union[Mapping[str, Any], "Event"]
E = TypeVar("E")


# --- validation ----------------------------------------------------------------------------------

def _get(obj: Mapping[str, Any], key: str, typ: type, what: str, where: str) -> Any:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise bad_json(f"'{where}{key}' must be {what}")
    return value


def _check_str_list(obj: Mapping[str, Any], key: str, where: str, prefix: str = "",
                    what: str = "strings") -> None:
    items = _get(obj, key, list, "an array", where)
    if items is None:
        return
    for item in items:
        if not isinstance(item, str) or not item.startswith(prefix):
            raise bad_json(f"'{where}{key}' must be an array of {what}")


def _check_event_filter(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any] | None:
    flt = _get(obj, key, dict, "an object", where)
    if flt is None:
        return None
    inner = f"{where}{key}."
    limit = _get(flt, "limit", int, "an integer", inner)
    if limit is not None and limit < 0:
        raise bad_json(f"'{inner}limit' must not be negative")
    _check_str_list(flt, "types", inner)
    _check_str_list(flt, "not_types", inner)
    _check_str_list(flt, "senders", inner, "@", "user ids")
    _check_str_list(flt, "not_senders", inner, "@", "user ids")
    return flt


def _check_room_event_filter(obj: Mapping[str, Any], key: str, where: str) -> None:
    flt = _check_event_filter(obj, key, where)
    if flt is None:
        return
    inner = f"{where}{key}."
    _check_str_list(flt, "rooms", inner, "!", "room ids")
    _check_str_list(flt, "not_rooms", inner, "!", "room ids")
    for flag in ("contains_url", "lazy_load_members", "include_redundant_members",
                 "unread_thread_notifications"):
        _get(flt, flag, bool, "a boolean", inner)


def check_filter_json(value: Any) -> dict[str, Any]:
    """Check a filter definition's shape and types; returns it, or raises 400 M_BAD_JSON."""
    if not isinstance(value, dict):
        raise bad_json("A filter must be a JSON object")
    _check_str_list(value, "event_fields", "")
    fmt = _get(value, "event_format", str, "a string", "")
    if fmt is not None and fmt not in EVENT_FORMATS:
        raise bad_json("'event_format' must be 'client' or 'federation'")
    _check_event_filter(value, "presence", "")
    _check_event_filter(value, "account_data", "")
    room = _get(value, "room", dict, "an object", "")
    if room is not None:
        _check_str_list(room, "rooms", "room.", "!", "room ids")
        _check_str_list(room, "not_rooms", "room.", "!", "room ids")
        _get(room, "include_leave", bool, "a boolean", "room.")
        for key in ("timeline", "state", "ephemeral", "account_data"):
            _check_room_event_filter(room, key, "room.")
    return value


def parse_room_event_filter(text: str) -> "RoomEventFilter":
    """The ``filter`` query parameter of /messages and /context: a RoomEventFilter as JSON."""
    value = parse_json(text.encode("utf-8"))
    _check_room_event_filter({"filter": value}, "filter", "")
    return RoomEventFilter.from_json(value)


# --- matching ------------------------------------------------------------------------------------

@lru_cache(maxsize=4096)
def _compile_types(patterns: tuple[str, ...]) -> tuple[frozenset[str], tuple[tuple[str, ...], ...]]:
    """Patterns without '*' (a set lookup) and the others split at each '*'."""
    exact = frozenset(p for p in patterns if "*" not in p)
    wild = tuple(tuple(p.split("*")) for p in patterns if "*" in p)
    return exact, wild


def _wildcard_match(parts: tuple[str, ...], text: str) -> bool:
    """``text`` against a pattern split at its '*'s. Placing each middle piece at its leftmost
    fit is enough for '*'-only patterns, so this stays linear-ish where a regex of many '.*'
    can backtrack for ages on a crafted type."""
    first, last = parts[0], parts[-1]
    end = len(text) - len(last)
    if end < len(first) or not text.startswith(first) or not text.endswith(last):
        return False
    pos = len(first)
    for piece in parts[1:-1]:
        found = text.find(piece, pos, end)
        if found < 0:
            return False
        pos = found + len(piece)
    return True


def type_matches(event_type: str, patterns: Sequence[str]) -> bool:
    """True if ``event_type`` matches one of ``patterns`` ('*' matches any run of characters)."""
    if not patterns:
        return False
    exact, wild = _compile_types(tuple(patterns))
    return event_type in exact or any(_wildcard_match(parts, event_type) for parts in wild)


def _fields(event: EventLike) -> tuple[Any, Any, Any, Any]:
    """(type, sender, room_id, content) of a dict event or an Event."""
    if isinstance(event, Mapping):
        ev_type, sender = event.get("type"), event.get("sender")
        room_id, content = event.get("room_id"), event.get("content")
    else:
        ev_type, sender = event.type, event.sender
        room_id, content = getattr(event, "room_id", None), event.content
    if sender is None and isinstance(content, Mapping):
        # m.presence events once carried their user in content.user_id instead of sender.
        sender = content.get("user_id")
    return ev_type, sender, room_id, content


def _ids(value: Any) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


@dataclass(frozen=True)
class EventFilter:
    """Spec "EventFilter": which events of a kind to send and how many.

    ``types``/``senders`` None means "all"; an empty list means "none". A match in
    ``not_types``/``not_senders`` excludes an event even if the positive list includes it.
    """

    limit: int = DEFAULT_LIMIT
    types: tuple[str, ...] | None = None
    not_types: tuple[str, ...] = ()
    senders: frozenset[str] | None = None
    not_senders: frozenset[str] = frozenset()

    @staticmethod
    def _common(obj: Mapping[str, Any]) -> dict[str, Any]:
        limit = obj.get("limit")
        types, not_types = obj.get("types"), obj.get("not_types")
        return {
            "limit": DEFAULT_LIMIT if limit is None else min(limit, MAX_LIMIT),
            "types": None if types is None else tuple(types),
            "not_types": tuple(not_types or ()),
            "senders": _ids(obj.get("senders")),
            "not_senders": frozenset(obj.get("not_senders") or ()),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any] | None) -> "EventFilter":
        """From an already checked JSON object (see ``check_filter_json``); None: the default."""
        return cls(**cls._common(obj or {}))

    def allows_type(self, event_type: str | None) -> bool:
        t = event_type or ""
        if type_matches(t, self.not_types):
            return False
        return self.types is None or type_matches(t, self.types)

    def allows_sender(self, sender: str | None) -> bool:
        if sender in self.not_senders:
            return False
        return self.senders is None or sender in self.senders

    def matches(self, event: EventLike) -> bool:
        """Type and sender checks; for presence events the sender is the user whose presence it is."""
        ev_type, sender, _, _ = _fields(event)
        return self.allows_type(ev_type) and self.allows_sender(sender)

    def filter(self, events: Iterable[E]) -> list[E]:
        """The events that match, in order (``limit`` is not applied)."""
        return [e for e in events if self.matches(e)]


@dataclass(frozen=True)
class RoomEventFilter(EventFilter):
    """Spec "RoomEventFilter": an EventFilter plus rooms, URLs and the lazy-loading switches."""

    rooms: frozenset[str] | None = None
    not_rooms: frozenset[str] = frozenset()
    # True: only events whose content has a "url" key; False: only those without; None: either.
    contains_url: bool | None = None
    lazy_load_members: bool = False
    # Only ever True together with lazy_load_members (spec: it does not apply otherwise).
    include_redundant_members: bool = False
    unread_thread_notifications: bool = False

    @classmethod
    def from_json(cls, obj: Mapping[str, Any] | None) -> "RoomEventFilter":
        obj = obj or {}
        lazy = bool(obj.get("lazy_load_members"))
        return cls(**cls._common(obj),
                   rooms=_ids(obj.get("rooms")),
                   not_rooms=frozenset(obj.get("not_rooms") or ()),
                   contains_url=obj.get("contains_url"),
                   lazy_load_members=lazy,
                   include_redundant_members=lazy and bool(obj.get("include_redundant_members")),
                   unread_thread_notifications=bool(obj.get("unread_thread_notifications")))

    def allows_room(self, room_id: str | None) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    def matches(self, event: EventLike, room_id: str | None = None) -> bool:
        """Type, sender, room and contains_url checks.

        ``room_id`` stands in for events that do not carry one (ephemeral events and room
        account data in /sync); it takes precedence over the event's own.
        """
        ev_type, sender, ev_room, content = _fields(event)
        if not (self.allows_type(ev_type) and self.allows_sender(sender)
                and self.allows_room(room_id if room_id is not None else ev_room)):
            return False
        if self.contains_url is not None:
            has_url = isinstance(content, Mapping) and "url" in content
            return has_url == self.contains_url
        return True

    def filter(self, events: Iterable[E], room_id: str | None = None) -> list[E]:
        return [e for e in events if self.matches(e, room_id)]


# --- event_fields --------------------------------------------------------------------------------



def select_fields(event: Mapping[str, Any], paths: Iterable[Sequence[str]]) -> dict[str, Any]:
    """A copy of ``event`` with only the properties at ``paths`` (split paths); missing ones
    and paths through non-objects are skipped."""
    out: dict[str, Any] = {}
    for path in paths:
        src: Any = event
        for key in path[:-1]:
            src = src.get(key) if isinstance(src, Mapping) else None
        if not isinstance(src, Mapping) or path[-1] not in src:
            continue
        dst = out
        for key in path[:-1]:
            nxt = dst.get(key)
            if not isinstance(nxt, dict):
                nxt = dst[key] = {}
            dst = nxt
        dst[path[-1]] = copy.deepcopy(src[path[-1]])
    return out


# --- the whole filter ----------------------------------------------------------------------------

@dataclass(frozen=True)
class SyncFilter:
    """Spec "Filter" as /sync uses it; the default instance lets everything through."""

    event_fields: tuple[str, ...] | None = None
    event_format: str = "client"
    presence: EventFilter = EventFilter()
    account_data: EventFilter = EventFilter()
    # room.rooms / room.not_rooms / room.include_leave
    rooms: frozenset[str] | None = None
    not_rooms: frozenset[str] = frozenset()
    include_leave: bool = False
    timeline: RoomEventFilter = RoomEventFilter()
    state: RoomEventFilter = RoomEventFilter()
    ephemeral: RoomEventFilter = RoomEventFilter()
    room_account_data: RoomEventFilter = RoomEventFilter()

    @classmethod
    def from_json(cls, value: Any) -> "SyncFilter":
        """Check and parse a filter definition (400 M_BAD_JSON if it is malformed)."""
        value = check_filter_json(value)
        room = value.get("room") or {}
        fields = value.get("event_fields")
        return cls(
            event_fields=None if fields is None else tuple(fields),
            event_format=value.get("event_format") or "client",
            presence=EventFilter.from_json(value.get("presence")),
            account_data=EventFilter.from_json(value.get("account_data")),
            rooms=_ids(room.get("rooms")),
            not_rooms=frozenset(room.get("not_rooms") or ()),
            include_leave=bool(room.get("include_leave")),
            timeline=RoomEventFilter.from_json(room.get("timeline")),
            state=RoomEventFilter.from_json(room.get("state")),
            ephemeral=RoomEventFilter.from_json(room.get("ephemeral")),
            room_account_data=RoomEventFilter.from_json(room.get("account_data")),
        )

    @classmethod
    def from_inline(cls, text: str) -> "SyncFilter":
        """The JSON text the /sync ``filter`` parameter may carry (400 M_NOT_JSON / M_BAD_JSON)."""
        return cls.from_json(parse_json(text.encode("utf-8")))

    def room_allowed(self, room_id: str) -> bool:
        """room.rooms / room.not_rooms, applied before the per-section filters."""
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    @property
    def lazy_load_members(self) -> bool:
        """Lazy-loading as /sync reads it: from the state filter."""
        return self.state.lazy_load_members

    @property
    def include_redundant_members(self) -> bool:
        return self.state.include_redundant_members

    @property
    def unread_thread_notifications(self) -> bool:
        """Per-thread notification counts, switched on in the timeline filter."""
        return self.timeline.unread_thread_notifications

    def apply_event_fields(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """``event`` cut down to ``event_fields`` (a new dict; all fields if there is no list)."""
        if self.event_fields is None:
            return dict(event)
        return select_fields(event, _split_paths(self.event_fields))


@lru_cache(maxsize=1024)
def _split_paths(fields: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    return tuple(split_field_path(f) for f in fields)


DEFAULT_FILTER = SyncFilter()


def is_inline_filter(param: str) -> bool:
    """The /sync ``filter`` parameter holds JSON, not an id, when it starts with '{'."""
    return param.startswith("{")


def canonical_filter_json(value: Mapping[str, Any]) -> str:
    """The stored text of a filter: sorted keys and no spaces, so equal filters are equal text.
    ASCII-only, since PostgreSQL text cannot hold NUL characters."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


# --- stored filters ------------------------------------------------------------------------------

class FilterService:
    """Users' stored filters: upload, download, and the filter a /sync request asks for."""

    _CACHE_SIZE = 1024

    def __init__(self, store: "FilterStore") -> None:
        self.store = store
        # Stored filters never change, so parsed ones can be kept without invalidation.
        self._cache: OrderedDict[tuple[str, str], SyncFilter] = OrderedDict()

    async def create(self, user_id: str, definition: Any) -> str:
        """Store a checked filter for ``user_id``; returns its id (the old id for a repeat)."""
        check_filter_json(definition)
        return str(await self.store.add_filter(user_id, canonical_filter_json(definition)))

    async def get_json(self, user_id: str, filter_id: str) -> dict[str, Any] | None:
        """A filter as uploaded, or None if ``user_id`` has no filter ``filter_id``."""
        if not _FILTER_ID.match(filter_id):
            return None
        text = await self.store.get_filter(user_id, int(filter_id))
        return None if text is None else json.loads(text)

    async def load(self, user_id: str, filter_id: str) -> SyncFilter:
        """A stored filter, parsed; 404 M_NOT_FOUND if the user has none by that id."""
        key = (user_id, filter_id)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        definition = await self.get_json(user_id, filter_id)
        if definition is None:
            raise not_found(f"Unknown filter: {filter_id}")
        parsed = SyncFilter.from_json(definition)
        self._cache[key] = parsed
        if len(self._cache) > self._CACHE_SIZE:
            self._cache.popitem(last=False)
        return parsed

    async def resolve(self, user_id: str, param: str | None) -> SyncFilter:
        """The filter for a ``filter`` query parameter: none, inline JSON, or a stored id."""
        if param is None or param == "":
            return DEFAULT_FILTER
        if is_inline_filter(param):
            return SyncFilter.from_inline(param)
        return await self.load(user_id, param)

