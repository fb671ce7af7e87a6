"""Pusher delivery on both engines with a scripted gateway and a clock the test moves: order,
exponential backoff up to its cap, giving up on a notification after a day, permanent errors,
rejected pushkeys, resuming from the stored position, event_id_only bodies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import pytest_twisted
from twisted.internet import reactor, task

from homeserver.push.pushers import (GIVE_UP_AFTER_MS, MAX_BACKOFF_S, GatewayError, PusherService)
from storage.database import Database
from storage.notifications import NewNotification, NotificationStore
from storage.pushers import PusherStore
from tests.ephemeral.conftest import FakeClock

USER = "@b:hs"
URL = "https://gw.example/_matrix/push/v1/notify"


@dataclass
class FakeEvent:
    event_id: str
    room_id: str = "!r:hs"
    type: str = "m.room.message"
    sender: str = "@a:hs"
    content: dict[str, Any] = field(default_factory=lambda: {"msgtype": "m.text", "body": "hi"})
    state_key: str | None = None


@dataclass
class FakeRow:
    event: FakeEvent
    state_group_before: int | None = None
    state_group_after: int | None = None


class FakeIds:
    def current(self) -> int:
        return 0


class FakeEvents:
    stream_ids = FakeIds()

    async def get_event_row(self, event_id: str) -> FakeRow:
        return FakeRow(FakeEvent(event_id))

    async def get_rooms_for_user(self, user_id: str, memberships: tuple[str, ...]) -> list[str]:
        return ["!r:hs"]  # the one room the tests' notifications are in


class ScriptedGateway:
    """Answers each call with the next scripted outcome: an exception, or rejected pushkeys."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.script: list[Any] = []
        self.calls: list[tuple[int, dict[str, Any]]] = []

    async def notify(self, url: str, body: dict[str, Any]) -> list[str]:
        assert url == URL
        self.calls.append((self.clock.time_msec(), body))
        outcome = self.script.pop(0) if self.script else []
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def event_ids(self) -> list[str | None]:
        return [b["notification"].get("event_id") for _, b in self.calls]


async def until(predicate: Callable[[], bool], what: str = "condition") -> None:
    for _ in range(500):
        if predicate():
            return
        await task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError(f"timed out waiting for {what}")


async def setup(db: Database, data: dict[str, Any] | None = None
                ) -> tuple[PusherService, ScriptedGateway, NotificationStore, FakeClock]:
    clock = FakeClock()
    gateway = ScriptedGateway(clock)
    notifications = NotificationStore(db)
    service = PusherService(PusherStore(db), notifications, FakeEvents(), None, clock,  # type: ignore[arg-type]
                            gateway)
    await service.set_pusher(USER, "DEV", {
        "kind": "http", "app_id": "app", "pushkey": "key", "app_display_name": "A",
        "device_display_name": "D", "lang": "en", "data": data or {"url": URL}})
    return service, gateway, notifications, clock


async def notify(service: PusherService, store: NotificationStore, n: int) -> None:
    await store.add("!r:hs", "main", f"$e{n}", n, 0, [NewNotification(USER, ["notify"], False)])
    service.on_notified([USER])


def worker(service: PusherService) -> Any:
    return next(iter(service._workers.values()))


@pytest_twisted.ensureDeferred
async def test_backoff_doubles_up_to_its_cap_then_gives_up(db: Database) -> None:
    service, gateway, store, clock = await setup(db)
    gateway.script = [GatewayError("down")] * 100
    await notify(service, store, 1)
    await until(lambda: len(gateway.calls) == 1 and worker(service).backing_off, "first try")
    delays = []
    for _ in range(14):
        w = worker(service)
        delays.append(w._timer.getTime() - clock.reactor.seconds())
        before = len(gateway.calls)
        clock.advance(delays[-1])
        await until(lambda: len(gateway.calls) == before + 1 and worker(service).backing_off, "retry")
    assert delays[:5] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert max(delays) == MAX_BACKOFF_S
    assert gateway.event_ids() == ["$e1"] * 15
    # After a day of failures the notification is given up and the next one goes.
    gateway.script = []
    await notify(service, store, 2)
    await until(lambda: worker(service).backing_off, "still backing off")
    assert len(gateway.calls) == 15  # a new notification does not jump the backoff
    clock.advance(GIVE_UP_AFTER_MS / 1000)
    gateway.script = [GatewayError("down")]
    await until(lambda: gateway.event_ids()[-1:] == ["$e2"], "the next notification")
    pusher = await service.store.get(USER, "app", "key")
    assert pusher is not None and pusher.last_stream_ordering == 2 and pusher.failing_since is None
    await service.stop()


@pytest_twisted.ensureDeferred
async def test_order_permanent_errors_and_resuming(db: Database) -> None:
    service, gateway, store, clock = await setup(db)
    gateway.script = [[], GatewayError("bad request", permanent=True), []]
    for n in (1, 2, 3):
        await store.add("!r:hs", "main", f"$e{n}", n, 0, [NewNotification(USER, ["notify"], False)])
    service.on_notified([USER])
    await until(lambda: len(gateway.calls) == 3, "three sends")
    assert gateway.event_ids() == ["$e1", "$e2", "$e3"]
    await until(lambda: not worker(service)._running, "idle")
    await service.stop()
    # A new service (a restart) resumes after what was handled; read ones are skipped.
    await store.add("!r:hs", "main", "$e4", 4, 0, [NewNotification(USER, ["notify"], False)])
    await store.add("!r:hs", "main", "$e5", 5, 0, [NewNotification(USER, ["notify"], False)])
    await store.mark_read(USER, "!r:hs", "", 4)
    again = PusherService(service.store, store, FakeEvents(), None, clock, gateway)  # type: ignore[arg-type]
    await again.start()
    await until(lambda: len(gateway.calls) == 4, "resumed send")
    assert gateway.event_ids() == ["$e1", "$e2", "$e3", "$e5"]
    await again.stop()


@pytest_twisted.ensureDeferred
async def test_rejected_pushkey_and_event_id_only(db: Database) -> None:
    service, gateway, store, clock = await setup(db, {"url": URL, "format": "event_id_only",
                                                      "extra": "kept"})
    gateway.script = [["key"]]
    await notify(service, store, 1)
    await until(lambda: not service._workers, "pusher removed")
    assert await service.store.get(USER, "app", "key") is None
    body = gateway.calls[0][1]["notification"]
    assert set(body) == {"event_id", "room_id", "counts", "prio", "devices"}
    assert body["devices"][0]["data"] == {"format": "event_id_only", "extra": "kept"}
    assert body["counts"] == {"unread": 1} and body["prio"] == "low"
    await notify(service, store, 2)
    await task.deferLater(reactor, 0.1, lambda: None)
    assert len(gateway.calls) == 1
