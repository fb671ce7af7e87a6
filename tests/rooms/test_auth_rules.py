"""Tests for homeserver.rooms.auth_rules: the authorization rules of room versions 1 to 12.

Rooms are built event by event with ``Room`` (plain PDUs through Event.from_pdu, no hashes or
signatures). Every rejection asserts the name of the rule that failed, so a test cannot pass
because some other, earlier rule happened to reject the event.
"""

from __future__ import annotations

import itertools
from typing import Any, Mapping

import pytest

from crypto.base64 import decode_base64, encode_urlsafe_base64
from crypto.keys import encode_verify_key, generate_signing_key, get_verify_key
from crypto.room_versions import KNOWN_ROOM_VERSIONS
from crypto.signing import sign_json
from homeserver.rooms.auth_rules import (
    AuthError,
    auth_types_for_event,
    check_auth,
    check_auth_events,
    check_event_auth,
)
from homeserver.rooms.events import Event, StateKey

ALICE = "@alice:a.test"
BOB = "@bob:b.test"
CAROL = "@carol:c.test"
DAVE = "@dave:a.test"

CREATE = "m.room.create"
MEMBER = "m.room.member"
PL = "m.room.power_levels"
JOIN_RULES = "m.room.join_rules"
TPI = "m.room.third_party_invite"

ALL_VERSIONS = [str(v) for v in range(1, 13)]

_counter = itertools.count(1)


def _domain(user_id: str) -> str:
    return user_id.partition(":")[2]


class Room:
    """Builds the events of one room in one room version and tracks its current state."""

    def __init__(
        self,
        version: str,
        creator: str = ALICE,
        create_content: Mapping[str, Any] | None = None,
        room_id: str | None = None,
    ) -> None:
        self.rv = KNOWN_ROOM_VERSIONS[version]
        self.events: dict[str, Event] = {}
        self.state: dict[StateKey, Event] = {}
        self.extremities: list[str] = []
        if create_content is None:
            create_content = {"room_version": version}
            if not self.rv.implicit_room_creator:
                create_content["creator"] = creator
        self.room_id = room_id or f"!room{next(_counter)}:{_domain(creator)}"
        self.create = self.build(CREATE, creator, create_content, state_key="", prev=[], auth=[])
        if self.rv.room_id_is_create_event_hash:
            self.room_id = self.create.room_id
        self.apply(self.create)

    # --- building ------------------------------------------------------------------------------

    def build(
        self,
        event_type: str,
        sender: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        prev: list[str] | None = None,
        auth: list[str] | None = None,
        extra: Mapping[str, Any] | None = None,
        id_domain: str | None = None,
    ) -> Event:
        """A new event; auth events default to the auth events selection over current state."""
        n = next(_counter)
        if auth is None:
            keys = auth_types_for_event(event_type, sender, state_key, content, self.rv)
            auth = [self.state[k].event_id for k in sorted(keys) if k in self.state]
        if prev is None:
            prev = list(self.extremities)
        pdu: dict[str, Any] = {
            "type": event_type,
            "sender": sender,
            "content": dict(content),
            "depth": n,
            "origin_server_ts": 1_700_000_000_000 + n,
            "prev_events": self._refs(prev),
            "auth_events": self._refs(auth),
            "hashes": {"sha256": "unchecked"},
            "signatures": {},
        }
        if not (self.rv.room_id_is_create_event_hash and event_type == CREATE):
            pdu["room_id"] = self.room_id
        if state_key is not None:
            pdu["state_key"] = state_key
        if not self.rv.event_id_is_reference_hash:
            pdu["event_id"] = f"${n}:{id_domain or _domain(sender)}"
        pdu.update(extra or {})
        event = Event.from_pdu(pdu, self.rv)
        self.events[event.event_id] = event
        return event

    def _refs(self, ids: list[str]) -> list[Any]:
        if self.rv.event_id_is_reference_hash:
            return list(ids)
        return [[i, {"sha256": "unchecked"}] for i in ids]

    def member(self, sender: str, target: str, membership: str, **content: Any) -> Event:
        return self.build(MEMBER, sender, {"membership": membership, **content}, state_key=target)

    # --- checking ------------------------------------------------------------------------------

    def check(self, event: Event, **kwargs: Any) -> None:
        """All the rules, against the event's own auth events (receipt check 4)."""
        auth_events = [self.events[i] for i in event.auth_event_ids if i in self.events]
        check_event_auth(event, auth_events, create_event=self.create_arg, **kwargs)

    @property
    def create_arg(self) -> Event | None:
        return self.create if self.rv.room_id_is_create_event_hash else None

    def rejects(self, event: Event, rule: str, **kwargs: Any) -> AuthError:
        with pytest.raises(AuthError) as info:
            self.check(event, **kwargs)
        assert info.value.rule == rule, str(info.value)
        return info.value

    def apply(self, event: Event) -> Event:
        """Check an event (it must be allowed) and make it part of the room."""
        self.check(event)
        # Against the current state as well (receipt check 6), which must agree here.
        check_auth(event, self.state, create_event=self.create_arg)
        if event.is_state:
            self.state[event.key] = event
        self.extremities = [event.event_id]
        return event

    def send(self, event_type: str, sender: str, content: Mapping[str, Any], **kw: Any) -> Event:
        return self.apply(self.build(event_type, sender, content, **kw))

    def set_member(self, sender: str, target: str, membership: str, **content: Any) -> Event:
        return self.apply(self.member(sender, target, membership, **content))

    def add(self, user: str, inviter: str = ALICE) -> None:
        """Invite ``user`` and have them join."""
        self.set_member(inviter, user, "invite")
        self.set_member(user, user, "join")

    def power_levels(self, sender: str = ALICE, **content: Any) -> Event:
        return self.build(PL, sender, content, state_key="")


def make_room(
    version: str,
    join_rule: str = "invite",
    users: Mapping[str, Any] | None = None,
    **pl_content: Any,
) -> Room:
    """Alice creates and joins the room, sets power levels and the join rule."""
    room = Room(version)
    room.set_member(ALICE, ALICE, "join")
    levels = dict(users or {})
    if not room.rv.privileged_room_creators:
        levels.setdefault(ALICE, 100)
    room.apply(room.power_levels(users=levels, **pl_content))
    room.send(JOIN_RULES, ALICE, {"join_rule": join_rule}, state_key="")
    return room


