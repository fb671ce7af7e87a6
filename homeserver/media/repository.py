"""The media repository: uploads, asynchronous uploads, downloads, thumbnails and deletion.

Files are content-addressed (files.py) and rows say who references them (storage/media.py).
Every step that makes a file referenced (commit, then insert a row) and every step that may
delete it (delete rows, then unlink if unreferenced) runs under a lock on the file's hash, so
an upload of the same bytes can never lose its file to a concurrent deletion.

Media of other servers is fetched once through ``remote`` (a RemoteMediaSource, the
federation downloader wired in server.py) and cached: the bytes in the same content-addressed
store, a row in ``media`` under the remote origin (no uploader), so later downloads, thumbnails
(made here from the cached original, like local ones), quarantine and the remote_media_lifetime
retention treat it like any other row. Concurrent requests for one uncached media share a
single download.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Awaitable, BinaryIO, Callable

from twisted.internet import defer, threads

from homeserver.clock import Clock
from homeserver.config import MediaConfig, ThumbnailSize
from homeserver.http.errors import MatrixError, not_found, too_large
from homeserver.media.files import ContentFiles, TempFile
from homeserver.media.ids import new_media_id
from homeserver.media.locks import KeyedLock
from homeserver.media.remote import RemoteMediaSource
from homeserver.media.thumbnails import (ImageTooLarge, NotAnImage, Thumbnail, can_thumbnail,
                                         choose_size, make_thumbnails)
from storage.media import (UPLOAD_DONE, UPLOAD_EXISTS, UPLOAD_NOT_YOURS, UPLOAD_UNKNOWN,
                           MediaRow, MediaStore, ThumbnailRow)
from storage.engines import IntegrityError

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_MS = 20_000  # the spec's default for timeout_ms
MAX_TIMEOUT_MS = 60_000
_PURGE_BATCH = 500
_THUMBNAIL_THREADS = 2  # Pillow work at once; the rest queue


@dataclass(frozen=True)
class Content:
    """What a download serves."""
    media: MediaRow
    data: bytes


@dataclass(frozen=True)
class ThumbnailContent:
    thumbnail: ThumbnailRow
    data: bytes


def not_yet_uploaded() -> MatrixError:
    return MatrixError(504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded")


def cannot_thumbnail() -> MatrixError:
    return MatrixError(400, "M_UNKNOWN", "Cannot generate thumbnails for the requested content")


class MediaRepository:
    def __init__(self, store: MediaStore, files: ContentFiles, clock: Clock, server_name: str,
                 config: MediaConfig, max_upload_size: int) -> None:
        self.store = store
        self.files = files
        self.clock = clock
        self.server_name = server_name
        self.config = config
        self.max_upload_size = max_upload_size
        self._hash_locks = KeyedLock()
        self._thumb_locks = KeyedLock()
        self._fetch_locks = KeyedLock()
        # Fetches media of other servers; None: remote media is not available (404).
        self.remote: RemoteMediaSource | None = None
        self._thumb_slots = defer.DeferredSemaphore(_THUMBNAIL_THREADS)
        self._waiters: dict[tuple[str, str], list[defer.Deferred]] = {}
        self._background: set[defer.Deferred] = set()
        # last_access_ts is rewritten at most this often per media: no write per download, yet
        # fine-grained enough for the shortest retention lifetime.
        lifetimes = [t for t in (config.local_media_lifetime_ms, config.remote_media_lifetime_ms) if t]
        self._touch_every_ms = min([60_000] + [t // 10 for t in lifetimes])

    # --- uploads -------------------------------------------------------------------------------

    async def upload(self, user_id: str | None, source: BinaryIO | bytes, content_type: str,
                     upload_name: str | None) -> str:
        """Store new content under a fresh media id of this server; returns the id."""
        temp = await self._receive(user_id, source)
        now = self.clock.time_msec()
        media_id = new_media_id()
        row = MediaRow(self.server_name, media_id, user_id, content_type, upload_name,
                       temp.length, temp.sha256, now, None, now,
                       self.config.enable_authenticated_media, None)

        async def record() -> bool:
            await self.store.insert_media(row)
            return True
        await self._commit(temp, record)
        self._after_upload(row)
        return media_id

    async def create(self, user_id: str) -> tuple[str, int]:
        """A media id whose content comes later (POST /create): (id, unused_expires_at)."""
        now = self.clock.time_msec()
        expires = now + self.config.unused_expiration_time_ms
        media_id = new_media_id()
        row = MediaRow(self.server_name, media_id, user_id, None, None, None, None, now, expires,
                       now, self.config.enable_authenticated_media, None)
        if not await self.store.create_pending(row, now, self.config.max_pending_media_uploads):
            err = MatrixError(429, "M_LIMIT_EXCEEDED", "Too many pending media uploads",
                              retry_after_ms=60_000)
            err.headers["Retry-After"] = "60"
            raise err
        return media_id, expires

    async def upload_to(self, user_id: str, origin: str, media_id: str,
                        source: BinaryIO | bytes, content_type: str,
                        upload_name: str | None) -> None:
        """The content for an id made by ``create`` (PUT /upload/{serverName}/{mediaId})."""
        if origin != self.server_name:
            raise not_found("Unknown media id")
        row = await self.store.get_media(origin, media_id)
        # Cheap checks first, so a refused upload does not write a file.
        self._check_pending(row, user_id)
        temp = await self._receive(user_id, source)
        now = self.clock.time_msec()
        outcome: list[str] = []

        async def record() -> bool:
            outcome.append(await self.store.complete_upload(
                origin, media_id, user_id, content_type, upload_name, temp.length, temp.sha256, now))
            return outcome[0] == UPLOAD_DONE
        await self._commit(temp, record)
        if outcome[0] != UPLOAD_DONE:
            # Lost a race with another PUT, an expiry or a deletion since the check above.
            self._check_pending(await self.store.get_media(origin, media_id), user_id)
            raise _upload_error(outcome[0])
        self._wake(origin, media_id)
        done = await self.store.get_media(origin, media_id)
        if done is not None:
            self._after_upload(done)

    def _check_pending(self, row: MediaRow | None, user_id: str) -> None:
        if row is None:
            raise _upload_error(UPLOAD_UNKNOWN)
        if row.uploaded:
            raise _upload_error(UPLOAD_EXISTS)
        if row.user_id != user_id:
            raise _upload_error(UPLOAD_NOT_YOURS)
        if row.unused_expires_at is not None and row.unused_expires_at <= self.clock.time_msec():
            raise _upload_error(UPLOAD_UNKNOWN)

    async def _receive(self, user_id: str | None, source: BinaryIO | bytes) -> TempFile:
        """Write the upload to a temporary file, then enforce the size limit and the quota."""
        temp = await self.files.write_temp(source)
        try:
            if temp.length > self.max_upload_size:
                raise too_large(f"Cannot upload files larger than {self.max_upload_size} bytes")
            if user_id is not None:
                await self._check_quota(user_id, temp.length)
        except BaseException:
            await self.files.discard(temp)
            raise
        return temp

    async def _check_quota(self, user_id: str, length: int) -> None:
        # Two concurrent uploads may both pass; the quota is a guard, not an exact ledger.
        now = self.clock.time_msec()
        for limit in self.config.upload_limits:
            used = await self.store.uploaded_bytes_since(user_id, now - limit.time_period_ms)
            if used + length > limit.max_size:
                raise MatrixError(403, "M_FORBIDDEN", "Media upload limit exceeded")

    async def _commit(self, temp: TempFile, record: Callable[[], Awaitable[bool]]) -> None:
        """Put ``temp`` at its address and run ``record`` (which references it) under its lock.

        If ``record`` fails or returns False, the file is deleted again unless something else
        references it.
        """
        async with self._hash_locks(temp.sha256):
            await self.files.commit(temp)
            ok = False
            try:
                ok = await record()
            finally:
                if not ok:
                    await self._drop_if_unreferenced(temp.sha256)

    async def _drop_if_unreferenced(self, sha256: str) -> None:
        """Delete a file nothing references; the caller holds the hash's lock."""
        if not await self.store.is_referenced(sha256):
            await self.files.remove(sha256)

    def _after_upload(self, row: MediaRow) -> None:
        """Pre-generate the configured thumbnails of an image, off the request."""
        if not can_thumbnail(row.content_type):
            return
        d = defer.ensureDeferred(self._pregenerate(row))
        self._background.add(d)
        d.addBoth(lambda r: (self._background.discard(d), r)[1])
        d.addErrback(lambda f: logger.error("thumbnailing %s failed: %s", row.media_id,
                                            f.getTraceback()))

    async def wait_background(self) -> None:
        """Wait for background thumbnailing (shutdown, tests)."""
        while self._background:
            await defer.DeferredList(list(self._background), consumeErrors=True)

    # --- downloads -------------------------------------------------------------------------------

    async def get_content(self, origin: str, media_id: str, timeout_ms: int | None = None, *,
                          legacy: bool = False, allow_remote: bool = True) -> Content:
        """The content of a media id, waiting up to ``timeout_ms`` for a pending upload.

        ``legacy``: for the unauthenticated endpoints, which refuse media uploaded (or fetched)
        while authenticated media was on. ``allow_remote``: False serves remote media only
        from the cache.
        """
        row = await self._readable(origin, media_id, timeout_ms, legacy, allow_remote)
        assert row.sha256 is not None
        try:
            data = await self.files.read(row.sha256)
        except FileNotFoundError:
            raise not_found("Media not found") from None  # deleted since the row was read
        await self._touch(row)
        return Content(row, data)

    async def _readable(self, origin: str, media_id: str, timeout_ms: int | None,
                        legacy: bool, allow_remote: bool = True) -> MediaRow:
        if origin != self.server_name:
            row = await self._cached_remote(origin, media_id, timeout_ms, legacy, allow_remote)
        else:
            row = await self._wait_uploaded(origin, media_id, timeout_ms)
        if row.quarantined_by is not None:
            raise not_found("Media not found")
        if legacy and row.authenticated:
            raise not_found("Media not found")  # spec 1.11: frozen for unauthenticated access
        return row

    async def _wait_uploaded(self, origin: str, media_id: str, timeout_ms: int | None) -> MediaRow:
        timeout = DEFAULT_TIMEOUT_MS if timeout_ms is None else min(max(0, timeout_ms), MAX_TIMEOUT_MS)
        deadline = self.clock.time_msec() + timeout
        key = (origin, media_id)
        while True:
            # Registered before the read, so an upload finishing in between still wakes us.
            woken: defer.Deferred = defer.Deferred()
            self._waiters.setdefault(key, []).append(woken)
            try:
                row = await self.store.get_media(origin, media_id)
                now = self.clock.time_msec()
                if row is None or (not row.uploaded and row.unused_expires_at is not None
                                   and row.unused_expires_at <= now):
                    raise not_found("Media not found")
                if row.uploaded:
                    return row
                if now >= deadline:
                    raise not_yet_uploaded()
                timer = self.clock.call_later((deadline - now) / 1000,
                                              lambda: woken.called or woken.callback(None))
                try:
                    await woken
                finally:
                    if timer.active():
                        timer.cancel()
            finally:
                waiting = self._waiters.get(key, [])
                if woken in waiting:
                    waiting.remove(woken)
                if not waiting:
                    self._waiters.pop(key, None)

    async def _cached_remote(self, origin: str, media_id: str, timeout_ms: int | None,
                             legacy: bool, allow_remote: bool) -> MediaRow:
        """The row of a remote media, downloaded from its origin first if not cached."""
        row = await self.store.get_media(origin, media_id)
        if row is not None and row.uploaded:
            return row
        if not allow_remote or self.remote is None:
            raise not_found("Media not found")
        if legacy and self.config.enable_authenticated_media:
            # What we would fetch now is authenticated media, which legacy requests never get.
            raise not_found("Media not found")
        async with self._fetch_locks((origin, media_id)):
            # Whoever held the lock before us may have cached it.
            row = await self.store.get_media(origin, media_id)
            if row is not None and row.uploaded:
                return row
            timeout = DEFAULT_TIMEOUT_MS if timeout_ms is None else timeout_ms
            fetched = await self.remote.download(origin, media_id, self.max_upload_size, timeout)
            return await self._cache_remote(origin, media_id, fetched.content_type,
                                            fetched.upload_name, fetched.data)

    async def _cache_remote(self, origin: str, media_id: str, content_type: str,
                            upload_name: str | None, data: bytes) -> MediaRow:
        if len(data) > self.max_upload_size:
            raise MatrixError(502, "M_TOO_LARGE",
                              f"Remote media is larger than {self.max_upload_size} bytes")
        temp = await self.files.write_temp(data)
        now = self.clock.time_msec()
        row = MediaRow(origin, media_id, None, content_type, upload_name, temp.length,
                       temp.sha256, now, None, now, self.config.enable_authenticated_media, None)

        async def record() -> bool:
            try:
                await self.store.insert_media(row)
            except IntegrityError:
                return False  # a row appeared meanwhile (an admin, another process)
            return True
        await self._commit(temp, record)
        stored = await self.store.get_media(origin, media_id)
        if stored is None or not stored.uploaded:
            raise MatrixError(502, "M_UNKNOWN", "Failed to store remote media")
        logger.info("cached %s bytes of mxc://%s/%s", stored.media_length, origin, media_id)
        self._after_upload(stored)
        return stored

    def _wake(self, origin: str, media_id: str) -> None:
        for d in self._waiters.pop((origin, media_id), []):
            if not d.called:
                d.callback(None)

    async def _touch(self, row: MediaRow) -> None:
        now = self.clock.time_msec()
        if now - row.last_access_ts >= self._touch_every_ms:
            await self.store.touch(row.origin, row.media_id, now)

    # --- thumbnails -----------------------------------------------------------------------------

    async def get_thumbnail(self, origin: str, media_id: str, width: int, height: int, method: str,
                            timeout_ms: int | None = None, *, legacy: bool = False,
                            allow_remote: bool = True) -> ThumbnailContent:
        """The configured thumbnail that best fits ``width`` x ``height``, made if missing.

        Thumbnails of remote media are made here from the cached original, so they come in
        this server's configured sizes and are stored, purged and deleted with it.
        """
        row = await self._readable(origin, media_id, timeout_ms, legacy, allow_remote)
        if not can_thumbnail(row.content_type):
            raise cannot_thumbnail()
        size = choose_size(self.config.thumbnail_sizes, width, height, method)
        thumb = await self.store.get_thumbnail(origin, media_id, size.width, size.height, size.method)
        if thumb is None:
            thumb = await self._generate(row, size)
        try:
            data = await self.files.read(thumb.sha256)
        except FileNotFoundError:
            raise not_found("Media not found") from None
        await self._touch(row)
        return ThumbnailContent(thumb, data)

    async def _generate(self, row: MediaRow, size: ThumbnailSize) -> ThumbnailRow:
        async with self._thumb_locks((row.origin, row.media_id)):
            # Another request (or the upload's pre-generation) may have made it meanwhile.
            thumb = await self.store.get_thumbnail(row.origin, row.media_id, size.width,
                                                   size.height, size.method)
            if thumb is not None:
                return thumb
            try:
                made = await self._render(row, [size])
            except NotAnImage:
                raise cannot_thumbnail() from None
            except ImageTooLarge:
                raise MatrixError(413, "M_TOO_LARGE", "Content is too large to thumbnail") from None
            return await self._save_thumbnail(row, made[0])

    async def _pregenerate(self, row: MediaRow) -> None:
        async with self._thumb_locks((row.origin, row.media_id)):
            missing = []
            for size in dict.fromkeys(self.config.thumbnail_sizes):
                if await self.store.get_thumbnail(row.origin, row.media_id, size.width,
                                                  size.height, size.method) is None:
                    missing.append(size)
            if not missing:
                return
            try:
                made = await self._render(row, missing)
            except (NotAnImage, ImageTooLarge, FileNotFoundError) as e:
                logger.info("no thumbnails for %s: %s", row.media_id, e)
                return
            for thumb in made:
                await self._save_thumbnail(row, thumb)

    async def _render(self, row: MediaRow, sizes: list[ThumbnailSize]) -> list[Thumbnail]:
        assert row.sha256 is not None
        data = await self.files.read(row.sha256)
        max_pixels = self.config.max_image_pixels
        return await self._thumb_slots.run(threads.deferToThread, make_thumbnails, data, sizes,
                                           max_pixels)

    async def _save_thumbnail(self, row: MediaRow, thumb: Thumbnail) -> ThumbnailRow:
        temp = await self.files.write_temp(thumb.data)
        out = ThumbnailRow(thumb.size.width, thumb.size.height, thumb.size.method,
                           thumb.content_type, temp.length, temp.sha256)

        async def record() -> bool:
            return await self.store.add_thumbnail(row.origin, row.media_id, out,
                                                  self.clock.time_msec())
        await self._commit(temp, record)
        return out

    # --- admin, erasure and retention --------------------------------------------------------

    async def get_media_info(self, origin: str, media_id: str) -> MediaRow | None:
        return await self.store.get_media(origin, media_id)

    async def user_media(self, user_id: str, order_by: str, ascending: bool, limit: int,
                         offset: int) -> tuple[list[MediaRow], int]:
        """A page of what ``user_id`` uploaded (order_by: a storage.media.ORDER_COLUMNS name)."""
        return await self.store.user_media(user_id, order_by, ascending, limit, offset)

    async def quarantine(self, origin: str, media_id: str, by: str | None) -> bool:
        """Stop serving a media (``by``: the admin), or serve it again with None."""
        return await self.store.set_quarantined(origin, media_id, by)

    async def delete(self, keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Delete media rows, their thumbnails, and every file left unreferenced."""
        deleted, hashes = await self.store.delete_media(keys)
        for sha256 in sorted(hashes):
            async with self._hash_locks(sha256):
                await self._drop_if_unreferenced(sha256)
        for origin, media_id in deleted:
            self._wake(origin, media_id)  # waiting downloads now find nothing: 404
        return deleted

    async def delete_user_media(self, user_id: str) -> list[str]:
        """Everything ``user_id`` uploaded (erasure on deactivation); returns the media ids."""
        deleted = await self.delete(await self.store.user_media_keys(user_id))
        if deleted:
            logger.info("deleted %d media of %s", len(deleted), user_id)
        return [media_id for _, media_id in deleted]

    async def purge_expired(self) -> None:
        """The retention job: expired pending ids, then media unread for its lifetime."""
        now = self.clock.time_msec()
        while keys := await self.store.expired_pending(now, _PURGE_BATCH):
            await self.delete(keys)
        for local, lifetime in ((True, self.config.local_media_lifetime_ms),
                                (False, self.config.remote_media_lifetime_ms)):
            if not lifetime:
                continue
            total = 0
            while keys := await self.store.unused_since(self.server_name, local, now - lifetime,
                                                        _PURGE_BATCH):
                total += len(await self.delete(keys))
            if total:
                logger.info("retention: deleted %d %s media", total, "local" if local else "remote")
        await self.files.clean_temp()

    def purge_interval_s(self) -> float:
        """How often purge_expired should run: often enough for the shortest lifetime."""
        periods = [self.config.unused_expiration_time_ms, self.config.local_media_lifetime_ms,
                   self.config.remote_media_lifetime_ms]
        shortest = min(p for p in periods if p)
        return min(3600.0, max(1.0, shortest / 2000))


def _upload_error(outcome: str) -> MatrixError:
    if outcome == UPLOAD_EXISTS:
        return MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
    if outcome == UPLOAD_NOT_YOURS:
        return MatrixError(403, "M_FORBIDDEN", "This media id was created by another user")
    return not_found("Unknown media id")

