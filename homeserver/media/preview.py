"""URL previews (GET /preview_url): OpenGraph data of a page, its image stored as media.

Off unless url_preview_enabled. Fetching goes through SafeFetcher (IP blacklist on every
resolved address and redirect, size and time limits). Results are cached in memory for an hour
and concurrent requests for one URL share a single fetch.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from twisted.internet import defer, threads
from twisted.python.failure import Failure

from homeserver.clock import Clock
from homeserver.http.errors import MatrixError
from homeserver.media.fetch import (Blocked, FetchError, FetchTimeout, SafeFetcher, TooLarge,
                                    check_preview_url)
from homeserver.media.ids import mxc_uri
from homeserver.media.opengraph import parse_html
from homeserver.media.repository import MediaRepository
from homeserver.media.thumbnails import ImageTooLarge, NotAnImage, image_size
from homeserver.media.types import base_type, clean_content_type

logger = logging.getLogger(__name__)

CACHE_TTL_MS = 3600_000
CACHE_ENTRIES = 1000
MAX_URL_LENGTH = 4096
_HTML = {"text/html", "application/xhtml+xml"}
_ACCEPT = "text/html,application/xhtml+xml;q=0.9,image/*;q=0.8,*/*;q=0.5"


class UrlPreviewer:
    def __init__(self, repo: MediaRepository, fetcher: SafeFetcher, clock: Clock,
                 max_image_pixels: int) -> None:
        self.repo = repo
        self.fetcher = fetcher
        self.clock = clock
        self.max_image_pixels = max_image_pixels
        self._cache: OrderedDict[str, tuple[int, dict[str, Any]]] = OrderedDict()
        self._inflight: dict[str, list[defer.Deferred]] = {}

    async def preview(self, url: str) -> dict[str, Any]:
        if len(url) > MAX_URL_LENGTH:
            raise MatrixError(400, "M_INVALID_PARAM", "URL is too long")
        try:
            check_preview_url(url)
        except FetchError as e:
            raise MatrixError(400, "M_INVALID_PARAM", f"Invalid URL: {e}") from None
        now = self.clock.time_msec()
        hit = self._cache.get(url)
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(url)
            return dict(hit[1])
        mine: defer.Deferred = defer.Deferred()
        waiting = self._inflight.get(url)
        if waiting is not None:
            waiting.append(mine)
        else:
            # Registered before the fetch starts: it may fail before its first await.
            self._inflight[url] = [mine]
            defer.ensureDeferred(self._build(url)).addBoth(self._distribute, url)
        result = await mine
        self._remember(url, result)
        return dict(result)

    def _distribute(self, result: Any, url: str) -> None:
        for d in self._inflight.pop(url, []):
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)

    def _remember(self, url: str, result: dict[str, Any]) -> None:
        self._cache[url] = (self.clock.time_msec() + CACHE_TTL_MS, result)
        self._cache.move_to_end(url)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)

    async def _build(self, url: str) -> dict[str, Any]:
        try:
            page = await self.fetcher.fetch(url, accept=_ACCEPT)
        except Blocked:
            raise MatrixError(403, "M_FORBIDDEN", "This URL may not be previewed") from None
        except TooLarge:
            raise MatrixError(502, "M_TOO_LARGE", "The content is too large to preview") from None
        except FetchTimeout:
            raise MatrixError(504, "M_UNKNOWN", "Timed out fetching the URL") from None
        except FetchError as e:
            raise MatrixError(502, "M_UNKNOWN", f"Could not fetch the URL: {e}") from None
        ctype = base_type(page.content_type)
        if ctype.startswith("image/"):
            return await self._image_preview(page.body, page.content_type) or {}
        if ctype not in _HTML:
            return {}
        og = await threads.deferToThread(parse_html, page.body, page.content_type, page.url)
        image_url = og.pop("og:image", None)
        if image_url:
            try:
                image = await self.fetcher.fetch(image_url, accept="image/*")
            except FetchError as e:
                logger.info("preview of %s: image %s not fetched: %s", url, image_url, e)
            else:
                if base_type(image.content_type).startswith("image/"):
                    og.update(await self._image_preview(image.body, image.content_type) or {})
        return og

    async def _image_preview(self, data: bytes, content_type: str | None) -> dict[str, Any] | None:
        """Store an image as media of this server; its og:image properties, or None."""
        ctype = clean_content_type(content_type)
        try:
            width, height = await threads.deferToThread(image_size, data, self.max_image_pixels)
        except (NotAnImage, ImageTooLarge):
            return None
        try:
            media_id = await self.repo.upload(None, data, ctype, None)
        except MatrixError as e:  # e.g. larger than max_upload_size
            logger.info("preview image not stored: %s", e.message)
            return None
        return {"og:image": mxc_uri(self.repo.server_name, media_id), "og:image:type": ctype,
                "og:image:width": width, "og:image:height": height, "matrix:image:size": len(data)}

