"""matrix-nio syncs through Hearth: /sync as nio parses it, and the room state nio builds from it.

Each test runs one asyncio scenario against a real server process on each database engine. Every
/sync answer must become a nio SyncResponse (nio validates it against its schema) in which no
event degraded to BadEvent/UnknownBadEvent and none was silently dropped; and the MatrixRoom
objects nio keeps (members, display names, topic, typing users, receipts, tags, presence) must
match what the other side did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any, AsyncIterator
from urllib.parse import quote

import nio
import pytest

from synapse_compat_tests.nio_helpers import R, describe, mxid, ok, raw_body
from tests.harness import ServerProcess

pytestmark = pytest.mark.compat

PASSWORD = "a password for syncing clients"

# No retries on timeouts or 429s: a stuck or throttling server fails the test instead of hanging it.
CONFIG = nio.AsyncClientConfig(max_limit_exceeded=0, max_timeouts=0, request_timeout=30)

BAD = (nio.BadEvent, nio.UnknownBadEvent)
# The ephemeral and invite-state types nio 0.26 knows; it drops the others without a trace.
NIO_EPHEMERAL = {"m.typing", "m.receipt"}
NIO_INVITE_STATE = {"m.room.member", "m.room.canonical_alias", "m.room.name"}






def check_parsed(resp: nio.SyncResponse) -> nio.SyncResponse:
    """Every event the server sent reached nio's SyncResponse, and none as a bad event."""
    raw = raw_body(resp)
    rooms = raw.get("rooms", {})
    assert set(resp.rooms.join) == set(rooms.get("join", {}))
    assert set(resp.rooms.leave) == set(rooms.get("leave", {}))
    assert set(resp.rooms.invite) == set(rooms.get("invite", {}))
    for section in ("join", "leave"):
        for room_id, info in getattr(resp.rooms, section).items():
            r = rooms[section][room_id]
            where = f"{section} {room_id}"
            raw_timeline = r.get("timeline", {}).get("events", [])
            raw_state = r.get("state", {}).get("events", [])
            assert len(info.timeline.events) == len(raw_timeline), (where, raw_timeline)
            assert len(info.state) == len(raw_state), (where, raw_state)
            bad = [e for e in info.timeline.events + info.state if isinstance(e, BAD)]
            assert not bad, (where, [e.source for e in bad])
            if section == "join":
                known = [e for e in r.get("ephemeral", {}).get("events", [])
                         if e.get("type") in NIO_EPHEMERAL]
                assert len(info.ephemeral) == len(known), (where, known)
                raw_account_data = r.get("account_data", {}).get("events", [])
                assert len(info.account_data) == len(raw_account_data), (where, raw_account_data)
                assert not [e for e in info.account_data if isinstance(e, BAD)], where
    for room_id, invite in resp.rooms.invite.items():
        raw_state = rooms["invite"][room_id].get("invite_state", {}).get("events", [])
        known = [e for e in raw_state if e.get("type") in NIO_INVITE_STATE]
        assert len(invite.invite_state) == len(known), (room_id, raw_state)
        assert not [e for e in invite.invite_state if isinstance(e, BAD)], raw_state
    assert len(resp.presence_events) == len(raw.get("presence", {}).get("events", []))
    assert not [e for e in resp.presence_events if isinstance(e, BAD)], raw.get("presence")
    assert len(resp.account_data_events) == len(raw.get("account_data", {}).get("events", []))
    assert not [e for e in resp.account_data_events if isinstance(e, BAD)], raw.get("account_data")
    assert len(resp.to_device_events) == len(raw.get("to_device", {}).get("events", []))
    assert not [e for e in resp.to_device_events if isinstance(e, BAD)], raw.get("to_device")
    return resp


async def sync(client: nio.AsyncClient, **kwargs: Any) -> nio.SyncResponse:
    before = client.next_batch
    resp = check_parsed(ok(await client.sync(**kwargs), nio.SyncResponse))
    assert resp.next_batch and isinstance(resp.next_batch, str)
    # nio adopted the new token (it only does when it differs from the one it sent)
    assert client.next_batch == resp.next_batch
    if before and any(info.timeline.events for info in resp.rooms.join.values()):
        # nio ignores a response whose token equals the one it already has
        assert resp.next_batch != before, "a sync with new events kept the old token"
    return resp


