"""Notifications: the events whose push rules said "notify" for a user, with their actions,
thread and read state; unread counts per room and thread are counted from here.

Read receipts mark rows read and remember how far the user has read (per room and thread), so a
notification stored after its receipt (evaluation runs off the request path) is born read.
Writes are serialised: with PostgreSQL's READ COMMITTED a concurrent insert and mark could each
miss the other.

Rows are keyed by (user, stream ordering); unread ones are also in a partial index, which the
queries reach by saying ``unread`` exactly as the index does (SQLite matches the term).

Invariant: a row is read exactly when a read position of its user covers it (the room's
unthreaded position, or its thread's, at or after its event). ``write_batch`` relies on it to
store a whole batch of evaluated events in a few statements: one multi-row insert for all
their notifications (born read where the positions, the batch's own included, say so) and one
UPDATE per room for older rows the batch's read marks pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Collection, Iterable, Iterator, Sequence

from twisted.internet import defer
from twisted.python.failure import Failure

from storage.database import Database, Transaction

UNTHREADED = ""  # the thread id of a read position set by an unthreaded receipt
_CHUNK = 200
# Multi-row statements are padded to a few fixed sizes, so the prepared (SQLite) and converted
# (PostgreSQL) statement caches hold a handful of texts, not one per batch size.
_SIZES = (512, 256, 128, 64, 32, 16, 8, 4, 2, 1)
_POSITION_ID = 1


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


@dataclass(frozen=True)
class EventNotifications:
    """One event's notifications: the users notified, grouped by the actions of the rule that
    matched for them (users sharing a rule share its actions)."""
    room_id: str
    thread_id: str
    event_id: str
    stream_ordering: int
    ts: int
    groups: Sequence[tuple[Collection[str], Sequence[Any], bool]]  # (users, actions, highlight)


@dataclass(frozen=True)
class ReadMark:
    """The user has read up to ``stream_ordering`` in a thread of the room (``UNTHREADED``: in
    all of it)."""
    user_id: str
    room_id: str
    thread_id: str
    stream_ordering: int


_COLS = "user_id, event_id, room_id, thread_id, stream_ordering, actions_json, highlight, unread, ts"


def _padded(items: Sequence[Any]) -> Iterator[list[Any]]:
    """``items`` in chunks of at most ``_SIZES[0]``, each padded by repeating its last item up to
    one of ``_SIZES`` (for IN lists and DISTINCT or DO NOTHING inserts, where a repeat changes
    nothing)."""
    for i in range(0, len(items), _SIZES[0]):
        chunk = list(items[i:i + _SIZES[0]])
        size = min(s for s in _SIZES if s >= len(chunk))
        yield chunk + [chunk[-1]] * (size - len(chunk))


def _split(items: Sequence[Any]) -> Iterator[list[Any]]:
    """``items`` in chunks of the sizes in ``_SIZES``, largest first, with only the last few
    (fewer than 8) padded like ``_padded``: big inserts waste no work on repeats."""
    i, n = 0, len(items)
    for size in _SIZES:
        if size < 8:
            break
        while n - i >= size:
            yield list(items[i:i + size])
            i += size
    if i < n:
        yield from _padded(items[i:])


def _marks(n: int, width: int) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return ", ".join([row] * n)


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
        users = sorted({n.user_id for n in notifications})
        add = EventNotifications(room_id, thread_id, event_id, stream_ordering, ts,
                                 [([n.user_id], n.actions, n.highlight) for n in notifications])

        def fn(txn: Transaction) -> list[str]:
            self._write_batch_txn(txn, [add], [], None)
            return sorted({r[0] for chunk in _padded(users) for r in txn.query(
                "SELECT user_id FROM push_notifications WHERE stream_ordering = ?"
                f" AND user_id IN ({','.join('?' * len(chunk))}) AND unread",
                (stream_ordering, *chunk))})
        return await self._write("add_notifications", fn)

    async def write_batch(self, adds: Sequence[EventNotifications], marks: Sequence[ReadMark],
                          position: int | None = None) -> list[str]:
        """Store the notifications and read marks of a batch of evaluated events in one
        transaction, and (with ``position``) record that evaluation got that far in the events
        stream. Returns the users notified (whose unread notifications may have changed).
        Storing an event's notifications again changes nothing."""
        if not adds and not marks and position is None:
            return []

        def fn(txn: Transaction) -> list[str]:
            return self._write_batch_txn(txn, adds, marks, position)
        return await self._write("write_notification_batch", fn)

    def _write_batch_txn(self, txn: Transaction, adds: Sequence[EventNotifications],
                         marks: Sequence[ReadMark], position: int | None) -> list[str]:
        # Few statements and no rows read back: under load the reactor thread holds the GIL,
        # and each call into the database lets go of it and waits to get it back.
        moved: dict[tuple[str, str, str], int] = {}
        for m in marks:
            key = (m.user_id, m.room_id, m.thread_id)
            if moved.get(key, -1) < m.stream_ordering:
                moved[key] = m.stream_ordering
        if moved:
            # The batch's read marks first, so its new rows are born read where they say so.
            for chunk in _padded([(*key, pos) for key, pos in moved.items()]):
                txn.execute(
                    "INSERT INTO push_read_positions (user_id, room_id, thread_id, stream_ordering)"
                    f" SELECT DISTINCT column1, column2, column3, column4 FROM (VALUES"
                    f" {_marks(len(chunk), 4)}) AS v WHERE TRUE"
                    " ON CONFLICT (user_id, room_id, thread_id) DO UPDATE"
                    " SET stream_ordering = excluded.stream_ordering"
                    " WHERE push_read_positions.stream_ordering < excluded.stream_ordering",
                    [v for r in chunk for v in r])

        notified: set[str] = set()
        rows: list[tuple[Any, ...]] = []
        for a in adds:
            for users, actions, highlight in a.groups:
                actions_json = _dump(list(actions))
                notified.update(users)
                rows.extend((u, a.stream_ordering, a.event_id, a.room_id, a.thread_id, actions_json,
                             highlight, a.ts) for u in users)
        # A repeated row (padding) is skipped like a notification stored before.
        for chunk in _split(rows):
            txn.execute(
                "INSERT INTO push_notifications (user_id, stream_ordering, event_id, room_id,"
                " thread_id, actions_json, highlight, unread, ts)"
                " SELECT column1, column2, column3, column4, column5, column6, column7,"
                " NOT EXISTS (SELECT 1 FROM push_read_positions p WHERE p.user_id = v.column1"
                " AND p.room_id = v.column4 AND p.thread_id IN (?, v.column5)"
                " AND p.stream_ordering >= v.column2), column8"
                f" FROM (VALUES {_marks(len(chunk), 8)}) AS v WHERE TRUE"
                " ON CONFLICT (user_id, stream_ordering) DO NOTHING",
                [UNTHREADED, *(v for r in chunk for v in r)])

        if moved:
            # Rows stored before this batch that its marks pass.
            by_room: dict[str, tuple[set[str], int]] = {}
            for (user_id, room_id, _), pos in moved.items():
                users, upto = by_room.get(room_id, (set(), -1))
                users.add(user_id)
                by_room[room_id] = (users, max(upto, pos))
            for room_id, (users, upto) in by_room.items():
                for chunk in _padded(sorted(users)):
                    txn.execute(
                        "UPDATE push_notifications SET unread = FALSE WHERE room_id = ?"
                        f" AND user_id IN ({','.join('?' * len(chunk))}) AND unread"
                        " AND stream_ordering <= ? AND EXISTS (SELECT 1 FROM push_read_positions p"
                        " WHERE p.user_id = push_notifications.user_id"
                        " AND p.room_id = push_notifications.room_id"
                        " AND p.thread_id IN (?, push_notifications.thread_id)"
                        " AND p.stream_ordering >= push_notifications.stream_ordering)",
                        (room_id, *chunk, upto, UNTHREADED))
        if position is not None:
            txn.execute("UPDATE push_evaluation_position SET stream_ordering = ?"
                        " WHERE id = ? AND stream_ordering < ?", (position, _POSITION_ID, position))
        return sorted(notified)

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
            sql = ("UPDATE push_notifications SET unread = FALSE WHERE user_id = ? AND unread"
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
                "DELETE FROM push_notifications WHERE NOT unread AND ts < ?", (ts,))

    # --- evaluation position -------------------------------------------------------------------

    async def evaluated_position(self) -> int | None:
        """How far push evaluation has got in the events stream (None: never recorded)."""
        rows = await self.db.query("SELECT stream_ordering FROM push_evaluation_position"
                                   " WHERE id = ?", (_POSITION_ID,))
        return int(rows[0][0]) if rows else None

    async def set_evaluated_position(self, position: int | None) -> None:
        """Record the position (None: forget it, so the next start begins where it stands)."""

        def fn(txn: Transaction) -> None:
            if position is None:
                txn.execute("DELETE FROM push_evaluation_position WHERE id = ?", (_POSITION_ID,))
            else:
                txn.execute("INSERT INTO push_evaluation_position (id, stream_ordering)"
                            " VALUES (?, ?) ON CONFLICT (id) DO UPDATE"
                            " SET stream_ordering = excluded.stream_ordering",
                            (_POSITION_ID, position))
        await self._write("set_push_position", fn)

    async def timeline_events_between(self, after: int, upto: int, limit: int) -> list[tuple[int, str]]:
        """(stream ordering, event id) of the timeline events (not outliers, rejected or
        soft-failed: those evaluation never sees) in (after, upto], oldest first."""
        rows = await self.db.query(
            "SELECT stream_ordering, event_id FROM events WHERE stream_ordering > ?"
            " AND stream_ordering <= ? AND outlier = FALSE AND rejected_reason IS NULL"
            " AND soft_failed = FALSE ORDER BY stream_ordering LIMIT ?", (after, upto, limit))
        return [(int(s), e) for s, e in rows]

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
                        " FROM push_notifications WHERE user_id = ? AND unread"
                        f" AND room_id IN ({','.join('?' * len(chunk))}) GROUP BY room_id, thread_id",
                        (user_id, *chunk)):
                    out[(room_id, thread_id)] = (int(n), int(h or 0))
            return out
        if not ids:
            return {}
        return await self.db.run("unread_notification_counts", fn)

    async def unread_counts_many(self, requests: list[tuple[str, list[str]]]
                                 ) -> list[dict[tuple[str, str], tuple[int, int]]]:
        """``unread_counts`` for several users in one transaction (a /sync wake-up of many
        members of one room asks for all of theirs at once)."""
        def fn(txn: Transaction) -> list[dict[tuple[str, str], tuple[int, int]]]:
            results = []
            for user_id, room_ids in requests:
                ids = sorted(set(room_ids))
                out: dict[tuple[str, str], tuple[int, int]] = {}
                for i in range(0, len(ids), _CHUNK):
                    chunk = ids[i:i + _CHUNK]
                    for room_id, thread_id, n, h in txn.query(
                            "SELECT room_id, thread_id, COUNT(*), SUM(CASE WHEN highlight THEN 1 ELSE 0 END)"
                            " FROM push_notifications WHERE user_id = ? AND unread"
                            f" AND room_id IN ({','.join('?' * len(chunk))}) GROUP BY room_id, thread_id",
                            (user_id, *chunk)):
                        out[(room_id, thread_id)] = (int(n), int(h or 0))
                results.append(out)
            return results
        return await self.db.run("unread_notification_counts_many", fn)

    async def unread_total(self, user_id: str, upto: int | None = None) -> int:
        """How many of the user's notifications are unread (with ``upto``: of those with a
        stream ordering up to it)."""
        sql = "SELECT COUNT(*) FROM push_notifications WHERE user_id = ? AND unread"
        args: list[Any] = [user_id]
        if upto is not None:
            sql += " AND stream_ordering <= ?"
            args.append(upto)
        rows = await self.db.query(sql, args)
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
            f"SELECT {_COLS} FROM push_notifications WHERE user_id = ? AND unread"
            " AND stream_ordering > ? ORDER BY stream_ordering LIMIT ?", (user_id, after, limit))
        return [_row(r) for r in rows]
