"""matrix-nio's AsyncClient against Hearth: who may read, send and change what in a room.

The scenarios cover the permission rules a client meets without /sync: a stranger reading a
private room, bans, power levels, the four history_visibility values and leaving. Each test runs
one asyncio scenario against a real server process on each database engine, and asserts on what
a nio user sees: the response class nio chose, the HTTP status and errcode of refusals, and the
message bodies that come back.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator

import nio
import pytest

from synapse_compat_tests.nio_helpers import R, describe, mxid, ok
from tests.harness import ServerProcess

pytestmark = pytest.mark.compat

PASSWORD = "a long and unguessable room password"

# No retries on timeouts or 429s: a stuck or throttling server fails the test instead of hanging it.
CONFIG = nio.AsyncClientConfig(max_limit_exceeded=0, max_timeouts=0, request_timeout=30)

HISTORY_VISIBILITIES = ("world_readable", "shared", "invited", "joined")





def refused(resp: object, cls: type[R], http_status: int, errcode: str) -> R:
    """``resp`` is nio's error class ``cls`` with the given HTTP status and errcode."""
    if not isinstance(resp, cls) or not isinstance(resp, nio.ErrorResponse):
        raise AssertionError(f"expected {cls.__name__} ({http_status} {errcode}), got {describe(resp)}")
    status = resp.transport_response.status
    assert (status, resp.status_code) == (http_status, errcode), describe(resp)
    return resp


def state_event_refused(resp: object, http_status: int, errcode: str) -> None:
    """A refused GET /state/{type}/{key}.

    nio 0.26 only turns a 404 into RoomGetStateEventError; any other status comes back as a
    RoomGetStateEventResponse whose ``content`` is the error body. Accept either shape, but insist
    on the status and errcode, and that nothing but the error came back as content.
    """
    if isinstance(resp, nio.RoomGetStateEventError):
        refused(resp, nio.RoomGetStateEventError, http_status, errcode)
        return
    assert isinstance(resp, nio.RoomGetStateEventResponse), describe(resp)
    assert resp.transport_response.status == http_status, describe(resp)
    assert resp.content.get("errcode") == errcode, describe(resp)
    assert set(resp.content) <= {"errcode", "error"}, describe(resp)


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


async def create_room(client: nio.AsyncClient, **kwargs: Any) -> str:
    resp = ok(await client.room_create(**kwargs), nio.RoomCreateResponse)
    assert resp.room_id.startswith("!")
    return resp.room_id


def history_visibility_state(value: str) -> dict[str, Any]:
    return {"type": "m.room.history_visibility", "state_key": "",
            "content": {"history_visibility": value}}


async def invite_and_join(inviter: nio.AsyncClient, room_id: str, *invitees: nio.AsyncClient) -> None:
    for c in invitees:
        ok(await inviter.room_invite(room_id, c.user_id), nio.RoomInviteResponse)
        joined = ok(await c.join(room_id), nio.JoinResponse)
        assert joined.room_id == room_id


async def say(client: nio.AsyncClient, room_id: str, body: str) -> str:
    resp = ok(await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body},
                                     ignore_unverified_devices=True), nio.RoomSendResponse)
    assert resp.event_id.startswith("$")
    return resp.event_id


async def read_bodies(client: nio.AsyncClient, room_id: str,
                      direction: nio.MessageDirection = nio.MessageDirection.back) -> list[str]:
    """Every text body ``client`` gets from /messages, in room order, walking pages of 4 events.

    The first request carries no ``from`` (nio leaves it out when ``start`` is None); later ones
    follow the ``end`` token of the page before, as a client scrolling back does.
    """
    bodies: list[str] = []
    token: str | None = None
    for _ in range(100):
        page = ok(await client.room_messages(room_id, start=token, direction=direction, limit=4),
                  nio.RoomMessagesResponse)
        bodies.extend(e.body for e in page.chunk if isinstance(e, nio.RoomMessageText))
        if not page.end or page.end == token:
            break
        token = page.end
    else:
        raise AssertionError("/messages kept handing out new end tokens after 100 pages")
    return bodies[::-1] if direction == nio.MessageDirection.back else bodies


async def readable_bodies(client: nio.AsyncClient, room_id: str) -> list[str]:
    """Like read_bodies, but a 403 M_FORBIDDEN for the whole room counts as seeing nothing."""
    first = await client.room_messages(room_id, limit=4)
    if isinstance(first, nio.RoomMessagesError):
        refused(first, nio.RoomMessagesError, 403, "M_FORBIDDEN")
        return []
    return await read_bodies(client, room_id)


