"""TypingService: membership check, timeouts on the reactor, stream positions, what /sync reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from homeserver.ephemeral.typing import MAX_TIMEOUT_MS, TypingService
from homeserver.http.errors import MatrixError
from homeserver.notifier import Notifier
from tests.ephemeral.conftest import FakeClock, FakeRooms

ROOM = "!r:x"


@pytest.fixture
def typing(rooms: FakeRooms, notifier: Notifier, clock: FakeClock) -> TypingService:
    for user in ("@a:x", "@b:x"):
        rooms.set(ROOM, user, "join")
    rooms.set(ROOM, "@invited:x", "invite")
    rooms.set(ROOM, "@gone:x", "leave")
    return TypingService(rooms, notifier, clock)


@dataclass
class _Member:
    room_id: str
    state_key: str
    membership: str
    type: str = "m.room.member"


@dataclass
class _Persisted:
    event: Any


@pytest_twisted.ensureDeferred
async def test_only_joined_users_may_type(typing: TypingService) -> None:
    for user in ("@invited:x", "@gone:x", "@stranger:x"):
        with pytest.raises(MatrixError) as e:
            await typing.set_typing(user, ROOM, True, 1000)
        assert e.value.status == 403
    with pytest.raises(MatrixError):
        await typing.set_typing("@a:x", "!other:x", True, 1000)
    assert typing.typing_users(ROOM) == []


@pytest_twisted.ensureDeferred
async def test_start_and_stop_move_the_stream_and_wake_the_room(
        typing: TypingService, notifier: Notifier, clock: FakeClock) -> None:
    start = typing.position()
    assert notifier.current_token().typing == start
    woken = {u: defer.ensureDeferred(notifier.wait(u, 60)) for u in ("@b:x", "@invited:x", "@gone:x")}
    await typing.set_typing("@a:x", ROOM, True, 10_000)
    assert typing.typing_users(ROOM) == ["@a:x"]
    assert typing.position() == start + 1 == notifier.current_token().typing
    assert woken["@b:x"].called and woken["@invited:x"].called
    assert not woken["@gone:x"].called  # left the room: not told
    await typing.set_typing("@b:x", ROOM, True, 10_000)
    assert typing.typing_users(ROOM) == ["@a:x", "@b:x"]
    await typing.set_typing("@a:x", ROOM, False)
    assert typing.typing_users(ROOM) == ["@b:x"]
    assert typing.position() == start + 3
    # Stopping when not typing changes nothing.
    await typing.set_typing("@a:x", ROOM, False)
    assert typing.position() == start + 3
    clock.advance(60)  # let the pending notifier waits time out


@pytest_twisted.ensureDeferred
async def test_typing_expires_after_its_timeout(typing: TypingService, clock: FakeClock) -> None:
    await typing.set_typing("@a:x", ROOM, True, 5_000)
    pos = typing.position()
    clock.advance(4.9)
    assert typing.typing_users(ROOM) == ["@a:x"]
    clock.advance(0.2)
    assert typing.typing_users(ROOM) == []
    assert typing.position() == pos + 1
    assert typing.changed_rooms(pos) == {ROOM}


@pytest_twisted.ensureDeferred
async def test_refresh_moves_the_timer_without_a_change(typing: TypingService, clock: FakeClock) -> None:
    await typing.set_typing("@a:x", ROOM, True, 5_000)
    pos = typing.position()
    clock.advance(4)
    await typing.set_typing("@a:x", ROOM, True, 5_000)
    assert typing.position() == pos  # still typing: nothing for /sync to send
    clock.advance(4)
    assert typing.typing_users(ROOM) == ["@a:x"]
    clock.advance(1.5)
    assert typing.typing_users(ROOM) == []


@pytest_twisted.ensureDeferred
async def test_timeout_is_capped(typing: TypingService, clock: FakeClock) -> None:
    await typing.set_typing("@a:x", ROOM, True, 10 ** 9)
    clock.advance(MAX_TIMEOUT_MS / 1000 - 0.1)
    assert typing.typing_users(ROOM) == ["@a:x"]
    clock.advance(0.2)
    assert typing.typing_users(ROOM) == []


@pytest_twisted.ensureDeferred
async def test_stopping_cancels_the_timer(typing: TypingService, clock: FakeClock) -> None:
    await typing.set_typing("@a:x", ROOM, True, 5_000)
    await typing.set_typing("@a:x", ROOM, False)
    pos = typing.position()
    clock.advance(10)
    assert typing.position() == pos
    assert not clock.reactor.getDelayedCalls()


@pytest_twisted.ensureDeferred
async def test_leaving_stops_typing(typing: TypingService, rooms: FakeRooms) -> None:
    await typing.set_typing("@a:x", ROOM, True, 5_000)
    await typing.set_typing("@b:x", ROOM, True, 5_000)
    typing.on_event(_Persisted(_Member(ROOM, "@b:x", "join")))  # a join (profile change): nothing
    assert typing.typing_users(ROOM) == ["@a:x", "@b:x"]
    rooms.set(ROOM, "@b:x", "leave")
    typing.on_event(_Persisted(_Member(ROOM, "@b:x", "leave")))
    assert typing.typing_users(ROOM) == ["@a:x"]
    typing.on_event(_Persisted(_Member(ROOM, "@a:x", "ban")))
    assert typing.typing_users(ROOM) == []


@pytest_twisted.ensureDeferred
async def test_what_sync_reads(typing: TypingService, rooms: FakeRooms) -> None:
    other = "!o:x"
    rooms.set(other, "@a:x", "join")
    quiet = "!q:x"
    p0 = typing.position()
    await typing.set_typing("@a:x", ROOM, True, 5_000)
    p1 = typing.position()
    await typing.set_typing("@a:x", other, True, 5_000)
    await typing.set_typing("@a:x", other, False)
    p3 = typing.position()
    assert typing.changed_rooms(p0) == {ROOM, other}
    assert typing.changed_rooms(p1) == {other}
    assert typing.changed_rooms(p3) == set()
    # Initial sync: the rooms where someone types.
    assert typing.events_for_rooms([ROOM, other, quiet], None) == {
        ROOM: {"type": "m.typing", "content": {"user_ids": ["@a:x"]}}}
    # Incremental: rooms that changed, an emptied list included.
    assert typing.events_for_rooms([ROOM, other, quiet], p1) == {
        other: {"type": "m.typing", "content": {"user_ids": []}}}
    assert typing.events_for_rooms([ROOM, other, quiet], p3) == {}
    # A position from the future (a token from before a restart): every room's current state.
    ahead = p3 + 1000
    assert typing.changed_rooms(ahead) == {ROOM, other}
    assert typing.events_for_rooms([ROOM, other, quiet], ahead) == {
        ROOM: {"type": "m.typing", "content": {"user_ids": ["@a:x"]}},
        other: {"type": "m.typing", "content": {"user_ids": []}}}


def test_positions_keep_growing_across_restarts(rooms: FakeRooms, clock: FakeClock) -> None:
    first = TypingService(rooms, Notifier(clock.reactor), clock)
    clock.advance(1)
    second = TypingService(rooms, Notifier(clock.reactor), clock)
    assert second.position() > first.position() > 0
