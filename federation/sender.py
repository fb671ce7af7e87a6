"""Outgoing federation transactions: one durable queue per destination server, drained one
transaction at a time with exponential backoff (spec: server-server API, "Transactions").

Items are written to the outbox (storage/federation_queue.py) before anything is sent, and are
deleted only once the destination has answered the transaction that carried them, so nothing
is lost across a restart. A transaction that fails is retried with the same id and body, as the
spec asks ("must wait and retry for a 200 OK response before sending a transaction with a
different txnId"); the receiver deduplicates by id. Memory holds at most one transaction per
destination being sent, plus the retry state of the destinations that are failing.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Iterable, Mapping

from twisted.internet import defer

from homeserver.clock import Clock
from homeserver.config import FederationConfig
from storage.federation_queue import FederationQueueStore, OutgoingTransaction, RetryTimings

logger = logging.getLogger(__name__)

MAX_PDUS_PER_TXN = 50   # spec: a transaction carries at most 50 PDUs
MAX_EDUS_PER_TXN = 100  # ... and at most 100 EDUs

SendTransaction = Callable[[str, str, dict[str, Any]], Awaitable[Mapping[str, Any]]]
GetPduJson = Callable[[list[str]], Awaitable[Mapping[str, Mapping[str, Any]]]]


def is_rejection(error: BaseException) -> bool:
    """A 4xx other than 429: the destination is up but refuses this transaction for good."""
    status = getattr(error, "status", None)
    try:
        code = int(status) if status is not None else None
    except (TypeError, ValueError):
        return False
    return code is not None and 400 <= code < 500 and code != 429


class FederationSender:
    """Queues PDUs and EDUs per destination and sends them as /send transactions."""

    def __init__(self, store: FederationQueueStore, clock: Clock,
                 send_transaction: SendTransaction, server_name: str, config: FederationConfig,
                 get_pdu_json: GetPduJson) -> None:
        self._store = store
        self._clock = clock
        self._send_transaction = send_transaction
        self._server_name = server_name
        self._config = config
        self._get_pdu_json = get_pdu_json
        # Only failing destinations are held here; absent means healthy.
        self._retry: dict[str, RetryTimings] = {}
        self._running: dict[str, defer.Deferred[None]] = {}
        self._rekick: set[str] = set()  # woken while its loop was already running
        self._timers: dict[str, Any] = {}
        self._started = False
        self._stopping = False

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the retry state and resume every destination with something waiting."""
        await self._store.load()
        for timings in await self._store.get_backing_off():
            self._retry[timings.destination] = timings
        self._started = True
        self._stopping = False
        for destination in await self._store.destinations_with_pending():
            self._kick(destination)

    async def stop(self) -> None:
        """Stop sending. A transaction cut short stays in the outbox and is resent with the same
        id after the next start."""
        self._stopping = True
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
        running = list(self._running.values())
        for d in running:
            d.cancel()
        if running:
            await defer.DeferredList(running, consumeErrors=True)
        self._running.clear()
        self._rekick.clear()
        self._started = False

    # --- enqueueing ----------------------------------------------------------------------------

    async def send_pdu(self, event_id: str, destinations: Iterable[str]) -> None:
        """Queue a PDU (already persisted in ``events``) for each remote destination."""
        dests = self._remote(destinations)
        if not dests:
            return
        await self._store.add_pdu(event_id, dests)
        for d in dests:
            self._kick(d)

    def queue_pdu_txn(self, txn: Any, event_id: str, destinations: Iterable[str]) -> None:
        """Queue a PDU in the transaction that persists the event; sending starts once it has
        committed."""
        dests = self._remote(destinations)
        if not dests:
            return
        self._store.add_pdu_txn(txn, event_id, dests)

        def kick() -> None:
            for d in dests:
                self._kick(d)
        txn.call_after_commit(kick)

    async def send_edu(self, destination: str, edu_type: str, content: Mapping[str, Any],
                       key: str | None = None) -> None:
        """Queue an EDU for one destination; with ``key``, it replaces a waiting EDU of the same
        type and key (typing, receipts, presence, device list updates: only the latest counts)."""
        await self.send_edus([destination], edu_type, content, key)

    async def send_edus(self, destinations: Iterable[str], edu_type: str,
                        content: Mapping[str, Any], key: str | None = None) -> None:
        """``send_edu`` for many destinations in one database transaction."""
        dests = self._remote(destinations)
        if not dests:
            return
        await self._store.add_edu(dests, edu_type, content, key)
        for d in dests:
            self._kick(d)

    def _remote(self, destinations: Iterable[str]) -> list[str]:
        return sorted({d for d in destinations if d and d != self._server_name})

    # --- retry state, shared with the other outgoing requests ----------------------------------

    def is_backing_off(self, destination: str) -> bool:
        """Whether ``destination`` failed recently enough that it should not be contacted yet."""
        timings = self._retry.get(destination)
        return timings is not None and self._clock.time_msec() < _retry_at(timings)

    async def record_success(self, destination: str) -> None:
        """The destination answered: clear its backoff."""
        if self._retry.pop(destination, None) is not None:
            await self._store.clear_retry_timings(destination)

    async def record_failure(self, destination: str) -> None:
        """The destination could not be reached (or answered 5xx/429): back off exponentially.

        A failure while already backing off (a concurrent request) does not grow the interval.
        """
        now = self._clock.time_msec()
        current = self._retry.get(destination)
        if current is None:
            timings = RetryTimings(destination, now, self._config.min_retry_interval_ms, now)
        elif now < _retry_at(current):
            return
        else:
            interval = min(int(current.retry_interval_ms * self._config.retry_multiplier),
                           self._config.max_retry_interval_ms)
            interval = max(interval, self._config.min_retry_interval_ms)
            timings = RetryTimings(destination, now, interval, current.failure_ts)
        self._retry[destination] = timings
        await self._store.set_retry_timings(timings)

    async def wake(self, destination: str) -> None:
        """Retry ``destination`` now, e.g. because it just contacted us and so is up again."""
        if destination == self._server_name:
            return
        timer = self._timers.pop(destination, None)
        if timer is not None and timer.active():
            timer.cancel()
        await self.record_success(destination)
        self._kick(destination)

    # --- the per-destination loop --------------------------------------------------------------

    def _kick(self, destination: str) -> None:
        """Make sure the destination's queue is being drained (or will be, after its backoff)."""
        if not self._started or self._stopping:
            return
        if destination in self._running:
            self._rekick.add(destination)
            return
        if self.is_backing_off(destination):
            self._schedule_retry(destination)
            return
        d = defer.ensureDeferred(self._drain(destination))
        if not d.called:
            self._running[destination] = d

    def _schedule_retry(self, destination: str, delay_ms: int | None = None) -> None:
        timer = self._timers.get(destination)
        if timer is not None and timer.active():
            return
        if delay_ms is None:
            timings = self._retry.get(destination)
            delay_ms = _retry_at(timings) - self._clock.time_msec() if timings else 0
        self._timers[destination] = self._clock.call_later(max(0, delay_ms) / 1000.0,
                                                           self._on_timer, destination)

    def _on_timer(self, destination: str) -> None:
        self._timers.pop(destination, None)
        self._kick(destination)

    async def _drain(self, destination: str) -> None:
        try:
            while not self._stopping:
                self._rekick.discard(destination)
                if self.is_backing_off(destination):
                    self._schedule_retry(destination)
                    return
                txn = await self._store.claim_transaction(
                    destination, self._clock.time_msec(), MAX_PDUS_PER_TXN, MAX_EDUS_PER_TXN)
                if txn is None:
                    if destination in self._rekick:
                        continue  # something was queued while we looked
                    return
                if not await self._transmit(txn):
                    self._schedule_retry(destination)
                    return
        except defer.CancelledError:
            pass
        except Exception:
            logger.exception("federation queue for %s failed; trying again later", destination)
            if not self._stopping:
                self._schedule_retry(destination, self._config.min_retry_interval_ms)
        finally:
            self._running.pop(destination, None)

    async def _transmit(self, txn: OutgoingTransaction) -> bool:
        """Send one transaction; True when it is done with (answered or refused for good)."""
        destination = txn.destination
        pdus: list[Mapping[str, Any]] = []
        if txn.pdu_event_ids:
            found = await self._get_pdu_json(list(txn.pdu_event_ids))
            for event_id in txn.pdu_event_ids:
                pdu = found.get(event_id)
                if pdu is None:
                    logger.warning("PDU %s queued for %s is gone; not sent", event_id, destination)
                else:
                    pdus.append(pdu)
        if not pdus and not txn.edus:
            await self._store.complete_transaction(destination, txn.txn_id)
            return True
        body: dict[str, Any] = {
            "origin": self._server_name,
            "origin_server_ts": txn.origin_server_ts,
            "pdus": pdus,
            "edus": [{"edu_type": e.edu_type, "content": e.content} for e in txn.edus],
        }
        try:
            response = await self._send_transaction(destination, txn.txn_id, body)
        except defer.CancelledError:
            raise
        except Exception as e:
            if is_rejection(e):
                # The server is up and refused this transaction: retrying it cannot help.
                logger.warning("%s refused transaction %s (%s: %s); dropped %d PDUs, %d EDUs",
                               destination, txn.txn_id, getattr(e, "status", "?"), e, len(pdus),
                               len(txn.edus))
                await self._store.complete_transaction(destination, txn.txn_id)
                await self.record_success(destination)
                return True
            logger.info("transaction %s to %s failed: %s", txn.txn_id, destination, e)
            await self.record_failure(destination)
            return False
        self._log_pdu_errors(destination, txn.txn_id, response)
        await self._store.complete_transaction(destination, txn.txn_id)
        await self.record_success(destination)
        return True

    @staticmethod
    def _log_pdu_errors(destination: str, txn_id: str, response: Any) -> None:
        """Per-PDU errors in the answer are the receiver's verdict on those PDUs: logged, not
        retried."""
        results = response.get("pdus") if isinstance(response, Mapping) else None
        if not isinstance(results, Mapping):
            return
        for event_id, result in results.items():
            if isinstance(result, Mapping) and result.get("error"):
                logger.info("%s rejected PDU %s in transaction %s: %s", destination, event_id,
                            txn_id, result.get("error"))


def _retry_at(timings: RetryTimings) -> int:
    return timings.retry_last_ts + timings.retry_interval_ms