# --- rule 1: m.room.create ---------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_create_event_first_and_creator_join(version: str) -> None:
    room = Room(version)
    room.set_member(ALICE, ALICE, "join")
    assert room.state[(MEMBER, ALICE)].membership == "join"


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_create_with_prev_events_rejected(version: str) -> None:
    room = Room(version)
    bad = room.build(CREATE, ALICE, dict(room.create.content), state_key="",
                     prev=[room.create.event_id], auth=[])
    room.rejects(bad, "create.prev_events")


@pytest.mark.parametrize("version", ALL_VERSIONS[:11])
def test_create_room_id_domain_must_match_sender(version: str) -> None:
    Room(version, room_id="!r:a.test")  # same domain as ALICE: allowed
    with pytest.raises(AuthError) as info:
        Room(version, room_id="!r:elsewhere.test")
    assert info.value.rule == "create.room_id"


def test_v12_create_must_not_have_room_id() -> None:
    room = Room("12")
    bad = room.build(CREATE, ALICE, {"room_version": "12"}, state_key="", prev=[], auth=[],
                     extra={"room_id": "!r:a.test"})
    room.rejects(bad, "create.room_id")


@pytest.mark.parametrize("version", ["1", "9", "12"])
def test_create_unknown_room_version_rejected(version: str) -> None:
    content: dict[str, Any] = {"room_version": "999"}
    if version != "12":
        content["creator"] = ALICE
    with pytest.raises(AuthError) as info:
        Room(version, create_content=content)
    assert info.value.rule == "create.room_version"
    with pytest.raises(AuthError) as info:
        Room(version, create_content={**content, "room_version": 12})
    assert info.value.rule == "create.room_version"


@pytest.mark.parametrize("version", ["1", "10"])
def test_create_needs_creator_before_v11(version: str) -> None:
    with pytest.raises(AuthError) as info:
        Room(version, create_content={"room_version": version})
    assert info.value.rule == "create.creator"


@pytest.mark.parametrize("version", ["11", "12"])
def test_create_without_creator_allowed_from_v11(version: str) -> None:
    Room(version, create_content={"room_version": version})


@pytest.mark.parametrize("extra", [BOB, [BOB, 5], ["not a user id"], ["@nodomain"]])
def test_v12_additional_creators_must_be_user_ids(extra: Any) -> None:
    with pytest.raises(AuthError) as info:
        Room("12", create_content={"additional_creators": extra})
    assert info.value.rule == "create.additional_creators"
    Room("12", create_content={"additional_creators": [BOB, CAROL]})


def test_v11_ignores_additional_creators() -> None:
    # Rooms v1-v11 do not validate the field (m.room.create schema) and give it no power.
    Room("11", create_content={"additional_creators": "whatever"})
    room = Room("11", create_content={"additional_creators": [BOB]})
    room.set_member(ALICE, ALICE, "join")
    room.send(JOIN_RULES, ALICE, {"join_rule": "public"}, state_key="")
    room.set_member(BOB, BOB, "join")
    room.rejects(room.build("m.room.name", BOB, {"name": "x"}, state_key=""),
                 "power_level.required")


# --- rule 2: the auth_events list --------------------------------------------------------------


def test_duplicate_auth_events_rejected() -> None:
    room = make_room("10")
    first = room.state[(MEMBER, ALICE)]
    room.set_member(ALICE, ALICE, "join", displayname="Alice")
    second = room.state[(MEMBER, ALICE)]
    ok = room.build("m.room.message", ALICE, {"body": "hi"})
    room.check(ok)
    auth = ok.auth_event_ids + [first.event_id]
    assert second.event_id in auth
    dup = room.build("m.room.message", ALICE, {"body": "hi"}, auth=auth)
    room.rejects(dup, "auth_events.duplicate")


@pytest.mark.parametrize("version", ["1", "12"])
def test_unselected_auth_event_rejected(version: str) -> None:
    room = make_room(version)
    message = room.build("m.room.message", ALICE, {"body": "hi"})
    room.check(message)
    # Join rules are only selected for joins, invites and knocks.
    extra = message.auth_event_ids + [room.state[(JOIN_RULES, "")].event_id]
    room.rejects(room.build("m.room.message", ALICE, {"body": "hi"}, auth=extra),
                 "auth_events.unexpected")


def test_v12_create_event_must_not_be_an_auth_event() -> None:
    room = make_room("12")
    message = room.build("m.room.message", ALICE, {"body": "hi"})
    room.check(message)
    with_create = message.auth_event_ids + [room.create.event_id]
    room.rejects(room.build("m.room.message", ALICE, {"body": "hi"}, auth=with_create),
                 "auth_events.unexpected")


@pytest.mark.parametrize("version", ["1", "11"])
def test_create_event_required_among_auth_events(version: str) -> None:
    room = make_room(version)
    message = room.build("m.room.message", ALICE, {"body": "hi"})
    room.check(message)
    without = [i for i in message.auth_event_ids if i != room.create.event_id]
    room.rejects(room.build("m.room.message", ALICE, {"body": "hi"}, auth=without),
                 "auth_events.no_create")


def test_auth_events_list_rules_on_their_own() -> None:
    """check_auth_events alone covers rule 2 (the state-map rules repeat some of it)."""
    room = make_room("10")
    other = make_room("10")
    message = room.build("m.room.message", ALICE, {"body": "hi"})
    auth = [room.events[i] for i in message.auth_event_ids]
    check_auth_events(message, auth)
    no_create = room.build("m.room.message", ALICE, {}, auth=[
        e.event_id for e in auth if e.type != CREATE])
    with pytest.raises(AuthError) as info:
        check_auth_events(no_create, [e for e in auth if e.type != CREATE])
    assert info.value.rule == "auth_events.no_create"
    foreign = other.state[(PL, "")]
    swapped = [foreign if e.type == PL else e for e in auth]
    crossed = room.build("m.room.message", ALICE, {}, auth=[e.event_id for e in swapped])
    with pytest.raises(AuthError) as info:
        check_auth_events(crossed, swapped)
    assert info.value.rule == "auth_events.room_id"