@contextlib.asynccontextmanager
async def users(server: ServerProcess, *localparts: str) -> AsyncIterator[list[nio.AsyncClient]]:
    """One registered, logged-in nio client per localpart; all closed on exit."""
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for lp in localparts:
            client = nio.AsyncClient(server.base_url, lp, config=CONFIG)
            stack.push_async_callback(client.close)
            reg = ok(await client.register(lp, PASSWORD), nio.RegisterResponse)
            assert reg.user_id == mxid(lp)
            clients.append(client)
        yield clients


@contextlib.asynccontextmanager
async def second_login(server: ServerProcess, localpart: str) -> AsyncIterator[nio.AsyncClient]:
    client = nio.AsyncClient(server.base_url, localpart, config=CONFIG)
    try:
        ok(await client.login(PASSWORD), nio.LoginResponse)
        yield client
    finally:
        await client.close()


async def raw_request(client: nio.AsyncClient, method: str, path: str,
                      body: Any = None) -> tuple[int, Any]:
    """A client-server API request nio has no method for, with the client's own session."""
    resp = await client.send(method, "/_matrix/client/v3" + path,
                             None if body is None else json.dumps(body),
                             headers={"Authorization": f"Bearer {client.access_token}",
                                      "Content-Type": "application/json"})
    return resp.status, await resp.json(content_type=None)


def q(value: str) -> str:
    return quote(value, safe="")


async def put_account_data(client: nio.AsyncClient, event_type: str, content: dict[str, Any],
                           room_id: str | None = None) -> None:
    room = f"/rooms/{q(room_id)}" if room_id else ""
    status, body = await raw_request(
        client, "PUT", f"/user/{q(client.user_id)}{room}/account_data/{q(event_type)}", content)
    assert (status, body) == (200, {}), (status, body)


async def create_room(client: nio.AsyncClient, **kwargs: Any) -> str:
    resp = ok(await client.room_create(**kwargs), nio.RoomCreateResponse)
    assert resp.room_id.startswith("!")
    return resp.room_id


async def say(client: nio.AsyncClient, room_id: str, body: str) -> str:
    resp = ok(await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body}),
              nio.RoomSendResponse)
    return resp.event_id


async def invite_and_join(inviter: nio.AsyncClient, room_id: str, *invitees: nio.AsyncClient) -> None:
    for c in invitees:
        ok(await inviter.room_invite(room_id, c.user_id), nio.RoomInviteResponse)
        assert ok(await c.join(room_id), nio.JoinResponse).room_id == room_id


def timeline(resp: nio.SyncResponse, room_id: str, section: str = "join") -> list[Any]:
    info = getattr(resp.rooms, section).get(room_id)
    return info.timeline.events if info else []


def bodies(resp: nio.SyncResponse, room_id: str, section: str = "join") -> list[str]:
    return [e.body for e in timeline(resp, room_id, section) if isinstance(e, nio.RoomMessageText)]


def ephemeral(resp: nio.SyncResponse, room_id: str, cls: type[R]) -> list[R]:
    info = resp.rooms.join.get(room_id)
    return [e for e in info.ephemeral if isinstance(e, cls)] if info else []


def global_account_data(resp: nio.SyncResponse) -> dict[str, Any]:
    return {e.type: e.content for e in resp.account_data_events
            if isinstance(e, nio.UnknownAccountDataEvent)}


def room_account_data(resp: nio.SyncResponse, room_id: str) -> list[Any]:
    info = resp.rooms.join.get(room_id)
    return info.account_data if info else []


# --------------------------------------------------------------------------------------------


