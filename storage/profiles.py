"""Profile fields (displayname, avatar_url and custom keys), one row per field."""

from __future__ import annotations

import json
from typing import Any

from storage.database import Database, Transaction


class ProfileStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_profile(self, user_id: str) -> dict[str, Any]:
        rows = await self.db.query("SELECT field, value_json FROM profiles WHERE user_id = ?",
                                   (user_id,))
        return {field: json.loads(value) for field, value in rows}

    async def get_field(self, user_id: str, field: str) -> Any:
        rows = await self.db.query("SELECT value_json FROM profiles WHERE user_id = ? AND field = ?",
                                   (user_id, field))
        return json.loads(rows[0][0]) if rows else None

    async def set_field(self, user_id: str, field: str, value: Any) -> None:
        """Set a field, or delete it when ``value`` is None."""
        def fn(txn: Transaction) -> None:
            if value is None:
                txn.execute("DELETE FROM profiles WHERE user_id = ? AND field = ?", (user_id, field))
            else:
                txn.execute("INSERT INTO profiles (user_id, field, value_json) VALUES (?, ?, ?)"
                            " ON CONFLICT (user_id, field) DO UPDATE SET value_json = excluded.value_json",
                            (user_id, field, json.dumps(value, ensure_ascii=False)))
        await self.db.run("set_profile_field", fn)

    async def total_size(self, user_id: str) -> int:
        rows = await self.db.query("SELECT field, value_json FROM profiles WHERE user_id = ?", (user_id,))
        return sum(len(f) + len(v.encode("utf-8")) for f, v in rows)

    async def delete_profile(self, user_id: str) -> None:
        await self.db.execute("DELETE FROM profiles WHERE user_id = ?", (user_id,))