def test_non_state_auth_event_rejected() -> None:
    room = make_room("10")
    chatter = room.send("m.room.message", ALICE, {"body": "hi"})
    message = room.build("m.room.message", ALICE, {"body": "hi"})
    auth = message.auth_event_ids + [chatter.event_id]
    room.rejects(room.build("m.room.message", ALICE, {}, auth=auth), "auth_events.not_state")


def test_rejected_auth_event_rejected() -> None:
    room = make_room("6")
    message = room.build("m.room.message", ALICE, {"body": "hi"})
    room.check(message)
    pl_id = room.state[(PL, "")].event_id
    room.rejects(message, "auth_events.rejected", rejected_event_ids={pl_id})


def test_missing_auth_event_rejected() -> None:
    room = make_room("6")
    message = room.build("m.room.message", ALICE, {"body": "hi"})
    with pytest.raises(AuthError) as info:
        check_auth_events(message, [room.create])
    assert info.value.rule == "auth_events.missing"


@pytest.mark.parametrize("version", ["3", "12"])
def test_auth_event_from_another_room_rejected(version: str) -> None:
    room = make_room(version)
    other = make_room(version)
    foreign_pl = other.state[(PL, "")]
    room.events[foreign_pl.event_id] = foreign_pl
    auth = [i for i in room.build("m.room.message", ALICE, {}).auth_event_ids
            if i != room.state[(PL, "")].event_id] + [foreign_pl.event_id]
    message = room.build("m.room.message", ALICE, {}, auth=auth)
    room.rejects(message, "auth_events.room_id")
    # The state-map entry point checks room ids too.
    state = dict(room.state)
    state[(PL, "")] = foreign_pl
    with pytest.raises(AuthError) as info:
        check_auth(room.build("m.room.message", ALICE, {}), state, create_event=room.create_arg)
    assert info.value.rule == "auth_events.room_id"


def test_v12_room_id_must_name_the_create_event() -> None:
    room = make_room("12")
    other = make_room("12")
    message = room.build("m.room.message", ALICE, {"body": "hi"})
    state = {k: e for k, e in room.state.items() if k != (CREATE, "")}
    check_auth(message, state, create_event=room.create)
    with pytest.raises(AuthError) as info:
        check_auth(message, state, create_event=other.create)
    assert info.value.rule == "room_id.create_event"
    with pytest.raises(AuthError) as info:
        check_auth(message, state)
    assert info.value.rule == "room_id.create_event"
    with pytest.raises(AuthError) as info:
        check_auth(message, room.state, create_event=other.create)
    assert info.value.rule == "auth_events.create"
    with pytest.raises(AuthError) as info:
        check_auth_events(message, [room.events[i] for i in message.auth_event_ids],
                          create_event=room.create, rejected_event_ids={room.create.event_id})
    assert info.value.rule == "room_id.create_event"


def test_check_auth_ignores_state_the_selection_does_not_pick() -> None:
    room = make_room("10")
    room.send("m.room.name", ALICE, {"name": "Room"}, state_key="")
    message = room.build("m.room.message", ALICE, {"body": "hi"})
    assert (("m.room.name", "")) in room.state
    check_auth(message, room.state)


def test_check_auth_rejects_state_under_the_wrong_key() -> None:
    room = make_room("10")
    state = dict(room.state)
    state[(MEMBER, ALICE)] = room.state[(PL, "")]
    with pytest.raises(AuthError) as info:
        check_auth(room.build("m.room.message", ALICE, {}), state)
    assert info.value.rule == "auth_events.key"


# --- rule 3: m.federate ------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "12"])
def test_unfederated_room_rejects_other_servers(version: str) -> None:
    content: dict[str, Any] = {"m.federate": False}
    if version == "1":
        content["creator"] = ALICE
    room = Room(version, create_content=content)
    room.set_member(ALICE, ALICE, "join")
    room.send(JOIN_RULES, ALICE, {"join_rule": "public"}, state_key="")
    room.set_member(DAVE, DAVE, "join")  # same server as the creator
    room.rejects(room.member(BOB, BOB, "join"), "m.federate")


# --- rule 4 (v1-v5): m.room.aliases ------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "5"])
def test_aliases_special_case_before_v6(version: str) -> None:
    room = make_room(version)
    # Bob is not even in the room: only his domain counts.
    room.check(room.build("m.room.aliases", BOB, {"aliases": ["#x:b.test"]}, state_key="b.test"))
    room.rejects(room.build("m.room.aliases", BOB, {"aliases": []}, state_key="a.test"),
                 "aliases.domain")
    room.rejects(room.build("m.room.aliases", BOB, {"aliases": []}), "aliases.state_key")


def test_aliases_are_ordinary_state_from_v6() -> None:
    room = make_room("6")
    room.rejects(room.build("m.room.aliases", BOB, {"aliases": []}, state_key="b.test"),
                 "sender.joined")
    room.add(BOB)
    room.rejects(room.build("m.room.aliases", BOB, {"aliases": []}, state_key="b.test"),
                 "power_level.required")
    room.check(room.build("m.room.aliases", ALICE, {"aliases": []}, state_key="b.test"))


# --- m.room.member: format and joins -----------------------------------------------------------


def test_member_needs_membership() -> None:
    room = make_room("10", join_rule="public")
    room.rejects(room.build(MEMBER, BOB, {"displayname": "Bob"}, state_key=BOB), "member.format")
    room.rejects(room.build(MEMBER, BOB, {"membership": "join"}), "member.format")


@pytest.mark.parametrize("version", ["1", "12"])
def test_unknown_membership_rejected(version: str) -> None:
    room = make_room(version, join_rule="public")
    room.rejects(room.member(BOB, BOB, "hover"), "member.unknown")


@pytest.mark.parametrize("version", ["1", "10"])
def test_creator_join_uses_content_creator_before_v11(version: str) -> None:
    room = Room(version, create_content={"creator": BOB})
    room.rejects(room.member(ALICE, ALICE, "join"), "member.join.invite_only")
    room.check(room.member(BOB, BOB, "join"))


@pytest.mark.parametrize("version", ["11", "12"])
def test_creator_join_uses_create_sender_from_v11(version: str) -> None:
    room = Room(version, create_content={"creator": BOB})
    room.rejects(room.member(BOB, BOB, "join"), "member.join.invite_only")
    room.check(room.member(ALICE, ALICE, "join"))


