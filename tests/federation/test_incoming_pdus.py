"""Received PDUs through the real incoming path (FederationEventHandler.receive_pdu and
FederationApi.send_transaction, a real EventStore and EventCreator on each engine, a real
Keyring fetching the remote server's keys from a fake network): forged signatures, bad hashes,
auth-rule violations and malformed PDUs are refused, and what is refused leaves nothing behind.

What the design stores and what it drops (federation/event_handler.py):
  - bad format, size, signature, unknown room: PduRejected, no row anywhere;
  - content hash mismatch with a good signature: stored in its redacted form;
  - failing the auth rules against its auth events or the state before it: stored with a
    rejected_reason (so the same id is never re-processed or used as an auth event), never in
    the timeline, current state, forward extremities or memberships;
  - failing only against the current state: stored soft-failed, likewise never shown.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import pytest_twisted

from crypto.canonical_json import encode_canonical_json
from crypto.event_signing import hash_and_sign_event, sign_event
from crypto.keys import generate_signing_key, key_id_of
from crypto.redaction import redact_event
from crypto.room_versions import get_room_version
from federation.api import MAX_PDUS
from federation.event_checks import MAX_PDU_BYTES, PduRejected
from homeserver.http.errors import MatrixError
from storage.database import Database
from tests.federation.incoming_fakes import (ALICE, BOB, LOCAL, MALLORY, REMOTE, Hearth,
                                             event_id_of)

ROOM_VERSIONS = ["10", "12"]


@dataclass
class Room:
    hs: Hearth
    room_id: str
    version: str
    bob_join: str  # BOB (remote.test) joined through the incoming path

    async def message(self, body: Any = "hello", sender: str = BOB, **kw: Any) -> dict[str, Any]:
        return await self.hs.remote_event(self.room_id, "m.room.message", sender,
                                          {"msgtype": "m.text", "body": body}, **kw)


@pytest.fixture(params=ROOM_VERSIONS)
def room_version(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest_twisted.async_fixture
async def hs(db: Database) -> Hearth:
    return await Hearth(db).start()


@pytest_twisted.async_fixture
async def room(hs: Hearth, room_version: str) -> Room:
    """A public room created by a local user, with a remote user joined over federation."""
    room_id = await hs.create_room(room_version)
    return Room(hs, room_id, room_version, await hs.join_remote(room_id))


def resign(pdu: dict[str, Any], version: str, key: Any, server: str = REMOTE) -> dict[str, Any]:
    """Hash and sign ``pdu`` afresh (after a test changed it) as ``server`` with ``key``."""
    pdu = copy.deepcopy(pdu)
    pdu.pop("signatures", None)
    pdu.pop("hashes", None)
    return hash_and_sign_event(pdu, server, key, version)


def try_event_id(pdu: Any, version: str) -> str | None:
    try:
        return event_id_of(pdu, version)
    except Exception:  # noqa: BLE001 - a PDU too broken to have an id
        return None


async def expect_refused(hs: Hearth, pdu: Any, version: str, match: str | None = None
                         ) -> PduRejected:
    """receive_pdu raises PduRejected and no table changes; nobody was asked for more."""
    before = await hs.traces()
    heard = list(hs.timeline_heard)
    with pytest.raises(PduRejected) as exc:
        await hs.handler.receive_pdu(REMOTE, pdu)
    if match is not None:
        assert match in str(exc.value), str(exc.value)
    assert await hs.traces() == before
    assert hs.timeline_heard == heard
    assert hs.client.calls == []
    event_id = try_event_id(pdu, version)
    if event_id is not None:
        assert not await hs.stored(event_id)
    return exc.value


@dataclass
class Snapshot:
    state: dict[tuple[str, str], str]
    extremities: list[str]
    members: list[str]
    timeline: list[str]
    heard: list[str]


async def snapshot(hs: Hearth, room_id: str) -> Snapshot:
    return Snapshot(await hs.store.get_current_state_ids(room_id),
                    sorted(await hs.store.get_forward_extremities(room_id)),
                    await hs.store.get_members(room_id, ("join", "invite", "knock", "ban")),
                    await hs.timeline(room_id), list(hs.timeline_heard))


async def assert_hidden(hs: Hearth, room_id: str, event_id: str, before: Snapshot) -> None:
    """The event changed nothing anyone sees: state, extremities, members, timeline."""
    after = await snapshot(hs, room_id)
    assert after == before
    assert event_id not in after.timeline
    assert event_id not in after.state.values()
    assert event_id not in after.extremities
    # Not from the database either (the caches were kept in step, but ask the source).
    rows = await hs.db.query("SELECT COUNT(*) FROM forward_extremities WHERE event_id = ?",
                             (event_id,))
    assert rows[0][0] == 0
    rows = await hs.db.query("SELECT COUNT(*) FROM room_memberships WHERE event_id = ?",
                             (event_id,))
    assert rows[0][0] == 0


async def expect_stored_rejected(room: Room, pdu: dict[str, Any], reason: str) -> str:
    hs = room.hs
    before = await snapshot(hs, room.room_id)
    persisted = await hs.handler.receive_pdu(REMOTE, pdu)
    assert persisted is not None
    event_id = persisted.event.event_id
    assert event_id == event_id_of(pdu, room.version)
    stored = await hs.db_row(event_id)
    assert stored is not None
    _, outlier, rejected_reason, soft_failed = stored
    assert not outlier and not soft_failed
    assert rejected_reason is not None and reason in rejected_reason, rejected_reason
    row = await hs.store.get_event_row(event_id)
    assert row is not None and row.rejected and not row.soft_failed
    await assert_hidden(hs, room.room_id, event_id, before)
    return event_id


# --- 1. signatures ---------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_good_message_is_accepted(room: Room) -> None:
    """The baseline the refusals below are measured against."""
    hs = room.hs
    pdu = await room.message()
    persisted = await hs.handler.receive_pdu(REMOTE, pdu)
    assert persisted is not None
    event_id = persisted.event.event_id
    row = await hs.store.get_event_row(event_id)
    assert row is not None and not row.rejected and not row.soft_failed and not row.outlier
    assert row.event.content["body"] == "hello"
    assert (await hs.timeline(room.room_id))[-1] == event_id
    assert await hs.store.get_forward_extremities(room.room_id) == [event_id]
    assert hs.timeline_heard[-1] == event_id


@pytest_twisted.ensureDeferred
async def test_signature_by_another_key_with_the_same_id(room: Room) -> None:
    forger = generate_signing_key(room.hs.remote.key.version)
    assert key_id_of(forger) == room.hs.remote.key_id
    pdu = await room.message(key=forger)
    await expect_refused(room.hs, pdu, room.version, "bad signature")


@pytest_twisted.ensureDeferred
async def test_signature_by_an_unpublished_key(room: Room) -> None:
    pdu = await room.message(key=generate_signing_key("other"))
    await expect_refused(room.hs, pdu, room.version, "bad signature")


@pytest_twisted.ensureDeferred
async def test_forged_copy_does_not_block_the_genuine_event(room: Room) -> None:
    """In rooms v3+ the event id leaves out the signatures, so a forged copy has the genuine
    event's id: because the forgery is not stored, the genuine event still gets in."""
    hs = room.hs
    genuine = await room.message(body="genuine")
    forged = copy.deepcopy(genuine)
    forged["signatures"] = resign(genuine, room.version,
                                  generate_signing_key(hs.remote.key.version))["signatures"]
    assert event_id_of(forged, room.version) == event_id_of(genuine, room.version)
    await expect_refused(hs, forged, room.version, "bad signature")
    persisted = await hs.handler.receive_pdu(REMOTE, genuine)
    assert persisted is not None
    assert persisted.event.event_id in await hs.timeline(room.room_id)