async def fetch_event(client: nio.AsyncClient, room_id: str, event_id: str) -> nio.Event | None:
    """The event through GET /event/{id} as nio parsed it; None if the server says 404 M_NOT_FOUND."""
    resp = await client.room_get_event(room_id, event_id)
    if isinstance(resp, nio.RoomGetEventError):
        refused(resp, nio.RoomGetEventError, 404, "M_NOT_FOUND")
        return None
    got = ok(resp, nio.RoomGetEventResponse)
    assert got.event.event_id == event_id
    return got.event


async def event_body(client: nio.AsyncClient, room_id: str, event_id: str) -> str | None:
    """The body of a text event through GET /event/{id}; None if the server says 404 M_NOT_FOUND."""
    event = await fetch_event(client, room_id, event_id)
    if event is None:
        return None
    assert isinstance(event, nio.RoomMessageText), event
    return event.body


async def state_content(client: nio.AsyncClient, room_id: str, event_type: str,
                        state_key: str = "") -> dict[str, Any]:
    resp = ok(await client.room_get_state_event(room_id, event_type, state_key),
              nio.RoomGetStateEventResponse)
    assert "errcode" not in resp.content, describe(resp)
    return resp.content


async def joined_user_ids(client: nio.AsyncClient, room_id: str) -> set[str]:
    resp = ok(await client.joined_members(room_id), nio.JoinedMembersResponse)
    return {m.user_id for m in resp.members}


async def send_refused(client: nio.AsyncClient, room_id: str, body: str) -> None:
    resp = await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body},
                                  ignore_unverified_devices=True)
    refused(resp, nio.RoomSendError, 403, "M_FORBIDDEN")


# --------------------------------------------------------------------------------------------


def test_non_member_cannot_read_or_send_in_private_room(hearth: ServerProcess) -> None:
    async def scenario() -> None:
        async with users(hearth, "alice", "eve") as (alice, eve):
            room = await create_room(alice, preset=nio.RoomPreset.private_chat,
                                     name="Secret plans", topic="not for eve")
            secret = await say(alice, room, "the secret")

            refused(await eve.room_messages(room, limit=10), nio.RoomMessagesError, 403, "M_FORBIDDEN")
            refused(await eve.room_messages(room, direction=nio.MessageDirection.front, limit=10),
                    nio.RoomMessagesError, 403, "M_FORBIDDEN")
            refused(await eve.room_get_state(room), nio.RoomGetStateError, 403, "M_FORBIDDEN")
            state_event_refused(await eve.room_get_state_event(room, "m.room.name"), 403, "M_FORBIDDEN")
            state_event_refused(await eve.room_get_state_event(room, "m.room.member", alice.user_id),
                                403, "M_FORBIDDEN")
            assert await event_body(eve, room, secret) is None
            refused(await eve.joined_members(room), nio.JoinedMembersError, 403, "M_FORBIDDEN")

            await send_refused(eve, room, "let me in")
            refused(await eve.room_put_state(room, "m.room.topic", {"topic": "eve was here"}),
                    nio.RoomPutStateError, 403, "M_FORBIDDEN")
            refused(await eve.join(room), nio.JoinError, 403, "M_FORBIDDEN")
            assert room not in ok(await eve.joined_rooms(), nio.JoinedRoomsResponse).rooms

            # nothing eve tried reached the room
            assert await read_bodies(alice, room) == ["the secret"]
            assert (await state_content(alice, room, "m.room.topic"))["topic"] == "not for eve"
            assert await joined_user_ids(alice, room) == {alice.user_id}
            # while the member herself reads everything
            assert await event_body(alice, room, secret) == "the secret"
            assert (await state_content(alice, room, "m.room.name"))["name"] == "Secret plans"

    asyncio.run(scenario())


