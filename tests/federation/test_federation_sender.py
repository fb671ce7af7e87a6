"""Outgoing federation queues on both engines, against a scripted remote and a clock the test
moves: batching limits, order, EDU coalescing, backoff and its reset, refused transactions,
per-PDU errors, one transaction in flight, and restarts that resend exactly what was unsent."""

from __future__ import annotations

import logging
from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from federation.sender import FederationSender
from homeserver.config import FederationConfig
from storage.database import Database
from storage.federation_queue import FederationQueueStore
from tests.ephemeral.conftest import FakeClock

HS = "hs.example"
REMOTE = "remote.example"
CONFIG = FederationConfig(min_retry_interval_ms=1000, retry_multiplier=2.0,
                          max_retry_interval_ms=5000)


class HttpError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class FakeRemote:
    """Records every PUT /send; answers with the next scripted outcome: an exception to raise,
    a Deferred to wait for, a dict to return, or (script empty) success for every PDU."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.script: list[Any] = []
        self.calls: list[tuple[int, str, str, dict[str, Any]]] = []

    async def send(self, destination: str, txn_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((self.clock.time_msec(), destination, txn_id, body))
        outcome = self.script.pop(0) if self.script else None
        if isinstance(outcome, BaseException):
            raise outcome
        if isinstance(outcome, defer.Deferred):
            return await outcome
        if isinstance(outcome, dict):
            return outcome
        return {"pdus": {p["event_id"]: {} for p in body["pdus"]}}

    def pdu_ids(self, i: int) -> list[str]:
        return [p["event_id"] for p in self.calls[i][3]["pdus"]]

    def edus(self, i: int) -> list[dict[str, Any]]:
        return self.calls[i][3]["edus"]


class FakeEvents:
    def __init__(self) -> None:
        self.gone: set[str] = set()

    async def get_pdu_json(self, event_ids: list[str]) -> dict[str, dict[str, Any]]:
        return {e: {"event_id": e, "type": "m.room.message", "content": {}}
                for e in event_ids if e not in self.gone}


async def until(predicate: Callable[[], bool], what: str = "condition") -> None:
    for _ in range(1000):
        if predicate():
            return
        await task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError(f"timed out waiting for {what}")


async def settle() -> None:
    """Give the database threads time to do anything they were going to do."""
    await task.deferLater(reactor, 0.15, lambda: None)


async def idle(store: FederationQueueStore, destination: str = REMOTE) -> None:
    for _ in range(500):
        if await store.count_pending(destination) == (0, 0):
            return
        await task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError(f"queue for {destination} never drained")


async def advance_to_timer(clock: FakeClock, ms: int) -> None:
    """Advance once the retry timer exists (it is set after the failure is recorded)."""
    await until(lambda: bool(clock.reactor.getDelayedCalls()), "a retry timer")
    clock.advance(ms / 1000)


class Setup:
    def __init__(self, db: Database, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.remote = FakeRemote(self.clock)
        self.events = FakeEvents()
        self.store = FederationQueueStore(db)
        self.sender = FederationSender(self.store, self.clock, self.remote.send, HS, CONFIG,
                                       self.events.get_pdu_json)


async def make(db: Database, started: list[FederationSender], clock: FakeClock | None = None,
               start: bool = False) -> Setup:
    s = Setup(db, clock)
    started.append(s.sender)
    await s.store.load()
    if start:
        await s.sender.start()
    return s


@pytest_twisted.async_yield_fixture
async def senders() -> Any:
    started: list[FederationSender] = []
    yield started
    for sender in started:
        await sender.stop()


@pytest_twisted.ensureDeferred
async def test_batches_of_at_most_50_pdus_and_100_edus_in_order(db: Database, senders: Any) -> None:
    s = await make(db, senders)
    pdu_ids = [f"$e{i:03d}" for i in range(120)]
    for i in range(250):  # PDUs and EDUs interleaved, as they would arrive
        if i < len(pdu_ids):
            await s.sender.send_pdu(pdu_ids[i], [REMOTE])
        await s.sender.send_edu(REMOTE, "m.direct_to_device", {"n": i})
    await s.sender.start()
    await until(lambda: len(s.remote.calls) == 3, "three transactions")
    await idle(s.store)
    await settle()
    assert len(s.remote.calls) == 3
    assert [len(c[3]["pdus"]) for c in s.remote.calls] == [50, 50, 20]
    assert [len(c[3]["edus"]) for c in s.remote.calls] == [100, 100, 50]
    assert sum((s.remote.pdu_ids(i) for i in range(3)), []) == pdu_ids
    ns = [e["content"]["n"] for i in range(3) for e in s.remote.edus(i)]
    assert ns == list(range(250))
    assert all(e["edu_type"] == "m.direct_to_device" for i in range(3) for e in s.remote.edus(i))
    for _, destination, _, body in s.remote.calls:
        assert destination == REMOTE
        assert body["origin"] == HS and isinstance(body["origin_server_ts"], int)
    assert len({c[2] for c in s.remote.calls}) == 3  # distinct transaction ids
    assert await s.store.get_last_sent_stream(REMOTE) == s.store.stream_ids.current()


@pytest_twisted.ensureDeferred
async def test_our_own_server_never_gets_a_transaction(db: Database, senders: Any) -> None:
    s = await make(db, senders)
    await s.sender.send_pdu("$a", [HS, "r1.example", "r2.example", HS])
    await s.sender.send_edus([HS, "r1.example"], "m.presence", {"push": []}, key="@u:hs.example")
    await s.sender.send_edu(HS, "m.typing", {"typing": True})
    assert await s.store.destinations_with_pending() == ["r1.example", "r2.example"]
    await s.sender.start()
    await until(lambda: len(s.remote.calls) == 2, "two transactions")
    await idle(s.store, "r1.example")
    await idle(s.store, "r2.example")
    await s.sender.wake(HS)
    await settle()
    assert sorted(c[1] for c in s.remote.calls) == ["r1.example", "r2.example"]
    r1 = next(c[3] for c in s.remote.calls if c[1] == "r1.example")
    assert [p["event_id"] for p in r1["pdus"]] == ["$a"]
    assert [e["edu_type"] for e in r1["edus"]] == ["m.presence"]
    assert await s.store.count_pending(HS) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_keyed_edus_coalesce_to_the_latest(db: Database, senders: Any) -> None:
    s = await make(db, senders)
    for typing in (True, False, True):
        await s.sender.send_edu(REMOTE, "m.typing", {"room_id": "!r", "user_id": "@a",
                                                     "typing": typing}, key="!r @a")
    await s.sender.send_edu(REMOTE, "m.typing", {"room_id": "!r", "user_id": "@b",
                                                 "typing": True}, key="!r @b")
    await s.sender.send_edu(REMOTE, "m.typing", {"room_id": "!r", "user_id": "@a",
                                                 "typing": False}, key="!r @a")
    # Without a key nothing coalesces; the same key under another type is another EDU.
    await s.sender.send_edu(REMOTE, "m.direct_to_device", {"message_id": "1"})
    await s.sender.send_edu(REMOTE, "m.direct_to_device", {"message_id": "2"})
    await s.sender.send_edu(REMOTE, "m.receipt", {"!r": {}}, key="!r @a")
    await s.sender.start()
    await until(lambda: len(s.remote.calls) == 1, "a transaction")
    await idle(s.store)
    assert s.remote.edus(0) == [
        {"edu_type": "m.typing", "content": {"room_id": "!r", "user_id": "@b", "typing": True}},
        {"edu_type": "m.typing", "content": {"room_id": "!r", "user_id": "@a", "typing": False}},
        {"edu_type": "m.direct_to_device", "content": {"message_id": "1"}},
        {"edu_type": "m.direct_to_device", "content": {"message_id": "2"}},
        {"edu_type": "m.receipt", "content": {"!r": {}}},
    ]


@pytest_twisted.ensureDeferred
async def test_an_edu_in_flight_is_not_replaced_by_a_newer_one(db: Database, senders: Any) -> None:
    s = await make(db, senders, start=True)
    hold: defer.Deferred[dict[str, Any]] = defer.Deferred()
    s.remote.script = [hold]
    await s.sender.send_edu(REMOTE, "m.presence", {"v": 1}, key="@a")
    await until(lambda: len(s.remote.calls) == 1, "first transaction")
    await s.sender.send_edu(REMOTE, "m.presence", {"v": 2}, key="@a")
    await s.sender.send_edu(REMOTE, "m.presence", {"v": 3}, key="@a")
    await settle()
    assert len(s.remote.calls) == 1  # one transaction in flight per destination
    hold.callback({"pdus": {}})
    await until(lambda: len(s.remote.calls) == 2, "second transaction")
    await idle(s.store)
    assert [e["content"] for e in s.remote.edus(0)] == [{"v": 1}]
    assert [e["content"] for e in s.remote.edus(1)] == [{"v": 3}]


@pytest_twisted.ensureDeferred
async def test_one_transaction_in_flight_then_the_rest_in_one(db: Database, senders: Any) -> None:
    s = await make(db, senders, start=True)
    hold: defer.Deferred[dict[str, Any]] = defer.Deferred()
    s.remote.script = [hold]
    await s.sender.send_pdu("$a", [REMOTE])
    await until(lambda: len(s.remote.calls) == 1, "first transaction")
    for e in ("$b", "$c", "$d"):
        await s.sender.send_pdu(e, [REMOTE])
    await settle()
    assert len(s.remote.calls) == 1
    hold.callback({"pdus": {"$a": {}}})
    await until(lambda: len(s.remote.calls) == 2, "second transaction")
    await idle(s.store)
    await settle()
    assert len(s.remote.calls) == 2
    assert s.remote.pdu_ids(0) == ["$a"] and s.remote.pdu_ids(1) == ["$b", "$c", "$d"]


class GatedStore(FederationQueueStore):
    """Holds each answer of claim_transaction until the test opens the gate."""

    gate: defer.Deferred[None] | None = None
    claims = 0

    async def claim_transaction(self, *args: Any) -> Any:
        result = await super().claim_transaction(*args)
        self.claims += 1
        if self.gate is not None:
            await self.gate
        return result


@pytest_twisted.ensureDeferred
async def test_an_item_queued_while_the_queue_looks_empty_is_sent(db: Database,
                                                                  senders: Any) -> None:
    s = await make(db, senders)  # for its remote and events only
    store = GatedStore(db)
    sender = FederationSender(store, s.clock, s.remote.send, HS, CONFIG, s.events.get_pdu_json)
    senders.append(sender)
    await sender.start()
    store.gate = defer.Deferred()
    await sender.wake(REMOTE)
    await until(lambda: store.claims == 1, "a claim that found nothing")
    await sender.send_pdu("$a", [REMOTE])  # commits while that answer is on its way back
    gate, store.gate = store.gate, None
    gate.callback(None)
    await until(lambda: len(s.remote.calls) == 1, "the PDU")
    await idle(store)
    assert s.remote.pdu_ids(0) == ["$a"]


@pytest_twisted.ensureDeferred
async def test_backoff_grows_to_its_cap_and_success_resets_it(db: Database, senders: Any) -> None:
    s = await make(db, senders, start=True)
    t0 = s.clock.time_msec()
    s.remote.script = [HttpError(502), ConnectionError("refused"), HttpError(500),
                       HttpError(429), TimeoutError("slow")]
    await s.sender.send_pdu("$a", [REMOTE])
    await until(lambda: len(s.remote.calls) == 1, "first attempt")
    await until(lambda: s.sender.is_backing_off(REMOTE), "backoff")
    # Not a moment before the interval is over; new items wait too.
    await advance_to_timer(s.clock, 999)
    await s.sender.send_pdu("$b", [REMOTE])
    await settle()
    assert len(s.remote.calls) == 1
    s.clock.advance(0.001)
    await until(lambda: len(s.remote.calls) == 2, "second attempt")
    for n, wait_ms in ((3, 2000), (4, 4000), (5, 5000), (6, 5000)):
        await advance_to_timer(s.clock, wait_ms - 1)
        await settle()
        assert len(s.remote.calls) == n - 1, f"attempt {n} came early"
        s.clock.advance(0.001)
        await until(lambda: len(s.remote.calls) >= n, f"attempt {n}")
    await idle(s.store)
    await until(lambda: len(s.remote.calls) == 7, "the waiting PDU")
    assert [c[0] - t0 for c in s.remote.calls] == [0, 1000, 3000, 7000, 12000, 17000, 17000]
    # Every attempt resends the same transaction; what arrived meanwhile waits for the next.
    assert len({c[2] for c in s.remote.calls[:6]}) == 1
    assert len({repr(c[3]) for c in s.remote.calls[:6]}) == 1
    assert s.remote.pdu_ids(5) == ["$a"] and s.remote.pdu_ids(6) == ["$b"]
    assert not s.sender.is_backing_off(REMOTE)
    assert await s.store.get_retry_timings(REMOTE) is None
    # After a success the next failure starts again from the minimum interval.
    s.remote.script = [HttpError(503)]
    await s.sender.send_pdu("$c", [REMOTE])
    await until(lambda: len(s.remote.calls) == 8, "failing attempt")
    await until(lambda: s.sender.is_backing_off(REMOTE), "backoff")
    timings = await s.store.get_retry_timings(REMOTE)
    assert timings is not None and timings.retry_interval_ms == 1000
    await advance_to_timer(s.clock, 1000)
    await until(lambda: len(s.remote.calls) == 9, "retry")
    await idle(s.store)
    assert s.remote.pdu_ids(8) == ["$c"]


@pytest_twisted.ensureDeferred
async def test_record_failure_from_concurrent_requests_grows_once(db: Database,
                                                                  senders: Any) -> None:
    s = await make(db, senders, start=True)
    await s.sender.record_failure("other.example")
    await s.sender.record_failure("other.example")  # same window: another request failing
    timings = await s.store.get_retry_timings("other.example")
    assert timings is not None and timings.retry_interval_ms == 1000
    assert s.sender.is_backing_off("other.example")
    s.clock.advance(1.0)
    assert not s.sender.is_backing_off("other.example")
    await s.sender.record_failure("other.example")
    timings = await s.store.get_retry_timings("other.example")
    assert timings is not None and timings.retry_interval_ms == 2000
    assert timings.failure_ts == s.clock.time_msec() - 1000
    await s.sender.record_success("other.example")
    assert not s.sender.is_backing_off("other.example")
    assert await s.store.get_retry_timings("other.example") is None


@pytest_twisted.ensureDeferred
async def test_a_refused_transaction_is_dropped_and_the_queue_goes_on(db: Database,
                                                                      senders: Any) -> None:
    s = await make(db, senders)
    for i in range(60):
        await s.sender.send_pdu(f"$e{i:02d}", [REMOTE])
    s.remote.script = [HttpError(400)]
    await s.sender.start()
    await until(lambda: len(s.remote.calls) == 2, "two transactions")
    await idle(s.store)
    await settle()
    assert len(s.remote.calls) == 2
    assert s.remote.pdu_ids(0) == [f"$e{i:02d}" for i in range(50)]
    assert s.remote.pdu_ids(1) == [f"$e{i:02d}" for i in range(50, 60)]
    assert s.remote.calls[0][2] != s.remote.calls[1][2]
    assert not s.sender.is_backing_off(REMOTE)
    assert await s.store.get_retry_timings(REMOTE) is None


@pytest_twisted.ensureDeferred
async def test_per_pdu_errors_are_logged_not_retried(db: Database, senders: Any,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="federation.sender")
    s = await make(db, senders, start=True)
    s.remote.script = [{"pdus": {"$a": {"error": "You are not allowed"}, "$b": {}}}]
    await s.sender.send_pdu("$a", [REMOTE])
    await until(lambda: len(s.remote.calls) == 1, "a transaction")
    await idle(s.store)
    await settle()
    assert len(s.remote.calls) == 1
    assert "You are not allowed" in caplog.text
    assert not s.sender.is_backing_off(REMOTE)


@pytest_twisted.ensureDeferred
async def test_pdus_that_are_gone_are_skipped(db: Database, senders: Any) -> None:
    s = await make(db, senders)
    s.events.gone = {"$gone1", "$gone2"}
    await s.sender.send_pdu("$gone1", [REMOTE])
    await s.sender.send_pdu("$ok", [REMOTE])
    await s.sender.send_pdu("$gone2", ["only-gone.example"])
    await s.sender.start()
    await until(lambda: len(s.remote.calls) == 1, "a transaction")
    await idle(s.store)
    await idle(s.store, "only-gone.example")
    await settle()
    assert len(s.remote.calls) == 1 and s.remote.pdu_ids(0) == ["$ok"]


@pytest_twisted.ensureDeferred
async def test_restart_resends_what_was_unsent_and_nothing_else(db: Database,
                                                                senders: Any) -> None:
    first = await make(db, senders, start=True)
    await first.sender.send_pdu("$a", [REMOTE])
    await first.sender.send_edu(REMOTE, "m.direct_to_device", {"message_id": "1"})
    await until(lambda: len(first.remote.calls) >= 1, "first transaction")
    await idle(first.store)
    sent_before = len(first.remote.calls)
    first.remote.script = [defer.Deferred()]  # the next transaction never gets an answer
    await first.sender.send_pdu("$b", [REMOTE])
    await until(lambda: len(first.remote.calls) == sent_before + 1, "transaction in flight")
    await first.sender.send_pdu("$c", [REMOTE])
    await first.sender.send_edu(REMOTE, "m.typing", {"typing": True}, key="!r @a")
    await first.sender.stop()
    in_flight = first.remote.calls[-1]

    # A new process: new store and sender on the same database, clock not moved.
    second = await make(db, senders, clock=first.clock)
    await second.sender.start()
    await until(lambda: len(second.remote.calls) == 2, "two transactions")
    await idle(second.store)
    await settle()
    assert len(second.remote.calls) == 2
    # The cut-short transaction again, with the same id and body, so the receiver can
    # deduplicate it; then the rest in a transaction with a never-used id.
    assert second.remote.calls[0][2:] == in_flight[2:]
    assert second.remote.pdu_ids(0) == ["$b"]
    assert second.remote.pdu_ids(1) == ["$c"]
    assert [e["edu_type"] for e in second.remote.edus(1)] == ["m.typing"]
    earlier_ids = {c[2] for c in first.remote.calls}
    assert second.remote.calls[1][2] not in earlier_ids
    sent = [p for c in first.remote.calls[:sent_before] for p in c[3]["pdus"]]
    assert [p["event_id"] for p in sent] == ["$a"]


@pytest_twisted.ensureDeferred
async def test_backoff_survives_a_restart_and_wake_retries_now(db: Database,
                                                               senders: Any) -> None:
    first = await make(db, senders, start=True)
    first.remote.script = [HttpError(500)]
    await first.sender.send_pdu("$a", [REMOTE])
    await until(lambda: first.sender.is_backing_off(REMOTE), "backoff")
    await first.sender.stop()

    second = await make(db, senders, clock=first.clock)
    await second.sender.start()
    assert second.sender.is_backing_off(REMOTE)
    await settle()
    assert second.remote.calls == []  # still backing off after the restart
    # The destination contacted us: it is up, so try at once.
    await second.sender.wake(REMOTE)
    await until(lambda: len(second.remote.calls) == 1, "a transaction after wake")
    await idle(second.store)
    assert not second.sender.is_backing_off(REMOTE)
    assert second.remote.calls[0][2] == first.remote.calls[0][2]
    assert await second.store.get_retry_timings(REMOTE) is None


@pytest_twisted.ensureDeferred
async def test_stop_cancels_timers_and_sends_nothing_more(db: Database, senders: Any) -> None:
    s = await make(db, senders, start=True)
    s.remote.script = [HttpError(502)]
    await s.sender.send_pdu("$a", [REMOTE])
    await until(lambda: bool(s.clock.reactor.getDelayedCalls()), "a retry timer")
    await s.sender.stop()
    assert not [c for c in s.clock.reactor.getDelayedCalls() if c.active()]
    await s.sender.send_pdu("$b", [REMOTE])  # queued durably, not sent while stopped
    s.clock.advance(10)
    await settle()
    assert len(s.remote.calls) == 1
    assert await s.store.count_pending(REMOTE) == (2, 0)
