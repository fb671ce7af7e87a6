"""Simplified Sliding Sync (MSC4186) requests: validation and an immutable parsed form.

Clients in the field (Element X through matrix-rust-sdk) speak the form Synapse implements at
the unstable path: ``ranges`` as a list of pairs, ``required_state`` as ``[type, state_key]``
pairs with ``*``/``$LAZY``/``$ME``, ``is_invite``, and ``pos``/``timeout`` as query parameters.
The current MSC text renamed some of these (``range``, ``is_invited``, ``required_state`` as
``{include, exclude, lazy_members}``, ``pos``/``timeout`` in the body); both spellings are
accepted here so either kind of client works.

Choices the MSC leaves to the server:
- ``timeline_limit`` is capped at ``MAX_TIMELINE_LIMIT`` ("the server may cap this number").
- At most ``MAX_LISTS`` lists (as the MSC says). Room subscriptions are limited to
  ``MAX_SUBSCRIPTIONS``, more than the MSC's 100: clients written against Synapse, which sets no
  limit, are known to accumulate subscriptions, and refusing them would stop their sync loop.
- ``MAX_RANGES`` ranges per list and ``MAX_REQUIRED_STATE`` required_state entries bound the
  work one request can ask for.
- ``required_state`` absent asks for no state; ``timeline_limit`` absent means 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from homeserver.http.errors import MatrixError, invalid_param

MAX_LISTS = 100
MAX_SUBSCRIPTIONS = 1000
MAX_TIMELINE_LIMIT = 1000
MAX_LIST_NAME = 64
MAX_RANGES = 100
MAX_REQUIRED_STATE = 1000
MAX_CONN_ID = 256
DEFAULT_TO_DEVICE_LIMIT = 100
MAX_TO_DEVICE_LIMIT = 100

WILDCARD = "*"
LAZY = "$LAZY"
ME = "$ME"
MEMBER = "m.room.member"

# (type or None for any type, state key or None for any key); a key may be "$ME".
StatePattern = tuple["str | None", "str | None"]


@dataclass(frozen=True)
class StateSpec:
    """One room config's required_state: what to include, minus what to exclude."""
    include: frozenset[StatePattern] = frozenset()
    exclude: frozenset[StatePattern] = frozenset()
    lazy_members: bool = False

    def wants(self, etype: str, state_key: str, user_id: str) -> bool:
        return (any(_matches(p, etype, state_key, user_id) for p in self.include)
                and not any(_matches(p, etype, state_key, user_id) for p in self.exclude))

    def to_json(self) -> list[Any]:
        return [sorted(([p[0], p[1]] for p in self.include), key=json.dumps),
                sorted(([p[0], p[1]] for p in self.exclude), key=json.dumps), self.lazy_members]

    @classmethod
    def from_json(cls, data: list[Any]) -> "StateSpec":
        inc, exc, lazy = data
        return cls(frozenset(tuple(p) for p in inc), frozenset(tuple(p) for p in exc), bool(lazy))


def _matches(pattern: StatePattern, etype: str, state_key: str, user_id: str) -> bool:
    ptype, pkey = pattern
    if ptype is not None and ptype != etype:
        return False
    if pkey is None:
        return True
    return state_key == (user_id if pkey == ME else pkey)


@dataclass(frozen=True)
class RequiredState:
    """The union of one or more room configs' required_state (MSC "Combining room configs":
    a state entry is returned if any of them would return it)."""
    specs: frozenset[StateSpec] = frozenset()

    def wants(self, etype: str, state_key: str, user_id: str) -> bool:
        return any(s.wants(etype, state_key, user_id) for s in self.specs)

    @property
    def lazy_members(self) -> bool:
        return any(s.lazy_members for s in self.specs)

    def union(self, other: "RequiredState") -> "RequiredState":
        return RequiredState(self.specs | other.specs)

    def to_json(self) -> list[Any]:
        return sorted((s.to_json() for s in self.specs), key=json.dumps)

    @classmethod
    def from_json(cls, data: list[Any]) -> "RequiredState":
        return cls(frozenset(StateSpec.from_json(s) for s in data))


