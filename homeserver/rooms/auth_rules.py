"""The authorization rules of room versions 1 to 12 (spec "Room Versions", "Authorization rules").

Rule numbers in comments follow the room version pages: v1-v5 (with the m.room.aliases rule 4),
v6-v11 (member rules are rule 4) and v12 (rule 2 for the room id, member rules are rule 5).

Two entry points, matching the server-server "Checks performed on receipt of a PDU":
``check_auth_events`` runs the rules about the event's own ``auth_events`` list (duplicates,
selection, room ids, rejected entries); ``check_auth`` runs every other rule against a state
map, which may be the event's auth events (check 4), the state before it (check 5) or the
current state (check 6, soft failure). ``check_event_auth`` does both for check 4.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Iterable, Mapping

from crypto.base64 import Base64DecodeError, decode_urlsafe_base64, encode_base64
from crypto.keys import KeyFormatError, decode_verify_key
from crypto.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version
from crypto.signing import SignatureError, verify_json
from homeserver.identifiers import is_valid_user_id
from homeserver.rooms.events import Event, StateKey
from homeserver.rooms.power_levels import (
    LEVEL_KEYS,
    get_named_level,
    get_notification_level,
    get_power_level,
    get_required_level,
    parse_power_level,
    room_creators,
)

__all__ = [
    "AuthError",
    "SignatureCheck",
    "auth_types_for_event",
    "check_auth",
    "check_auth_events",
    "check_event_auth",
    "get_power_level",
    "get_required_level",
    "get_named_level",
    "get_notification_level",
    "room_creators",
]

CREATE = "m.room.create"
MEMBER = "m.room.member"
POWER_LEVELS = "m.room.power_levels"
JOIN_RULES = "m.room.join_rules"
THIRD_PARTY_INVITE = "m.room.third_party_invite"
ALIASES = "m.room.aliases"
REDACTION = "m.room.redaction"
AUTHORISING_USER = "join_authorised_via_users_server"

CREATE_KEY: StateKey = (CREATE, "")
POWER_LEVELS_KEY: StateKey = (POWER_LEVELS, "")
JOIN_RULES_KEY: StateKey = (JOIN_RULES, "")

# Decides whether ``event`` carries a valid signature from ``server_name``.
SignatureCheck = Callable[[Event, str], bool]


class AuthError(Exception):
    """An event is not authorised; ``rule`` names the failed rule, the message says why."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{message} (auth rule {rule})")
        self.rule = rule
        self.message = message


# --- auth events selection ---------------------------------------------------------------------


def auth_types_for_event(
    event_type: str,
    sender: str,
    state_key: str | None,
    content: Mapping[str, Any],
    room_version: RoomVersion | str,
) -> set[StateKey]:
    """The state keys whose current events become the event's auth events.

    Server-server spec "Auth events selection"; in v12 the create event is never selected
    because the room id names it (MSC4291).
    """
    if event_type == CREATE:
        return set()
    rv = get_room_version(room_version)
    keys: set[StateKey] = {POWER_LEVELS_KEY, (MEMBER, sender)}
    if not rv.room_id_is_create_event_hash:
        keys.add(CREATE_KEY)
    if event_type == MEMBER and state_key is not None:
        keys.add((MEMBER, state_key))
        membership = content.get("membership")
        if membership in ("join", "invite", "knock"):
            keys.add(JOIN_RULES_KEY)
        if membership == "invite":
            token = _third_party_token(content)
            if token is not None:
                keys.add((THIRD_PARTY_INVITE, token))
        if membership == "join" and rv.restricted_join_rule:
            via = content.get(AUTHORISING_USER)
            if isinstance(via, str):
                keys.add((MEMBER, via))
    return keys


def _third_party_token(content: Mapping[str, Any]) -> str | None:
    invite = content.get("third_party_invite")
    signed = invite.get("signed") if isinstance(invite, Mapping) else None
    token = signed.get("token") if isinstance(signed, Mapping) else None
    return token if isinstance(token, str) else None


def _selected_types(event: Event) -> set[StateKey]:
    return auth_types_for_event(
        event.type, event.sender, event.state_key, event.content, event.room_version
    )


# --- entry points ------------------------------------------------------------------------------