def test_initial_and_incremental_sync_build_nios_room(hearth: ServerProcess) -> None:
    async def scenario() -> None:
        async with users(hearth, "alice", "bob") as (alice, bob):
            ok(await alice.set_displayname("Alice Liddell"), nio.ProfileSetDisplayNameResponse)
            room = await create_room(alice, preset=nio.RoomPreset.private_chat, name="Tea party",
                                     topic="Unbirthdays", invite=[bob.user_id])

            # ---- the invite, as nio's MatrixInvitedRoom
            first = await sync(bob)
            assert room in first.rooms.invite and room not in first.rooms.join
            invited = bob.invited_rooms[room]
            assert invited.name == "Tea party"
            assert invited.inviter == alice.user_id
            own = [e for e in first.rooms.invite[room].invite_state
                   if isinstance(e, nio.InviteMemberEvent) and e.state_key == bob.user_id]
            assert [e.membership for e in own] == ["invite"]

            # ---- the join, incrementally
            ok(await bob.join(room), nio.JoinResponse)
            joined = await sync(bob)
            assert room in joined.rooms.join and room not in joined.rooms.invite
            assert room not in bob.invited_rooms
            mine = bob.rooms[room]
            assert (mine.name, mine.topic) == ("Tea party", "Unbirthdays")
            assert set(mine.users) == {alice.user_id, bob.user_id}
            assert mine.user_name(alice.user_id) == "Alice Liddell"
            assert mine.user_name(bob.user_id) == "bob"
            creates = [e for e in joined.rooms.join[room].state + timeline(joined, room)
                       if isinstance(e, nio.RoomCreateEvent)]
            assert len(creates) == 1 and mine.room_version == creates[0].room_version
            if mine.room_version in ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11"):
                assert mine.power_levels.get_user_level(alice.user_id) == 100
            else:
                # room version 12: the creator outranks every level and is not listed (nio 0.26
                # does not know this rule, so it reads her level as users_default)
                assert alice.user_id not in mine.power_levels.users
            assert mine.power_levels.get_user_level(bob.user_id) == 0
            assert (mine.join_rule, mine.member_count, mine.encrypted) == ("invite", 2, False)
            assert mine.summary is not None and mine.summary.joined_member_count == 2
            assert not mine.invited_users

            # alice's first sync is an initial one: the whole room
            a_first = await sync(alice)
            types = {type(e) for e in a_first.rooms.join[room].state + timeline(a_first, room)}
            assert {nio.RoomCreateEvent, nio.RoomNameEvent, nio.RoomTopicEvent,
                    nio.RoomMemberEvent, nio.PowerLevelsEvent} <= types
            theirs = alice.rooms[room]
            assert (theirs.name, theirs.topic) == ("Tea party", "Unbirthdays")
            assert set(theirs.users) == {alice.user_id, bob.user_id}
            assert theirs.user_name(bob.user_id) == "bob"

            # ---- messages arrive once, in order, with no state section
            sent = [await say(alice, room, f"message {i}") for i in range(3)]
            inc = await sync(bob)
            assert bodies(inc, room) == ["message 0", "message 1", "message 2"]
            assert [e.event_id for e in timeline(inc, room)] == sent
            assert inc.rooms.join[room].timeline.limited is False
            assert inc.rooms.join[room].state == []
            again = await sync(bob)
            assert bodies(again, room) == []

            # ---- state changes reach nio's MatrixRoom
            ok(await alice.update_room_topic(room, "Very merry unbirthdays"),
               nio.RoomPutStateResponse)
            denied = await bob.room_put_state(room, "m.room.name", {"name": "Bob may not"})
            assert isinstance(denied, nio.RoomPutStateError), describe(denied)
            assert denied.status_code == "M_FORBIDDEN", describe(denied)
            changed = await sync(bob)
            changes = timeline(changed, room)
            assert [e.topic for e in changes if isinstance(e, nio.RoomTopicEvent)] == [
                "Very merry unbirthdays"]
            assert mine.topic == "Very merry unbirthdays"
            assert mine.name == "Tea party"
            assert set(mine.users) == {alice.user_id, bob.user_id}

            # ---- long-poll: a waiting sync wakes up for a new message (presence, account data
            # and ephemeral events filtered out, so that nothing else can wake it)
            quiet = {"presence": {"types": []}, "account_data": {"types": []},
                     "room": {"ephemeral": {"types": []}, "account_data": {"types": []}}}
            poll = asyncio.create_task(bob.sync(timeout=20_000, sync_filter=quiet))
            await asyncio.sleep(0.5)
            assert not poll.done(), "the long-poll returned with nothing new"
            started = time.monotonic()
            woke = await say(alice, room, "wake up")
            resp = check_parsed(ok(await poll, nio.SyncResponse))
            assert time.monotonic() - started < 10
            assert [e.event_id for e in timeline(resp, room)] == [woke]

            # ... and one with nothing to report waits out its timeout
            started = time.monotonic()
            idle = await sync(bob, timeout=1500, sync_filter=quiet)
            assert time.monotonic() - started >= 1.3
            assert timeline(idle, room) == []


    asyncio.run(scenario())