@pytest_twisted.ensureDeferred
async def test_redelivery_changes_nothing(room: Room) -> None:
    """An event already in the room (accepted or rejected) is not processed again."""
    hs = room.hs
    good = await room.message(body="once")
    intruder = await room.message(sender=MALLORY)
    assert await hs.handler.receive_pdu(REMOTE, good) is not None
    assert await hs.handler.receive_pdu(REMOTE, intruder) is not None
    traces, heard = await hs.traces(), list(hs.timeline_heard)
    assert await hs.handler.receive_pdu(REMOTE, good) is None
    assert await hs.handler.receive_pdu(REMOTE, intruder) is None
    assert await hs.traces() == traces and hs.timeline_heard == heard
    row = await hs.store.get_event_row(event_id_of(intruder, room.version))
    assert row is not None and row.rejected


TAMPERINGS: dict[str, Callable[[dict[str, Any]], None]] = {
    "origin_server_ts": lambda p: p.__setitem__("origin_server_ts", p["origin_server_ts"] + 1),
    "depth": lambda p: p.__setitem__("depth", p["depth"] + 100),
    "type": lambda p: p.__setitem__("type", "m.room.message.edited"),
    "sender": lambda p: p.__setitem__("sender", f"@carol:{REMOTE}"),
    "prev_events": lambda p: p.__setitem__("prev_events", p["prev_events"] + p["auth_events"][:1]),
    "auth_events": lambda p: p.__setitem__("auth_events", p["auth_events"][:-1]),
    "hashes": lambda p: p.__setitem__("hashes", {"sha256": "A" * 43}),
}


@pytest.mark.parametrize("field", sorted(TAMPERINGS))
@pytest_twisted.ensureDeferred
async def test_tampered_after_signing(room: Room, field: str) -> None:
    """Any change to what the signature covers (the redacted event) breaks it."""
    pdu = await room.message()
    TAMPERINGS[field](pdu)
    await expect_refused(room.hs, pdu, room.version, "bad signature")


@pytest_twisted.ensureDeferred
async def test_membership_tampered_after_signing(room: Room) -> None:
    """content.membership survives redaction, so it is signed: a leave turned into a ban of
    somebody else is refused (the key a tamperer cannot forge)."""
    pdu = await room.hs.remote_event(room.room_id, "m.room.member", BOB, {"membership": "leave"},
                                     BOB)
    pdu["content"]["membership"] = "ban"
    pdu["state_key"] = ALICE
    await expect_refused(room.hs, pdu, room.version, "bad signature")


@pytest_twisted.ensureDeferred
async def test_signed_only_by_another_server(room: Room) -> None:
    """evil.test signs (validly, with its published key) an event of a remote.test user."""
    evil = room.hs.net.add("evil.test")
    pdu = await room.message(key=evil.key, server_name="evil.test")
    assert list(pdu["signatures"]) == ["evil.test"]
    await expect_refused(room.hs, pdu, room.version, f"not signed by {REMOTE}")