@pytest.mark.parametrize("version", ["1", "11"])
def test_creator_join_shortcut_needs_create_as_only_prev_event(version: str) -> None:
    room = Room(version)
    other_prev = "$elsewhere:a.test"
    join = room.build(MEMBER, ALICE, {"membership": "join"}, state_key=ALICE,
                      prev=[room.create.event_id, other_prev])
    room.rejects(join, "member.join.invite_only")


def test_join_for_someone_else_rejected() -> None:
    room = make_room("10", join_rule="public")
    room.rejects(room.member(ALICE, BOB, "join"), "member.join.sender")


@pytest.mark.parametrize("version", ["1", "12"])
def test_banned_user_cannot_join(version: str) -> None:
    room = make_room(version, join_rule="public")
    room.set_member(BOB, BOB, "join")
    room.set_member(ALICE, BOB, "ban")
    room.rejects(room.member(BOB, BOB, "join"), "member.join.banned")


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_invite_only_room(version: str) -> None:
    room = make_room(version)
    room.rejects(room.member(BOB, BOB, "join"), "member.join.invite_only")
    room.set_member(ALICE, BOB, "invite")
    room.set_member(BOB, BOB, "join")
    room.set_member(BOB, BOB, "join", displayname="Bob")  # joined already: a profile change


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_public_room_join(version: str) -> None:
    room = make_room(version, join_rule="public")
    room.set_member(BOB, BOB, "join")


def test_unknown_join_rule_rejects_joins() -> None:
    room = make_room("10", join_rule="private")
    room.set_member(ALICE, BOB, "invite")
    room.rejects(room.member(BOB, BOB, "join"), "member.join.join_rule")


def test_no_join_rules_event_acts_as_invite() -> None:
    room = Room("10")
    room.set_member(ALICE, ALICE, "join")
    room.rejects(room.member(BOB, BOB, "join"), "member.join.invite_only")
    room.set_member(ALICE, BOB, "invite")
    room.set_member(BOB, BOB, "join")


@pytest.mark.parametrize("version, allowed", [("6", False), ("7", True), ("12", True)])
def test_knock_join_rule_lets_invited_users_join_from_v7(version: str, allowed: bool) -> None:
    room = make_room(version, join_rule="knock")
    room.set_member(ALICE, BOB, "invite")
    join = room.member(BOB, BOB, "join")
    if allowed:
        room.apply(join)
    else:
        room.rejects(join, "member.join.join_rule")


# --- restricted joins (v8+) and knock_restricted (v10+) ----------------------------------------


def _authorised_join(room: Room, user: str, via: str, signed: bool = True) -> Event:
    """A join naming ``via`` as the authorising user, signed (in name) by via's server."""
    extra = {"signatures": {_domain(via): {"ed25519:k": "sig"}}} if signed else None
    content = {"membership": "join", "join_authorised_via_users_server": via}
    return room.build(MEMBER, user, content, state_key=user, extra=extra)


@pytest.mark.parametrize("version, rule", [
    ("8", "restricted"), ("9", "restricted"), ("10", "restricted"),
    ("10", "knock_restricted"), ("11", "knock_restricted"), ("12", "restricted"),
])
def test_restricted_join_via_authorising_user(version: str, rule: str) -> None:
    room = make_room(version, join_rule=rule)
    room.rejects(room.member(BOB, BOB, "join"), "member.join.authorised_via")
    room.apply(_authorised_join(room, BOB, ALICE))


def test_restricted_join_authoriser_must_be_joined() -> None:
    room = make_room("9", join_rule="restricted")
    room.set_member(ALICE, CAROL, "invite")  # invited, not joined
    room.rejects(_authorised_join(room, BOB, CAROL), "member.join.authorised_via")


def test_restricted_join_authoriser_must_be_able_to_invite() -> None:
    room = make_room("9", join_rule="restricted", invite=50)
    room.add(CAROL)
    room.rejects(_authorised_join(room, BOB, CAROL), "member.join.authorised_via")
    room.apply(room.power_levels(users={ALICE: 100, CAROL: 50}, invite=50))
    room.apply(_authorised_join(room, BOB, CAROL))


def test_restricted_join_invited_user_needs_no_authoriser() -> None:
    room = make_room("8", join_rule="restricted")
    room.set_member(ALICE, BOB, "invite")
    room.set_member(BOB, BOB, "join")


def test_authorising_server_must_sign() -> None:
    room = make_room("8", join_rule="restricted")
    room.rejects(_authorised_join(room, BOB, ALICE, signed=False),
                 "member.authorised_via.signature")
    # With a verifier, it decides.
    room.check(_authorised_join(room, BOB, ALICE, signed=False),
               verify_signature=lambda event, server: server == "a.test")
    room.rejects(_authorised_join(room, BOB, ALICE), "member.authorised_via.signature",
                 verify_signature=lambda event, server: False)


@pytest.mark.parametrize("version, rule", [("7", "restricted"), ("9", "knock_restricted")])
def test_restricted_rules_unknown_in_older_versions(version: str, rule: str) -> None:
    room = make_room(version, join_rule=rule)
    room.rejects(_authorised_join(room, BOB, ALICE), "member.join.join_rule")


# --- invites -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "12"])
def test_invite_by_joined_member(version: str) -> None:
    room = make_room(version)
    room.set_member(ALICE, BOB, "invite")
    assert room.state[(MEMBER, BOB)].membership == "invite"


def test_invite_sender_must_be_joined() -> None:
    room = make_room("10")
    room.rejects(room.member(CAROL, BOB, "invite"), "member.invite.sender_joined")


def test_invite_target_must_not_be_joined_or_banned() -> None:
    room = make_room("10")
    room.add(BOB)
    room.rejects(room.member(ALICE, BOB, "invite"), "member.invite.target")
    room.set_member(ALICE, CAROL, "ban")
    room.rejects(room.member(ALICE, CAROL, "invite"), "member.invite.target")


def test_invite_needs_invite_level() -> None:
    room = make_room("10", invite=50)
    room.add(BOB)
    room.rejects(room.member(BOB, CAROL, "invite"), "member.invite.level")
    room = make_room("10")  # the invite level defaults to 0
    room.add(BOB)
    room.set_member(BOB, CAROL, "invite")


# --- third-party invites -----------------------------------------------------------------------