def test_ban_blocks_rejoin_reading_and_sending_until_unban_and_invite(hearth: ServerProcess) -> None:
    async def scenario() -> None:
        async with users(hearth, "alice", "bob") as (alice, bob):
            room = await create_room(alice, preset=nio.RoomPreset.private_chat)
            await invite_and_join(alice, room, bob)
            await say(alice, room, "before the ban")
            assert await read_bodies(bob, room) == ["before the ban"]

            ok(await alice.room_ban(room, bob.user_id, reason="spam"), nio.RoomBanResponse)
            member = await state_content(alice, room, "m.room.member", bob.user_id)
            assert (member["membership"], member.get("reason")) == ("ban", "spam")
            after = await say(alice, room, "after the ban")

            refused(await bob.join(room), nio.JoinError, 403, "M_FORBIDDEN")
            # Synapse answers /messages with 403 for a banned user; a server that instead lets
            # him page up to his ban must still not show anything later.
            assert "after the ban" not in await readable_bodies(bob, room)
            assert await event_body(bob, room, after) is None
            await send_refused(bob, room, "I am back")
            assert room not in ok(await bob.joined_rooms(), nio.JoinedRoomsResponse).rooms
            # a banned user cannot be invited back before the unban
            refused(await alice.room_invite(room, bob.user_id), nio.RoomInviteError, 403, "M_FORBIDDEN")
            assert await joined_user_ids(alice, room) == {alice.user_id}

            ok(await alice.room_unban(room, bob.user_id), nio.RoomUnbanResponse)
            member = await state_content(alice, room, "m.room.member", bob.user_id)
            assert member["membership"] == "leave"
            # unbanned is not invited: the room is still invite-only
            refused(await bob.join(room), nio.JoinError, 403, "M_FORBIDDEN")

            await invite_and_join(alice, room, bob)
            await say(bob, room, "back again")
            assert await joined_user_ids(alice, room) == {alice.user_id, bob.user_id}
            assert room in ok(await bob.joined_rooms(), nio.JoinedRoomsResponse).rooms
            # history is "shared" (private_chat): having joined after it, bob now sees the message
            # sent while he was banned
            assert await read_bodies(bob, room) == ["before the ban", "after the ban", "back again"]
            assert await event_body(bob, room, after) == "after the ban"

    asyncio.run(scenario())


def test_power_levels_gate_state_kick_ban_and_self_promotion(hearth: ServerProcess) -> None:
    async def scenario() -> None:
        async with users(hearth, "alice", "bob", "carol") as (alice, bob, carol):
            room = await create_room(alice, preset=nio.RoomPreset.private_chat, name="Original")
            await invite_and_join(alice, room, bob, carol)
            levels = await state_content(bob, room, "m.room.power_levels")
            assert levels.get("state_default") == 50
            assert levels.get("users", {}).get(bob.user_id, levels.get("users_default", 0)) == 0

            # power level 0: no room name, no kick, no ban, no self-promotion
            refused(await bob.room_put_state(room, "m.room.name", {"name": "Bob's room"}),
                    nio.RoomPutStateError, 403, "M_FORBIDDEN")
            refused(await bob.room_kick(room, carol.user_id), nio.RoomKickError, 403, "M_FORBIDDEN")
            refused(await bob.room_ban(room, carol.user_id), nio.RoomBanError, 403, "M_FORBIDDEN")
            promoted = {**levels, "users": {**levels.get("users", {}), bob.user_id: 50}}
            refused(await bob.room_put_state(room, "m.room.power_levels", promoted),
                    nio.RoomPutStateError, 403, "M_FORBIDDEN")
            assert (await state_content(alice, room, "m.room.name"))["name"] == "Original"
            assert await state_content(alice, room, "m.room.power_levels") == levels
            assert await joined_user_ids(alice, room) == {alice.user_id, bob.user_id, carol.user_id}

            # the admin raises bob to 50
            ok(await alice.room_put_state(room, "m.room.power_levels", promoted), nio.RoomPutStateResponse)
            assert (await state_content(bob, room, "m.room.power_levels"))["users"][bob.user_id] == 50

            ok(await bob.room_put_state(room, "m.room.name", {"name": "Bob's room"}),
               nio.RoomPutStateResponse)
            assert (await state_content(alice, room, "m.room.name"))["name"] == "Bob's room"

            # 50 is not enough for a 100-level event, nor to climb above his own level
            refused(await bob.room_put_state(room, "m.room.history_visibility",
                                             {"history_visibility": "world_readable"}),
                    nio.RoomPutStateError, 403, "M_FORBIDDEN")
            to_100 = {**promoted, "users": {**promoted["users"], bob.user_id: 100}}
            refused(await bob.room_put_state(room, "m.room.power_levels", to_100),
                    nio.RoomPutStateError, 403, "M_FORBIDDEN")
            assert (await state_content(alice, room, "m.room.power_levels"))["users"][bob.user_id] == 50
            # nor to remove the room's creator
            refused(await bob.room_kick(room, alice.user_id), nio.RoomKickError, 403, "M_FORBIDDEN")
            refused(await bob.room_ban(room, alice.user_id), nio.RoomBanError, 403, "M_FORBIDDEN")

            # at 50 he may kick and ban the level-0 carol
            ok(await bob.room_kick(room, carol.user_id, reason="out"), nio.RoomKickResponse)
            assert await joined_user_ids(alice, room) == {alice.user_id, bob.user_id}
            kicked = await state_content(alice, room, "m.room.member", carol.user_id)
            assert kicked["membership"] == "leave"
            ok(await bob.room_ban(room, carol.user_id), nio.RoomBanResponse)
            assert (await state_content(alice, room, "m.room.member", carol.user_id))["membership"] == "ban"

    asyncio.run(scenario())