@pytest_twisted.ensureDeferred
async def test_remote_server_speaking_for_a_local_user(room: Room) -> None:
    """A PDU from our own user must carry our signature; the remote's is not enough."""
    pdu = await room.message(sender=ALICE)
    await expect_refused(room.hs, pdu, room.version, f"not signed by {LOCAL}")


def _other_key_sig(pdu: dict[str, Any], version: str) -> dict[str, Any]:
    other = generate_signing_key("zzz")
    return resign(pdu, version, other)["signatures"][REMOTE]


SIGNATURE_BLOCKS: dict[str, Callable[[dict[str, Any], str], Any]] = {
    "empty": lambda p, v: {},
    "empty for the server": lambda p, v: {REMOTE: {}},
    "unknown key id": _other_key_sig,
    "not base64": lambda p, v: {REMOTE: {k: "!!!not-base64!!!" for k in p["signatures"][REMOTE]}},
    "truncated": lambda p, v: {REMOTE: {k: s[:20] for k, s in p["signatures"][REMOTE].items()}},
    "other algorithm": lambda p, v: {REMOTE: {"curve25519:" + k.split(":", 1)[1]: s
                                              for k, s in p["signatures"][REMOTE].items()}},
    "malformed key id": lambda p, v: {REMOTE: {"ed25519": s for s in p["signatures"][REMOTE].values()}},
    "not an object": lambda p, v: {REMOTE: "signed!"},
    "other server": lambda p, v: {"elsewhere.test": p["signatures"][REMOTE]},
    "a list": lambda p, v: [p["signatures"]],
}


@pytest.mark.parametrize("case", sorted(SIGNATURE_BLOCKS))
@pytest_twisted.ensureDeferred
async def test_signatures_that_cover_nothing(room: Room, case: str) -> None:
    pdu = await room.message()
    pdu["signatures"] = SIGNATURE_BLOCKS[case](pdu, room.version)
    await expect_refused(room.hs, pdu, room.version)


@pytest_twisted.ensureDeferred
async def test_no_signatures_at_all(room: Room) -> None:
    pdu = await room.message()
    del pdu["signatures"]
    await expect_refused(room.hs, pdu, room.version, "not signed")


@pytest_twisted.ensureDeferred
async def test_key_not_valid_at_the_event_time(room: Room) -> None:
    """Rooms v5+: the key must be valid at origin_server_ts; the remote's keys are published
    valid for one day, so an event stamped two days later cannot use them."""
    later = room.hs.clock.now + 2 * 24 * 3600 * 1000
    pdu = await room.message(origin_server_ts=later)
    await expect_refused(room.hs, pdu, room.version, "bad signature")


# --- 2. content hashes ---------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_content_changed_after_hashing_is_stored_redacted(room: Room) -> None:
    """The signature covers the redacted form, so it still holds; the hash does not: the spec
    has the event redacted before it is processed."""
    hs = room.hs
    pdu = await room.message(body="the original")
    original = copy.deepcopy(pdu)
    pdu["content"]["body"] = "something else"
    pdu["content"]["extra"] = {"smuggled": True}
    event_id = event_id_of(pdu, room.version)
    assert event_id == event_id_of(original, room.version)  # the id ignores content
    persisted = await hs.handler.receive_pdu(REMOTE, pdu)
    assert persisted is not None and persisted.event.event_id == event_id
    stored = await hs.db_row(event_id)
    assert stored is not None
    stored_pdu = json.loads(stored[0])
    assert stored_pdu == redact_event(original, room.version)
    assert stored_pdu["content"] == {}
    assert stored[2] is None and not stored[3]  # neither rejected nor soft-failed
    row = await hs.store.get_event_row(event_id)
    assert row is not None and dict(row.event.content) == {}
    # It is a valid (if empty) event: it takes its place in the timeline, redacted.
    assert (await hs.timeline(room.room_id))[-1] == event_id


@pytest_twisted.ensureDeferred
async def test_member_event_with_bad_hash_keeps_only_the_membership(room: Room) -> None:
    hs = room.hs
    pdu = await hs.remote_event(room.room_id, "m.room.member", BOB,
                                {"membership": "join", "displayname": "Bob"}, BOB)
    pdu["content"]["displayname"] = "Alice (the admin)"
    persisted = await hs.handler.receive_pdu(REMOTE, pdu)
    assert persisted is not None
    row = await hs.store.get_event_row(persisted.event.event_id)
    assert row is not None and not row.rejected
    assert dict(row.event.content) == {"membership": "join"}
    state = await hs.store.get_current_state_ids(room.room_id)
    assert state[("m.room.member", BOB)] == persisted.event.event_id


@pytest_twisted.ensureDeferred
async def test_hash_field_itself_swapped(room: Room) -> None:
    """A sender cannot fix up the hash after the fact: hashes are under the signature."""
    pdu = await room.message(body="the original")
    pdu["content"]["body"] = "changed"
    changed = resign(pdu, room.version, generate_signing_key("x"))  # a fresh, matching hash
    pdu["hashes"] = changed["hashes"]
    await expect_refused(room.hs, pdu, room.version, "bad signature")