class IdentityServer:
    """Signs third-party invite "signed" objects like an identity server."""

    def __init__(self) -> None:
        self.key = generate_signing_key("0")
        self.public_key = encode_verify_key(get_verify_key(self.key))

    def signed(self, mxid: str, token: str, sender: str = ALICE) -> dict[str, Any]:
        return sign_json({"mxid": mxid, "token": token, "sender": sender}, "id.test", self.key)


def _third_party_room(version: str = "10", field: str = "public_key",
                      **pl: Any) -> tuple[Room, IdentityServer]:
    room = make_room(version, **pl)
    ids = IdentityServer()
    content: dict[str, Any] = {"display_name": "b...@b.test",
                               "key_validity_url": "https://id.test/isvalid"}
    if field == "public_key":
        content["public_key"] = ids.public_key
    else:
        content["public_keys"] = [{"public_key": IdentityServer().public_key},
                                  {"public_key": ids.public_key}]
    room.send(TPI, ALICE, content, state_key="tok")
    return room, ids


def _third_party_invite(room: Room, sender: str, target: str, signed: Any) -> Event:
    return room.member(sender, target, "invite",
                       third_party_invite={"display_name": "b...@b.test", "signed": signed})


@pytest.mark.parametrize("version", ["1", "10", "12"])
@pytest.mark.parametrize("field", ["public_key", "public_keys"])
def test_third_party_invite_allowed(version: str, field: str) -> None:
    room, ids = _third_party_room(version, field)
    room.apply(_third_party_invite(room, ALICE, BOB, ids.signed(BOB, "tok")))
    room.set_member(BOB, BOB, "join")


def test_third_party_invite_url_safe_public_key() -> None:
    room = make_room("10")
    ids = IdentityServer()
    while "+" not in ids.public_key and "/" not in ids.public_key:
        ids = IdentityServer()
    url_safe = encode_urlsafe_base64(decode_base64(ids.public_key))
    room.send(TPI, ALICE, {"public_keys": ["junk", {"public_key": url_safe}]}, state_key="tok")
    room.apply(_third_party_invite(room, ALICE, BOB, ids.signed(BOB, "tok")))


def test_third_party_invite_signature_must_verify() -> None:
    room, ids = _third_party_room()
    forged = IdentityServer().signed(BOB, "tok")
    room.rejects(_third_party_invite(room, ALICE, BOB, forged), "member.third_party.signature")
    tampered = ids.signed(BOB, "tok")
    tampered["sender"] = CAROL
    room.rejects(_third_party_invite(room, ALICE, BOB, tampered), "member.third_party.signature")
    unsigned = {"mxid": BOB, "token": "tok"}
    room.rejects(_third_party_invite(room, ALICE, BOB, unsigned), "member.third_party.signature")


def test_third_party_invite_signed_fields() -> None:
    room, ids = _third_party_room()
    room.rejects(room.member(ALICE, BOB, "invite", third_party_invite={"display_name": "x"}),
                 "member.third_party.signed")
    room.rejects(_third_party_invite(room, ALICE, BOB, {"mxid": BOB}), "member.third_party.signed")
    room.rejects(_third_party_invite(room, ALICE, BOB, ids.signed(CAROL, "tok")),
                 "member.third_party.mxid")
    room.rejects(_third_party_invite(room, ALICE, BOB, ids.signed(BOB, "other")),
                 "member.third_party.token")


def test_third_party_invite_needs_no_joined_sender() -> None:
    # Rule "If content has a third_party_invite property": allowed once the signature
    # verifies, without the sender-joined and invite-level rules of plain invites.
    room, ids = _third_party_room()
    room.add(DAVE)
    room.send(TPI, DAVE, {"public_key": ids.public_key}, state_key="dave-tok")
    room.set_member(DAVE, DAVE, "leave")
    room.apply(_third_party_invite(room, DAVE, BOB, ids.signed(BOB, "dave-tok", DAVE)))


def test_third_party_invite_sender_must_match() -> None:
    room, ids = _third_party_room()
    room.add(DAVE)
    room.rejects(_third_party_invite(room, DAVE, BOB, ids.signed(BOB, "tok")),
                 "member.third_party.sender")


def test_third_party_invite_target_banned() -> None:
    room, ids = _third_party_room()
    room.set_member(ALICE, BOB, "ban")
    room.rejects(_third_party_invite(room, ALICE, BOB, ids.signed(BOB, "tok")),
                 "member.third_party.banned")


def test_third_party_invite_event_needs_invite_level_only() -> None:
    room = make_room("10", invite=50, events={TPI: 100})
    room.add(BOB)
    room.rejects(room.build(TPI, BOB, {"public_key": "x"}, state_key="t"),
                 "third_party_invite.level")
    # The invite level alone decides: events[m.room.third_party_invite] is not consulted.
    room.apply(room.power_levels(users={ALICE: 100, BOB: 50}, invite=50, events={TPI: 100}))
    room.check(room.build(TPI, BOB, {"public_key": "x"}, state_key="t"))
    room.rejects(room.build(TPI, CAROL, {"public_key": "x"}, state_key="t"), "sender.joined")


# --- leaving, kicking, unbanning ---------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "12"])
def test_leave_self(version: str) -> None:
    room = make_room(version)
    room.add(BOB)
    room.set_member(BOB, BOB, "leave")
    room.rejects(room.member(BOB, BOB, "leave"), "member.leave.self")


def test_reject_invite() -> None:
    room = make_room("10")
    room.set_member(ALICE, BOB, "invite")
    room.set_member(BOB, BOB, "leave")


def test_banned_user_cannot_unban_self() -> None:
    room = make_room("10")
    room.add(BOB)
    room.set_member(ALICE, BOB, "ban")
    room.rejects(room.member(BOB, BOB, "leave"), "member.leave.self")


@pytest.mark.parametrize("version", ["1", "10"])
def test_kick(version: str) -> None:
    room = make_room(version, users={BOB: 50, DAVE: 50})
    for user in (BOB, CAROL, DAVE):
        room.add(user)
    room.rejects(room.member(CAROL, DAVE, "leave"), "member.leave.kick_level")
    room.rejects(room.member(BOB, ALICE, "leave"), "member.leave.target_level")
    room.rejects(room.member(BOB, DAVE, "leave"), "member.leave.target_level")  # equal levels
    room.set_member(BOB, CAROL, "leave")
    room.rejects(room.member(CAROL, DAVE, "leave"), "member.leave.sender_joined")


