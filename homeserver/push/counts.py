"""Unread notification counts per room and thread, for /sync, and their clearing by receipts.

Spec: Client-Server API "Receiving notifications" (counts in /sync, updated with the event that
changes them), "Marking notifications as read" (m.read and m.read.private both clear; the one
further ahead wins) and "Threaded read receipts" (an unthreaded receipt clears every thread up
to its event, a threaded one only its thread, ``main`` being the main timeline).
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Iterable

from storage.batching import TurnBatch
from storage.events import EventRow
from storage.notifications import UNTHREADED, NotificationStore

logger = logging.getLogger(__name__)

MAIN_THREAD = "main"
READ_RECEIPTS = ("m.read", "m.read.private")

Counts = dict[str, int]


def _counts(n: int = 0, h: int = 0) -> Counts:
    return {"notification_count": n, "highlight_count": h}


class NotificationCounts:
    def __init__(self, store: NotificationStore,
                 wait_pending: Callable[[list[str]], Awaitable[None]] | None = None,
                 call_later: Callable[..., Any] | None = None) -> None:
        self.store = store
        self._wait_pending = wait_pending
        # With call_later, the count reads of one reactor turn share one transaction: when a
        # message wakes the /sync of every member, they all ask at once.
        self._reads: TurnBatch[tuple[str, tuple[str, ...]], dict] | None = \
            TurnBatch(call_later, self._read_many) if call_later is not None else None
        # Called with a user whose unread notifications a receipt just cleared (pushers send
        # the new badge count).
        self.listeners: list[Callable[[str], Any]] = []

    async def _unread(self, user_id: str, room_ids: list[str]
                      ) -> dict[tuple[str, str], tuple[int, int]]:
        if self._reads is None or not room_ids:
            return await self.store.unread_counts(user_id, room_ids)
        cached = self.store.cached_counts([(user_id, r) for r in room_ids])
        if cached is not None:  # memory has them: no waiting for the others of this turn
            return {(r, t): c for (_, r), threads in cached.items() for t, c in threads.items()}
        return await self._reads.get((user_id, tuple(room_ids)), {})

    async def _read_many(self, keys: list[tuple[str, tuple[str, ...]]]
                         ) -> dict[tuple[str, tuple[str, ...]], dict]:
        results = await self.store.unread_counts_many([(u, list(rooms)) for u, rooms in keys])
        return dict(zip(keys, results))

    async def warm(self, user_id: str, room_ids: list[str]) -> None:
        """Have the user's counts in these rooms in memory (read with this turn's others when
        some are missing)."""
        if room_ids and self.store.cached_counts([(user_id, r) for r in room_ids]) is None:
            await self._unread(user_id, room_ids)

    async def _settled(self, room_ids: list[str]) -> None:
        """Wait for the evaluations in flight in these rooms."""
        if self._wait_pending is not None and room_ids:
            await self._wait_pending(room_ids)

    async def room_counts(self, user_id: str, room_ids: Iterable[str], *,
                          threaded: bool = False) -> dict[str, Counts]:
        """room id -> {"notification_count", "highlight_count"} for every room asked about (zeros
        included): /sync's ``unread_notifications``. By default the whole room; with
        ``threaded`` (the filter's ``unread_thread_notifications``) the main timeline only,
        the threads being in ``thread_counts``."""
        ids = list(room_ids)
        await self._settled(ids)
        out = {r: _counts() for r in ids}
        for (room_id, thread_id), (n, h) in (await self._unread(user_id, ids)).items():
            if threaded and thread_id != MAIN_THREAD:
                continue
            c = out[room_id]
            c["notification_count"] += n
            c["highlight_count"] += h
        return out

    async def thread_counts(self, user_id: str, room_ids: Iterable[str]
                            ) -> dict[str, dict[str, Counts]]:
        """room id -> thread root id -> counts, for threads with unread notifications only:
        /sync's ``unread_thread_notifications`` (rooms without any are left out)."""
        ids = list(room_ids)
        await self._settled(ids)
        out: dict[str, dict[str, Counts]] = {}
        for (room_id, thread_id), (n, h) in (await self._unread(user_id, ids)).items():
            if thread_id != MAIN_THREAD:
                out.setdefault(room_id, {})[thread_id] = _counts(n, h)
        return out

    async def on_receipt(self, user_id: str, room_id: str, receipt_type: str,
                         thread_id: str | None, row: EventRow) -> None:
        """ReceiptService listener: a read receipt moved to ``row``."""
        if receipt_type not in READ_RECEIPTS:
            return
        cleared = await self.store.mark_read(user_id, room_id, thread_id or UNTHREADED,
                                             row.stream_ordering)
        if cleared:
            for listener in self.listeners:
                try:
                    listener(user_id)
                except Exception:
                    logger.exception("count listener failed")