@dataclass(frozen=True)
class RoomConfig:
    timeline_limit: int
    required_state: RequiredState

    def combine(self, other: "RoomConfig") -> "RoomConfig":
        return RoomConfig(max(self.timeline_limit, other.timeline_limit),
                          self.required_state.union(other.required_state))

    def to_json(self) -> list[Any]:
        return [self.timeline_limit, self.required_state.to_json()]

    @classmethod
    def from_json(cls, data: list[Any]) -> "RoomConfig":
        return cls(int(data[0]), RequiredState.from_json(data[1]))


@dataclass(frozen=True)
class ListFilters:
    is_dm: bool | None = None
    is_encrypted: bool | None = None
    is_invite: bool | None = None
    # None inside the tuples stands for "rooms without a type".
    room_types: tuple[str | None, ...] | None = None
    not_room_types: tuple[str | None, ...] | None = None
    spaces: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None
    not_tags: tuple[str, ...] | None = None

    @property
    def needs_room_type(self) -> bool:
        return self.room_types is not None or self.not_room_types is not None


@dataclass(frozen=True)
class ListConfig:
    name: str
    # Inclusive index ranges into the filtered, sorted room list; None: the whole list.
    ranges: tuple[tuple[int, int], ...] | None
    room: RoomConfig
    filters: ListFilters


@dataclass(frozen=True)
class ExtensionScope:
    """Which rooms an extension covers: list names and subscribed room ids, "*" for all."""
    enabled: bool = False
    lists: tuple[str, ...] = (WILDCARD,)
    rooms: tuple[str, ...] = (WILDCARD,)


@dataclass(frozen=True)
class ToDeviceConfig:
    enabled: bool = False
    limit: int = DEFAULT_TO_DEVICE_LIMIT
    since: int | None = None


@dataclass(frozen=True)
class Extensions:
    to_device: ToDeviceConfig = ToDeviceConfig()
    e2ee: bool = False
    account_data: ExtensionScope = ExtensionScope()
    receipts: ExtensionScope = ExtensionScope()
    typing: ExtensionScope = ExtensionScope()


@dataclass(frozen=True)
class SlidingSyncRequest:
    conn_id: str = ""
    lists: tuple[ListConfig, ...] = ()
    subscriptions: Mapping[str, RoomConfig] = field(default_factory=dict)
    extensions: Extensions = Extensions()
    txn_id: str | None = None
    # Body spellings of the query parameters (the current MSC moved them into the body).
    pos: str | None = None
    timeout_ms: int | None = None
    set_presence: str | None = None


# --- parsing -------------------------------------------------------------------------------------

def _bad(where: str, what: str) -> MatrixError:
    return invalid_param(f"'{where}' must be {what}")


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(where, "an object")
    return value


def _opt_bool(obj: Mapping[str, Any], key: str, where: str) -> bool | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _bad(f"{where}.{key}", "a boolean")
    return value