def check_event_auth(
    event: Event,
    auth_events: Iterable[Event],
    *,
    create_event: Event | None = None,
    rejected_event_ids: Collection[str] = (),
    verify_signature: SignatureCheck | None = None,
) -> None:
    """Check an event against its own auth events: every rule (receipt check 4)."""
    events = list(auth_events)
    check_auth_events(
        event, events, create_event=create_event, rejected_event_ids=rejected_event_ids
    )
    named = set(event.auth_event_ids)
    state = {e.key: e for e in events if e.event_id in named}
    check_auth(event, state, create_event=create_event, verify_signature=verify_signature)


def check_auth_events(
    event: Event,
    auth_events: Iterable[Event],
    *,
    create_event: Event | None = None,
    rejected_event_ids: Collection[str] = (),
) -> None:
    """The rules about the event's ``auth_events`` list itself (v1-v11 rule 2, v12 rule 3).

    ``auth_events`` are the events the event's ``auth_events`` field names, in any order;
    ``rejected_event_ids`` lists those which were rejected. In v12, ``create_event`` is the
    room's create event (it must not be listed among the auth events).
    """
    if event.type == CREATE:
        return
    rv = event.room_version
    by_id = {e.event_id: e for e in auth_events}
    expected = _selected_types(event)
    seen: dict[StateKey, Event] = {}
    for event_id in event.auth_event_ids:
        auth_event = by_id.get(event_id)
        if auth_event is None:
            raise AuthError("auth_events.missing", f"auth event {event_id} was not supplied")
        if not auth_event.is_state:
            raise AuthError("auth_events.not_state", f"auth event {event_id} is not state")
        key = auth_event.key
        # Rule 2.1: no two entries for the same (type, state_key).
        if key in seen:
            raise AuthError(
                "auth_events.duplicate",
                f"duplicate auth events for {key}: {seen[key].event_id} and {event_id}",
            )
        # Rule 2.2: only what the auth events selection picks (never the create event in v12).
        if key not in expected:
            raise AuthError(
                "auth_events.unexpected", f"auth event {event_id} for {key} is not selectable"
            )
        # Rule 2.3: no rejected entries.
        if event_id in rejected_event_ids:
            raise AuthError("auth_events.rejected", f"auth event {event_id} was rejected")
        # Rule 2.5: every auth event belongs to the same room.
        if auth_event.room_id != event.room_id:
            raise AuthError(
                "auth_events.room_id",
                f"auth event {event_id} is in {auth_event.room_id}, not {event.room_id}",
            )
        seen[key] = auth_event
    if rv.room_id_is_create_event_hash:
        # v12 rule 2: the room id is the id of an accepted create event.
        if create_event is None:
            raise AuthError("room_id.create_event", "the room's create event was not supplied")
        if create_event.event_id in rejected_event_ids:
            raise AuthError("room_id.create_event", "the room's create event was rejected")
        _check_room_id_names_create(event, create_event)
    elif CREATE_KEY not in seen:
        # Rule 2.4: an m.room.create event must be among the entries.
        raise AuthError("auth_events.no_create", "no m.room.create event among the auth events")


def check_auth(
    event: Event,
    auth_events: Mapping[StateKey, Event],
    *,
    create_event: Event | None = None,
    verify_signature: SignatureCheck | None = None,
) -> None:
    """Raise AuthError unless the rules allow ``event`` given this state.

    ``auth_events`` maps (type, state_key) to state events; entries the auth events selection
    would not pick are ignored, so a full state map may be passed. The create event is taken
    from ``auth_events`` or, in v12 where it is never an auth event, from ``create_event``.
    ``verify_signature`` decides whether the event is validly signed by a server; without it
    only the presence of that server's signature is checked (the PDU signature checks of the
    federation layer are expected to have verified every signature the event carries).
    """
    rv = event.room_version
    if event.type == CREATE:
        _check_create(event)
        return

    create = _find_create(event, auth_events, create_event)
    state = _select_state(event, auth_events)
    power_levels = state.get(POWER_LEVELS_KEY)
    sender_domain = _domain(event.sender)

    # Rule 3 (v12: 4): m.federate false keeps other servers' users out.
    if create.content.get("m.federate", True) is False and sender_domain != _domain(create.sender):
        raise AuthError("m.federate", "the room does not federate with the sender's server")

    # Rule 4, v1-v5 only: m.room.aliases is checked against the sender's domain alone.
    if event.type == ALIASES and rv.special_case_aliases_auth:
        if not event.is_state:
            raise AuthError("aliases.state_key", "m.room.aliases without a state_key")
        if event.state_key != sender_domain:
            raise AuthError("aliases.domain", "m.room.aliases state_key is not the sender's domain")
        return

    if event.type == MEMBER:
        _check_membership(event, state, create, verify_signature)
        return

    # The sender must be joined for everything else.
    if _membership_of(state, event.sender) != "join":
        raise AuthError("sender.joined", f"{event.sender} is not joined to the room")

    sender_level = get_power_level(event.sender, power_levels, create)

    if event.type == THIRD_PARTY_INVITE:
        # Allowed if and only if the sender may invite.
        if sender_level < get_named_level("invite", power_levels):
            raise AuthError("third_party_invite.level", "sender's power level is below invite")
        return

    required = get_required_level(event.type, event.is_state, power_levels)
    if required > sender_level:
        raise AuthError(
            "power_level.required",
            f"{event.type} needs power level {required}, {event.sender} has {sender_level}",
        )

    if event.is_state and event.state_key.startswith("@") and event.state_key != event.sender:
        raise AuthError("state_key.user", "a state_key starting with '@' must be the sender")

    if event.type == POWER_LEVELS:
        _check_power_levels(event, power_levels, create, sender_level)
        return

    # Rooms v1-v2 only: redactions need the redact level or the same origin as the target.
    if event.type == REDACTION and not rv.event_id_is_reference_hash:
        if sender_level >= get_named_level("redact", power_levels):
            return
        redacts = event.redacts
        if redacts is not None and _domain(redacts) == _domain(event.event_id):
            return
        raise AuthError("redaction.level", "sender may only redact events from its own server")


