"""Notifications: the events whose push rules said "notify" for a user, with their actions,
thread and read state; unread counts per room and thread are counted from here.

Read receipts mark rows read and remember how far the user has read (per room and thread), so a
notification stored after its receipt (evaluation runs off the request path) is born read.
Writes are serialised: with PostgreSQL's READ COMMITTED a concurrent insert and mark could each
miss the other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from twisted.internet import defer
from twisted.python.failure import Failure

from storage.database import Database, Transaction

UNTHREADED = ""  # the thread id of a read position set by an unthreaded receipt
_CHUNK = 200


@dataclass(frozen=True)
class Notification:
    user_id: str
    event_id: str
    room_id: str
    thread_id: str
    stream_ordering: int
    actions: list[Any]
    highlight: bool
    unread: bool
    ts: int


@dataclass(frozen=True)
class NewNotification:
    user_id: str
    actions: list[Any]
    highlight: bool


_COLS = "user_id, event_id, room_id, thread_id, stream_ordering, actions_json, highlight, unread, ts"


def _row(r: tuple) -> Notification:
    user_id, event_id, room_id, thread_id, stream, actions, highlight, unread, ts = r
    return Notification(user_id, event_id, room_id, thread_id, stream, json.loads(actions),
                        bool(highlight), bool(unread), ts)


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class NotificationStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = defer.DeferredLock()
        # Writes queue up and run together, in order, in one transaction: under a burst of
        # events that is one commit for many notifications instead of two per event, and the
        # event persistence that shares the database thread is not kept waiting.
        self._queued: list[tuple[Any, defer.Deferred]] = []

    async def _write(self, desc: str, fn: Any) -> Any:
        """Run ``fn(txn)`` in the next batch of writes; returns its result."""
        d: defer.Deferred = defer.Deferred()
        self._queued.append((fn, d))
        if len(self._queued) == 1:
            defer.ensureDeferred(self._flush())
        return await d

    async def _flush(self) -> None:
        async with self._lock:
            batch, self._queued = self._queued, []
            if not batch:
                return

            def run_all(txn: Transaction) -> list[Any]:
                return [fn(txn) for fn, _ in batch]
            try:
                results = await self.db.run("notification_writes", run_all)
            except Exception:
                failure = Failure()
                for _, d in batch:
                    d.errback(failure)
                return
            for (_, d), result in zip(batch, results):
                d.callback(result)
        if self._queued:
            defer.ensureDeferred(self._flush())

    # --- writing -------------------------------------------------------------------------------

    async def add(self, room_id: str, thread_id: str, event_id: str, stream_ordering: int, ts: int,
                  notifications: Sequence[NewNotification]) -> list[str]:
        """Store one event's notifications; returns the users for whom it is unread (those whose
        read position had not already passed it)."""
        if not notifications:
            return []
        users = [n.user_id for n in notifications]

        def fn(txn: Transaction) -> list[str]:
            read_upto: dict[str, int] = {}
            for i in range(0, len(users), _CHUNK):
                chunk = users[i:i + _CHUNK]
                for user_id, pos in txn.query(
                        "SELECT user_id, MAX(stream_ordering) FROM push_read_positions"
                        f" WHERE room_id = ? AND thread_id IN (?, ?) AND user_id IN ({','.join('?' * len(chunk))})"
                        " GROUP BY user_id", (room_id, UNTHREADED, thread_id, *chunk)):
                    read_upto[user_id] = pos
            unread = [n.user_id for n in notifications if read_upto.get(n.user_id, -1) < stream_ordering]
            unread_set = set(unread)
            txn.executemany(
                f"INSERT INTO push_notifications ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (user_id, event_id) DO NOTHING",
                [(n.user_id, event_id, room_id, thread_id, stream_ordering, _dump(n.actions),
                  n.highlight, n.user_id in unread_set, ts) for n in notifications])
            return unread

        return await self._write("add_notifications", fn)

    async def mark_read(self, user_id: str, room_id: str, thread_id: str, stream_ordering: int) -> int:
        """The user has read up to ``stream_ordering`` in a thread of the room (``UNTHREADED``:
        in all of it). Returns how many notifications that made read."""

        def fn(txn: Transaction) -> int:
            txn.execute(
                "INSERT INTO push_read_positions (user_id, room_id, thread_id, stream_ordering)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (user_id, room_id, thread_id) DO UPDATE"
                " SET stream_ordering = excluded.stream_ordering"
                " WHERE push_read_positions.stream_ordering < excluded.stream_ordering",
                (user_id, room_id, thread_id, stream_ordering))
            sql = ("UPDATE push_notifications SET unread = FALSE WHERE user_id = ? AND unread = TRUE"
                   " AND room_id = ? AND stream_ordering <= ?")
            args: list[Any] = [user_id, room_id, stream_ordering]
            if thread_id != UNTHREADED:
                sql += " AND thread_id = ?"
                args.append(thread_id)
            txn.execute(sql, args)
            return txn.rowcount

        return await self._write("mark_notifications_read", fn)

    async def delete_read_before(self, ts: int) -> int:
        """Forget notifications already read and older than ``ts`` (ms)."""
        async with self._lock:
            return await self.db.execute(
                "DELETE FROM push_notifications WHERE unread = FALSE AND ts < ?", (ts,))

    # --- reading -------------------------------------------------------------------------------

    async def unread_counts(self, user_id: str, room_ids: Iterable[str]
                            ) -> dict[tuple[str, str], tuple[int, int]]:
        """(room, thread) -> (notification count, highlight count) of unread notifications;
        only pairs with any."""
        ids = sorted(set(room_ids))

        def fn(txn: Transaction) -> dict[tuple[str, str], tuple[int, int]]:
            out: dict[tuple[str, str], tuple[int, int]] = {}
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i:i + _CHUNK]
                for room_id, thread_id, n, h in txn.query(
                        "SELECT room_id, thread_id, COUNT(*), SUM(CASE WHEN highlight THEN 1 ELSE 0 END)"
                        " FROM push_notifications WHERE user_id = ? AND unread = TRUE"
                        f" AND room_id IN ({','.join('?' * len(chunk))}) GROUP BY room_id, thread_id",
                        (user_id, *chunk)):
                    out[(room_id, thread_id)] = (int(n), int(h or 0))
            return out
        if not ids:
            return {}
        return await self.db.run("unread_notification_counts", fn)

    async def unread_total(self, user_id: str) -> int:
        rows = await self.db.query("SELECT COUNT(*) FROM push_notifications WHERE user_id = ?"
                                   " AND unread = TRUE", (user_id,))
        return int(rows[0][0])

    async def list(self, user_id: str, before: int | None, limit: int,
                   only_highlight: bool = False) -> list[Notification]:
        """The user's notifications, newest first, with a stream ordering below ``before``."""
        sql = f"SELECT {_COLS} FROM push_notifications WHERE user_id = ?"
        args: list[Any] = [user_id]
        if before is not None:
            sql += " AND stream_ordering < ?"
            args.append(before)
        if only_highlight:
            sql += " AND highlight = TRUE"
        sql += " ORDER BY stream_ordering DESC LIMIT ?"
        args.append(limit)
        return [_row(r) for r in await self.db.query(sql, args)]

    async def unread_after(self, user_id: str, after: int, limit: int) -> list[Notification]:
        """The user's unread notifications with a stream ordering above ``after``, oldest first
        (what a pusher still has to send)."""
        rows = await self.db.query(
            f"SELECT {_COLS} FROM push_notifications WHERE user_id = ? AND unread = TRUE"
            " AND stream_ordering > ? ORDER BY stream_ordering LIMIT ?", (user_id, after, limit))
        return [_row(r) for r in rows]
