"""Server-side room key backups: versions per user and the encrypted session keys in each.

A user's current version is their highest version not deleted; keys are written only to it.
The version check, the comparison with the stored key and the write happen in one transaction,
and the writes of one user are serialised, so two uploads cannot interleave between them.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from twisted.internet import defer

from storage.database import Database, Transaction


@dataclass(frozen=True)
class BackupVersion:
    version: int
    algorithm: str
    auth_data: dict[str, Any]
    etag: int
    count: int


@dataclass(frozen=True)
class BackupKey:
    """One session's backed-up key; session_data is the client's JSON text, never parsed here."""
    first_message_index: int
    forwarded_count: int
    is_verified: bool
    session_data: str


# (room_id, session_id, key)
KeyRow = tuple[str, str, BackupKey]
# Given the stored key and an uploaded one: whether the upload replaces it.
Replaces = Callable[[BackupKey, BackupKey], bool]


class NoBackup(Exception):
    """The version does not exist (or was deleted), or the user has no backup at all."""


class NotCurrentVersion(Exception):
    """Keys may only be written to the current version, which is ``current``."""

    def __init__(self, current: int) -> None:
        super().__init__(f"current backup version is {current}")
        self.current = current


def _dump(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _current(txn: Transaction, user_id: str) -> int | None:
    row = txn.query_one("SELECT MAX(version) FROM room_key_backup_versions"
                        " WHERE user_id = ? AND deleted = ?", (user_id, False))
    return row[0] if row and row[0] is not None else None


def _count(txn: Transaction, user_id: str, version: int) -> int:
    row = txn.query_one("SELECT COUNT(*) FROM room_key_backup_keys WHERE user_id = ?"
                        " AND version = ?", (user_id, version))
    return int(row[0]) if row else 0


def _live_version(txn: Transaction, user_id: str, version: int) -> tuple | None:
    return txn.query_one("SELECT algorithm, auth_data_json, etag FROM room_key_backup_versions"
                         " WHERE user_id = ? AND version = ? AND deleted = ?",
                         (user_id, version, False))


def _key_filter(room_id: str | None, session_id: str | None) -> tuple[str, list[Any]]:
    sql, args = "", []
    if room_id is not None:
        sql += " AND room_id = ?"
        args.append(room_id)
        if session_id is not None:
            sql += " AND session_id = ?"
            args.append(session_id)
    return sql, args


class RoomKeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # user id -> [lock, holders and waiters]; an entry goes when nobody needs it.
        self._locks: dict[str, list[Any]] = {}

    @contextlib.asynccontextmanager
    async def _user_lock(self, user_id: str) -> AsyncIterator[None]:
        entry = self._locks.setdefault(user_id, [defer.DeferredLock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._locks[user_id]

    # --- versions ------------------------------------------------------------------------------

    async def create_version(self, user_id: str, algorithm: str, auth_data: dict[str, Any]) -> int:
        """A new version, one above every version the user ever had; it becomes the current."""
        def fn(txn: Transaction) -> int:
            row = txn.query_one("SELECT MAX(version) FROM room_key_backup_versions"
                                " WHERE user_id = ?", (user_id,))
            version = (row[0] or 0) + 1 if row else 1
            txn.execute("INSERT INTO room_key_backup_versions (user_id, version, algorithm,"
                        " auth_data_json, etag, deleted) VALUES (?, ?, ?, ?, ?, ?)",
                        (user_id, version, algorithm, _dump(auth_data), 0, False))
            return version

        async with self._user_lock(user_id):
            return await self.db.run("room_keys_create_version", fn)

    async def get_version(self, user_id: str, version: int | None) -> BackupVersion | None:
        """A live version (None: the current one) with its etag and key count."""
        def fn(txn: Transaction) -> BackupVersion | None:
            v = _current(txn, user_id) if version is None else version
            if v is None:
                return None
            row = _live_version(txn, user_id, v)
            if row is None:
                return None
            return BackupVersion(v, row[0], json.loads(row[1]), int(row[2]), _count(txn, user_id, v))
        return await self.db.run("room_keys_get_version", fn)

    async def current_version(self, user_id: str) -> int | None:
        return await self.db.run("room_keys_current_version", _current, user_id)

    async def update_auth_data(self, user_id: str, version: int, auth_data: dict[str, Any]) -> bool:
        """Replace a live version's auth_data; False if there is no such version."""
        async with self._user_lock(user_id):
            n = await self.db.execute("UPDATE room_key_backup_versions SET auth_data_json = ?"
                                      " WHERE user_id = ? AND version = ? AND deleted = ?",
                                      (_dump(auth_data), user_id, version, False))
        return n > 0

    async def delete_version(self, user_id: str, version: int) -> bool:
        """Delete a version and its keys. True if it exists or existed (deleting twice succeeds);
        False if the user never had it."""
        def fn(txn: Transaction) -> bool:
            row = txn.query_one("SELECT deleted FROM room_key_backup_versions WHERE user_id = ?"
                                " AND version = ?", (user_id, version))
            if row is None:
                return False
            txn.execute("DELETE FROM room_key_backup_keys WHERE user_id = ? AND version = ?",
                        (user_id, version))
            # The version's row stays as a tombstone so its number is never handed out again.
            txn.execute("UPDATE room_key_backup_versions SET deleted = ?, auth_data_json = ?"
                        " WHERE user_id = ? AND version = ?", (True, "{}", user_id, version))
            return True

        async with self._user_lock(user_id):
            return await self.db.run("room_keys_delete_version", fn)

    # --- keys ----------------------------------------------------------------------------------

    async def put_keys(self, user_id: str, version: int, keys: list[KeyRow],
                       replaces: Replaces) -> tuple[int, int]:
        """Store each key unless the stored one is better (``replaces`` decides); returns the
        version's (etag, count). The etag moves when at least one key was written.

        Raises NoBackup if the user has no live version at all, NotCurrentVersion if ``version``
        is not the current one.
        """
        def fn(txn: Transaction) -> tuple[int, int]:
            current = _current(txn, user_id)
            if current is None:
                raise NoBackup()
            if current != version:
                raise NotCurrentVersion(current)
            changed = False
            for room_id, session_id, new in keys:
                row = txn.query_one("SELECT first_message_index, forwarded_count, is_verified,"
                                    " session_data FROM room_key_backup_keys WHERE user_id = ?"
                                    " AND version = ? AND room_id = ? AND session_id = ?",
                                    (user_id, version, room_id, session_id))
                args = (new.first_message_index, new.forwarded_count, new.is_verified,
                        new.session_data, user_id, version, room_id, session_id)
                if row is None:
                    txn.execute("INSERT INTO room_key_backup_keys (first_message_index,"
                                " forwarded_count, is_verified, session_data, user_id, version,"
                                " room_id, session_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", args)
                    changed = True
                elif replaces(BackupKey(int(row[0]), int(row[1]), bool(row[2]), row[3]), new):
                    txn.execute("UPDATE room_key_backup_keys SET first_message_index = ?,"
                                " forwarded_count = ?, is_verified = ?, session_data = ?"
                                " WHERE user_id = ? AND version = ? AND room_id = ?"
                                " AND session_id = ?", args)
                    changed = True
            return self._bump_etag(txn, user_id, version, changed), _count(txn, user_id, version)

        async with self._user_lock(user_id):
            return await self.db.run("room_keys_put", fn)

    async def get_keys(self, user_id: str, version: int, room_id: str | None = None,
                       session_id: str | None = None) -> list[KeyRow] | None:
        """The keys of a live version (all, one room's, or one session's); None if the version
        does not exist."""
        where, extra = _key_filter(room_id, session_id)

        def fn(txn: Transaction) -> list[KeyRow] | None:
            if _live_version(txn, user_id, version) is None:
                return None
            rows = txn.query("SELECT room_id, session_id, first_message_index, forwarded_count,"
                             " is_verified, session_data FROM room_key_backup_keys"
                             " WHERE user_id = ? AND version = ?" + where
                             + " ORDER BY room_id, session_id", [user_id, version, *extra])
            return [(r[0], r[1], BackupKey(int(r[2]), int(r[3]), bool(r[4]), r[5])) for r in rows]
        return await self.db.run("room_keys_get", fn)

    async def delete_keys(self, user_id: str, version: int, room_id: str | None = None,
                          session_id: str | None = None) -> tuple[int, int] | None:
        """Delete keys of a live version (all, one room's, or one session's); returns the
        version's (etag, count), or None if the version does not exist."""
        where, extra = _key_filter(room_id, session_id)

        def fn(txn: Transaction) -> tuple[int, int] | None:
            if _live_version(txn, user_id, version) is None:
                return None
            txn.execute("DELETE FROM room_key_backup_keys WHERE user_id = ? AND version = ?"
                        + where, [user_id, version, *extra])
            changed = txn.rowcount > 0
            return self._bump_etag(txn, user_id, version, changed), _count(txn, user_id, version)

        async with self._user_lock(user_id):
            return await self.db.run("room_keys_delete", fn)

    @staticmethod
    def _bump_etag(txn: Transaction, user_id: str, version: int, changed: bool) -> int:
        if changed:
            txn.execute("UPDATE room_key_backup_versions SET etag = etag + 1 WHERE user_id = ?"
                        " AND version = ?", (user_id, version))
        row = txn.query_one("SELECT etag FROM room_key_backup_versions WHERE user_id = ?"
                            " AND version = ?", (user_id, version))
        assert row is not None
        return int(row[0])