# --- the create event and the state map --------------------------------------------------------


def _check_create(event: Event) -> None:
    """Rule 1: the m.room.create event."""
    rv = event.room_version
    if event.prev_event_ids:
        raise AuthError("create.prev_events", "m.room.create must have no prev_events")
    if rv.room_id_is_create_event_hash:
        # v12 rule 1.2: the room id is derived from this event, so it carries none.
        if "room_id" in event.pdu:
            raise AuthError("create.room_id", "m.room.create must not have a room_id")
    elif _domain(event.room_id) != _domain(event.sender):
        raise AuthError("create.room_id", "room_id domain does not match the sender's domain")
    content = event.content
    if "room_version" in content and not (
        isinstance(content["room_version"], str) and content["room_version"] in KNOWN_ROOM_VERSIONS
    ):
        raise AuthError("create.room_version", f"unknown room_version {content['room_version']!r}")
    if rv.privileged_room_creators and "additional_creators" in content:
        # v12 rule 1.4: additional_creators is an array of valid user ids.
        extra = content["additional_creators"]
        if not isinstance(extra, list) or not all(
            isinstance(u, str) and is_valid_user_id(u) for u in extra
        ):
            raise AuthError(
                "create.additional_creators", "additional_creators must be an array of user ids"
            )
    if not rv.implicit_room_creator and "creator" not in content:
        # v1-v10 rule 1.4.
        raise AuthError("create.creator", "m.room.create content has no creator")


def _find_create(
    event: Event, auth_events: Mapping[StateKey, Event], create_event: Event | None
) -> Event:
    """The room's create event, from the state map or the ``create_event`` argument."""
    from_state = auth_events.get(CREATE_KEY)
    if from_state is not None and create_event is not None:
        if from_state.event_id != create_event.event_id:
            raise AuthError("auth_events.create", "two different m.room.create events supplied")
    create = from_state or create_event
    if create is None or create.type != CREATE:
        rule = "room_id.create_event" if event.room_version.room_id_is_create_event_hash else (
            "auth_events.no_create")
        raise AuthError(rule, "no m.room.create event for the room")
    if event.room_version.room_id_is_create_event_hash:
        _check_room_id_names_create(event, create)
    elif create.room_id != event.room_id:
        raise AuthError("auth_events.room_id", "the m.room.create event is for another room")
    return create


def _check_room_id_names_create(event: Event, create: Event) -> None:
    # v12 rule 2: the room id is the create event's id with the sigil '!' instead of '$'.
    if create.type != CREATE or event.room_id != "!" + create.event_id[1:]:
        raise AuthError(
            "room_id.create_event", f"room id {event.room_id} does not name the create event"
        )