def resign_keeping_hashes(pdu: dict[str, Any], room: Room) -> dict[str, Any]:
    pdu = copy.deepcopy(pdu)
    pdu.pop("signatures", None)
    return sign_event(pdu, REMOTE, room.hs.remote.key, room.version)


@pytest.mark.parametrize("hashes", [None, {}, {"sha256": 5}, "abc", {"sha512": "x"}])
@pytest_twisted.ensureDeferred
async def test_missing_or_malformed_hashes(room: Room, hashes: Any) -> None:
    pdu = await room.message()
    if hashes is None:
        del pdu["hashes"]
    else:
        pdu["hashes"] = hashes
    # Signed over the hashes as they are now: only the missing hash is wrong.
    pdu = resign_keeping_hashes(pdu, room)
    await expect_refused(room.hs, pdu, room.version, "hash")


# --- 3. authorization rules -----------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_message_from_a_user_who_never_joined(room: Room) -> None:
    pdu = await room.message(sender=MALLORY)
    await expect_stored_rejected(room, pdu, "auth events")


@pytest_twisted.ensureDeferred
async def test_power_levels_change_by_an_unprivileged_user(room: Room) -> None:
    hs = room.hs
    pl_id = (await hs.store.get_current_state_ids(room.room_id))[("m.room.power_levels", "")]
    pl = dict((await hs.store.get_events([pl_id]))[pl_id].content)
    pl["users"] = {**pl.get("users", {}), BOB: 100}
    pdu = await hs.remote_event(room.room_id, "m.room.power_levels", BOB, pl, "")
    await expect_stored_rejected(room, pdu, "auth events")
    assert (await hs.store.get_current_state_ids(room.room_id))[("m.room.power_levels", "")] == pl_id
    # A local event after it is still built on the old power levels.
    sent = await hs.rooms.send(room.room_id, ALICE, "m.room.message", {"body": "still here"})
    assert pl_id in sent.event.auth_event_ids


@pytest_twisted.ensureDeferred
async def test_join_to_an_invite_only_room(hs: Hearth, room_version: str) -> None:
    room_id = await hs.create_room(room_version, preset="private_chat")
    room = Room(hs, room_id, room_version, "")
    pdu = await hs.remote_event(room_id, "m.room.member", MALLORY, {"membership": "join"}, MALLORY)
    await expect_stored_rejected(room, pdu, "auth events")
    assert await hs.store.get_membership(room_id, MALLORY) is None
    assert MALLORY not in await hs.store.get_members(room_id)


@pytest_twisted.ensureDeferred
async def test_join_for_somebody_else(room: Room) -> None:
    pdu = await room.hs.remote_event(room.room_id, "m.room.member", BOB, {"membership": "join"},
                                     MALLORY)
    await expect_stored_rejected(room, pdu, "auth events")


@pytest_twisted.ensureDeferred
async def test_event_citing_a_rejected_auth_event(hs: Hearth, room_version: str) -> None:
    """Mallory's refused join cannot be used to authorise what Mallory sends next."""
    room_id = await hs.create_room(room_version, preset="private_chat")
    room = Room(hs, room_id, room_version, "")
    join = await hs.remote_event(room_id, "m.room.member", MALLORY, {"membership": "join"}, MALLORY)
    join_id = await expect_stored_rejected(room, join, "auth events")
    state = dict(await hs.store.get_current_state_ids(room_id))
    state[("m.room.member", MALLORY)] = join_id
    pdu = await room.message(sender=MALLORY, prev_events=[join_id], auth_state=state)
    assert join_id in pdu["auth_events"]
    event_id = await expect_stored_rejected(room, pdu, "rejected")
    assert event_id not in await hs.timeline(room_id)


@pytest_twisted.ensureDeferred
async def test_auth_events_picked_wrongly(room: Room) -> None:
    """A message citing the join rules (not an auth event of a message) is rejected."""
    hs = room.hs
    pdu = await room.message()
    rules = (await hs.store.get_current_state_ids(room.room_id))[("m.room.join_rules", "")]
    pdu["auth_events"] = pdu["auth_events"] + [rules]
    pdu = resign(pdu, room.version, hs.remote.key)
    await expect_stored_rejected(room, pdu, "auth events")


@pytest_twisted.ensureDeferred
async def test_auth_events_fine_but_state_before_says_no(room: Room) -> None:
    """Bob cites his join as an auth event, but his message hangs off an event from before
    he joined: in the state before it he is not a member (receipt check 5)."""
    hs = room.hs
    join_row = await hs.store.get_event_row(room.bob_join)
    assert join_row is not None
    before_join = join_row.event.prev_event_ids
    pdu = await room.message(prev_events=before_join)
    assert room.bob_join in pdu["auth_events"]
    await expect_stored_rejected(room, pdu, "state before")


@pytest.mark.parametrize("sender", [BOB, MALLORY])
@pytest_twisted.ensureDeferred
async def test_prev_events_from_another_room(room: Room, sender: str) -> None:
    """An event of room 2 may not hang off room 1's events and so borrow room 1's state. Bob
    is joined in both rooms, Mallory in room 1 only: neither message is accepted, and room 2's
    state, extremities and members stay as they were."""
    hs = room.hs
    other = await hs.create_room(room.version)
    await hs.join_remote(other)
    await hs.join_remote(room.room_id, MALLORY)
    before = await snapshot(hs, other)
    pdu = await hs.remote_event(other, "m.room.message", sender, {"body": "hi"},
                                prev_events=await hs.store.get_forward_extremities(room.room_id),
                                auth_state=await hs.store.get_current_state_ids(other))
    await expect_stored_rejected(Room(hs, other, room.version, ""), pdu, "")
    assert await snapshot(hs, other) == before
    assert MALLORY not in await hs.store.get_members(other)


