"""Notifications: the events whose push rules said "notify" for a user, with their actions and
thread, and the unread counts per room and thread derived from them and the users' read
positions.

Storage is per event, not per notified user: an event that notified twenty members is one row
(one per ``_PART`` users), so push evaluation writes a row per event whatever the room's size
within a part. Its ``users`` column lists the users, each as ``TAB <user id> SPACE <H|N><group>``
with a TAB after the last: H marks a highlight, the group keys the actions in ``groups_json``
(users sharing a rule share its actions). Matrix user ids hold no spaces or tabs, so
``TAB user SPACE`` finds a user and ``TAB user SPACE H`` a highlight, with ``instr`` (SQLite) or
``strpos`` (PostgreSQL), inside the database.

Read state is not stored per notification: a notification is unread while no read position of
its user covers it (``push_read_positions``: the room's unthreaded position, or its thread's, at
or after its event). Receipts and one's own events move a position and touch no notification.

Counts: an unread count is the user's notifications after their position, so the counts of a
(user, room) are kept in memory with the stream position they were counted through; the next
read counts only the rows after it (for a /sync woken by a message: that message's row), in one
statement for every (user, room) of a batch of reads, each entry with the read positions it was
counted with. An entry stops counting when a position of its pair moves, and every entry of a
room does when a row is written below what has been counted (only tests do that: evaluation
writes in stream order).
Rows are committed in stream order (writes are serialised, evaluation runs in stream order), so
"every row up to S" is a consistent view once S has been written.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Collection, Iterable, Iterator, Sequence

from twisted.internet import defer
from twisted.python.failure import Failure

from storage.database import Database, Transaction

UNTHREADED = ""  # the thread id of a read position set by an unthreaded receipt
_PART = 64       # users per row
_CHUNK = 200     # rooms per IN list
# Multi-row statements are padded to a few fixed sizes, so the prepared (SQLite) and converted
# (PostgreSQL) statement caches hold a handful of texts, not one per batch size.
_SIZES = (512, 256, 128, 64, 32, 16, 8, 4, 2, 1)
_POSITION_ID = 1
_NONE = -1 << 62         # the position of a user who has read nothing
_CACHED_PAIRS = 100_000  # (user, room) pairs whose counts / positions are kept in memory
_PAGE = 200              # rows read at a time when listing

Positions = dict[str, int]       # thread id (UNTHREADED: the whole room) -> stream ordering
ThreadCounts = dict[str, tuple[int, int]]  # thread id -> (notifications, highlights)


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


@dataclass
class _Counted:
    # Every row up to here is counted; None: "live", every row written so far (the store adds
    # each new batch's rows to live counts as it writes them).
    through: int | None
    counts: ThreadCounts  # unread, threads with none left out
    positions: Positions  # the read positions they were counted with
    stamp: tuple[int, int, int]  # NotificationStore._stamp it is valid at
    # Set when a read position moved since: the positions now, and from where the rows up to
    # ``through`` must be judged again (those the move made read come off the counts).
    moved: Positions | None = None
    redo_from: int = 0

    def move(self, thread_id: str, stream_ordering: int) -> None:
        now = self.moved if self.moved is not None else dict(self.positions)
        if stream_ordering <= now.get(thread_id, _NONE):
            return
        low = now.get(UNTHREADED, _NONE)
        if thread_id != UNTHREADED:
            low = max(low, now.get(thread_id, _NONE))
        self.redo_from = low if self.moved is None else min(self.redo_from, low)
        now[thread_id] = stream_ordering
        self.moved = now


_COLS = "stream_ordering, event_id, room_id, thread_id, ts, users, groups_json"


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


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _needle(user_id: str) -> str:
    return "\t" + user_id + " "


def _entry(users: str, user_id: str) -> tuple[bool, str] | None:
    """(highlight, group key) of the user's entry in a ``users`` column, or None."""
    needle = _needle(user_id)
    at = users.find(needle)
    if at < 0:
        return None
    start = at + len(needle)
    end = users.index("\t", start)
    return users[start] == "H", users[start + 1:end]


