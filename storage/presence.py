"""Presence: one row per user whose presence was ever set, with its "presence" stream id.

Writes are serialised, so stream ids commit in order. Who may see whose presence (users who
share a joined room) is answered here in SQL over ``current_membership``, so that a /sync
needs one query however large the user's rooms are.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.database import Database, Transaction
from storage.ids import OrderedStream

_COLS = "user_id, state, status_msg, last_active_ts, currently_active, explicit, stream_id"

# Users who share a joined room with the observer (bound as the last parameter).
_SHARES_ROOM = ("EXISTS (SELECT 1 FROM current_membership a JOIN current_membership b"
                " ON a.room_id = b.room_id WHERE a.user_id = p.user_id AND a.membership = 'join'"
                " AND b.user_id = ? AND b.membership = 'join')")


@dataclass(frozen=True)
class PresenceRow:
    user_id: str
    state: str  # online, unavailable or offline
    status_msg: str | None
    last_active_ts: int  # 0: never active
    currently_active: bool
    explicit: bool  # set with PUT /presence rather than by /sync or a timeout
    stream_id: int


def _row(r: tuple) -> PresenceRow:
    return PresenceRow(r[0], r[1], r[2], int(r[3]), bool(r[4]), bool(r[5]), int(r[6]))


class PresenceStore(OrderedStream):
    def __init__(self, db: Database) -> None:
        super().__init__(db, "presence", "stream_id")

    async def get_all(self) -> list[PresenceRow]:
        return [_row(r) for r in await self.db.query(f"SELECT {_COLS} FROM presence")]

    async def get(self, user_id: str) -> PresenceRow | None:
        rows = await self.db.query(f"SELECT {_COLS} FROM presence WHERE user_id = ?", (user_id,))
        return _row(rows[0]) if rows else None

    async def upsert(self, user_id: str, state: str, status_msg: str | None, last_active_ts: int,
                     currently_active: bool, explicit: bool) -> int:
        """Write a user's presence under the next stream id, which is returned."""
        async def write() -> int:
            stream_id = self.stream_ids.next()
            await self.db.execute(
                "INSERT INTO presence (user_id, state, status_msg, last_active_ts, currently_active,"
                " explicit, stream_id) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE"
                " SET state = excluded.state, status_msg = excluded.status_msg,"
                " last_active_ts = excluded.last_active_ts,"
                " currently_active = excluded.currently_active, explicit = excluded.explicit,"
                " stream_id = excluded.stream_id",
                (user_id, state, status_msg, last_active_ts, currently_active, explicit, stream_id))
            return stream_id
        return await self._ordered_write(write, lambda stream_id: stream_id)

    async def changes_visible_to(self, observer: str, from_pos: int | None, to_pos: int,
                                 include_offline: bool) -> list[PresenceRow]:
        """Presence rows changed in (from_pos, to_pos] (all up to to_pos when from_pos is None)
        of the observer and of the users sharing a joined room with them."""
        lower = -1 if from_pos is None else from_pos
        offline = "" if include_offline else " AND p.state <> 'offline'"

        def fn(txn: Transaction) -> list[PresenceRow]:
            return [_row(r) for r in txn.query(
                f"SELECT {', '.join('p.' + c.strip() for c in _COLS.split(','))} FROM presence p"
                f" WHERE p.stream_id > ? AND p.stream_id <= ?{offline}"
                f" AND (p.user_id = ? OR {_SHARES_ROOM}) ORDER BY p.stream_id",
                (lower, to_pos, observer, observer))]
        return await self.db.run("presence_changes", fn)

    async def shares_room(self, a: str, b: str) -> bool:
        """Whether the two users are both joined to some room."""
        rows = await self.db.query(
            "SELECT 1 FROM current_membership x JOIN current_membership y ON x.room_id = y.room_id"
            " WHERE x.user_id = ? AND x.membership = 'join' AND y.user_id = ?"
            " AND y.membership = 'join' LIMIT 1", (a, b))
        return bool(rows)
