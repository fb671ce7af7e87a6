"""Account data per user: global (room_id '') and per room, each write at a new stream position.

/sync asks for what changed between two positions of the ``account_data`` stream. Writes are
serialised so that stream ids commit in the order they are handed out: a reader that has seen
position N has then seen every write up to N.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from storage.database import Database, Transaction
from storage.ids import OrderedStream

GLOBAL = ""  # the room_id of global account data

# Given the current content (None if unset), the new content, or None to leave it unchanged.
Update = Callable[[dict[str, Any] | None], dict[str, Any] | None]

_IN_CHUNK = 500  # room ids per IN (...) list, well below either engine's parameter limit


def _dump(content: dict[str, Any]) -> str:
    return json.dumps(content, ensure_ascii=False, separators=(",", ":"))


class AccountDataStore(OrderedStream):
    def __init__(self, db: Database) -> None:
        super().__init__(db, "account_data", "stream_id")

    # --- writing -------------------------------------------------------------------------------

    async def set_global(self, user_id: str, data_type: str, content: dict[str, Any]) -> int:
        """Set a global account data ``data_type``; returns its new stream position."""
        pos = await self._write(user_id, GLOBAL, data_type, lambda _old: content)
        assert pos is not None
        return pos

    async def set_room(self, user_id: str, room_id: str, data_type: str,
                       content: dict[str, Any]) -> int:
        """Set a room's account data ``data_type``; returns its new stream position."""
        assert room_id != GLOBAL
        pos = await self._write(user_id, room_id, data_type, lambda _old: content)
        assert pos is not None
        return pos

    async def update_room(self, user_id: str, room_id: str, data_type: str,
                          update: Update) -> int | None:
        """Read-modify-write one room account data atomically (no write lands in between).

        ``update`` runs in the database thread and must not block; it returns the new content,
        or None to change nothing. Returns the new stream position, or None if nothing changed.
        """
        assert room_id != GLOBAL
        return await self._write(user_id, room_id, data_type, update)

    async def _write(self, user_id: str, room_id: str, data_type: str, update: Update) -> int | None:
        def fn(txn: Transaction) -> int | None:
            row = txn.query_one("SELECT content_json FROM account_data WHERE user_id = ?"
                                " AND room_id = ? AND account_data_type = ?",
                                (user_id, room_id, data_type))
            new = update(json.loads(row[0]) if row else None)
            if new is None:
                return None
            stream_id = self.stream_ids.next()
            txn.execute(
                "INSERT INTO account_data (user_id, room_id, account_data_type, content_json,"
                " stream_id) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (user_id, room_id, account_data_type) DO UPDATE"
                " SET content_json = excluded.content_json, stream_id = excluded.stream_id",
                (user_id, room_id, data_type, _dump(new), stream_id))
            return stream_id

        return await self._ordered_write(lambda: self.db.run("account_data_write", fn),
                                         lambda pos: pos)

    # --- reading -------------------------------------------------------------------------------

    async def get_global(self, user_id: str, data_type: str) -> dict[str, Any] | None:
        return await self._get(user_id, GLOBAL, data_type)

    async def get_room(self, user_id: str, room_id: str, data_type: str) -> dict[str, Any] | None:
        assert room_id != GLOBAL
        return await self._get(user_id, room_id, data_type)

    async def _get(self, user_id: str, room_id: str, data_type: str) -> dict[str, Any] | None:
        rows = await self.db.query("SELECT content_json FROM account_data WHERE user_id = ?"
                                   " AND room_id = ? AND account_data_type = ?",
                                   (user_id, room_id, data_type))
        return json.loads(rows[0][0]) if rows else None

    async def get_global_changes(self, user_id: str, from_pos: int | None,
                                 to_pos: int) -> dict[str, dict[str, Any]]:
        """{type: content} of global account data written in (from_pos, to_pos]; from_pos None:
        everything up to to_pos (an initial sync)."""
        sql = ("SELECT account_data_type, content_json FROM account_data"
               " WHERE user_id = ? AND room_id = ? AND stream_id <= ?")
        args: list[Any] = [user_id, GLOBAL, to_pos]
        if from_pos is not None:
            sql += " AND stream_id > ?"
            args.append(from_pos)
        rows = await self.db.query(sql, args)
        return {t: json.loads(c) for t, c in rows}

    async def get_room_changes(self, user_id: str, room_ids: list[str] | None, from_pos: int | None,
                               to_pos: int) -> dict[str, dict[str, dict[str, Any]]]:
        """{room_id: {type: content}} of room account data written in (from_pos, to_pos], for the
        given rooms (None: every room); from_pos None: everything up to to_pos."""
        if room_ids is not None and not room_ids:
            return {}
        base = ("SELECT room_id, account_data_type, content_json FROM account_data"
                " WHERE user_id = ? AND room_id <> ? AND stream_id <= ?")
        args: list[Any] = [user_id, GLOBAL, to_pos]
        if from_pos is not None:
            base += " AND stream_id > ?"
            args.append(from_pos)

        def fn(txn: Transaction) -> list[tuple]:
            if room_ids is None:
                return txn.query(base, args)
            rows: list[tuple] = []
            wanted = sorted(set(room_ids))
            for i in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[i:i + _IN_CHUNK]
                rows += txn.query(base + f" AND room_id IN ({', '.join('?' * len(chunk))})",
                                  args + chunk)
            return rows

        out: dict[str, dict[str, dict[str, Any]]] = {}
        for room_id, data_type, content in await self.db.run("account_data_room_changes", fn):
            out.setdefault(room_id, {})[data_type] = json.loads(content)
        return out
