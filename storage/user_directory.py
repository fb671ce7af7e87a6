"""The user directory's tables (schema 0007) and the query for whom a user may find.

``user_directory_rooms`` marks rooms whose members anyone may find (join rule public or
history world_readable); ``user_directory`` remembers the profile each user last joined a
room with, for users who have no local profile. Both are written by a persist hook inside the
transaction that stores the event. Who shares a room with whom is read from
``current_membership`` (storage/events.py), local profiles from ``profiles``, deactivation
from ``users``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from storage.database import Database, Transaction


@dataclass(frozen=True)
class DirectoryEntry:
    user_id: str
    display_name: str | None
    avatar_url: str | None


def _profile_value(value_json: str | None) -> str | None:
    if value_json is None:
        return None
    value = json.loads(value_json)
    return value if isinstance(value, str) else None


class UserDirectoryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- writing (inside an event's transaction) -----------------------------------------------

    def is_current_state_txn(self, txn: Transaction, room_id: str, etype: str, state_key: str,
                             event_id: str) -> bool:
        return txn.query_one("SELECT 1 FROM current_state WHERE room_id = ? AND type = ?"
                             " AND state_key = ? AND event_id = ?",
                             (room_id, etype, state_key, event_id)) is not None

    def set_public_join_txn(self, txn: Transaction, room_id: str, public: bool) -> None:
        txn.execute("INSERT INTO user_directory_rooms (room_id, public_join) VALUES (?, ?)"
                    " ON CONFLICT (room_id) DO UPDATE SET public_join = excluded.public_join",
                    (room_id, public))

    def set_world_readable_txn(self, txn: Transaction, room_id: str, world_readable: bool) -> None:
        txn.execute("INSERT INTO user_directory_rooms (room_id, world_readable) VALUES (?, ?)"
                    " ON CONFLICT (room_id) DO UPDATE SET world_readable = excluded.world_readable",
                    (room_id, world_readable))

    def set_room_profile_txn(self, txn: Transaction, user_id: str, display_name: str | None,
                             avatar_url: str | None, stream_ordering: int) -> None:
        """Remember the profile of a join, unless a later join is already remembered."""
        txn.execute("INSERT INTO user_directory (user_id, display_name, avatar_url, stream_ordering)"
                    " VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (user_id) DO UPDATE SET display_name = excluded.display_name,"
                    " avatar_url = excluded.avatar_url, stream_ordering = excluded.stream_ordering"
                    " WHERE user_directory.stream_ordering < excluded.stream_ordering",
                    (user_id, display_name, avatar_url, stream_ordering))

    # --- reading -------------------------------------------------------------------------------

    async def visible_users(self, user_id: str) -> list[DirectoryEntry]:
        """Every user ``user_id`` may find, with the profile to show, deactivated users left out.

        Those are the users joined to a room ``user_id`` is joined to, or to a room that is
        published in the room directory, has a public join rule or world_readable history.
        Local users show their global profile; others the profile of their latest join.
        """
        rows = await self.db.query(
            "SELECT c.user_id, u.user_id IS NOT NULL, pn.value_json, pa.value_json,"
            " d.display_name, d.avatar_url"
            " FROM (SELECT DISTINCT m.user_id FROM current_membership m"
            "       WHERE m.membership = 'join' AND m.room_id IN ("
            "         SELECT room_id FROM current_membership WHERE user_id = ? AND membership = 'join'"
            "         UNION SELECT room_id FROM user_directory_rooms"
            "               WHERE public_join = TRUE OR world_readable = TRUE"
            "         UNION SELECT room_id FROM rooms WHERE is_public = TRUE)) c"
            " LEFT JOIN users u ON u.user_id = c.user_id"
            " LEFT JOIN profiles pn ON pn.user_id = c.user_id AND pn.field = 'displayname'"
            " LEFT JOIN profiles pa ON pa.user_id = c.user_id AND pa.field = 'avatar_url'"
            " LEFT JOIN user_directory d ON d.user_id = c.user_id"
            " WHERE u.deactivated IS NULL OR u.deactivated = FALSE",
            (user_id,))
        out = []
        for uid, local, name_json, avatar_json, room_name, room_avatar in rows:
            if local:
                out.append(DirectoryEntry(uid, _profile_value(name_json), _profile_value(avatar_json)))
            else:
                out.append(DirectoryEntry(uid, room_name, room_avatar))
        return out