def test_full_state_resends_the_state_but_keeps_the_timeline_incremental(hearth: ServerProcess) -> None:
    """Spec, GET /sync full_state: "all state events will be returned, even if since is
    non-empty. The timeline will still be limited by the since parameter.\""""

    async def scenario() -> None:
        async with users(hearth, "alice", "bob") as (alice, bob):
            room = await create_room(alice, preset=nio.RoomPreset.private_chat, name="Full",
                                     topic="everything")
            await invite_and_join(alice, room, bob)
            await say(alice, room, "before the token")
            first = await sync(bob)
            assert bodies(first, room) == ["before the token"]

            after = await say(alice, room, "after the token")
            full = await sync(bob, full_state=True)
            info = full.rooms.join[room]
            state = {(e.source["type"], e.source.get("state_key"))
                     for e in info.state + info.timeline.events}
            assert {("m.room.create", ""), ("m.room.member", alice.user_id),
                    ("m.room.member", bob.user_id), ("m.room.topic", ""), ("m.room.name", ""),
                    ("m.room.power_levels", ""), ("m.room.join_rules", "")} <= state, state
            assert (bob.rooms[room].name, bob.rooms[room].topic) == ("Full", "everything")
            assert [e.event_id for e in info.timeline.events] == [after]
            assert info.timeline.limited is False

    asyncio.run(scenario())


def test_profile_change_reaches_the_rooms_member_list(hearth: ServerProcess) -> None:
    """Spec, "Events on Change of Profile Information": on a display name change an
    m.room.member event (with a join membership) is sent to every room the user is a member
    of. nio's member list is built from those events alone."""

    async def scenario() -> None:
        async with users(hearth, "alice", "bob") as (alice, bob):
            room = await create_room(alice, preset=nio.RoomPreset.private_chat)
            await invite_and_join(alice, room, bob)
            await sync(bob)
            assert bob.rooms[room].user_name(alice.user_id) == "alice"

            ok(await alice.set_displayname("The Alice"), nio.ProfileSetDisplayNameResponse)
            ok(await alice.set_avatar("mxc://test.local/alice"), nio.ProfileSetAvatarResponse)
            renamed = await sync(bob)
            members = [e for e in timeline(renamed, room) if isinstance(e, nio.RoomMemberEvent)]
            assert [(e.state_key, e.membership) for e in members] == [
                (alice.user_id, "join"), (alice.user_id, "join")], timeline(renamed, room)
            assert members[-1].content.get("displayname") == "The Alice"
            assert members[-1].content.get("avatar_url") == "mxc://test.local/alice"
            assert bob.rooms[room].user_name(alice.user_id) == "The Alice"
            assert bob.rooms[room].avatar_url(alice.user_id) == "mxc://test.local/alice"
            assert set(bob.rooms[room].users) == {alice.user_id, bob.user_id}

    asyncio.run(scenario())


