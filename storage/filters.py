"""Filters uploaded by users, numbered per user; an identical re-upload gets the same id back."""

from __future__ import annotations

from storage.database import Database, Transaction

# Concurrent uploads by one user may pick the same next id; the loser tries the next one.
_MAX_ID_ATTEMPTS = 10


class FilterStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_filter(self, user_id: str, filter_json: str) -> int:
        """The id of ``filter_json`` for this user: the existing one if stored already.

        ``filter_json`` should be canonical (sorted keys, no whitespace) so that equal filters
        compare equal as text.
        """
        def fn(txn: Transaction) -> int:
            row = txn.query_one("SELECT MIN(filter_id) FROM user_filters WHERE user_id = ?"
                                " AND filter_json = ?", (user_id, filter_json))
            if row and row[0] is not None:
                return int(row[0])
            for _ in range(_MAX_ID_ATTEMPTS):
                row = txn.query_one("SELECT MAX(filter_id) FROM user_filters WHERE user_id = ?",
                                    (user_id,))
                filter_id = 0 if not row or row[0] is None else int(row[0]) + 1
                txn.execute("INSERT INTO user_filters (user_id, filter_id, filter_json)"
                            " VALUES (?, ?, ?) ON CONFLICT (user_id, filter_id) DO NOTHING",
                            (user_id, filter_id, filter_json))
                if txn.rowcount == 1:
                    return filter_id
            raise RuntimeError(f"could not allocate a filter id for {user_id}")
        return await self.db.run("add_filter", fn)

    async def get_filter(self, user_id: str, filter_id: int) -> str | None:
        """The stored JSON text of one of this user's filters, or None."""
        rows = await self.db.query("SELECT filter_json FROM user_filters WHERE user_id = ?"
                                   " AND filter_id = ?", (user_id, filter_id))
        return rows[0][0] if rows else None