def test_unban_needs_ban_level() -> None:
    room = make_room("10", users={BOB: 50}, kick=50, ban=75)
    room.add(BOB)
    room.set_member(ALICE, CAROL, "ban")
    room.rejects(room.member(BOB, CAROL, "leave"), "member.leave.unban_level")
    room.set_member(ALICE, CAROL, "leave")


# --- bans --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "10"])
def test_ban_power(version: str) -> None:
    room = make_room(version, users={BOB: 50, CAROL: 50})
    for user in (BOB, CAROL, DAVE):
        room.add(user)
    room.rejects(room.member(DAVE, BOB, "ban"), "member.ban.level")
    room.rejects(room.member(BOB, CAROL, "ban"), "member.ban.target_level")
    room.rejects(room.member(BOB, ALICE, "ban"), "member.ban.target_level")
    room.set_member(BOB, DAVE, "ban")
    room.set_member(BOB, "@eve:e.test", "ban")  # never in the room


def test_ban_sender_must_be_joined() -> None:
    room = make_room("10")
    room.add(BOB)
    room.rejects(room.member(CAROL, BOB, "ban"), "member.ban.sender_joined")


# --- knocking (v7+) ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["7", "12"])
def test_knock(version: str) -> None:
    room = make_room(version, join_rule="knock")
    room.set_member(BOB, BOB, "knock")
    room.set_member(BOB, BOB, "leave")  # withdrawing a knock
    room.set_member(BOB, BOB, "knock")
    room.set_member(ALICE, BOB, "invite")
    room.rejects(room.member(BOB, BOB, "knock"), "member.knock.membership")  # invited
    room.set_member(BOB, BOB, "join")
    room.rejects(room.member(BOB, BOB, "knock"), "member.knock.membership")  # joined
    room.set_member(ALICE, CAROL, "ban")
    room.rejects(room.member(CAROL, CAROL, "knock"), "member.knock.membership")  # banned


def test_knock_is_an_unknown_membership_before_v7() -> None:
    room = make_room("6", join_rule="knock")
    room.rejects(room.member(BOB, BOB, "knock"), "member.unknown")


@pytest.mark.parametrize("join_rule", ["invite", "public", "restricted"])
def test_knock_needs_knock_join_rule(join_rule: str) -> None:
    room = make_room("9", join_rule=join_rule)
    room.rejects(room.member(BOB, BOB, "knock"), "member.knock.join_rule")


def test_knock_only_for_oneself() -> None:
    room = make_room("7", join_rule="knock")
    room.rejects(room.member(BOB, CAROL, "knock"), "member.knock.sender")


@pytest.mark.parametrize("version, allowed", [("9", False), ("10", True)])
def test_knock_restricted_allows_knocking_from_v10(version: str, allowed: bool) -> None:
    room = make_room(version, join_rule="knock_restricted")
    knock = room.member(BOB, BOB, "knock")
    if allowed:
        room.apply(knock)
    else:
        room.rejects(knock, "member.knock.join_rule")


# --- the sender must be joined; required power levels; state keys ------------------------------


def test_non_member_cannot_send() -> None:
    room = make_room("10", join_rule="public")
    room.rejects(room.build("m.room.message", BOB, {"body": "hi"}), "sender.joined")
    room.set_member(ALICE, BOB, "invite")
    room.rejects(room.build("m.room.message", BOB, {"body": "hi"}), "sender.joined")
    room.set_member(BOB, BOB, "join")
    room.check(room.build("m.room.message", BOB, {"body": "hi"}))


def test_required_power_level() -> None:
    room = make_room("10", users={BOB: 10}, events={"m.room.topic": 10, "org.custom": 20})
    room.add(BOB)
    room.check(room.build("m.room.message", BOB, {"body": "hi"}))  # events_default 0
    room.check(room.build("m.room.topic", BOB, {"topic": "t"}, state_key=""))
    room.rejects(room.build("m.room.name", BOB, {"name": "n"}, state_key=""),
                 "power_level.required")  # state_default 50
    room.rejects(room.build("org.custom", BOB, {}), "power_level.required")
    room = make_room("10", events_default=20, state_default=0)
    room.add(BOB)
    room.rejects(room.build("m.room.message", BOB, {"body": "hi"}), "power_level.required")
    room.check(room.build("m.room.name", BOB, {"name": "n"}, state_key=""))


@pytest.mark.parametrize("version", ["1", "11", "12"])
def test_levels_without_power_levels_event(version: str) -> None:
    room = Room(version)
    room.set_member(ALICE, ALICE, "join")
    room.send(JOIN_RULES, ALICE, {"join_rule": "public"}, state_key="")  # creator: 100 / inf
    room.set_member(BOB, BOB, "join")
    room.check(room.build("m.room.message", BOB, {"body": "hi"}))
    room.rejects(room.build("m.room.name", BOB, {"name": "n"}, state_key=""),
                 "power_level.required")
    room.rejects(room.member(BOB, ALICE, "leave"), "member.leave.kick_level")


def test_state_key_starting_with_at_must_be_sender() -> None:
    room = make_room("10", users={BOB: 50})
    room.add(BOB)
    room.check(room.build("org.state", BOB, {}, state_key=BOB))
    room.check(room.build("org.state", BOB, {}, state_key="x@y"))
    room.rejects(room.build("org.state", BOB, {}, state_key=ALICE), "state_key.user")


# --- m.room.power_levels -----------------------------------------------------------------------


def _users(room: Room, **levels: Any) -> dict[str, Any]:
    """A users map keeping Alice at 100 (she is a creator with infinite power in v12)."""
    users = {} if room.rv.privileged_room_creators else {ALICE: 100}
    names = {"bob": BOB, "carol": CAROL, "dave": DAVE}
    users.update({names[k]: v for k, v in levels.items()})
    return users


@pytest.mark.parametrize("version", ["1", "10", "12"])
def test_power_levels_users_must_be_user_ids_with_levels(version: str) -> None:
    room = make_room(version)
    room.check(room.power_levels(users=_users(room, bob=50)))
    bad_key = {**_users(room), "bob": 50}
    room.rejects(room.power_levels(users=bad_key), "power_levels.users")
    room.rejects(room.power_levels(users=_users(room, bob="fifty")), "power_levels.users")
    room.rejects(room.power_levels(users=_users(room, bob=True)), "power_levels.users")
    room.rejects(room.power_levels(users=[BOB]), "power_levels.users")