# --- 4. soft failure ----------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_banned_sender_is_soft_failed(room: Room) -> None:
    """Bob's server, not yet aware of the ban, sends a message on top of Bob's join: its auth
    events and the state before it allow it, the current state (Bob banned) does not."""
    hs = room.hs
    state_at_join = await hs.store.get_current_state_ids(room.room_id)
    ban = await hs.rooms.send(room.room_id, ALICE, "m.room.member", {"membership": "ban"},
                              state_key=BOB)
    before = await snapshot(hs, room.room_id)
    assert before.extremities == [ban.event.event_id]
    pdu = await room.message(prev_events=[room.bob_join], auth_state=state_at_join)
    persisted = await hs.handler.receive_pdu(REMOTE, pdu)
    assert persisted is not None
    event_id = persisted.event.event_id
    stored = await hs.db_row(event_id)
    assert stored is not None
    _, outlier, rejected_reason, soft_failed = stored
    assert soft_failed and rejected_reason is None and not outlier
    row = await hs.store.get_event_row(event_id)
    assert row is not None and row.soft_failed and not row.rejected
    await assert_hidden(hs, room.room_id, event_id, before)
    assert await hs.store.get_membership(room.room_id, BOB) == (
        "ban", ban.event.event_id, ban.stream_ordering)


@pytest_twisted.ensureDeferred
async def test_banned_senders_state_event_is_soft_failed(room: Room) -> None:
    """A soft-failed state event (a banned user "rejoining" on old state) changes nothing."""
    hs = room.hs
    state_at_join = await hs.store.get_current_state_ids(room.room_id)
    await hs.rooms.send(room.room_id, ALICE, "m.room.member", {"membership": "ban"}, state_key=BOB)
    before = await snapshot(hs, room.room_id)
    pdu = await hs.remote_event(room.room_id, "m.room.member", BOB,
                                {"membership": "join", "displayname": "back again"}, BOB,
                                prev_events=[room.bob_join], auth_state=state_at_join)
    persisted = await hs.handler.receive_pdu(REMOTE, pdu)
    assert persisted is not None
    row = await hs.store.get_event_row(persisted.event.event_id)
    assert row is not None and row.soft_failed and not row.rejected
    await assert_hidden(hs, room.room_id, persisted.event.event_id, before)
    assert (await hs.store.get_membership(room.room_id, BOB) or ("",))[0] == "ban"


# --- 5. malformed PDUs ----------------------------------------------------------------------------

@pytest.mark.parametrize("pdu", [None, [], "an event", 42, True, [{"type": "m.room.message"}]])
@pytest_twisted.ensureDeferred
async def test_not_an_object(room: Room, pdu: Any) -> None:
    await expect_refused(room.hs, pdu, room.version)


REQUIRED = ["type", "sender", "content", "depth", "origin_server_ts", "prev_events",
            "auth_events", "room_id", "hashes", "signatures"]


@pytest.mark.parametrize("field", REQUIRED)
@pytest_twisted.ensureDeferred
async def test_missing_field(room: Room, field: str) -> None:
    pdu = await room.message()
    del pdu[field]
    if field not in ("signatures", "hashes"):
        pdu = resign(pdu, room.version, room.hs.remote.key)  # only the missing field is wrong
    await expect_refused(room.hs, pdu, room.version)


WRONG_TYPES: list[tuple[str, Any]] = [
    ("type", 5), ("type", None), ("type", ["m.room.message"]),
    ("sender", 5), ("sender", "bob"), ("sender", f"bob:{REMOTE}"), ("sender", {"user": BOB}),
    ("content", []), ("content", "hello"), ("content", None),
    ("depth", "1"), ("depth", True), ("depth", None), ("depth", [1]),
    ("origin_server_ts", "now"), ("origin_server_ts", False),
    ("prev_events", "$abc"), ("prev_events", [1]), ("prev_events", [["$abc", {}]]),
    ("prev_events", {"$abc": True}),
    ("auth_events", "$abc"), ("auth_events", [None]), ("auth_events", {}),
    ("state_key", 5), ("state_key", None), ("state_key", ["x"]),
    ("room_id", 5), ("room_id", None), ("room_id", ["!a:b"]),
]


@pytest.mark.parametrize("field,value", WRONG_TYPES,
                         ids=[f"{f}={v!r}" for f, v in WRONG_TYPES])
@pytest_twisted.ensureDeferred
async def test_wrong_type(room: Room, field: str, value: Any) -> None:
    pdu = await room.message()
    pdu[field] = value
    pdu = resign(pdu, room.version, room.hs.remote.key)  # signed as sent: only the type is wrong
    await expect_refused(room.hs, pdu, room.version)