def _int(value: Any, where: str, lo: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise _bad(where, f"an integer >= {lo}")
    return value


def _str_list(obj: Mapping[str, Any], key: str, where: str, allow_null: bool = False
              ) -> tuple[Any, ...] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(
            isinstance(v, str) or (allow_null and v is None) for v in value):
        raise _bad(f"{where}.{key}", "an array of strings")
    return tuple(value)


def _pair_pattern(item: Any, where: str) -> tuple[StatePattern | None, bool]:
    """A ``[type, state_key]`` pair: its pattern, or (None, True) for ``[m.room.member, $LAZY]``."""
    if not (isinstance(item, list) and len(item) == 2 and all(isinstance(v, str) for v in item)):
        raise _bad(where, "an array of [event type, state key] pairs")
    etype, key = item
    if key == LAZY:
        if etype != MEMBER:
            # Only membership can be lazy-loaded; anything else asks for nothing.
            return None, False
        return None, True
    return (None if etype == WILDCARD else etype, None if key == WILDCARD else key), False


def _element_pattern(item: Any, where: str) -> StatePattern:
    """An MSC ``RequiredStateElement``: {type?, state_key?}, an absent field matching all."""
    obj = _obj(item, where)
    etype, key = obj.get("type"), obj.get("state_key")
    if (etype is not None and not isinstance(etype, str)) or (key is not None and not isinstance(key, str)):
        raise _bad(where, "an object of optional strings 'type' and 'state_key'")
    return etype, key


def _check_size(entries: int, where: str) -> None:
    if entries > MAX_REQUIRED_STATE:
        raise invalid_param(f"'{where}' may have at most {MAX_REQUIRED_STATE} entries")


def parse_required_state(value: Any, where: str) -> RequiredState:
    if value is None:
        return RequiredState(frozenset({StateSpec()}))
    if isinstance(value, list):
        _check_size(len(value), where)
        include: set[StatePattern] = set()
        lazy = False
        for item in value:
            pattern, is_lazy = _pair_pattern(item, where)
            lazy = lazy or is_lazy
            if pattern is not None:
                include.add(pattern)
        return RequiredState(frozenset({StateSpec(frozenset(include), frozenset(), lazy)}))
    obj = _obj(value, where)
    inc = obj.get("include") or []
    exc = obj.get("exclude") or []
    if not isinstance(inc, list) or not isinstance(exc, list):
        raise _bad(where, "an object with 'include' and 'exclude' arrays")
    _check_size(len(inc) + len(exc), where)
    lazy = _opt_bool(obj, "lazy_members", where) or False
    return RequiredState(frozenset({StateSpec(
        frozenset(_element_pattern(i, f"{where}.include") for i in inc),
        frozenset(_element_pattern(e, f"{where}.exclude") for e in exc), lazy)}))


def _room_config(obj: Mapping[str, Any], where: str) -> RoomConfig:
    limit = obj.get("timeline_limit")
    limit = 0 if limit is None else min(_int(limit, f"{where}.timeline_limit"), MAX_TIMELINE_LIMIT)
    return RoomConfig(limit, parse_required_state(obj.get("required_state"), f"{where}.required_state"))


def _range(value: Any, where: str) -> tuple[int, int]:
    if not (isinstance(value, list) and len(value) == 2):
        raise _bad(where, "a pair of integers")
    lo, hi = _int(value[0], where), _int(value[1], where)
    if lo > hi:
        raise invalid_param(f"'{where}' must not start after it ends")
    return lo, hi


def _ranges(obj: Mapping[str, Any], where: str) -> tuple[tuple[int, int], ...] | None:
    if obj.get("ranges") is not None:
        value = obj["ranges"]
        if not isinstance(value, list):
            raise _bad(f"{where}.ranges", "an array of pairs of integers")
        if len(value) > MAX_RANGES:
            raise invalid_param(f"At most {MAX_RANGES} ranges per list are allowed")
        return tuple(_range(r, f"{where}.ranges") for r in value)
    if obj.get("range") is not None:
        return (_range(obj["range"], f"{where}.range"),)
    return None


def _filters(value: Any, where: str) -> ListFilters:
    obj = _obj(value, where)
    is_invite = _opt_bool(obj, "is_invite", where)
    if is_invite is None:
        is_invite = _opt_bool(obj, "is_invited", where)
    return ListFilters(
        is_dm=_opt_bool(obj, "is_dm", where),
        is_encrypted=_opt_bool(obj, "is_encrypted", where),
        is_invite=is_invite,
        room_types=_str_list(obj, "room_types", where, allow_null=True),
        not_room_types=_str_list(obj, "not_room_types", where, allow_null=True),
        spaces=_str_list(obj, "spaces", where),
        tags=_str_list(obj, "tags", where),
        not_tags=_str_list(obj, "not_tags", where))


def _scope(value: Any, where: str) -> ExtensionScope:
    obj = _obj(value, where)
    lists = _str_list(obj, "lists", where)
    rooms = _str_list(obj, "rooms", where)
    return ExtensionScope(bool(_opt_bool(obj, "enabled", where)),
                          (WILDCARD,) if lists is None else lists,
                          (WILDCARD,) if rooms is None else rooms)


def _to_device(value: Any, where: str) -> ToDeviceConfig:
    obj = _obj(value, where)
    limit = obj.get("limit")
    limit = DEFAULT_TO_DEVICE_LIMIT if limit is None else _int(limit, f"{where}.limit")
    since = obj.get("since")
    since_pos = None
    if since is not None:
        if not isinstance(since, str) or not since.isdigit() or len(since) > 18:
            raise _bad(f"{where}.since", "a next_batch returned by this extension")
        since_pos = int(since)
    return ToDeviceConfig(bool(_opt_bool(obj, "enabled", where)), min(limit, MAX_TO_DEVICE_LIMIT),
                          since_pos)


def _extensions(value: Any) -> Extensions:
    obj = _obj(value, "extensions")
    e2ee = _obj(obj.get("e2ee"), "extensions.e2ee")
    return Extensions(
        to_device=_to_device(obj.get("to_device"), "extensions.to_device"),
        e2ee=bool(_opt_bool(e2ee, "enabled", "extensions.e2ee")),
        account_data=_scope(obj.get("account_data"), "extensions.account_data"),
        receipts=_scope(obj.get("receipts"), "extensions.receipts"),
        typing=_scope(obj.get("typing"), "extensions.typing"))


def parse_request(body: Mapping[str, Any]) -> SlidingSyncRequest:
    """The parsed request; 400 M_INVALID_PARAM (naming the field) for anything malformed."""
    conn_id = body.get("conn_id")
    if conn_id is None:
        conn_id = ""
    if not isinstance(conn_id, str) or len(conn_id) > MAX_CONN_ID:
        raise _bad("conn_id", f"a string of at most {MAX_CONN_ID} characters")
    lists_obj = _obj(body.get("lists"), "lists")
    if len(lists_obj) > MAX_LISTS:
        raise invalid_param(f"At most {MAX_LISTS} lists are allowed")
    lists = []
    for name, cfg in lists_obj.items():
        if not name or len(name) > MAX_LIST_NAME:
            raise invalid_param(f"List names must have 1 to {MAX_LIST_NAME} characters")
        where = f"lists.{name}"
        cfg = _obj(cfg, where)
        lists.append(ListConfig(name, _ranges(cfg, where), _room_config(cfg, where),
                                _filters(cfg.get("filters"), f"{where}.filters")))
    subs_obj = _obj(body.get("room_subscriptions"), "room_subscriptions")
    if len(subs_obj) > MAX_SUBSCRIPTIONS:
        raise invalid_param(f"At most {MAX_SUBSCRIPTIONS} room subscriptions are allowed")
    subs = {}
    for room_id, cfg in subs_obj.items():
        if not room_id.startswith("!"):
            raise invalid_param(f"'room_subscriptions' keys must be room ids, not {room_id!r}")
        where = f"room_subscriptions.{room_id}"
        subs[room_id] = _room_config(_obj(cfg, where), where)
    txn_id = body.get("txn_id")
    if txn_id is not None and not isinstance(txn_id, str):
        raise _bad("txn_id", "a string")
    pos = body.get("pos")
    if pos is not None and not isinstance(pos, str):
        raise _bad("pos", "a string")
    timeout = body.get("timeout")
    if timeout is not None:
        timeout = _int(timeout, "timeout")
    presence = body.get("set_presence")
    if presence is not None and presence not in ("online", "offline", "unavailable"):
        raise invalid_param("set_presence must be online, offline or unavailable")
    return SlidingSyncRequest(conn_id, tuple(lists), subs, _extensions(body.get("extensions")),
                              txn_id, pos, timeout, presence)


def combine(configs: Iterable[RoomConfig]) -> RoomConfig:
    it = iter(configs)
    out = next(it)
    for c in it:
        out = out.combine(c)
    return out