# What a user who joins (after an invite) sees of the three messages, per history_visibility.
EXPECTED_AFTER_JOIN = {
    "world_readable": ["before the invite", "while invited", "after the join"],
    "shared": ["before the invite", "while invited", "after the join"],
    "invited": ["while invited", "after the join"],
    "joined": ["after the join"],
}


@pytest.mark.parametrize("visibility", HISTORY_VISIBILITIES)
def test_history_visibility_for_newcomers(hearth: ServerProcess, visibility: str) -> None:
    async def scenario() -> None:
        async with users(hearth, "alice", "bob", "carol") as (alice, bob, carol):
            room = await create_room(alice, preset=nio.RoomPreset.private_chat,
                                     initial_state=[history_visibility_state(visibility)])
            hv = await state_content(alice, room, "m.room.history_visibility")
            assert hv["history_visibility"] == visibility

            ids = {"before the invite": await say(alice, room, "before the invite")}
            ok(await alice.room_invite(room, bob.user_id), nio.RoomInviteResponse)
            ids["while invited"] = await say(alice, room, "while invited")
            ok(await bob.join(room), nio.JoinResponse)
            ids["after the join"] = await say(alice, room, "after the join")

            everything = list(ids)
            assert await read_bodies(alice, room) == everything

            expected = EXPECTED_AFTER_JOIN[visibility]
            assert await read_bodies(bob, room) == expected
            assert await read_bodies(bob, room, nio.MessageDirection.front) == expected
            for body, event_id in ids.items():
                assert await event_body(bob, room, event_id) == (body if body in expected else None), body

            # carol never joined
            if visibility == "world_readable":
                assert await read_bodies(carol, room) == everything
                for body, event_id in ids.items():
                    assert await event_body(carol, room, event_id) == body
                state = ok(await carol.room_get_state(room), nio.RoomGetStateResponse)
                assert {e["type"] for e in state.events} >= {"m.room.create", "m.room.history_visibility"}
            else:
                refused(await carol.room_messages(room, limit=10), nio.RoomMessagesError, 403, "M_FORBIDDEN")
                for event_id in ids.values():
                    assert await event_body(carol, room, event_id) is None
                refused(await carol.room_get_state(room), nio.RoomGetStateError, 403, "M_FORBIDDEN")
            # reading is never a licence to write
            await send_refused(carol, room, "hello from outside")
            assert await read_bodies(alice, room) == everything

    asyncio.run(scenario())


def test_history_visibility_is_taken_at_each_event(hearth: ServerProcess) -> None:
    """A room made world_readable later does not open the messages sent while it was not."""

    async def scenario() -> None:
        async with users(hearth, "alice", "carol") as (alice, carol):
            room = await create_room(alice, preset=nio.RoomPreset.private_chat,
                                     initial_state=[history_visibility_state("joined")])
            hidden = await say(alice, room, "members only")
            refused(await carol.room_messages(room, limit=10), nio.RoomMessagesError, 403, "M_FORBIDDEN")

            opened = ok(await alice.room_put_state(room, "m.room.history_visibility",
                                                   {"history_visibility": "world_readable"}),
                        nio.RoomPutStateResponse).event_id
            public = await say(alice, room, "for everyone")

            assert await read_bodies(carol, room) == ["for everyone"]
            assert await event_body(carol, room, public) == "for everyone"
            assert await event_body(carol, room, hidden) is None
            assert await read_bodies(alice, room) == ["members only", "for everyone"]

            # and back: what follows a switch to "joined" is closed again
            closing = ok(await alice.room_put_state(room, "m.room.history_visibility",
                                                    {"history_visibility": "joined"}),
                         nio.RoomPutStateResponse).event_id
            closed = await say(alice, room, "members only again")
            assert "members only again" not in await readable_bodies(carol, room)
            assert await event_body(carol, room, closed) is None
            assert await event_body(carol, room, public) == "for everyone"

            # Spec (history visibility): an m.room.history_visibility event is visible if the
            # setting before *or* after it allows; so carol sees both switches.
            for event_id, value in ((opened, "world_readable"), (closing, "joined")):
                event = await fetch_event(carol, room, event_id)
                assert isinstance(event, nio.RoomHistoryVisibilityEvent), (value, event)
                assert event.history_visibility == value

    asyncio.run(scenario())