def _select_state(event: Event, auth_events: Mapping[StateKey, Event]) -> dict[StateKey, Event]:
    """The entries the auth events selection picks for the event, checked for consistency."""
    state: dict[StateKey, Event] = {}
    for key in _selected_types(event):
        auth_event = auth_events.get(key)
        if auth_event is None:
            continue
        if not auth_event.is_state or auth_event.key != key:
            raise AuthError("auth_events.key", f"{auth_event.event_id} is not the state for {key}")
        if auth_event.room_id != event.room_id:
            raise AuthError(
                "auth_events.room_id",
                f"auth event {auth_event.event_id} is in {auth_event.room_id}, "
                f"not {event.room_id}",
            )
        state[key] = auth_event
    return state


def _membership_of(state: Mapping[StateKey, Event], user_id: str) -> str | None:
    member = state.get((MEMBER, user_id))
    return member.membership if member is not None else None


def _join_rule(state: Mapping[StateKey, Event]) -> str:
    # No join rules event (or no join_rule in it): treated as "invite", as implementations do;
    # the spec does not define the absent case.
    event = state.get(JOIN_RULES_KEY)
    rule = event.content.get("join_rule", "invite") if event is not None else "invite"
    return rule if isinstance(rule, str) else ""


def _domain(identifier: str) -> str:
    """The server name of a user id, room id (v1-v11) or event id (v1-v2)."""
    return identifier.partition(":")[2]


# --- m.room.member -----------------------------------------------------------------------------


def _check_membership(
    event: Event,
    state: Mapping[StateKey, Event],
    create: Event,
    verify_signature: SignatureCheck | None,
) -> None:
    """The m.room.member rules (v1-v5 rule 5, v6-v11 rule 4, v12 rule 5)."""
    rv = event.room_version
    content = event.content
    if not event.is_state or "membership" not in content:
        raise AuthError("member.format", "m.room.member needs a state_key and a membership")
    membership = content["membership"]
    target = event.state_key
    sender = event.sender

    # v8+ rule 4.2: the authorising user's server must have signed the event.
    if rv.restricted_join_rule and AUTHORISING_USER in content:
        via = content[AUTHORISING_USER]
        if not isinstance(via, str) or not _signed_by(event, _domain(via), verify_signature):
            raise AuthError(
                "member.authorised_via.signature",
                f"not signed by the server of {AUTHORISING_USER} {via!r}",
            )

    power_levels = state.get(POWER_LEVELS_KEY)
    sender_membership = _membership_of(state, sender)
    target_membership = _membership_of(state, target)

    if membership == "join":
        _check_join(event, state, create, sender_membership)
        return

    if membership == "invite":
        if "third_party_invite" in content:
            _check_third_party_invite(event, state, target_membership)
            return
        if sender_membership != "join":
            raise AuthError("member.invite.sender_joined", f"{sender} is not joined")
        if target_membership in ("join", "ban"):
            raise AuthError("member.invite.target", f"{target} is {target_membership}")
        if get_power_level(sender, power_levels, create) < get_named_level("invite", power_levels):
            raise AuthError("member.invite.level", "sender's power level is below invite")
        return

    sender_level = get_power_level(sender, power_levels, create)
    target_level = get_power_level(target, power_levels, create)

    if membership == "leave":
        if sender == target:
            allowed = {"invite", "join", "knock"} if rv.knock_join_rule else {"invite", "join"}
            if sender_membership not in allowed:
                raise AuthError("member.leave.self", f"{sender} is {sender_membership}")
            return
        if sender_membership != "join":
            raise AuthError("member.leave.sender_joined", f"{sender} is not joined")
        if target_membership == "ban" and sender_level < get_named_level("ban", power_levels):
            raise AuthError("member.leave.unban_level", "sender's power level is below ban")
        if sender_level < get_named_level("kick", power_levels):
            raise AuthError("member.leave.kick_level", "sender's power level is below kick")
        if target_level >= sender_level:
            raise AuthError("member.leave.target_level", f"{target} is not below the sender")
        return

    if membership == "ban":
        if sender_membership != "join":
            raise AuthError("member.ban.sender_joined", f"{sender} is not joined")
        if sender_level < get_named_level("ban", power_levels):
            raise AuthError("member.ban.level", "sender's power level is below ban")
        if target_level >= sender_level:
            raise AuthError("member.ban.target_level", f"{target} is not below the sender")
        return

    if membership == "knock" and rv.knock_join_rule:
        rules = {"knock", "knock_restricted"} if rv.knock_restricted_join_rule else {"knock"}
        if _join_rule(state) not in rules:
            raise AuthError("member.knock.join_rule", "the join rule does not allow knocking")
        if sender != target:
            raise AuthError("member.knock.sender", "users can only knock for themselves")
        if sender_membership in ("ban", "invite", "join"):
            raise AuthError("member.knock.membership", f"{sender} is {sender_membership}")
        return

    raise AuthError("member.unknown", f"unknown membership {membership!r}")