def test_first_power_levels_event_is_allowed_any_content() -> None:
    room = Room("10")
    room.set_member(ALICE, ALICE, "join")
    room.apply(room.power_levels(users={ALICE: 100, BOB: 1000}, ban=500))
    room.rejects(room.power_levels(users={ALICE: 100, BOB: 1000}, ban=50), "power_levels.change")


def test_string_power_levels_before_v10() -> None:
    room = make_room("9", users={BOB: "50", ALICE: " +100 "}, ban="050", events={"x": "7"})
    for user in (BOB, CAROL):
        room.add(user)
    room.set_member(BOB, CAROL, "ban")  # Bob's "50" meets the ban level "050"
    room.check(room.power_levels(users={ALICE: "100", BOB: "50"}, ban="050", events={"x": 7}))
    room.rejects(room.power_levels(users={ALICE: "100", BOB: "1e3"}), "power_levels.users")


def test_integer_power_levels_from_v10() -> None:
    room = make_room("10")
    room.rejects(room.power_levels(users={ALICE: 100, BOB: "50"}), "power_levels.users")
    for name in ("users_default", "events_default", "state_default", "ban", "redact", "kick",
                 "invite"):
        room.rejects(room.power_levels(users={ALICE: 100}, **{name: "50"}), "power_levels.integer")
        room.check(room.power_levels(users={ALICE: 100}, **{name: 50}))
    for name in ("events", "notifications"):
        room.rejects(room.power_levels(users={ALICE: 100}, **{name: {"x": "5"}}),
                     "power_levels.integer")
        room.rejects(room.power_levels(users={ALICE: 100}, **{name: ["x"]}),
                     "power_levels.integer")
        room.check(room.power_levels(users={ALICE: 100}, **{name: {"x": 5}}))


@pytest.mark.parametrize("version", ["1", "5"])
def test_float_power_levels_truncated_before_v6(version: str) -> None:
    room = make_room(version, users={BOB: 50.7, CAROL: 49.9})
    for user in (BOB, CAROL, DAVE):
        room.add(user)
    room.rejects(room.member(CAROL, DAVE, "ban"), "member.ban.level")  # 49.9 counts as 49
    room.set_member(BOB, DAVE, "ban")  # 50.7 counts as 50, the ban level
    # 50.2 is no change from 50.7 (both 50), so Bob may "edit" his own entry this way.
    room.check(room.power_levels(BOB, users={ALICE: 100, BOB: 50.2, CAROL: 49.9}))


@pytest.mark.parametrize("version", ["1", "10"])
def test_users_default(version: str) -> None:
    users_default: Any = "10" if version == "1" else 10
    room = make_room(version, users_default=users_default, events_default=10, state_default=11)
    room.add(BOB)
    room.check(room.build("m.room.message", BOB, {"body": "hi"}))
    room.rejects(room.build("m.room.topic", BOB, {"topic": "t"}, state_key=""),
                 "power_level.required")


@pytest.mark.parametrize("version", ["1", "10", "12"])
def test_cannot_give_a_level_above_ones_own(version: str) -> None:
    room = make_room(version, users={BOB: 50})
    room.add(BOB)
    room.rejects(room.power_levels(BOB, users=_users(room, bob=50, carol=51)),
                 "power_levels.users_change")
    room.rejects(room.power_levels(BOB, users=_users(room, bob=60)), "power_levels.users_change")
    room.check(room.power_levels(BOB, users=_users(room, bob=50, carol=50)))
    room.check(room.power_levels(BOB, users=_users(room, bob=10)))  # lowering oneself


@pytest.mark.parametrize("version", ["1", "10"])
def test_cannot_change_users_at_or_above_ones_level(version: str) -> None:
    room = make_room(version, users={BOB: 50, CAROL: 50, DAVE: 10})
    room.add(BOB)
    room.rejects(room.power_levels(BOB, users=_users(room, bob=50, carol=40, dave=10)),
                 "power_levels.users_change")
    room.rejects(room.power_levels(BOB, users=_users(room, bob=50, dave=10)),
                 "power_levels.users_change")  # removing Carol
    room.rejects(room.power_levels(BOB, users={BOB: 50, CAROL: 50, DAVE: 10, ALICE: 40}),
                 "power_levels.users_change")
    room.check(room.power_levels(BOB, users=_users(room, bob=50, carol=50, dave=49)))
    room.check(room.power_levels(BOB, users=_users(room, bob=50, carol=50)))  # removing Dave


def test_top_level_levels_changes() -> None:
    room = make_room("10", users={BOB: 50}, ban=75)
    room.add(BOB)
    users = _users(room, bob=50)
    room.rejects(room.power_levels(BOB, users=users, ban=50), "power_levels.change")
    room.rejects(room.power_levels(BOB, users=users), "power_levels.change")  # removing ban
    room.rejects(room.power_levels(BOB, users=users, ban=75, kick=60), "power_levels.change")
    room.rejects(room.power_levels(BOB, users=users, ban=75, users_default=51),
                 "power_levels.change")
    room.check(room.power_levels(BOB, users=users, ban=75, kick=40, users_default=50))


def test_events_levels_changes() -> None:
    room = make_room("10", users={BOB: 50}, events={"m.room.name": 75, "m.room.topic": 20})
    room.add(BOB)
    users = _users(room, bob=50)
    room.rejects(room.power_levels(BOB, users=users, events={"m.room.topic": 20}),
                 "power_levels.change")  # removing an entry above Bob
    room.rejects(room.power_levels(BOB, users=users, events={"m.room.name": 75, "m.room.topic": 20,
                                                             "x": 60}), "power_levels.change")
    room.check(room.power_levels(BOB, users=users, events={"m.room.name": 75, "m.room.topic": 40,
                                                           "x": 50}))


