"""The media repository's rows: what each mxc:// id holds, its thumbnails, and who uploaded it.

The bytes live in files named by their SHA-256 (homeserver/media/files.py); these tables say
which rows reference which file, so a file can be deleted once nothing references it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from storage.database import Database, Transaction
from storage.engines import IntegrityError

_COLUMNS = ("origin, media_id, user_id, content_type, upload_name, media_length, sha256,"
            " created_ts, unused_expires_at, last_access_ts, authenticated, quarantined_by")

# Columns GET /_synapse/admin/v1/users/{userId}/media may sort by (Synapse's names).
ORDER_COLUMNS = {"media_id", "upload_name", "created_ts", "last_access_ts", "media_length",
                 "media_type", "quarantined_by"}


@dataclass(frozen=True)
class MediaRow:
    origin: str
    media_id: str
    user_id: str | None
    content_type: str | None
    upload_name: str | None
    media_length: int | None
    sha256: str | None  # None while a created id waits for its content
    created_ts: int
    unused_expires_at: int | None
    last_access_ts: int
    authenticated: bool
    quarantined_by: str | None

    @property
    def uploaded(self) -> bool:
        return self.sha256 is not None


@dataclass(frozen=True)
class ThumbnailRow:
    width: int
    height: int
    method: str
    content_type: str
    media_length: int
    sha256: str


def _row(r: Sequence) -> MediaRow:
    return MediaRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], bool(r[10]), r[11])


# What complete_upload found.
UPLOAD_DONE = "done"
UPLOAD_UNKNOWN = "unknown"        # no such id, or it expired
UPLOAD_NOT_YOURS = "not_yours"    # created by another user
UPLOAD_EXISTS = "exists"          # content already uploaded


class MediaStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert_media(self, row: MediaRow) -> None:
        """A new row; IntegrityError if the id exists (ids are random, so that is a bug)."""
        await self.db.execute(
            f"INSERT INTO media ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row.origin, row.media_id, row.user_id, row.content_type, row.upload_name,
             row.media_length, row.sha256, row.created_ts, row.unused_expires_at,
             row.last_access_ts, row.authenticated, row.quarantined_by))

    async def create_pending(self, row: MediaRow, now: int, max_pending: int) -> bool:
        """Insert an id without content unless the user already has ``max_pending`` of them."""
        def fn(txn: Transaction) -> bool:
            n = txn.query_one("SELECT COUNT(*) FROM media WHERE user_id = ? AND sha256 IS NULL"
                              " AND unused_expires_at > ?", (row.user_id, now))
            if n is not None and n[0] >= max_pending:
                return False
            txn.execute(
                f"INSERT INTO media ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row.origin, row.media_id, row.user_id, None, None, None, None, row.created_ts,
                 row.unused_expires_at, row.last_access_ts, row.authenticated, None))
            return True
        return await self.db.run("media.create_pending", fn)

    async def complete_upload(self, origin: str, media_id: str, user_id: str,
                              content_type: str, upload_name: str | None, length: int,
                              sha256: str, now: int) -> str:
        """Give a created id its content, once: one of the UPLOAD_* results."""
        def fn(txn: Transaction) -> str:
            r = txn.query_one("SELECT user_id, sha256, unused_expires_at FROM media"
                              " WHERE origin = ? AND media_id = ?", (origin, media_id))
            if r is None:
                return UPLOAD_UNKNOWN
            if r[1] is not None:
                return UPLOAD_EXISTS
            if r[0] != user_id:
                return UPLOAD_NOT_YOURS
            if r[2] is not None and r[2] <= now:
                return UPLOAD_UNKNOWN
            # "sha256 IS NULL" again: a concurrent PUT may have won since the SELECT.
            txn.execute("UPDATE media SET content_type = ?, upload_name = ?, media_length = ?,"
                        " sha256 = ?, unused_expires_at = NULL, last_access_ts = ?"
                        " WHERE origin = ? AND media_id = ? AND sha256 IS NULL",
                        (content_type, upload_name, length, sha256, now, origin, media_id))
            return UPLOAD_DONE if txn.rowcount == 1 else UPLOAD_EXISTS
        return await self.db.run("media.complete_upload", fn)

    async def get_media(self, origin: str, media_id: str) -> MediaRow | None:
        rows = await self.db.query(f"SELECT {_COLUMNS} FROM media WHERE origin = ? AND media_id = ?",
                                   (origin, media_id))
        return _row(rows[0]) if rows else None

    async def touch(self, origin: str, media_id: str, now: int) -> None:
        await self.db.execute("UPDATE media SET last_access_ts = ? WHERE origin = ? AND media_id = ?"
                              " AND last_access_ts < ?", (now, origin, media_id, now))

    async def uploaded_bytes_since(self, user_id: str, since_ts: int) -> int:
        rows = await self.db.query("SELECT COALESCE(SUM(media_length), 0) FROM media"
                                   " WHERE user_id = ? AND created_ts > ?", (user_id, since_ts))
        return int(rows[0][0])

    async def set_quarantined(self, origin: str, media_id: str, by: str | None) -> bool:
        """Mark (or, with None, unmark) one media; False if there is no such media."""
        n = await self.db.execute("UPDATE media SET quarantined_by = ? WHERE origin = ? AND media_id = ?",
                                  (by, origin, media_id))
        return n > 0

    # --- thumbnails ---------------------------------------------------------------------------

    async def get_thumbnail(self, origin: str, media_id: str, width: int, height: int,
                            method: str) -> ThumbnailRow | None:
        rows = await self.db.query(
            "SELECT width, height, method, content_type, media_length, sha256 FROM media_thumbnails"
            " WHERE origin = ? AND media_id = ? AND width = ? AND height = ? AND method = ?",
            (origin, media_id, width, height, method))
        return ThumbnailRow(*rows[0]) if rows else None

    async def add_thumbnail(self, origin: str, media_id: str, thumb: ThumbnailRow, now: int) -> bool:
        """Record a thumbnail; False if its media is gone or the thumbnail is already there."""
        def fn(txn: Transaction) -> bool:
            if txn.query_one("SELECT 1 FROM media WHERE origin = ? AND media_id = ?",
                             (origin, media_id)) is None:
                return False
            txn.execute(
                "INSERT INTO media_thumbnails (origin, media_id, width, height, method, content_type,"
                " media_length, sha256, created_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (origin, media_id, thumb.width, thumb.height, thumb.method, thumb.content_type,
                 thumb.media_length, thumb.sha256, now))
            return txn.rowcount == 1
        try:
            return await self.db.run("media.add_thumbnail", fn)
        except IntegrityError:
            return False

    # --- deletion ------------------------------------------------------------------------------

    async def delete_media(self, keys: Iterable[tuple[str, str]]) -> tuple[list[tuple[str, str]], set[str]]:
        """Delete media rows and their thumbnails in one transaction.

        Returns the keys that existed and the file hashes they referenced; the caller deletes
        each file that nothing references any more (``is_referenced``).
        """
        keys = list(keys)

        def fn(txn: Transaction) -> tuple[list[tuple[str, str]], set[str]]:
            deleted: list[tuple[str, str]] = []
            hashes: set[str] = set()
            for origin, media_id in keys:
                r = txn.query_one("SELECT sha256 FROM media WHERE origin = ? AND media_id = ?",
                                  (origin, media_id))
                if r is None:
                    continue
                deleted.append((origin, media_id))
                if r[0] is not None:
                    hashes.add(r[0])
                for (h,) in txn.query("SELECT sha256 FROM media_thumbnails"
                                      " WHERE origin = ? AND media_id = ?", (origin, media_id)):
                    hashes.add(h)
                txn.execute("DELETE FROM media_thumbnails WHERE origin = ? AND media_id = ?",
                            (origin, media_id))
                txn.execute("DELETE FROM media WHERE origin = ? AND media_id = ?", (origin, media_id))
            return deleted, hashes
        return await self.db.run("media.delete", fn)

    async def is_referenced(self, sha256: str) -> bool:
        rows = await self.db.query(
            "SELECT 1 FROM media WHERE sha256 = ? UNION ALL"
            " SELECT 1 FROM media_thumbnails WHERE sha256 = ? LIMIT 1", (sha256, sha256))
        return bool(rows)

    # --- listings for jobs and admins ------------------------------------------------------------

    async def user_media_keys(self, user_id: str) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in await self.db.query(
            "SELECT origin, media_id FROM media WHERE user_id = ?", (user_id,))]

    async def user_media(self, user_id: str, order_by: str, ascending: bool, limit: int,
                         offset: int) -> tuple[list[MediaRow], int]:
        """One page of a user's media (uploaded or waiting), and how many there are in all."""
        column = "content_type" if order_by == "media_type" else order_by
        if order_by not in ORDER_COLUMNS:
            raise ValueError(f"cannot order by {order_by!r}")
        direction = "ASC" if ascending else "DESC"

        def fn(txn: Transaction) -> tuple[list[MediaRow], int]:
            # NULLs (no name yet, no content yet) last on both engines, whatever the direction.
            rows = txn.query(f"SELECT {_COLUMNS} FROM media WHERE user_id = ? ORDER BY"
                             f" {column} IS NULL, {column} {direction}, media_id {direction}"
                             " LIMIT ? OFFSET ?",
                             (user_id, limit, offset))
            total = txn.query_one("SELECT COUNT(*) FROM media WHERE user_id = ?", (user_id,))
            return [_row(r) for r in rows], int(total[0]) if total else 0
        return await self.db.run("media.user_media", fn)

    async def unused_since(self, local_origin: str, local: bool, before_ts: int,
                           limit: int) -> list[tuple[str, str]]:
        """Uploaded, unquarantined media of this server (or of others) last read before ``before_ts``."""
        where = "origin = ?" if local else "origin <> ?"
        return [(r[0], r[1]) for r in await self.db.query(
            f"SELECT origin, media_id FROM media WHERE {where} AND sha256 IS NOT NULL"
            " AND quarantined_by IS NULL AND last_access_ts < ? LIMIT ?",
            (local_origin, before_ts, limit))]

    async def expired_pending(self, now: int, limit: int) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in await self.db.query(
            "SELECT origin, media_id FROM media WHERE sha256 IS NULL AND unused_expires_at <= ?"
            " LIMIT ?", (now, limit))]
