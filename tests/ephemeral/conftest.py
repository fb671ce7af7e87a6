"""Fixtures for the ephemeral services: databases on both engines, a clock that only moves when
told to, and stand-ins for the event store's membership reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from twisted.internet import task

from homeserver.clock import Clock
from homeserver.notifier import Notifier

START_S = 1_700_000_000.0


class FakeClock(Clock):
    """Reactor time from twisted's task.Clock, for wall time and timers alike."""

    def __init__(self) -> None:
        super().__init__(task.Clock())
        self.reactor.advance(START_S)

    def time_msec(self) -> int:
        return int(self.reactor.seconds() * 1000)

    def advance(self, seconds: float) -> None:
        self.reactor.advance(seconds)


@dataclass
class FakeRooms:
    """Memberships as the event store reports them: room id -> user id -> membership."""
    members: dict[str, dict[str, str]] = field(default_factory=dict)
    rows: dict[str, Any] = field(default_factory=dict)

    def set(self, room_id: str, user_id: str, membership: str) -> None:
        self.members.setdefault(room_id, {})[user_id] = membership

    async def get_membership(self, room_id: str, user_id: str) -> tuple[str, str, int] | None:
        m = self.members.get(room_id, {}).get(user_id)
        return (m, "$member", 1) if m else None

    async def get_interested_users(self, room_id: str) -> set[str]:
        return {u for u, m in self.members.get(room_id, {}).items() if m in ("join", "invite", "knock")}

    async def get_rooms_for_user(self, user_id: str, memberships: tuple[str, ...] = ("join",)) -> list[str]:
        return sorted(r for r, ms in self.members.items() if ms.get(user_id) in memberships)

    async def get_event_row(self, event_id: str) -> Any:
        return self.rows.get(event_id)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def notifier(clock: FakeClock) -> Notifier:
    return Notifier(clock.reactor)


@pytest.fixture
def rooms() -> FakeRooms:
    return FakeRooms()