def test_uploaded_filter_is_applied(hearth: ServerProcess) -> None:
    async def scenario() -> None:
        async with users(hearth, "alice") as (alice,), second_login(hearth, "alice") as phone:
            room_filter = {"timeline": {"limit": 3, "not_types": ["org.example.noise"]},
                           "state": {"not_types": ["m.room.topic"]}}
            uploaded = ok(await alice.upload_filter(
                room=room_filter, account_data={"not_types": ["org.example.hidden"]},
                presence={"types": []}), nio.UploadFilterResponse)
            assert isinstance(uploaded.filter_id, str) and uploaded.filter_id
            # the server keeps the definition as nio sent it
            status, stored = await raw_request(
                alice, "GET", f"/user/{q(alice.user_id)}/filter/{q(uploaded.filter_id)}")
            assert status == 200, stored
            assert stored["room"]["timeline"] == room_filter["timeline"]
            assert stored["account_data"] == {"not_types": ["org.example.hidden"]}

            room = await create_room(alice, preset=nio.RoomPreset.private_chat, topic="filtered out")
            for i in range(5):
                await say(alice, room, f"message {i}")
                ok(await alice.room_send(room, "org.example.noise", {"n": i}), nio.RoomSendResponse)
            await put_account_data(alice, "org.example.hidden", {"secret": True})
            await put_account_data(alice, "org.example.shown", {"visible": True})

            # ---- the initial sync with the filter
            filtered = await sync(alice, sync_filter=uploaded.filter_id)
            info = filtered.rooms.join[room]
            assert info.timeline.events, "the filtered timeline is empty"
            assert {type(e) for e in info.timeline.events} == {nio.RoomMessageText}
            assert bodies(filtered, room)[-1] == "message 4"
            assert info.timeline.limited is True and info.timeline.prev_batch
            assert not [e for e in info.state if isinstance(e, nio.RoomTopicEvent)]
            assert any(isinstance(e, nio.RoomCreateEvent) for e in info.state)
            account = global_account_data(filtered)
            assert account.get("org.example.shown") == {"visible": True}
            assert "org.example.hidden" not in account
            assert filtered.presence_events == []
            # the room as nio knows it: no topic, since the filter hid it
            assert alice.rooms[room].topic is None

            # the same initial sync unfiltered (another device): noise, topic and all
            full = await sync(phone)
            events = timeline(full, room)
            assert any(isinstance(e, nio.UnknownEvent) and e.type == "org.example.noise"
                       for e in events)
            assert phone.rooms[room].topic == "filtered out"
            assert "org.example.hidden" in global_account_data(full)

            # ---- incremental, with the filter
            ok(await alice.room_send(room, "org.example.noise", {"n": 99}), nio.RoomSendResponse)
            last = await say(alice, room, "after the noise")
            inc = await sync(alice, sync_filter=uploaded.filter_id)
            assert [e.event_id for e in timeline(inc, room)] == [last]
            assert inc.rooms.join[room].timeline.limited is False
            inc_phone = await sync(phone)
            assert [type(e) for e in timeline(inc_phone, room)] == [nio.UnknownEvent, nio.RoomMessageText]

            # ---- an inline filter (JSON in the query) works the same way
            ok(await alice.room_send(room, "org.example.noise", {"n": 100}), nio.RoomSendResponse)
            await say(alice, room, "inline")
            inline = await sync(alice, sync_filter={"room": room_filter})
            assert [type(e) for e in timeline(inline, room)] == [nio.RoomMessageText]

    asyncio.run(scenario())


def test_filter_limit_counts_the_events_the_filter_lets_through(hearth: ServerProcess) -> None:
    """A timeline limit of 3 with a type filter gives the last three matching events (as
    Synapse does), not what remains of the last three events once the filter has run."""

    async def scenario() -> None:
        async with users(hearth, "alice") as (alice,):
            uploaded = ok(await alice.upload_filter(
                room={"timeline": {"limit": 3, "not_types": ["org.example.noise"]}}),
                nio.UploadFilterResponse)
            room = await create_room(alice, preset=nio.RoomPreset.private_chat)
            for i in range(5):
                await say(alice, room, f"message {i}")
                ok(await alice.room_send(room, "org.example.noise", {"n": i}), nio.RoomSendResponse)

            filtered = await sync(alice, sync_filter=uploaded.filter_id)
            info = filtered.rooms.join[room]
            assert bodies(filtered, room) == ["message 2", "message 3", "message 4"]
            assert len(info.timeline.events) == 3
            assert info.timeline.limited is True

            # the same when catching up: six new events, three messages among them
            for i in range(5, 8):
                await say(alice, room, f"message {i}")
                ok(await alice.room_send(room, "org.example.noise", {"n": i}), nio.RoomSendResponse)
            await say(alice, room, "message 8")
            inc = await sync(alice, sync_filter=uploaded.filter_id)
            assert bodies(inc, room) == ["message 6", "message 7", "message 8"]
            assert inc.rooms.join[room].timeline.limited is True

    asyncio.run(scenario())