def _sized(pdu: dict[str, Any], version: str, key: Any, target: int) -> dict[str, Any]:
    """``pdu`` padded in its body so that, signed, it is exactly ``target`` bytes."""
    strict = get_room_version(version).strict_canonical_json
    pdu = copy.deepcopy(pdu)
    pdu["content"]["body"] = ""
    base = len(encode_canonical_json(resign(pdu, version, key), strict=strict))
    pdu["content"]["body"] = "x" * (target - base)
    out = resign(pdu, version, key)
    assert len(encode_canonical_json(out, strict=strict)) == target
    return out


@pytest_twisted.ensureDeferred
async def test_size_limit(room: Room) -> None:
    hs = room.hs
    pdu = await room.message()
    too_big = _sized(pdu, room.version, hs.remote.key, MAX_PDU_BYTES + 1)
    await expect_refused(hs, too_big, room.version, "byte")
    far_too_big = _sized(pdu, room.version, hs.remote.key, 4 * MAX_PDU_BYTES)
    await expect_refused(hs, far_too_big, room.version, "byte")
    # Exactly at the limit is fine.
    at_limit = _sized(pdu, room.version, hs.remote.key, MAX_PDU_BYTES)
    persisted = await hs.handler.receive_pdu(REMOTE, at_limit)
    assert persisted is not None
    assert persisted.event.event_id in await hs.timeline(room.room_id)


FIELD_LIMITS: list[tuple[str, str]] = [
    ("type", "m." + "t" * 254), ("state_key", "k" * 256),
    ("sender", f"@{'b' * (254 - len(REMOTE))}:{REMOTE}"),
]


@pytest.mark.parametrize("field,value", FIELD_LIMITS, ids=[f for f, _ in FIELD_LIMITS])
@pytest_twisted.ensureDeferred
async def test_field_over_255_bytes(room: Room, field: str, value: str) -> None:
    """Spec "Size limits": type, state_key, sender, room_id and event_id are at most 255 bytes
    (the client API refuses to make such events; a remote server may not send them either)."""
    assert len(value.encode()) == 256
    hs = room.hs
    if field == "state_key":
        pdu = await hs.remote_event(room.room_id, "m.room.member", BOB, {"membership": "join"},
                                    BOB)
        pdu["state_key"] = value
        pdu["type"] = "m.custom.state"
    else:
        pdu = await room.message()
        pdu[field] = value
    pdu = resign(pdu, room.version, hs.remote.key)
    await expect_refused(hs, pdu, room.version, "255")
    # One byte less is fine.
    pdu[field] = value[:-2] + value[-1:] if field != "sender" else value[:1] + value[2:]
    assert len(pdu[field].encode()) == 255
    pdu = resign(pdu, room.version, hs.remote.key)
    assert await hs.handler.receive_pdu(REMOTE, pdu) is not None


@pytest_twisted.ensureDeferred
async def test_field_limit_counts_bytes_from_v11(room: Room) -> None:
    """200 two-byte characters: 400 bytes. Rooms v11+ count bytes; older rooms count
    characters (which is what servers in those rooms have always accepted)."""
    hs = room.hs
    pdu = await room.message()
    pdu["type"] = "m." + "\u00e9" * 200
    pdu = resign(pdu, room.version, hs.remote.key)
    if room.version == "10":
        assert await hs.handler.receive_pdu(REMOTE, pdu) is not None
    else:
        await expect_refused(hs, pdu, room.version, "255")


@pytest_twisted.ensureDeferred
async def test_unknown_room(room: Room) -> None:
    pdu = await room.message()
    pdu["room_id"] = f"!nowhere:{REMOTE}"
    pdu = resign(pdu, room.version, room.hs.remote.key)
    await expect_refused(room.hs, pdu, room.version, "not in room")


@pytest_twisted.ensureDeferred
async def test_moved_to_another_room_after_signing(room: Room) -> None:
    """The room id is signed: a PDU re-addressed to another room we are in is refused."""
    hs = room.hs
    other = await hs.create_room(room.version)
    await hs.join_remote(other)
    pdu = await room.message()
    pdu["room_id"] = other
    await expect_refused(hs, pdu, room.version, "bad signature")


@pytest_twisted.ensureDeferred
async def test_auth_events_from_another_room(room: Room) -> None:
    """Correctly signed, but its auth events belong to another room: rejected by the auth
    rules (v1-v11 rule 2.5 / v12 rule 3), never shown."""
    hs = room.hs
    other = await hs.create_room(room.version)
    await hs.join_remote(other)
    pdu = await hs.remote_event(room.room_id, "m.room.message", BOB, {"body": "hi"},
                                auth_state=await hs.store.get_current_state_ids(other))
    await expect_stored_rejected(room, pdu, "auth events")


NON_CANONICAL: list[tuple[str, Any]] = [
    ("float", 1.5), ("whole float", 2.0), ("big int", 2 ** 53), ("small int", -(2 ** 53)),
    ("nested float", {"a": [1, {"b": 0.1}]}),
]


@pytest.mark.parametrize("label,value", NON_CANONICAL, ids=[n for n, _ in NON_CANONICAL])
@pytest_twisted.ensureDeferred
async def test_not_canonical_json(room: Room, label: str, value: Any) -> None:
    """Rooms v6+ allow only integers in [-(2**53)+1, 2**53-1]: such a PDU is refused even
    when its sender signed it (with the lax encoding older rooms use)."""
    hs = room.hs
    pdu = await room.message()
    pdu["content"]["value"] = value
    pdu.pop("signatures")
    pdu.pop("hashes")
    lax = get_room_version("5")  # signs with the lax canonical JSON of v1-v5
    pdu = hash_and_sign_event(pdu, REMOTE, hs.remote.key, lax)
    await expect_refused(hs, pdu, room.version, "canonical")