@pytest.mark.parametrize("version, checked", [("5", False), ("6", True), ("12", True)])
def test_notifications_levels_checked_from_v6(version: str, checked: bool) -> None:
    room = make_room(version, users={BOB: 50}, notifications={"room": 75})
    room.add(BOB)
    lowered = room.power_levels(BOB, users=_users(room, bob=50), notifications={"room": 20})
    if checked:
        room.rejects(lowered, "power_levels.change")
        room.check(room.power_levels(BOB, users=_users(room, bob=50),
                                     notifications={"room": 75, "x": 50}))
    else:
        room.check(lowered)


def test_power_levels_event_needs_its_required_level() -> None:
    room = make_room("10", users={BOB: 40})
    room.add(BOB)
    room.rejects(room.power_levels(BOB, users=_users(room, bob=40)), "power_level.required")


# --- v12 privileged creators (MSC4289) ---------------------------------------------------------


def test_v12_creators_cannot_be_listed_in_users() -> None:
    room = make_room("12")
    room.rejects(room.power_levels(users={ALICE: 100}), "power_levels.creators")
    room = Room("12", create_content={"additional_creators": [BOB]})
    room.set_member(ALICE, ALICE, "join")
    # Checked even for the first m.room.power_levels event.
    room.rejects(room.power_levels(users={BOB: 50}), "power_levels.creators")
    room.apply(room.power_levels(users={CAROL: 50}))


def test_v12_creators_outrank_power_level_100() -> None:
    room = make_room("12", users={BOB: 100})
    room.add(BOB)
    room.rejects(room.member(BOB, ALICE, "ban"), "member.ban.target_level")
    room.rejects(room.member(BOB, ALICE, "leave"), "member.leave.target_level")
    room.apply(room.power_levels(ALICE, users={BOB: 0}))  # a creator may demote a 100


def test_v11_creator_is_just_power_level_100() -> None:
    room = make_room("11", users={BOB: 100})
    room.add(BOB)
    room.rejects(room.power_levels(ALICE, users={ALICE: 100, BOB: 0}),
                 "power_levels.users_change")
    room.rejects(room.member(BOB, ALICE, "ban"), "member.ban.target_level")
    room.rejects(room.member(ALICE, BOB, "ban"), "member.ban.target_level")


def test_v12_additional_creators_have_infinite_power() -> None:
    room = Room("12", create_content={"additional_creators": [BOB]})
    room.set_member(ALICE, ALICE, "join")
    room.rejects(room.member(BOB, BOB, "join"), "member.join.invite_only")  # not the first
    room.send(JOIN_RULES, ALICE, {"join_rule": "public"}, state_key="")
    room.set_member(BOB, BOB, "join")
    room.send("m.room.name", BOB, {"name": "n"}, state_key="")
    room.apply(room.power_levels(BOB, users={CAROL: 100}, kick=0))
    room.set_member(CAROL, CAROL, "join")
    room.rejects(room.member(CAROL, BOB, "leave"), "member.leave.target_level")
    room.set_member(BOB, CAROL, "leave")


# --- m.room.redaction --------------------------------------------------------------------------


def test_v1_redaction_needs_redact_level_or_same_origin() -> None:
    room = make_room("1")
    room.add(BOB)
    mine = room.send("m.room.message", BOB, {"body": "mine"})
    theirs = room.send("m.room.message", ALICE, {"body": "theirs"})
    redact = {"reason": "x"}
    room.check(room.build("m.room.redaction", BOB, redact, extra={"redacts": mine.event_id}))
    room.rejects(room.build("m.room.redaction", BOB, redact, extra={"redacts": theirs.event_id}),
                 "redaction.level")
    # Only the event ids' domains are compared, not the senders'.
    room.check(room.build("m.room.redaction", BOB, redact, extra={"redacts": theirs.event_id},
                          id_domain="a.test"))
    room.check(room.build("m.room.redaction", ALICE, redact, extra={"redacts": mine.event_id}))


@pytest.mark.parametrize("version", ["3", "11"])
def test_redaction_is_ordinary_from_v3(version: str) -> None:
    room = make_room(version)
    room.add(BOB)
    theirs = room.send("m.room.message", ALICE, {"body": "theirs"})
    content: dict[str, Any] = {"redacts": theirs.event_id}
    extra = None if room.rv.redacts_in_content else {"redacts": theirs.event_id}
    room.check(room.build("m.room.redaction", BOB, content, extra=extra))
    # The auth rules do not look at what is redacted at all.
    room.check(room.build("m.room.redaction", BOB, {}))
    room = make_room(version, events={"m.room.redaction": 50})
    room.add(BOB)
    room.rejects(room.build("m.room.redaction", BOB, content, extra=extra),
                 "power_level.required")


# --- helpers -----------------------------------------------------------------------------------


def test_auth_error_message_names_the_rule() -> None:
    room = make_room("10")
    error = room.rejects(room.member(BOB, BOB, "join"), "member.join.invite_only")
    assert "member.join.invite_only" in str(error)
    assert BOB in str(error)


def test_auth_types_for_event() -> None:
    v1, v7, v8, v12 = (KNOWN_ROOM_VERSIONS[v] for v in ("1", "7", "8", "12"))
    base = {(CREATE, ""), (PL, ""), (MEMBER, ALICE)}
    assert auth_types_for_event(CREATE, ALICE, "", {}, v1) == set()
    assert auth_types_for_event("m.room.message", ALICE, None, {}, v1) == base
    assert auth_types_for_event("m.room.message", ALICE, None, {}, v12) == {
        (PL, ""), (MEMBER, ALICE)}
    invite = {"membership": "invite", "third_party_invite": {"signed": {"token": "tok"}}}
    assert auth_types_for_event(MEMBER, ALICE, BOB, invite, "10") == base | {
        (MEMBER, BOB), (JOIN_RULES, ""), (TPI, "tok")}
    assert auth_types_for_event(MEMBER, ALICE, BOB, {"membership": "ban"}, v1) == base | {
        (MEMBER, BOB)}
    assert auth_types_for_event(MEMBER, BOB, BOB, {"membership": "knock"}, v7) == {
        (CREATE, ""), (PL, ""), (MEMBER, BOB), (JOIN_RULES, "")}
    join = {"membership": "join", "join_authorised_via_users_server": CAROL}
    assert (MEMBER, CAROL) in auth_types_for_event(MEMBER, BOB, BOB, join, v8)
    assert (MEMBER, CAROL) not in auth_types_for_event(MEMBER, BOB, BOB, join, v7)