def _rows(a: EventNotifications) -> list[tuple[Any, ...]]:
    """The rows storing one event's notifications: (stream ordering, part, event id, room id,
    thread id, ts, users, groups json)."""
    entries: list[tuple[str, bool, int]] = []
    seen: set[str] = set()
    for group, (users, _, highlight) in enumerate(a.groups):
        for u in sorted(users):
            if u not in seen:  # a user's first group wins (the first matching rule)
                seen.add(u)
                entries.append((u, bool(highlight), group))
    out = []
    for part, i in enumerate(range(0, len(entries), _PART)):
        chunk = entries[i:i + _PART]
        users = "\t" + "\t".join(f"{u} {'H' if h else 'N'}{g}" for u, h, g in chunk) + "\t"
        groups = {str(g): list(a.groups[g][1]) for g in sorted({g for _, _, g in chunk})}
        out.append((a.stream_ordering, part, a.event_id, a.room_id, a.thread_id, a.ts, users,
                    _dump(groups)))
    return out


def _unread(positions: Positions, thread_id: str, stream_ordering: int) -> bool:
    return (stream_ordering > positions.get(UNTHREADED, _NONE)
            and stream_ordering > positions.get(thread_id, _NONE))


class NotificationStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._find = "instr" if db.engine_name == "sqlite3" else "strpos"
        self._lock = defer.DeferredLock()
        # Writes queue up and run together, in order, in one transaction: under a burst of
        # events that is one commit for many notifications instead of two per event, and the
        # event persistence that shares the database thread is not kept waiting.
        self._queued: list[tuple[Any, defer.Deferred]] = []
        # In-memory state, touched on the reactor thread only (see the module docstring).
        self._counted: OrderedDict[tuple[str, str], _Counted] = OrderedDict()
        # Bumped when a pair's positions move / a room gets a row below what was counted: a
        # read that began before stores nothing it read. ``_era`` is bumped when these maps
        # are cleared to bound them.
        self._pair_versions: dict[tuple[str, str], int] = {}
        self._room_versions: dict[str, int] = {}
        self._era = 0
        self._written: int | None = None  # every row up to here is committed (None: unknown)

    # --- the write queue -----------------------------------------------------------------------

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

    # --- cache bookkeeping ---------------------------------------------------------------------

    def _stamp(self, user_id: str, room_id: str) -> tuple[int, int, int]:
        return (self._era, self._pair_versions.get((user_id, room_id), 0),
                self._room_versions.get(room_id, 0))

    def _cached(self, pair: tuple[str, str]) -> _Counted | None:
        c = self._counted.get(pair)
        return c if c is not None and c.stamp == self._stamp(*pair) else None

    def _positions_moved(self, marks: Iterable[ReadMark]) -> None:
        """After a commit that moved read positions: cached counts of the pairs carry the move
        (a read begun before stores nothing)."""
        for m in marks:
            pair = (m.user_id, m.room_id)
            c = self._cached(pair)
            self._pair_versions[pair] = self._pair_versions.get(pair, 0) + 1
            if c is None:
                self._counted.pop(pair, None)
            else:
                if c.through is None:
                    c.through = self._written
                c.move(m.thread_id, m.stream_ordering)
                c.stamp = self._stamp(*pair)
        self._bound()

    def _rows_written(self, adds: Sequence[EventNotifications]) -> None:
        """After a commit that stored ``adds``: live counts take their rows in."""
        for a in adds:
            if self._written is None or a.stream_ordering <= self._written:
                # Below what may have been counted: the room's counts start again.
                self._room_versions[a.room_id] = self._room_versions.get(a.room_id, 0) + 1
                continue
            seen: set[str] = set()
            for users, _, highlight in a.groups:
                for u in users:
                    if u in seen:
                        continue
                    seen.add(u)
                    c = self._counted.get((u, a.room_id))
                    if c is not None and c.through is None and c.stamp == self._stamp(u, a.room_id) \
                            and _unread(c.positions, a.thread_id, a.stream_ordering):
                        n, h = c.counts.get(a.thread_id, (0, 0))
                        c.counts[a.thread_id] = (n + 1, h + bool(highlight))
            self._written = a.stream_ordering
        self._bound()

    def _bound(self) -> None:
        if len(self._pair_versions) + len(self._room_versions) > _CACHED_PAIRS:
            self._pair_versions.clear()
            self._room_versions.clear()
            self._era += 1
        while len(self._counted) > _CACHED_PAIRS:
            self._counted.popitem(last=False)

    # --- writing -------------------------------------------------------------------------------

    async def add(self, room_id: str, thread_id: str, event_id: str, stream_ordering: int, ts: int,
                  notifications: Sequence[NewNotification]) -> list[str]:
        """Store one event's notifications; returns the users for whom it is unread (those whose
        read position had not already passed it)."""
        if not notifications:
            return []
        add = EventNotifications(room_id, thread_id, event_id, stream_ordering, ts,
                                 [([n.user_id], n.actions, n.highlight) for n in notifications])
        users = sorted({n.user_id for n in notifications})

        def fn(txn: Transaction) -> list[str]:
            self._write_batch_txn(txn, [add], [])
            positions = self._read_positions_txn(txn, [(u, room_id) for u in users])
            return [u for u in users
                    if _unread(positions.get((u, room_id), {}), thread_id, stream_ordering)]
        unread = await self._write("add_notifications", fn)
        self._rows_written([add])
        return unread

    async def write_batch(self, adds: Sequence[EventNotifications], marks: Sequence[ReadMark],
                          position: int | None = None) -> list[str]:
        """Store the notifications and read marks of a batch of evaluated events in one
        transaction, and (with ``position``) record that evaluation got that far in the events
        stream. Returns the users notified. Storing an event's notifications again changes
        nothing."""
        if not adds and not marks and position is None:
            return []

        def fn(txn: Transaction) -> None:
            self._write_batch_txn(txn, adds, marks)
            if position is not None:
                txn.execute("UPDATE push_evaluation_position SET stream_ordering = ?"
                            " WHERE id = ? AND stream_ordering < ?",
                            (position, _POSITION_ID, position))
        await self._write("write_notification_batch", fn)
        self._positions_moved(marks)
        self._rows_written(adds)
        return sorted({u for a in adds for users, _, _ in a.groups for u in users})

    def _write_batch_txn(self, txn: Transaction, adds: Sequence[EventNotifications],
                         marks: Sequence[ReadMark]) -> None:
        # Few statements and no rows read back: under load the reactor thread holds the GIL,
        # and each call into the database lets go of it and waits to get it back.
        self._advance_positions_txn(txn, marks)
        rows = [r for a in adds for r in _rows(a)]
        # A repeated row (padding) is skipped like a notification stored before.
        for chunk in _split(rows):
            txn.execute(
                "INSERT INTO push_event_notifications (stream_ordering, part, event_id, room_id,"
                f" thread_id, ts, users, groups_json) VALUES {_marks(len(chunk), 8)}"
                " ON CONFLICT (stream_ordering, part) DO NOTHING",
                [v for r in chunk for v in r])

    @staticmethod
    def _advance_positions_txn(txn: Transaction, marks: Sequence[ReadMark]) -> None:
        """Move read positions forward to the marks (never back), in one statement per chunk."""
        moved: dict[tuple[str, str, str], int] = {}
        for m in marks:
            key = (m.user_id, m.room_id, m.thread_id)
            if moved.get(key, _NONE) < m.stream_ordering:
                moved[key] = m.stream_ordering
        for chunk in _padded([(*key, pos) for key, pos in moved.items()]) if moved else ():
            txn.execute(
                "INSERT INTO push_read_positions (user_id, room_id, thread_id, stream_ordering)"
                f" SELECT DISTINCT column1, column2, column3, column4 FROM (VALUES"
                f" {_marks(len(chunk), 4)}) AS v WHERE TRUE"
                " ON CONFLICT (user_id, room_id, thread_id) DO UPDATE"
                " SET stream_ordering = excluded.stream_ordering"
                " WHERE push_read_positions.stream_ordering < excluded.stream_ordering",
                [v for r in chunk for v in r])

    async def mark_read(self, user_id: str, room_id: str, thread_id: str, stream_ordering: int) -> int:
        """The user has read up to ``stream_ordering`` in a thread of the room (``UNTHREADED``:
        in all of it). Returns how many notifications that made read."""
        mark = ReadMark(user_id, room_id, thread_id, stream_ordering)

        def fn(txn: Transaction) -> int:
            before = self._read_positions_txn(txn, [(user_id, room_id)]).get((user_id, room_id), {})
            old = before.get(thread_id, _NONE)
            if old >= stream_ordering:
                return 0
            self._advance_positions_txn(txn, [mark])
            after = {**before, thread_id: stream_ordering}
            low = max(old, before.get(UNTHREADED, _NONE))
            found = self._scan_txn(txn, [(user_id, room_id, low)], stream_ordering)
            return sum(1 for _, _, thread, stream, _ in found
                       if (thread_id == UNTHREADED or thread == thread_id)
                       and _unread(before, thread, stream) and not _unread(after, thread, stream))

        cleared = await self._write("mark_notifications_read", fn)
        self._positions_moved([mark])
        return cleared

    async def delete_read_before(self, ts: int) -> int:
        """Forget notifications older than ``ts`` (ms) that their users have read: a row read
        by all of its users goes, one with some still unread keeps just those. Returns how
        many (user, event) notifications were forgotten."""
        forgotten = 0
        cursor: tuple[int, int] | None = (_NONE, 0)
        while cursor is not None:
            async with self._lock:
                n, cursor = await self.db.run("delete_read_notifications", self._prune_txn, ts,
                                              cursor)
            forgotten += n
        return forgotten

    def _prune_txn(self, txn: Transaction, ts: int, cursor: tuple[int, int]
                   ) -> tuple[int, tuple[int, int] | None]:
        """One page of ``delete_read_before`` from (stream ordering, part) ``cursor`` on; the
        next cursor, or None when done."""
        rows = txn.query("SELECT stream_ordering, part, room_id, thread_id, ts, users"
                         " FROM push_event_notifications WHERE stream_ordering > ?"
                         " OR (stream_ordering = ? AND part > ?)"
                         " ORDER BY stream_ordering, part LIMIT ?", (cursor[0], *cursor, _PAGE))
        old = [r for r in rows if r[4] < ts]
        entries = {r[:2]: [e for e in r[5].split("\t") if e] for r in old}
        positions = self._read_positions_txn(txn, sorted(
            {(e.rsplit(" ", 1)[0], r[2]) for r in old for e in entries[r[:2]]}))
        forgotten = 0
        for stream, part, room_id, thread_id, _, _ in old:
            had = entries[(stream, part)]
            keep = [e for e in had
                    if _unread(positions.get((e.rsplit(" ", 1)[0], room_id), {}), thread_id, stream)]
            forgotten += len(had) - len(keep)
            if not keep:
                txn.execute("DELETE FROM push_event_notifications WHERE stream_ordering = ?"
                            " AND part = ?", (stream, part))
            elif len(keep) < len(had):
                txn.execute("UPDATE push_event_notifications SET users = ? WHERE stream_ordering = ?"
                            " AND part = ?", ("\t" + "\t".join(keep) + "\t", stream, part))
        # Rows are in stream order and so, nearly, in time order: stop at the first young one.
        if len(rows) < _PAGE or len(old) < len(rows):
            return forgotten, None
        return forgotten, (int(rows[-1][0]), int(rows[-1][1]))

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

    # --- reading: helpers run in a transaction --------------------------------------------------

    def _read_positions_txn(self, txn: Transaction, pairs: Sequence[tuple[str, str]]
                            ) -> dict[tuple[str, str], Positions]:
        """The read positions of (user, room) pairs (pairs without any map to nothing), one
        statement per 512 pairs."""
        out: dict[tuple[str, str], Positions] = {}
        for chunk in _padded(sorted(set(pairs))) if pairs else ():
            for user_id, room_id, thread_id, stream in txn.query(
                    "SELECT p.user_id, p.room_id, p.thread_id, p.stream_ordering"
                    f" FROM (SELECT DISTINCT column1, column2 FROM (VALUES {_marks(len(chunk), 2)})"
                    " AS w) AS v JOIN push_read_positions p ON p.user_id = v.column1"
                    " AND p.room_id = v.column2", [x for pair in chunk for x in pair]):
                out.setdefault((user_id, room_id), {})[thread_id] = int(stream)
        return out

    def _scan_txn(self, txn: Transaction, wanted: Sequence[tuple[str, str, int]], upto: int
                  ) -> list[tuple[str, str, str, int, bool]]:
        """The notifications of each (user, room, after) in (after, upto]: (user, room, thread,
        stream ordering, highlight), one statement per 128 triples."""
        out: list[tuple[str, str, str, int, bool]] = []
        users = {_needle(u): u for u, _, _ in wanted}
        find = self._find
        for i in range(0, len(wanted), 128):
            chunk = [(_needle(u), _needle(u) + "H", r, a) for u, r, a in wanted[i:i + 128]]
            size = min(s for s in _SIZES if s >= len(chunk))
            chunk += [("", "", "", upto)] * (size - len(chunk))  # matches no row
            for needle, room_id, thread_id, stream, highlight in txn.query(
                    f"SELECT v.column1, n.room_id, n.thread_id, n.stream_ordering,"
                    f" {find}(n.users, v.column2) > 0"
                    f" FROM (VALUES {_marks(len(chunk), 4)}) AS v"
                    " JOIN push_event_notifications n ON n.room_id = v.column3"
                    " AND n.stream_ordering > v.column4 AND n.stream_ordering <= ?"
                    f" WHERE {find}(n.users, v.column1) > 0",
                    [*(x for row in chunk for x in row), upto]):
                out.append((users[needle], room_id, thread_id, int(stream), bool(highlight)))
        return out

    def _upto_txn(self, txn: Transaction) -> int:
        row = txn.query_one("SELECT MAX(stream_ordering) FROM push_event_notifications")
        return int(row[0]) if row and row[0] is not None else _NONE

    # --- reading -------------------------------------------------------------------------------

    async def unread_counts(self, user_id: str, room_ids: Iterable[str]
                            ) -> dict[tuple[str, str], tuple[int, int]]:
        """(room, thread) -> (notification count, highlight count) of unread notifications;
        only pairs with any."""
        ids = sorted(set(room_ids))
        if not ids:
            return {}
        return (await self.unread_counts_many([(user_id, ids)]))[0]

    def cached_counts(self, pairs: Iterable[tuple[str, str]]
                      ) -> dict[tuple[str, str], ThreadCounts] | None:
        """The counts of (user, room) pairs if memory has them all up to date, else None."""
        out = {}
        for p in pairs:
            c = self._counted.get(p)
            if c is None or c.through is not None or c.stamp != self._stamp(*p):
                return None
            out[p] = c.counts
        return out

    async def unread_counts_many(self, requests: list[tuple[str, list[str]]]
                                 ) -> list[dict[tuple[str, str], tuple[int, int]]]:
        """``unread_counts`` for several users in one transaction (a /sync wake-up of many
        members of one room asks for all of theirs at once)."""
        pairs = sorted({(u, r) for u, rooms in requests for r in rooms})
        cached = self.cached_counts(pairs)
        if cached is not None:
            result = cached
        else:
            result = await self._count(pairs)
        return [{(r, t): c for r in set(rooms) for t, c in result[(u, r)].items()}
                for u, rooms in requests]

    async def warm(self, user_ids: Iterable[str], room_id: str) -> None:
        """Have these users' counts in this room in memory: nothing to do when it has them all,
        else one read for those missing (before a /sync wake-up of the room's members)."""
        pairs = [(u, room_id) for u in user_ids]
        if self.cached_counts(pairs) is None:
            await self._count(sorted(set(pairs)))

    async def _count(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], ThreadCounts]:
        """Counts of pairs not all in memory: read the rows after what memory has."""
        stamps = {p: self._stamp(*p) for p in pairs}
        written = self._written
        # What memory has, as it is now (a batch or a receipt may change it meanwhile).
        before: dict[tuple[str, str], _Counted] = {}
        for p in pairs:
            c = self._cached(p)
            if c is not None:
                before[p] = _Counted(written if c.through is None else c.through, dict(c.counts),
                                     c.positions, c.stamp, c.moved, c.redo_from)

        def fn(txn: Transaction) -> tuple[int, dict, list]:
            upto = written if written is not None else self._upto_txn(txn)
            loaded = self._read_positions_txn(txn, [p for p in pairs if p not in before])
            wanted = []
            for p in pairs:
                c = before.get(p)
                if c is None:
                    after = loaded.get(p, {}).get(UNTHREADED, _NONE)
                else:
                    assert c.through is not None
                    after = c.through if c.moved is None else min(c.through, c.redo_from)
                if after < upto:
                    wanted.append((*p, after))
            return upto, loaded, self._scan_txn(txn, wanted, upto)
        upto, loaded, found = await self.db.run("unread_notification_counts", fn)
        if self._written is None or upto > self._written:
            self._written = upto
        fresh: dict[tuple[str, str], ThreadCounts] = {}
        positions: dict[tuple[str, str], Positions] = {}
        for p in pairs:
            c = before.get(p)
            fresh[p] = c.counts if c is not None else {}
            positions[p] = loaded.get(p, {}) if c is None else (
                c.positions if c.moved is None else c.moved)
        for user_id, room_id, thread_id, stream, highlight in found:
            p = (user_id, room_id)
            counts, c = fresh[p], before.get(p)
            if c is not None and c.through is not None and stream <= c.through:
                # Counted before; a position moved since: off the counts if now read.
                if _unread(c.positions, thread_id, stream) \
                        and not _unread(positions[p], thread_id, stream):
                    n, h = counts.get(thread_id, (0, 0))
                    if n > 1:
                        counts[thread_id] = (n - 1, h - highlight)
                    else:
                        counts.pop(thread_id, None)
            elif _unread(positions[p], thread_id, stream):
                n, h = counts.get(thread_id, (0, 0))
                counts[thread_id] = (n + 1, h + highlight)
        live = upto == self._written  # no batch was written since: later ones add to it
        for p in pairs:
            if self._stamp(*p) == stamps[p] and (live or not (
                    p in self._counted and self._counted[p].through is None)):
                self._counted[p] = _Counted(None if live else upto, dict(fresh[p]), positions[p],
                                            stamps[p])
                self._counted.move_to_end(p)
        self._bound()
        return fresh

    async def unread_total(self, user_id: str, room_ids: Iterable[str], upto: int | None = None) -> int:
        """How many of the user's notifications in these rooms are unread (with ``upto``: of
        those with a stream ordering up to it)."""
        ids = sorted(set(room_ids))
        if not ids:
            return 0
        if upto is None:
            return sum(n for n, _ in (await self.unread_counts(user_id, ids)).values())

        def fn(txn: Transaction) -> int:
            positions = self._read_positions_txn(txn, [(user_id, r) for r in ids])
            wanted = [(user_id, r, positions.get((user_id, r), {}).get(UNTHREADED, _NONE))
                      for r in ids]
            return sum(1 for _, room_id, thread_id, stream, _ in self._scan_txn(txn, wanted, upto)
                       if _unread(positions.get((user_id, room_id), {}), thread_id, stream))
        return await self.db.run("unread_notification_total", fn)

    async def list(self, user_id: str, room_ids: Iterable[str], before: int | None, limit: int,
                   only_highlight: bool = False) -> list[Notification]:
        """The user's notifications in these rooms, newest first, with a stream ordering below
        ``before``."""
        ids = sorted(set(room_ids))
        needle = _needle(user_id) + ("H" if only_highlight else "")

        def fn(txn: Transaction) -> list[Notification]:
            found = self._rows_txn(txn, ids, needle, before if before is not None else 1 << 62,
                                   True, limit)
            return self._notifications_txn(txn, user_id, found)
        return await self.db.run("list_notifications", fn) if ids and limit > 0 else []

    async def unread_after(self, user_id: str, room_ids: Iterable[str], after: int, limit: int
                           ) -> list[Notification]:
        """The user's unread notifications in these rooms with a stream ordering above
        ``after``, oldest first (what a pusher still has to send)."""
        ids = sorted(set(room_ids))

        def fn(txn: Transaction) -> list[Notification]:
            out: list[Notification] = []
            cursor = after
            while len(out) < limit:
                found = self._rows_txn(txn, ids, _needle(user_id), cursor, False, _PAGE)
                if not found:
                    break
                out += [n for n in self._notifications_txn(txn, user_id, found) if n.unread]
                cursor = found[-1][0]
            return out[:limit]
        return await self.db.run("unread_notifications_after", fn) if ids and limit > 0 else []

    def _rows_txn(self, txn: Transaction, room_ids: Sequence[str], needle: str, bound: int,
                  newest_first: bool, limit: int) -> list[tuple]:
        """At most ``limit`` rows of these rooms whose users column holds ``needle``, with a
        stream ordering past ``bound`` (below it newest first, else above it oldest first)."""
        op, order = ("<", " DESC") if newest_first else (">", "")
        found: list[tuple] = []
        for i in range(0, len(room_ids), _CHUNK):
            chunk = room_ids[i:i + _CHUNK]
            found += txn.query(
                f"SELECT {_COLS} FROM push_event_notifications WHERE room_id IN"
                f" ({','.join('?' * len(chunk))}) AND stream_ordering {op} ?"
                f" AND {self._find}(users, ?) > 0 ORDER BY stream_ordering{order} LIMIT ?",
                (*chunk, bound, needle, limit))
        found.sort(key=lambda r: r[0], reverse=newest_first)
        return found[:limit]

    def _notifications_txn(self, txn: Transaction, user_id: str, rows: Sequence[tuple]
                           ) -> list[Notification]:
        positions = self._read_positions_txn(txn, sorted({(user_id, r[2]) for r in rows}))
        out = []
        for stream, event_id, room_id, thread_id, ts, users, groups_json in rows:
            entry = _entry(users, user_id)
            if entry is None:
                continue
            highlight, group = entry
            out.append(Notification(
                user_id, event_id, room_id, thread_id, int(stream),
                json.loads(groups_json).get(group, []), highlight,
                _unread(positions.get((user_id, room_id), {}), thread_id, int(stream)), int(ts)))
        return out
