"""Room aliases and the public room directory."""

from __future__ import annotations

from storage.database import Database, Transaction
from storage.engines import IntegrityError


class DirectoryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_alias(self, alias: str) -> str | None:
        rows = await self.db.query("SELECT room_id FROM room_aliases WHERE alias = ?", (alias,))
        return rows[0][0] if rows else None

    async def get_alias_row(self, alias: str) -> tuple[str, str] | None:
        """(room_id, creator) of an alias."""
        rows = await self.db.query("SELECT room_id, creator FROM room_aliases WHERE alias = ?", (alias,))
        return (rows[0][0], rows[0][1]) if rows else None

    async def create_alias(self, alias: str, room_id: str, creator: str, now: int) -> bool:
        """False if the alias is taken."""
        def fn(txn: Transaction) -> bool:
            try:
                txn.execute("INSERT INTO room_aliases (alias, room_id, creator, created_ts)"
                            " VALUES (?, ?, ?, ?)", (alias, room_id, creator, now))
            except IntegrityError:
                return False
            return True
        return await self.db.run("create_alias", fn)

    async def move_alias(self, alias: str, room_id: str) -> None:
        await self.db.execute("UPDATE room_aliases SET room_id = ? WHERE alias = ?", (room_id, alias))

    async def delete_alias(self, alias: str) -> bool:
        return await self.db.execute("DELETE FROM room_aliases WHERE alias = ?", (alias,)) > 0

    async def get_aliases_for_room(self, room_id: str) -> list[str]:
        rows = await self.db.query("SELECT alias FROM room_aliases WHERE room_id = ? ORDER BY alias",
                                   (room_id,))
        return [r[0] for r in rows]

    async def set_public(self, room_id: str, public: bool) -> bool:
        return await self.db.execute("UPDATE rooms SET is_public = ? WHERE room_id = ?",
                                     (public, room_id)) > 0

    async def is_public(self, room_id: str) -> bool | None:
        rows = await self.db.query("SELECT is_public FROM rooms WHERE room_id = ?", (room_id,))
        return bool(rows[0][0]) if rows else None

    async def public_room_ids(self) -> list[str]:
        rows = await self.db.query("SELECT room_id FROM rooms WHERE is_public = TRUE ORDER BY room_id")
        return [r[0] for r in rows]
