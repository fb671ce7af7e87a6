"""Room tags per user, kept as the m.tag room account data ({"tags": {tag: content}}).

The m.tag account data is the only copy of a user's tags: every tag change rewrites it at a new
stream position of the account data stream, which is how /sync learns of it.
"""

from __future__ import annotations

from typing import Any

from storage.account_data import AccountDataStore

TAG_TYPE = "m.tag"


def tags_of(content: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The tags in an m.tag content; tolerant of content a client wrote through the generic
    account data API, where entries that are not objects are ignored."""
    tags = (content or {}).get("tags")
    if not isinstance(tags, dict):
        return {}
    return {tag: value for tag, value in tags.items() if isinstance(value, dict)}


class TagStore:
    def __init__(self, account_data: AccountDataStore) -> None:
        self.account_data = account_data

    async def get_tags(self, user_id: str, room_id: str) -> dict[str, Any]:
        content = await self.account_data.get_room(user_id, room_id, TAG_TYPE)
        return dict(sorted(tags_of(content).items()))

    async def set_tag(self, user_id: str, room_id: str, tag: str, content: dict[str, Any]) -> int:
        """Add or replace one tag; returns the account data stream position of the change."""
        def update(old: dict[str, Any] | None) -> dict[str, Any]:
            return {"tags": {**tags_of(old), tag: content}}
        pos = await self.account_data.update_room(user_id, room_id, TAG_TYPE, update)
        assert pos is not None
        return pos

    async def delete_tag(self, user_id: str, room_id: str, tag: str) -> int | None:
        """Remove one tag; returns the stream position, or None if the room had no such tag."""
        def update(old: dict[str, Any] | None) -> dict[str, Any] | None:
            tags = tags_of(old)
            if tag not in tags:
                return None
            del tags[tag]
            return {"tags": tags}
        return await self.account_data.update_room(user_id, room_id, TAG_TYPE, update)
