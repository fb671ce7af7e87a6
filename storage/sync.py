"""Queries /sync needs: memberships over time and room timelines by stream position."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from storage.database import Database, Transaction
from storage.events import _ROW_COLS, EventRow, EventStore


@dataclass(frozen=True)
class Membership:
    room_id: str
    membership: str
    event_id: str
    stream_ordering: int
    forgotten: bool = False


class SyncStore:
    def __init__(self, db: Database, events: EventStore) -> None:
        self.db = db
        self.events = events

    async def current_memberships(self, user_id: str) -> list[Membership]:
        rows = await self.db.query(
            "SELECT room_id, membership, event_id, stream_ordering, forgotten FROM current_membership"
            " WHERE user_id = ?", (user_id,))
        return [Membership(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]

    async def membership_changes(self, user_id: str, after: int, upto: int) -> list[Membership]:
        """Every membership change of the user in (after, upto], oldest first."""
        rows = await self.db.query(
            "SELECT room_id, membership, event_id, stream_ordering FROM room_memberships"
            " WHERE user_id = ? AND stream_ordering > ? AND stream_ordering <= ?"
            " ORDER BY stream_ordering", (user_id, after, upto))
        return [Membership(r[0], r[1], r[2], r[3]) for r in rows]

    async def rooms_with_events(self, room_ids: Iterable[str], after: int, upto: int) -> set[str]:
        ids = list(room_ids)
        out: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            rows = await self.db.query(
                f"SELECT DISTINCT room_id FROM events WHERE room_id IN ({marks})"
                f" AND stream_ordering > ? AND stream_ordering <= ? AND outlier = FALSE",
                (*chunk, after, upto))
            out.update(r[0] for r in rows)
        return out

    async def timelines(self, requests: list[tuple[str, int | None, int, int]]
                        ) -> dict[str, tuple[list[EventRow], bool]]:
        """For each (room_id, after, upto, limit): the newest ``limit`` timeline events in
        (after, upto], oldest first, and whether older ones in the range were left out."""

        def fn(txn: Transaction) -> dict[str, tuple[list[EventRow], bool]]:
            out = {}
            for room_id, after, upto, limit in requests:
                args: list = [room_id, upto]
                cond = ""
                if after is not None:
                    cond = " AND e.stream_ordering > ?"
                    args.append(after)
                args.append(limit + 1)
                rows = txn.query(
                    f"SELECT {_ROW_COLS} FROM events e JOIN rooms r ON r.room_id = e.room_id"
                    f" WHERE e.room_id = ? AND e.stream_ordering <= ?{cond} AND e.outlier = FALSE"
                    f" AND e.rejected_reason IS NULL AND e.soft_failed = FALSE"
                    f" ORDER BY e.stream_ordering DESC LIMIT ?", args)
                parsed = [self.events._row(r) for r in rows]
                limited = len(parsed) > limit
                out[room_id] = (list(reversed(parsed[:limit])), limited)
            return out
        return await self.db.run("sync_timelines", fn)

    async def state_group_at(self, room_id: str, upto: int) -> int | None:
        """The state group after the room's last event at or before stream position ``upto``."""
        rows = await self.db.query(
            "SELECT state_group_after FROM events WHERE room_id = ? AND stream_ordering <= ?"
            " AND outlier = FALSE AND rejected_reason IS NULL AND soft_failed = FALSE"
            " ORDER BY stream_ordering DESC LIMIT 1", (room_id, upto))
        return rows[0][0] if rows else None
