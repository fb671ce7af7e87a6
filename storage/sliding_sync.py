"""Queries for simplified sliding sync: room activity, memberships over time, room facts for list
filters, and the persisted per-connection state."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterable, Sequence

from storage.database import Database, Transaction
from storage.state import StateKey

_CHUNK = 500  # ids per IN (...) list, well below either engine's parameter limit


@dataclass(frozen=True)
class StoredPosition:
    """A position of a connection and whose connection it is."""
    position: int
    connection_key: int
    user_id: str
    device_id: str
    conn_id: str
    state_json: str


class SlidingSyncStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._next_id: int | None = None
        self._id_lock = threading.Lock()

    async def load(self) -> None:
        rows = await self.db.query("SELECT high_water FROM sliding_sync_ids")
        self._next_id = (rows[0][0] if rows else 0) + 1

    def _new_id_txn(self, txn: Transaction) -> int:
        """A fresh id for a position or connection, recorded in the high-water row in the
        caller's transaction (an id is never handed out twice, across restarts too)."""
        with self._id_lock:
            if self._next_id is None:
                raise RuntimeError("SlidingSyncStore used before load()")
            n = self._next_id
            self._next_id += 1
        txn.execute("UPDATE sliding_sync_ids SET high_water = ? WHERE high_water < ?", (n, n))
        return n

    # --- connections ---------------------------------------------------------------------------

    async def new_connection(self, user_id: str, device_id: str, conn_id: str, state_json: str,
                             now: int) -> tuple[int, int]:
        """Replace the user's connection ``conn_id`` on ``device_id`` by a new one whose first
        position holds ``state_json``; returns (connection key, position)."""

        def fn(txn: Transaction) -> tuple[int, int]:
            self._delete_connections_txn(txn, txn.query(
                "SELECT connection_key FROM sliding_sync_connections WHERE user_id = ?"
                " AND device_id = ? AND conn_id = ?", (user_id, device_id, conn_id)))
            key = self._new_id_txn(txn)
            # A concurrent request starting the same connection may have inserted it meanwhile
            # (PostgreSQL): the later one wins, the other's position becomes unknown.
            txn.execute("INSERT INTO sliding_sync_connections (connection_key, user_id, device_id,"
                        " conn_id, created_ts, last_used_ts) VALUES (?, ?, ?, ?, ?, ?)"
                        " ON CONFLICT (user_id, device_id, conn_id) DO UPDATE"
                        " SET connection_key = excluded.connection_key,"
                        " created_ts = excluded.created_ts, last_used_ts = excluded.last_used_ts",
                        (key, user_id, device_id, conn_id, now, now))
            return key, self._add_position_txn(txn, key, state_json, now)
        return await self.db.run("sliding_sync_new_connection", fn)

    def _add_position_txn(self, txn: Transaction, connection_key: int, state_json: str,
                          now: int) -> int:
        position = self._new_id_txn(txn)
        txn.execute("INSERT INTO sliding_sync_positions (position, connection_key, state_json,"
                    " created_ts) VALUES (?, ?, ?, ?)", (position, connection_key, state_json, now))
        return position

    async def add_position(self, connection_key: int, state_json: str, now: int) -> int | None:
        """A new position of the connection holding ``state_json``; None if the connection has
        gone meanwhile (replaced, expired or its device deleted)."""

        def fn(txn: Transaction) -> int | None:
            if txn.query_one("SELECT 1 FROM sliding_sync_connections WHERE connection_key = ?",
                             (connection_key,)) is None:
                return None
            txn.execute("UPDATE sliding_sync_connections SET last_used_ts = ? WHERE connection_key = ?",
                        (now, connection_key))
            return self._add_position_txn(txn, connection_key, state_json, now)
        return await self.db.run("sliding_sync_add_position", fn)

    async def get_position(self, position: int) -> StoredPosition | None:
        rows = await self.db.query(
            "SELECT p.connection_key, c.user_id, c.device_id, c.conn_id, p.state_json"
            " FROM sliding_sync_positions p JOIN sliding_sync_connections c"
            " ON c.connection_key = p.connection_key WHERE p.position = ?", (position,))
        if not rows:
            return None
        key, user_id, device_id, conn_id, state_json = rows[0]
        return StoredPosition(position, key, user_id, device_id, conn_id, state_json)

    async def forget_other_positions(self, connection_key: int, keep: int) -> None:
        """The client has what ``keep`` describes: no other position of it will be used again."""
        await self.db.execute("DELETE FROM sliding_sync_positions WHERE connection_key = ?"
                              " AND position <> ?", (connection_key, keep))

    async def touch(self, connection_key: int, now: int) -> None:
        await self.db.execute("UPDATE sliding_sync_connections SET last_used_ts = ?"
                              " WHERE connection_key = ?", (now, connection_key))

    def _delete_connections_txn(self, txn: Transaction, rows: Sequence[tuple]) -> None:
        keys = [(r[0],) for r in rows]
        txn.executemany("DELETE FROM sliding_sync_positions WHERE connection_key = ?", keys)
        txn.executemany("DELETE FROM sliding_sync_connections WHERE connection_key = ?", keys)

    async def delete_device_connections(self, user_id: str, device_ids: Iterable[str]) -> None:
        ids = list(device_ids)

        def fn(txn: Transaction) -> None:
            for device_id in ids:
                self._delete_connections_txn(txn, txn.query(
                    "SELECT connection_key FROM sliding_sync_connections WHERE user_id = ?"
                    " AND device_id = ?", (user_id, device_id)))
        await self.db.run("sliding_sync_delete_devices", fn)

    async def delete_unused_since(self, before_ts: int) -> int:
        """Drop connections last used before ``before_ts``, and positions whose connection went
        away while they were written; returns how many connections."""

        def fn(txn: Transaction) -> int:
            rows = txn.query("SELECT connection_key FROM sliding_sync_connections"
                             " WHERE last_used_ts < ?", (before_ts,))
            self._delete_connections_txn(txn, rows)
            txn.execute("DELETE FROM sliding_sync_positions WHERE connection_key NOT IN"
                        " (SELECT connection_key FROM sliding_sync_connections)")
            return len(rows)
        return await self.db.run("sliding_sync_expire", fn)

    # --- rooms ---------------------------------------------------------------------------------

    async def latest_positions(self, bounds: dict[str, int], types: Sequence[str] | None = None
                               ) -> dict[str, int]:
        """room id -> stream position of the room's latest timeline event at or before the
        room's bound (of one of ``types``, if given); rooms without one are left out."""
        cond = ""
        if types:
            cond = f" AND type IN ({','.join('?' * len(types))})"

        def fn(txn: Transaction) -> dict[str, int]:
            out = {}
            for room_id, upto in bounds.items():
                row = txn.query_one(
                    f"SELECT stream_ordering FROM events WHERE room_id = ? AND stream_ordering <= ?"
                    f" AND outlier = FALSE AND rejected_reason IS NULL AND soft_failed = FALSE{cond}"
                    f" ORDER BY stream_ordering DESC LIMIT 1", (room_id, upto, *(types or ())))
                if row is not None:
                    out[room_id] = row[0]
            return out
        return await self.db.run("sliding_sync_latest_positions", fn)

    async def memberships_at(self, user_id: str, room_ids: Iterable[str], pos: int
                             ) -> dict[str, str]:
        """room id -> the user's membership at stream position ``pos`` (rooms where they had
        none then are left out)."""
        ids = list(room_ids)

        def fn(txn: Transaction) -> dict[str, str]:
            out = {}
            for room_id in ids:
                row = txn.query_one(
                    "SELECT membership FROM room_memberships WHERE user_id = ? AND room_id = ?"
                    " AND stream_ordering <= ? ORDER BY stream_ordering DESC LIMIT 1",
                    (user_id, room_id, pos))
                if row is not None:
                    out[room_id] = row[0]
            return out
        return await self.db.run("sliding_sync_memberships_at", fn)

    async def current_state_of_types(self, room_ids: Iterable[str], types: Sequence[str]
                                     ) -> dict[str, dict[StateKey, str]]:
        """room id -> {(type, state_key): event id} of the rooms' current state of ``types``."""
        ids = sorted(set(room_ids))
        if not ids or not types:
            return {}
        tmarks = ",".join("?" * len(types))

        def fn(txn: Transaction) -> dict[str, dict[StateKey, str]]:
            out: dict[str, dict[StateKey, str]] = {}
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i:i + _CHUNK]
                for room_id, etype, key, event_id in txn.query(
                        f"SELECT room_id, type, state_key, event_id FROM current_state"
                        f" WHERE room_id IN ({','.join('?' * len(chunk))}) AND type IN ({tmarks})",
                        (*chunk, *types)):
                    out.setdefault(room_id, {})[(etype, key)] = event_id
            return out
        return await self.db.run("sliding_sync_state_of_types", fn)