def test_leave_hides_later_messages_and_freezes_state(hearth: ServerProcess) -> None:
    async def scenario() -> None:
        async with users(hearth, "alice", "bob") as (alice, bob):
            room = await create_room(alice, preset=nio.RoomPreset.private_chat, topic="before")
            await invite_and_join(alice, room, bob)
            first = await say(alice, room, "while bob is here")
            await say(bob, room, "bye")
            assert room in ok(await bob.joined_rooms(), nio.JoinedRoomsResponse).rooms

            ok(await bob.room_leave(room), nio.RoomLeaveResponse)
            later = await say(alice, room, "after bob left")
            ok(await alice.room_put_state(room, "m.room.topic", {"topic": "after"}),
               nio.RoomPutStateResponse)
            ok(await alice.room_put_state(room, "m.room.name", {"name": "Named later"}),
               nio.RoomPutStateResponse)
            await say(alice, room, "even later")

            assert room not in ok(await bob.joined_rooms(), nio.JoinedRoomsResponse).rooms
            assert await joined_user_ids(alice, room) == {alice.user_id}

            # what he could see stays readable, nothing after the leave is
            assert await read_bodies(bob, room) == ["while bob is here", "bye"]
            assert await read_bodies(bob, room, nio.MessageDirection.front) == ["while bob is here", "bye"]
            assert await event_body(bob, room, first) == "while bob is here"
            assert await event_body(bob, room, later) is None

            # state reads answer with the state at his leave
            assert (await state_content(bob, room, "m.room.topic"))["topic"] == "before"
            refused(await bob.room_get_state_event(room, "m.room.name"),
                    nio.RoomGetStateEventError, 404, "M_NOT_FOUND")
            assert (await state_content(bob, room, "m.room.member", bob.user_id))["membership"] == "leave"
            state = ok(await bob.room_get_state(room), nio.RoomGetStateResponse)
            by_key = {(e["type"], e["state_key"]): e for e in state.events}
            assert by_key[("m.room.topic", "")]["content"]["topic"] == "before"
            assert ("m.room.name", "") not in by_key
            assert by_key[("m.room.member", bob.user_id)]["content"]["membership"] == "leave"
            # while the room itself moved on
            assert (await state_content(alice, room, "m.room.topic"))["topic"] == "after"
            assert (await state_content(alice, room, "m.room.name"))["name"] == "Named later"

            await send_refused(bob, room, "one more thing")
            refused(await bob.room_put_state(room, "m.room.topic", {"topic": "bob's"}),
                    nio.RoomPutStateError, 403, "M_FORBIDDEN")
            # the room is invite-only, so leaving is for good
            refused(await bob.join(room), nio.JoinError, 403, "M_FORBIDDEN")
            assert await read_bodies(alice, room) == ["while bob is here", "bye", "after bob left",
                                                      "even later"]

            # Spec (history visibility): one's own membership event is visible if the membership
            # before or after it allows, so bob sees his own leave.
            own = by_key[("m.room.member", bob.user_id)]
            leave = await fetch_event(bob, room, own["event_id"])
            assert isinstance(leave, nio.RoomMemberEvent), leave
            assert (leave.state_key, leave.membership) == (bob.user_id, "leave")

    asyncio.run(scenario())


def test_forgotten_room_history_is_gone(hearth: ServerProcess) -> None:
    """Spec, POST /forget: "a user will no longer be able to retrieve history for this room".

    Synapse refuses /messages with 403 M_FORBIDDEN once the room is forgotten.
    """

    async def scenario() -> None:
        async with users(hearth, "alice", "bob") as (alice, bob):
            room = await create_room(alice, preset=nio.RoomPreset.private_chat)
            await invite_and_join(alice, room, bob)
            seen = await say(alice, room, "remember me")

            # a joined member may not forget
            refused(await bob.room_forget(room), nio.RoomForgetError, 400, "M_UNKNOWN")
            ok(await bob.room_leave(room), nio.RoomLeaveResponse)
            assert await read_bodies(bob, room) == ["remember me"]

            ok(await bob.room_forget(room), nio.RoomForgetResponse)
            refused(await bob.room_messages(room, limit=10), nio.RoomMessagesError, 403, "M_FORBIDDEN")
            assert await event_body(bob, room, seen) is None

    asyncio.run(scenario())