def _check_join(
    event: Event,
    state: Mapping[StateKey, Event],
    create: Event,
    sender_membership: str | None,
) -> None:
    rv = event.room_version
    # The creator's own join right after the create event. v1-v10 name the creator in
    # content.creator; v11+ use the create event's sender (additional_creators do not count).
    first_creator = create.sender if rv.implicit_room_creator else create.content.get("creator")
    if event.prev_event_ids == [create.event_id] and event.state_key == first_creator:
        return
    if event.sender != event.state_key:
        raise AuthError("member.join.sender", "users can only join for themselves")
    if sender_membership == "ban":
        raise AuthError("member.join.banned", f"{event.sender} is banned")
    join_rule = _join_rule(state)
    if join_rule == "invite" or (rv.knock_join_rule and join_rule == "knock"):
        if sender_membership not in ("invite", "join"):
            raise AuthError("member.join.invite_only", f"{event.sender} is not invited")
        return
    if (rv.restricted_join_rule and join_rule == "restricted") or (
        rv.knock_restricted_join_rule and join_rule == "knock_restricted"
    ):
        if sender_membership in ("join", "invite"):
            return
        via = event.content.get(AUTHORISING_USER)
        if not isinstance(via, str) or _membership_of(state, via) != "join":
            raise AuthError(
                "member.join.authorised_via", f"{AUTHORISING_USER} {via!r} is not a joined member"
            )
        power_levels = state.get(POWER_LEVELS_KEY)
        if get_power_level(via, power_levels, create) < get_named_level("invite", power_levels):
            raise AuthError("member.join.authorised_via", f"{via} may not invite users")
        return
    if join_rule == "public":
        return
    raise AuthError("member.join.join_rule", f"join rule {join_rule!r} does not allow joining")


def _check_third_party_invite(
    event: Event, state: Mapping[StateKey, Event], target_membership: str | None
) -> None:
    """The invite rules for content.third_party_invite (rule 4.3.1 / 4.4.1 / 5.4.1)."""
    if target_membership == "ban":
        raise AuthError("member.third_party.banned", f"{event.state_key} is banned")
    invite = event.content["third_party_invite"]
    signed = invite.get("signed") if isinstance(invite, Mapping) else None
    if not isinstance(signed, Mapping):
        raise AuthError("member.third_party.signed", "third_party_invite has no signed object")
    mxid, token = signed.get("mxid"), signed.get("token")
    if not isinstance(mxid, str) or not isinstance(token, str):
        raise AuthError("member.third_party.signed", "signed needs mxid and token")
    if mxid != event.state_key:
        raise AuthError("member.third_party.mxid", "signed.mxid does not match the state_key")
    invite_event = state.get((THIRD_PARTY_INVITE, token))
    if invite_event is None:
        raise AuthError("member.third_party.token", "no m.room.third_party_invite for the token")
    if invite_event.sender != event.sender:
        raise AuthError("member.third_party.sender", "sender did not send the third-party invite")
    if not _signed_by_invite_keys(signed, invite_event):
        raise AuthError("member.third_party.signature", "signed has no valid signature")


def _signed_by_invite_keys(signed: Mapping[str, Any], invite_event: Event) -> bool:
    """True if any signature in ``signed`` verifies with any key of the invite event."""
    content = invite_event.content
    keys: list[str] = []
    if isinstance(content.get("public_key"), str):
        keys.append(content["public_key"])
    if isinstance(content.get("public_keys"), list):
        keys.extend(
            entry["public_key"] for entry in content["public_keys"]
            if isinstance(entry, Mapping) and isinstance(entry.get("public_key"), str)
        )
    signatures = signed.get("signatures")
    if not isinstance(signatures, Mapping):
        return False
    obj = dict(signed)
    strict = invite_event.room_version.strict_canonical_json
    for server_name, by_key in signatures.items():
        if not isinstance(by_key, Mapping):
            continue
        for key_id in by_key:
            for public_key in keys:
                try:
                    verify_key = decode_verify_key(key_id, _standard_base64(public_key))
                    verify_json(obj, server_name, verify_key, strict=strict)
                except (KeyFormatError, SignatureError):
                    continue
                return True
    return False


def _standard_base64(key: str) -> str:
    # Identity servers publish unpadded standard base64; accept the URL-safe alphabet too.
    if "-" in key or "_" in key:
        try:
            return encode_base64(decode_urlsafe_base64(key))
        except Base64DecodeError:
            return key
    return key