def test_typing_and_receipts_in_the_ephemeral_section(hearth: ServerProcess) -> None:
    async def scenario() -> None:
        async with users(hearth, "alice", "bob") as (alice, bob):
            room = await create_room(alice, preset=nio.RoomPreset.private_chat)
            await invite_and_join(alice, room, bob)
            await sync(alice)
            await sync(bob)

            # ---- typing
            ok(await bob.room_typing(room, True, timeout=30_000), nio.RoomTypingResponse)
            got = await sync(alice)
            assert [e.users for e in ephemeral(got, room, nio.TypingNoticeEvent)] == [[bob.user_id]]
            assert alice.rooms[room].typing_users == [bob.user_id]

            ok(await bob.room_typing(room, False), nio.RoomTypingResponse)
            got = await sync(alice)
            assert [e.users for e in ephemeral(got, room, nio.TypingNoticeEvent)] == [[]]
            assert alice.rooms[room].typing_users == []

            # ---- a threaded read receipt ("main", as nio sends it)
            m1 = await say(alice, room, "one")
            m2 = await say(alice, room, "two")
            m3 = await say(alice, room, "three")
            await sync(bob)
            ok(await bob.update_receipt_marker(room, m1), nio.UpdateReceiptMarkerResponse)
            got = await sync(alice)
            receipts = [r for e in ephemeral(got, room, nio.ReceiptEvent) for r in e.receipts]
            assert [(r.event_id, r.receipt_type, r.user_id, r.thread_id) for r in receipts] == [
                (m1, "m.read", bob.user_id, "main")]
            assert receipts[0].timestamp > 0
            assert alice.rooms[room].threaded_read_receipts[bob.user_id]["main"].event_id == m1

            # ---- read markers: the fully-read marker is bob's room account data, the receipt
            # (unthreaded) goes to the room
            ok(await bob.room_read_markers(room, fully_read_event=m2, read_event=m2),
               nio.RoomReadMarkersResponse)
            own = await sync(bob)
            fully_read = [e for e in room_account_data(own, room) if isinstance(e, nio.FullyReadEvent)]
            assert [e.event_id for e in fully_read] == [m2]
            assert bob.rooms[room].fully_read_marker == m2
            got = await sync(alice)
            receipts = [r for e in ephemeral(got, room, nio.ReceiptEvent) for r in e.receipts]
            assert [(r.event_id, r.receipt_type, r.user_id, r.thread_id) for r in receipts] == [
                (m2, "m.read", bob.user_id, None)]
            assert alice.rooms[room].read_receipts[bob.user_id].event_id == m2
            # the fully-read marker is bob's alone
            assert not [e for e in room_account_data(got, room) if isinstance(e, nio.FullyReadEvent)]

            # ---- a private receipt is shown to its owner only
            ok(await bob.update_receipt_marker(room, m3, nio.ReceiptType.read_private),
               nio.UpdateReceiptMarkerResponse)
            own = await sync(bob)
            mine = [(r.event_id, r.receipt_type, r.user_id)
                    for e in ephemeral(own, room, nio.ReceiptEvent) for r in e.receipts]
            assert (m3, "m.read.private", bob.user_id) in mine
            got = await sync(alice)
            seen = [r for e in ephemeral(got, room, nio.ReceiptEvent) for r in e.receipts]
            assert not [r for r in seen if r.event_id == m3 or r.receipt_type == "m.read.private"]
            assert alice.rooms[room].read_receipts[bob.user_id].event_id == m2

    asyncio.run(scenario())