@pytest.mark.parametrize("field", ["depth", "origin_server_ts"])
@pytest_twisted.ensureDeferred
async def test_integer_fields_out_of_range(room: Room, field: str) -> None:
    pdu = await room.message()
    pdu[field] = 2 ** 63
    pdu.pop("signatures")
    pdu.pop("hashes")
    pdu = hash_and_sign_event(pdu, REMOTE, room.hs.remote.key, get_room_version("5"))
    await expect_refused(room.hs, pdu, room.version)


@pytest_twisted.ensureDeferred
async def test_floats_are_fine_in_a_v5_room(hs: Hearth) -> None:
    """The counterpart of the test above: v1-v5 rooms take floats."""
    room_id = await hs.create_room("5")
    await hs.join_remote(room_id)
    pdu = await hs.remote_event(room_id, "m.room.message", BOB, {"body": "pi", "value": 3.14})
    persisted = await hs.handler.receive_pdu(REMOTE, pdu)
    assert persisted is not None
    row = await hs.store.get_event_row(persisted.event.event_id)
    assert row is not None and not row.rejected and row.event.content["value"] == 3.14


# --- rooms v1/v2: event ids name a server, which must sign too --------------------------------

@pytest.mark.parametrize("version", ["1", "2"])
@pytest_twisted.ensureDeferred
async def test_old_room_versions(hs: Hearth, version: str) -> None:
    room_id = await hs.create_room(version)
    bob_join = await hs.join_remote(room_id)
    assert bob_join.endswith(f":{REMOTE}")
    good = await hs.remote_event(room_id, "m.room.message", BOB, {"body": "hi", "f": 0.5})
    assert (await hs.handler.receive_pdu(REMOTE, good)) is not None  # floats are fine here

    # An event id minted by another server needs that server's signature as well.
    other_server = await hs.remote_event(room_id, "m.room.message", BOB, {"body": "x"})
    other_server["event_id"] = "$minted:elsewhere.test"
    other_server = resign(other_server, version, hs.remote.key)
    await expect_refused(hs, other_server, version, "elsewhere.test")
    for bad_id in (None, 5, "no-dollar:remote.test", "$" + "a" * 250 + f":{REMOTE}"):
        pdu = await hs.remote_event(room_id, "m.room.message", BOB, {"body": "x"})
        if bad_id is None:
            del pdu["event_id"]
        else:
            pdu["event_id"] = bad_id
        await expect_refused(hs, resign(pdu, version, hs.remote.key), version, "event_id")

    # Re-using the id of an event already in the room does not replace it.
    before = await hs.db_row(bob_join)
    reuse = await hs.remote_event(room_id, "m.room.member", BOB, {"membership": "leave"}, BOB)
    reuse["event_id"] = bob_join
    reuse = resign(reuse, version, hs.remote.key)
    traces = await hs.traces()
    assert await hs.handler.receive_pdu(REMOTE, reuse) is None
    assert await hs.db_row(bob_join) == before and await hs.traces() == traces
    assert (await hs.store.get_membership(room_id, BOB) or ("",))[0] == "join"


# --- 6. /send transactions ---------------------------------------------------------------------

async def send(hs: Hearth, txn_id: str, body: Any, origin: str = REMOTE) -> Any:
    status, answer = await hs.api.send_transaction(hs.send_request(txn_id, body, origin), txn_id)
    assert status == 200
    return answer


async def messages(room: Room, n: int) -> list[dict[str, Any]]:
    """``n`` distinct messages from Bob, all on the current extremities."""
    out = []
    for i in range(n):
        out.append(await room.message(body=f"message {i}"))
    return out


@pytest_twisted.ensureDeferred
async def test_more_than_50_pdus(room: Room) -> None:
    hs = room.hs
    before = await hs.traces()
    pdus = await messages(room, MAX_PDUS + 1)
    with pytest.raises(MatrixError) as exc:
        await send(hs, "txn-big", {"origin": REMOTE, "origin_server_ts": 1, "pdus": pdus})
    assert (exc.value.status, exc.value.errcode) == (400, "M_BAD_JSON")
    assert await hs.traces() == before
    assert await hs.fed_store.get_transaction(REMOTE, "txn-big") is None
    # 50 is allowed.
    answer = await send(hs, "txn-50", {"origin": REMOTE, "origin_server_ts": 1,
                                       "pdus": pdus[:MAX_PDUS]})
    assert len(answer["pdus"]) == MAX_PDUS
    assert all(r == {} for r in answer["pdus"].values())
    for pdu in pdus[:MAX_PDUS]:
        assert await hs.stored(event_id_of(pdu, room.version))