def _signed_by(event: Event, server_name: str, verify_signature: SignatureCheck | None) -> bool:
    if verify_signature is not None:
        return verify_signature(event, server_name)
    signatures = event.pdu.get("signatures")
    return isinstance(signatures, Mapping) and bool(signatures.get(server_name))


# --- m.room.power_levels -----------------------------------------------------------------------


def _check_power_levels(
    event: Event, current: Event | None, create: Event, sender_level: int | float
) -> None:
    """The m.room.power_levels rules (v1-v5 rule 10, v6-v11 rule 9, v12 rule 10)."""
    rv = event.room_version
    content = event.content

    if rv.enforce_int_power_levels:
        # v10+: the level properties are integers, events/notifications map to integers.
        for name in LEVEL_KEYS:
            if name in content and parse_power_level(content[name], rv) is None:
                raise AuthError("power_levels.integer", f"{name} is not an integer")
        for name in ("events", "notifications"):
            if name in content and not _is_level_map(content[name], rv):
                raise AuthError("power_levels.integer", f"{name} is not an object of integers")

    # users: valid user ids mapped to integers (v1-v9: or strings that are integers).
    users = content.get("users", {})
    if not isinstance(users, Mapping):
        raise AuthError("power_levels.users", "users is not an object")
    for user_id, level in users.items():
        if not is_valid_user_id(user_id):
            raise AuthError("power_levels.users", f"{user_id!r} is not a valid user id")
        if parse_power_level(level, rv) is None:
            raise AuthError("power_levels.users", f"{level!r} is not a valid power level")

    if rv.privileged_room_creators:
        # v12 rule 10.4: creators have infinite power and may not be listed.
        listed = room_creators(create).intersection(users)
        if listed:
            raise AuthError("power_levels.creators", f"creators {sorted(listed)} may not be listed")

    if current is None:
        return

    old = current.content
    for name in LEVEL_KEYS:
        _check_change(name, _old_level(old, name, rv), _new_level(content, name, rv),
                      sender_level)

    maps = ("events", "notifications") if rv.limit_notifications_power_levels else ("events",)
    for name in maps:
        old_map, new_map = _as_map(old.get(name)), _as_map(content.get(name))
        for key in set(old_map) | set(new_map):
            _check_change(f"{name}.{key}", _old_level(old_map, key, rv),
                          _new_level(new_map, key, rv), sender_level)

    old_users = _as_map(old.get("users"))
    for user_id in set(old_users) | set(users):
        before = _old_level(old_users, user_id, rv)
        after = _new_level(users, user_id, rv)
        if before == after:
            continue
        # Other users' entries may only be changed or removed if below the sender's level.
        if user_id != event.sender and before is not None and before >= sender_level:
            raise AuthError(
                "power_levels.users_change",
                f"cannot change {user_id}'s level {before}: not below the sender's {sender_level}",
            )
        if after is not None and after > sender_level:
            raise AuthError(
                "power_levels.users_change",
                f"cannot give {user_id} level {after}, above the sender's {sender_level}",
            )


def _check_change(
    name: str, before: int | None, after: int | None, sender_level: int | float
) -> None:
    """An added, changed or removed level: neither old nor new value may exceed the sender's."""
    if before == after:
        return
    if before is not None and before > sender_level:
        raise AuthError(
            "power_levels.change", f"cannot change {name} from {before}, above {sender_level}"
        )
    if after is not None and after > sender_level:
        raise AuthError(
            "power_levels.change", f"cannot set {name} to {after}, above {sender_level}"
        )


def _old_level(mapping: Mapping[str, Any], key: str, rv: RoomVersion) -> int | None:
    # A value the room already accepted but which is not a level counts as absent.
    return parse_power_level(mapping[key], rv) if key in mapping else None


def _new_level(mapping: Mapping[str, Any], key: str, rv: RoomVersion) -> int | None:
    # A new value that is not a level cannot be compared with the sender's: reject it.
    if key not in mapping:
        return None
    level = parse_power_level(mapping[key], rv)
    if level is None:
        raise AuthError("power_levels.value", f"{key}: {mapping[key]!r} is not a power level")
    return level


def _as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _is_level_map(value: Any, rv: RoomVersion) -> bool:
    return isinstance(value, Mapping) and all(
        parse_power_level(v, rv) is not None for v in value.values()
    )
