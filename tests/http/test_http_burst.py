"""Answers first: while the notifier answers woken requests a few per reactor turn, answered
connections are not read from and access-log lines wait; both resume when the burst ends."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from twisted.internet.task import Clock

from homeserver.config import RateLimit
from homeserver.http.burst import Burst
from homeserver.http.ratelimit import RateLimiter
from homeserver.http.router import AUTH_NONE, Router
from homeserver.http.site import HttpRequest, MatrixResource, make_site
from homeserver.notifier import _WAKE_CHUNK, Notifier
from tests.http.test_http_site import FakeAuth, Server, parse, request


class LongPolls(Server):
    """GET /wait/{user} waits on the notifier (like a /sync long-poll); GET /now answers at once.
    (``connect`` as the site tests' server.)"""

    def __init__(self) -> None:  # (its own routes: Server.__init__ is not called)
        self.clock = Clock()
        self.burst = Burst()
        self.notifier = Notifier(self.clock, self.burst)
        router = Router()

        async def wait(req: HttpRequest, user: str) -> tuple[int, Any]:
            await self.notifier.wait(user, 30.0)
            return 200, {"woken": user}

        async def now(req: HttpRequest) -> tuple[int, Any]:
            return 200, {}
        router.add("GET", "/wait/{user}", wait, auth=AUTH_NONE)
        router.add("GET", "/now", now, auth=AUTH_NONE)
        resource = MatrixResource(router, FakeAuth(), RateLimiter(RateLimit(1000, 1000)),  # type: ignore[arg-type]
                                  burst=self.burst)
        self.site = make_site(resource, json_limit=1024, upload_limit=1024)


@pytest.fixture
def polls() -> LongPolls:
    return LongPolls()


def test_answered_connections_wait_until_the_burst_ends(polls: LongPolls,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="homeserver.access")
    n = _WAKE_CHUNK + 4
    conns = [polls.connect() for _ in range(n)]
    for i, (channel, _) in enumerate(conns):
        channel.dataReceived(request("GET", f"/wait/u{i}"))
    assert all(t.value() == b"" for _, t in conns)
    before = time.time()
    polls.notifier.notify("events", 1, users=[f"u{i}" for i in range(n)])

    # The first chunk is answered; those connections are not read until the burst ends, and
    # their access-log lines are not written yet.
    answered = [t for _, t in conns if t.value()]
    assert len(answered) == _WAKE_CHUNK and polls.burst.active
    assert all(t.producerState == "paused" for t in answered)
    assert all(t.producerState == "producing" for _, t in conns if not t.value())
    assert not [r for r in caplog.records if r.name == "homeserver.access"]

    polls.clock.advance(0)  # the next turn: the rest, and the end of the burst
    assert not polls.burst.active
    for i, (_, t) in enumerate(conns):
        [(status, _, body)] = parse(t.value())
        assert status == 200 and body == b'{"woken":"u%d"}' % i
        assert t.producerState == "producing"
    lines = [r for r in caplog.records if r.name == "homeserver.access"]
    assert len(lines) == n and all("GET /wait/u" in r.getMessage() for r in lines)
    # Each line keeps the time it was made (the first chunk's, before the burst ended).
    assert all(before <= r.created <= time.time() for r in lines)


def test_without_a_burst_nothing_is_held(polls: LongPolls,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="homeserver.access")
    channel, t = polls.connect()
    channel.dataReceived(request("GET", "/now"))
    polls.clock.advance(0)
    assert parse(t.value())[0][0] == 200 and t.producerState == "producing"
    assert len([r for r in caplog.records if r.name == "homeserver.access"]) == 1


def test_a_closing_or_busy_connection_is_not_held(polls: LongPolls) -> None:
    # Connection: close: the channel is not persistent, nothing to resume later.
    closing, t1 = polls.connect()
    closing.dataReceived(request("GET", "/wait/a", headers={"Connection": "close"}))
    # Two pipelined requests: the second is still queued when the first is answered.
    busy, t2 = polls.connect()
    busy.dataReceived(request("GET", "/wait/b") + request("GET", "/now"))
    polls.notifier.notify("events", 1, users=["a", "b"])
    polls.clock.advance(0)
    assert parse(t1.value())[0][0] == 200
    assert [s for s, _, _ in parse(t2.value())] == [200, 200]
    assert t2.producerState == "producing" and not polls.burst.active


def test_burst_runs_deferred_work_at_its_end_and_survives_a_failure() -> None:
    burst = Burst()
    ran: list[int] = []
    burst.later(ran.append, 1)  # no burst: at once
    burst.begin()
    burst.begin()
    burst.later(ran.append, 2)
    burst.later(lambda: 1 / 0)
    burst.later(ran.append, 3)
    burst.end()
    assert ran == [1] and burst.active
    burst.end()
    assert ran == [1, 2, 3] and not burst.active


def test_garbage_collection_waits_for_the_end_of_a_burst() -> None:
    import gc
    assert gc.isenabled()
    burst = Burst()
    burst.begin()
    assert not gc.isenabled()
    burst.begin()
    burst.end()
    assert not gc.isenabled()
    burst.end()
    assert gc.isenabled()
    # Switched off by someone else: left off.
    gc.disable()
    try:
        burst.begin()
        burst.end()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_long_burst_stops_holding_at_its_deadline(polls: LongPolls,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst longer than MAX_HOLD_S (a very large room) releases what it holds and holds
    nothing more: the clients' next requests are read again, the log written, the collector on."""
    import gc

    from homeserver.http import burst as burst_module
    now = [1000.0]
    monkeypatch.setattr(burst_module.time, "monotonic", lambda: now[0])
    polls.burst.begin()
    channel, t = polls.connect()
    channel.dataReceived(request("GET", "/now"))
    assert t.producerState == "paused" and not gc.isenabled()
    now[0] += burst_module.MAX_HOLD_S + 0.01
    assert not polls.burst.active  # past the deadline
    assert t.producerState == "producing" and gc.isenabled()
    other, t2 = polls.connect()
    other.dataReceived(request("GET", "/now"))
    assert t2.producerState == "producing"  # not held any more
    polls.burst.end()
    assert gc.isenabled()