@pytest.mark.parametrize("body", [
    {"pdus": {"not": "a list"}}, {"pdus": "x"}, {"pdus": [], "edus": {}},
    {"pdus": [], "edus": [{"edu_type": "m.typing"}] * 101},
    {"pdus": [], "origin": "someone-else.test"},
])
@pytest_twisted.ensureDeferred
async def test_malformed_transactions(room: Room, body: Any) -> None:
    hs = room.hs
    before = await hs.traces()
    with pytest.raises(MatrixError) as exc:
        await send(hs, "txn-bad", body)
    assert exc.value.status == 400
    assert await hs.traces() == before
    assert await hs.fed_store.get_transaction(REMOTE, "txn-bad") is None


@pytest_twisted.ensureDeferred
async def test_mixed_transaction(room: Room) -> None:
    """Each PDU is answered on its own: the good one is stored, the bad ones are not."""
    hs = room.hs
    good = await room.message(body="good")
    forged = await room.message(body="forged", key=generate_signing_key(hs.remote.key.version))
    float_pdu = await room.message(body="float")
    float_pdu["depth"] = 1.5
    unknown_room = await room.message(body="elsewhere")
    unknown_room["room_id"] = f"!nowhere:{REMOTE}"
    unknown_room = resign(unknown_room, room.version, hs.remote.key)
    intruder = await room.message(body="intruder", sender=MALLORY)
    pdus = [forged, good, "not an object", float_pdu, unknown_room, intruder]
    before = await hs.traces()

    answer = await send(hs, "txn-mixed", {"origin": REMOTE, "origin_server_ts": 1, "pdus": pdus})
    results = answer["pdus"]
    good_id = event_id_of(good, room.version)
    forged_id = event_id_of(forged, room.version)
    unknown_id = event_id_of(unknown_room, room.version)
    intruder_id = event_id_of(intruder, room.version)
    assert results[good_id] == {}
    for bad in (forged_id, unknown_id):
        assert set(results[bad]) == {"error"} and results[bad]["error"], bad
    # "not an object" has no id to be answered under; the float PDU is answered with an
    # error under its id if one can be computed at all.
    float_id = next((k for k in results if k not in (good_id, forged_id, unknown_id, intruder_id)),
                    None)
    assert len(results) <= 5
    if float_id is not None:
        assert results[float_id].get("error")
    # The intruder passed the checks of the receipt path up to the auth rules: it is answered
    # like an accepted PDU (the spec has no error for a rejected event) and kept as rejected.
    assert results[intruder_id] == {}

    assert await hs.stored(good_id)
    assert good_id in await hs.timeline(room.room_id)
    for bad in (forged_id, unknown_id):
        assert not await hs.stored(bad)
    # The intruder's message is kept as rejected (see the auth tests) and shown nowhere.
    row = await hs.store.get_event_row(intruder_id)
    assert row is not None and row.rejected
    assert intruder_id not in await hs.timeline(room.room_id)
    after = await hs.traces()
    assert after["events"] == before["events"] + 2
    assert after["forward_extremities"] == before["forward_extremities"]
    assert await hs.store.get_forward_extremities(room.room_id) == [good_id]
    assert await hs.fed_store.get_transaction(REMOTE, "txn-mixed") == answer


@pytest_twisted.ensureDeferred
async def test_repeated_transaction_is_answered_from_the_record(room: Room) -> None:
    hs = room.hs
    first = await room.message(body="first")
    answer = await send(hs, "txn-1", {"origin": REMOTE, "origin_server_ts": 1, "pdus": [first]})
    assert answer == {"pdus": {event_id_of(first, room.version): {}}}
    traces = await hs.traces()

    calls: list[Any] = []
    real = hs.handler.receive_pdu

    async def counting(origin: str, pdu: Any) -> Any:
        calls.append(pdu)
        return await real(origin, pdu)
    hs.handler.receive_pdu = counting  # type: ignore[method-assign]

    # Same id, same body (a retry), and same id with other PDUs: the recorded answer, nothing
    # processed.
    assert await send(hs, "txn-1", {"origin": REMOTE, "origin_server_ts": 1,
                                    "pdus": [first]}) == answer
    second = await room.message(body="second")
    assert await send(hs, "txn-1", {"origin": REMOTE, "origin_server_ts": 2,
                                    "pdus": [second]}) == answer
    assert calls == []
    assert await hs.traces() == traces
    assert not await hs.stored(event_id_of(second, room.version))

    # The id is per origin: another server's txn-1 is a new transaction.
    other = hs.net.add("other.test")
    carol = "@carol:other.test"
    join = await hs.remote_event(room.room_id, "m.room.member", carol, {"membership": "join"},
                                 carol, key=other.key, server_name="other.test")
    answer2 = await send(hs, "txn-1", {"origin": "other.test", "origin_server_ts": 1,
                                       "pdus": [join]}, origin="other.test")
    assert answer2 == {"pdus": {event_id_of(join, room.version): {}}}
    assert len(calls) == 1
    assert carol in await hs.store.get_members(room.room_id)


@pytest_twisted.ensureDeferred
async def test_answer_is_keyed_by_the_real_event_id(room: Room) -> None:
    """A v3+ PDU carrying a bogus "event_id" (here: the id of Bob's join) must be answered
    under its real id, not under the id of another event."""
    hs = room.hs
    spoof = await room.message(body="spoof")
    spoof["event_id"] = room.bob_join
    spoof = resign(spoof, room.version, hs.remote.key)
    answer = await send(hs, "txn-spoof", {"pdus": [spoof]})
    assert set(answer["pdus"]) == {event_id_of(spoof, room.version)}
