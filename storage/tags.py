"""Room tags per user (m.tag)."""

from __future__ import annotations

import json
from typing import Any

from storage.database import Database


class TagStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_tags(self, user_id: str, room_id: str) -> dict[str, Any]:
        rows = await self.db.query("SELECT tag, content_json FROM room_tags WHERE user_id = ?"
                                   " AND room_id = ? ORDER BY tag", (user_id, room_id))
        return {tag: json.loads(content) for tag, content in rows}

    async def set_tag(self, user_id: str, room_id: str, tag: str, content: dict[str, Any]) -> None:
        await self.db.execute(
            "INSERT INTO room_tags (user_id, room_id, tag, content_json) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (user_id, room_id, tag) DO UPDATE SET content_json = excluded.content_json",
            (user_id, room_id, tag, json.dumps(content)))

    async def delete_tag(self, user_id: str, room_id: str, tag: str) -> None:
        await self.db.execute("DELETE FROM room_tags WHERE user_id = ? AND room_id = ? AND tag = ?",
                              (user_id, room_id, tag))