def test_account_data_global_room_tags_and_push_rules(hearth: ServerProcess) -> None:
    async def scenario() -> None:
        async with users(hearth, "alice", "bob") as (alice, bob):
            room = await create_room(alice, preset=nio.RoomPreset.private_chat)
            await invite_and_join(alice, room, bob)

            first = await sync(bob)
            # Spec (push rules): the rules are the m.push_rules account data event
            rules = [e for e in first.account_data_events if isinstance(e, nio.PushRulesEvent)]
            assert len(rules) == 1, first.account_data_events
            assert ".m.rule.master" in [r.id for r in rules[0].global_rules.override]
            await sync(alice)

            # ---- global and per-room account data, and tags
            await put_account_data(bob, "org.example.settings", {"theme": "dark"})
            await put_account_data(bob, "org.example.room", {"pinned": ["$x"]}, room_id=room)
            status, body = await raw_request(
                bob, "PUT", f"/user/{q(bob.user_id)}/rooms/{q(room)}/tags/m.favourite", {"order": 0.5})
            assert (status, body) == (200, {})
            got = await sync(bob)
            assert global_account_data(got) == {"org.example.settings": {"theme": "dark"}}
            per_room = room_account_data(got, room)
            assert [(e.type, e.content) for e in per_room if isinstance(e, nio.UnknownAccountDataEvent)
                    ] == [("org.example.room", {"pinned": ["$x"]})]
            assert [e.tags for e in per_room if isinstance(e, nio.TagEvent)] == [
                {"m.favourite": {"order": 0.5}}]
            assert bob.rooms[room].tags == {"m.favourite": {"order": 0.5}}

            # nothing of it reaches alice
            theirs = await sync(alice)
            assert global_account_data(theirs) == {}
            assert room_account_data(theirs, room) == []
            assert alice.rooms[room].tags == {}

            # an update comes once, with the new content only
            await put_account_data(bob, "org.example.settings", {"theme": "light"})
            got = await sync(bob)
            assert global_account_data(got) == {"org.example.settings": {"theme": "light"}}
            assert room_account_data(got, room) == []
            assert global_account_data(await sync(bob)) == {}

            # removing the tag empties nio's tags
            status, body = await raw_request(
                bob, "DELETE", f"/user/{q(bob.user_id)}/rooms/{q(room)}/tags/m.favourite")
            assert (status, body) == (200, {})
            got = await sync(bob)
            assert [e.tags for e in room_account_data(got, room) if isinstance(e, nio.TagEvent)] == [{}]
            assert bob.rooms[room].tags == {}

            # ---- a push rule set through nio comes back in m.push_rules
            ok(await bob.set_pushrule("global", nio.PushRuleKind.content, "teatime",
                                      actions=[nio.PushNotify()], pattern="tea"),
               nio.SetPushRuleResponse)
            got = await sync(bob)
            rules = [e for e in got.account_data_events if isinstance(e, nio.PushRulesEvent)]
            assert len(rules) == 1, got.account_data_events
            mine = [r for r in rules[0].global_rules.content if r.id == "teatime"]
            assert len(mine) == 1
            assert (mine[0].pattern, mine[0].enabled, mine[0].default) == ("tea", True, False)
            assert [type(a) for a in mine[0].actions] == [nio.PushNotify]

            # ---- m.direct, read back through nio
            await put_account_data(bob, "m.direct", {alice.user_id: [room]})
            direct = ok(await bob.list_direct_rooms(), nio.DirectRoomsResponse)
            assert direct.rooms == {alice.user_id: [room]}
            got = await sync(bob)
            assert global_account_data(got) == {"m.direct": {alice.user_id: [room]}}

    asyncio.run(scenario())


def test_presence_reaches_room_members_only(hearth: ServerProcess) -> None:
    async def scenario() -> None:
        async with users(hearth, "alice", "bob", "carol") as (alice, bob, carol):
            room = await create_room(alice, preset=nio.RoomPreset.private_chat)
            await invite_and_join(alice, room, bob)
            await sync(alice)
            await sync(carol)

            ok(await bob.set_presence("unavailable", "brb"), nio.PresenceSetResponse)
            got = await sync(alice)
            seen = [e for e in got.presence_events if e.user_id == bob.user_id]
            assert seen, got.presence_events
            assert (seen[-1].presence, seen[-1].status_msg) == ("unavailable", "brb")
            member = alice.rooms[room].users[bob.user_id]
            assert (member.presence, member.status_msg) == ("unavailable", "brb")

            got_presence = ok(await alice.get_presence(bob.user_id), nio.PresenceGetResponse)
            assert (got_presence.user_id, got_presence.presence, got_presence.status_msg) == (
                bob.user_id, "unavailable", "brb")

            ok(await bob.set_presence("online", "back"), nio.PresenceSetResponse)
            got = await sync(alice)
            seen = [e for e in got.presence_events if e.user_id == bob.user_id]
            assert seen and (seen[-1].presence, seen[-1].status_msg) == ("online", "back")
            assert (member.presence, member.status_msg) == ("online", "back")
            assert seen[-1].currently_active is True

            # carol shares no room with bob: his presence is not pushed to her
            c = await sync(carol)
            assert not [e for e in c.presence_events if e.user_id == bob.user_id]

    asyncio.run(scenario())


