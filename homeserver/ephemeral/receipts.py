"""Read receipts (m.read, m.read.private, threaded or not) and the fully read marker.

Spec: Client-Server API "Receipts" and "Read and unread markers". A receipt needs the reader
joined to the room and able to see the event. Receipts are "up to" markers: one that points at
an earlier event than the reader's current one of the same type and thread is ignored.
``m.read.private`` receipts reach only their owner.

The fully read marker is the ``m.fully_read`` room account data of its user (written only
here: the account data API refuses it), so it moves the "account_data" stream and /sync
delivers it with the rest of the room's account data. It never moves back either.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Iterable

from homeserver.clock import Clock
from homeserver.http.errors import MatrixError
from homeserver.notifier import Notifier
from homeserver.rooms.relations import THREAD, relation_of
from homeserver.rooms.visibility import Visibility
from storage.account_data import AccountDataStore
from storage.events import EventRow, EventStore
from storage.receipts import Receipt, ReceiptStore

logger = logging.getLogger(__name__)

READ = "m.read"
READ_PRIVATE = "m.read.private"
FULLY_READ = "m.fully_read"
RECEIPT_TYPES = (READ, READ_PRIVATE, FULLY_READ)
MAIN_THREAD = "main"
# How many relations are followed to find the thread of an event (the spec's recommendation).
THREAD_HOPS = 3


class ReceiptService:
    def __init__(self, store: ReceiptStore, account_data: AccountDataStore, events: EventStore,
                 visibility: Visibility, notifier: Notifier, clock: Clock) -> None:
        self.store = store
        self.account_data = account_data
        self.events = events
        self.visibility = visibility
        self.notifier = notifier
        self.clock = clock
        # Awaited with (user_id, room_id, receipt_type, thread_id, row) after an m.read or
        # m.read.private receipt moved, before /sync is woken (push clears its counts here).
        self.listeners: list[Callable[[str, str, str, str | None, EventRow], Awaitable[None]]] = []

    async def load(self) -> None:
        await self.store.load()
        self.notifier.set_position("receipts", self.store.current_position())

    def current_position(self) -> int:
        return self.store.current_position()

    # --- writing -------------------------------------------------------------------------------

    async def post_receipt(self, user_id: str, room_id: str, receipt_type: str, event_id: str,
                           thread_id: str | None = None) -> None:
        """POST /receipt: checks as the spec asks (400 bad type or thread, 403 not joined,
        404 unknown or invisible event), then records it."""
        check_receipt_request(receipt_type, thread_id)
        await self._check_joined(user_id, room_id)
        row = await self._visible_event(user_id, room_id, event_id)
        if thread_id is not None:
            await self._check_thread(row, thread_id)
        await self._record(user_id, room_id, receipt_type, row, thread_id)

    async def set_read_markers(self, user_id: str, room_id: str, markers: dict[str, str]) -> None:
        """POST /read_markers with any of m.fully_read, m.read, m.read.private; every event is
        checked before anything is recorded."""
        await self._check_joined(user_id, room_id)
        rows = {rtype: await self._visible_event(user_id, room_id, event_id)
                for rtype, event_id in markers.items()}
        for rtype in (READ, READ_PRIVATE):
            if rtype in rows:
                await self._record(user_id, room_id, rtype, rows[rtype], None)
        if FULLY_READ in rows:
            await self._move_fully_read(user_id, room_id, rows[FULLY_READ])

    async def _check_joined(self, user_id: str, room_id: str) -> None:
        membership = await self.events.get_membership(room_id, user_id)
        if membership is None or membership[0] != "join":
            raise MatrixError(403, "M_FORBIDDEN", "You are not joined to this room")

    async def _visible_event(self, user_id: str, room_id: str, event_id: str) -> EventRow:
        row = await self.events.get_event_row(event_id) if event_id.startswith("$") else None
        if row is None or row.event.room_id != room_id or row.outlier \
                or not await self.visibility.can_see(user_id, row):
            raise MatrixError(404, "M_NOT_FOUND", "Event not found")
        return row

    async def _check_thread(self, row: EventRow, thread_id: str) -> None:
        """400 unless the event is in the receipt's thread (a thread root counts for its own
        thread as well as for the main timeline, where the spec puts it)."""
        actual = await self.thread_of(row)
        if thread_id == actual or thread_id == row.event.event_id:
            return
        where = "the main timeline" if actual == MAIN_THREAD else f"thread {actual}"
        raise MatrixError(400, "M_INVALID_PARAM",
                          f"Event {row.event.event_id} is in {where}, not in thread {thread_id}")

    async def thread_of(self, row: EventRow) -> str:
        """The thread root an event belongs to, or ``main`` (spec: "Threaded read receipts")."""
        event = row.event
        for _ in range(THREAD_HOPS):
            rel = relation_of(event)
            if rel is None:
                return MAIN_THREAD
            parent_id, rel_type = rel
            if rel_type == THREAD:
                return parent_id
            parent = await self.events.get_event_row(parent_id)
            if parent is None or parent.event.room_id != event.room_id:
                return MAIN_THREAD
            event = parent.event
        return MAIN_THREAD

    async def record_remote(self, user_id: str, room_id: str, receipt_type: str, row: EventRow,
                            thread_id: str | None) -> None:
        """A receipt another server sent for one of its users (federation checked membership)."""
        await self._record(user_id, room_id, receipt_type, row, thread_id)

    async def _record(self, user_id: str, room_id: str, receipt_type: str, row: EventRow,
                      thread_id: str | None) -> None:
        stream_id = await self.store.upsert(room_id, receipt_type, user_id, thread_id,
                                            row.event.event_id, row.stream_ordering,
                                            self.clock.time_msec())
        if stream_id is None:
            return
        for listener in self.listeners:
            try:
                await listener(user_id, room_id, receipt_type, thread_id, row)
            except Exception:
                logger.exception("receipt listener failed")
        if receipt_type == READ:
            users = await self.events.get_interested_users(room_id)
            users.add(user_id)
        else:
            users = {user_id}
        self.notifier.notify("receipts", stream_id, users=users)

    async def _move_fully_read(self, user_id: str, room_id: str, row: EventRow) -> None:
        """Point the m.fully_read room account data at the event, unless it is already there
        or at a later event."""
        old = await self.account_data.get_room(user_id, room_id, FULLY_READ)
        old_id = old.get("event_id") if old else None
        if old_id == row.event.event_id:
            return
        if isinstance(old_id, str):
            old_row = await self.events.get_event_row(old_id)
            if old_row is not None and old_row.event.room_id == room_id \
                    and old_row.stream_ordering >= row.stream_ordering:
                return

        def update(current: dict[str, Any] | None) -> dict[str, Any] | None:
            if (current.get("event_id") if current else None) != old_id:
                return None  # moved meanwhile by a concurrent request, which wins
            return {"event_id": row.event.event_id}
        pos = await self.account_data.update_room(user_id, room_id, FULLY_READ, update)
        if pos is not None:
            self.notifier.notify("account_data", pos, users=[user_id])

    # --- reading, for /sync --------------------------------------------------------------------

    async def receipts_for_rooms(self, room_ids: Iterable[str], from_pos: int | None, to_pos: int,
                                 user_id: str) -> dict[str, list[dict[str, Any]]]:
        """room id -> the m.receipt events for that room's ``ephemeral`` section: receipts
        changed in (from_pos, to_pos] (every receipt up to to_pos when from_pos is None),
        m.read from everyone and m.read.private only the user's own.

        Usually one event per room; a user with receipts of one type at one event in more
        than one thread needs a second event, as m.receipt content holds one per user."""
        receipts = await self.store.changes(room_ids, from_pos, to_pos, (READ,), (READ_PRIVATE,),
                                            user_id)
        by_room: dict[str, list[Receipt]] = {}
        for r in receipts:
            by_room.setdefault(r.room_id, []).append(r)
        return {room_id: [{"type": "m.receipt", "content": c} for c in _contents(rs)]
                for room_id, rs in by_room.items()}



def check_receipt_request(receipt_type: str, thread_id: Any) -> None:
    """The checks that need no database: receipt type and the form of ``thread_id``."""
    if receipt_type not in RECEIPT_TYPES:
        raise MatrixError(400, "M_INVALID_PARAM",
                          f"Receipt type must be one of {', '.join(RECEIPT_TYPES)}")
    if thread_id is None:
        return
    if not isinstance(thread_id, str) or not thread_id:
        raise MatrixError(400, "M_INVALID_PARAM", "thread_id field must be a non-empty string")
    if receipt_type == FULLY_READ:
        raise MatrixError(400, "M_INVALID_PARAM", "thread_id is not allowed with m.fully_read")
    if thread_id != MAIN_THREAD and not thread_id.startswith("$"):
        raise MatrixError(400, "M_INVALID_PARAM", "thread_id must be 'main' or a thread root's event id")


def _contents(receipts: list[Receipt]) -> list[dict[str, Any]]:
    """Group receipts into m.receipt contents, later ones after earlier ones, opening another
    content only where a (event, type, user) slot is already taken."""
    contents: list[dict[str, Any]] = []
    for r in receipts:
        data: dict[str, Any] = {"ts": r.ts}
        if r.thread_id is not None:
            data["thread_id"] = r.thread_id
        for content in contents:
            slot = content.setdefault(r.event_id, {}).setdefault(r.receipt_type, {})
            if r.user_id not in slot:
                slot[r.user_id] = data
                break
        else:
            contents.append({r.event_id: {r.receipt_type: {r.user_id: data}}})
    return contents