def test_to_device_messages(hearth: ServerProcess) -> None:
    async def scenario() -> None:
        async with users(hearth, "alice", "bob") as (alice, bob), \
                second_login(hearth, "bob") as laptop:
            for c in (alice, bob, laptop):
                await sync(c)

            msg = nio.ToDeviceMessage("org.example.ping", bob.user_id, bob.device_id,
                                      {"n": 1, "text": "ping"})
            ok(await alice.to_device(msg), nio.ToDeviceResponse)
            got = await sync(bob)
            pings = [e for e in got.to_device_events if isinstance(e, nio.UnknownToDeviceEvent)]
            assert [(e.type, e.sender, e.source["content"]) for e in pings] == [
                ("org.example.ping", alice.user_id, {"n": 1, "text": "ping"})]
            # delivered once: the next sync acknowledges it
            assert (await sync(bob)).to_device_events == []
            # only to the device it was addressed to
            assert (await sync(laptop)).to_device_events == []

            # "*" reaches every device of the user, and not the sender
            everyone = nio.ToDeviceMessage("org.example.all", bob.user_id, "*", {"hello": "all"})
            ok(await alice.to_device(everyone, tx_id="txn-all"), nio.ToDeviceResponse)
            # a retried transaction is not delivered twice
            ok(await alice.to_device(everyone, tx_id="txn-all"), nio.ToDeviceResponse)
            for device in (bob, laptop):
                got = await sync(device)
                assert [(e.type, e.sender, e.source["content"]) for e in got.to_device_events] == [
                    ("org.example.all", alice.user_id, {"hello": "all"})], device.device_id
            assert (await sync(alice)).to_device_events == []

    asyncio.run(scenario())


def test_leave_section(hearth: ServerProcess) -> None:
    async def scenario() -> None:
        async with users(hearth, "alice", "bob", "carol") as (alice, bob, carol):
            room = await create_room(alice, preset=nio.RoomPreset.private_chat, topic="leaving")
            await invite_and_join(alice, room, bob, carol)
            await say(alice, room, "hello both")
            for c in (alice, bob, carol):
                await sync(c)
            assert set(alice.rooms[room].users) == {alice.user_id, bob.user_id, carol.user_id}

            # ---- bob leaves: the room moves to his leave section, with his leave event
            ok(await bob.room_leave(room), nio.RoomLeaveResponse)
            after = await say(alice, room, "after bob left")
            got = await sync(bob)
            assert room not in got.rooms.join and room in got.rooms.leave
            leaves = [e for e in timeline(got, room, "leave") if isinstance(e, nio.RoomMemberEvent)]
            assert [(e.state_key, e.membership) for e in leaves] == [(bob.user_id, "leave")]
            assert after not in [getattr(e, "event_id", None) for e in timeline(got, room, "leave")]
            # and does not come back
            await say(alice, room, "later still")
            later = await sync(bob)
            assert room not in later.rooms.join and room not in later.rooms.leave

            # ---- carol is kicked: the kick, with its reason, in her leave section
            ok(await alice.room_kick(room, carol.user_id, reason="enough"), nio.RoomKickResponse)
            await say(alice, room, "after the kick")
            got = await sync(carol)
            assert room not in got.rooms.join and room in got.rooms.leave
            # her timeline runs from her last sync up to the kick, and stops there
            members = [(e.state_key, e.membership, e.sender, e.content.get("reason"))
                       for e in timeline(got, room, "leave") if isinstance(e, nio.RoomMemberEvent)]
            assert members == [(bob.user_id, "leave", bob.user_id, None),
                               (carol.user_id, "leave", alice.user_id, "enough")]
            assert bodies(got, room, "leave") == ["after bob left", "later still"]
            assert isinstance(timeline(got, room, "leave")[-1], nio.RoomMemberEvent)

            # ---- alice's nio room lost both members
            a = await sync(alice)
            assert [(e.state_key, e.membership) for e in timeline(a, room)
                    if isinstance(e, nio.RoomMemberEvent)] == [(bob.user_id, "leave"),
                                                               (carol.user_id, "leave")]
            assert set(alice.rooms[room].users) == {alice.user_id}
            assert alice.rooms[room].member_count == 1

            # ---- a fresh initial sync leaves the left room out, unless include_leave asks
            async with second_login(hearth, "bob") as fresh:
                plain = await sync(fresh)
                assert room not in plain.rooms.leave and room not in plain.rooms.join
            async with second_login(hearth, "bob") as fresh:
                with_leave = await sync(fresh, sync_filter={"room": {"include_leave": True}})
                assert room in with_leave.rooms.leave and room not in with_leave.rooms.join
                events = timeline(with_leave, room, "leave") + with_leave.rooms.leave[room].state
                ids = [getattr(e, "event_id", None) for e in events]
                assert after not in ids
                assert "later still" not in bodies(with_leave, room, "leave")
                own = [e for e in events if isinstance(e, nio.RoomMemberEvent)
                       and e.state_key == bob.user_id]
                assert [e.membership for e in own][-1:] == ["leave"]

    asyncio.run(scenario())
