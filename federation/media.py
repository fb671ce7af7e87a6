"""Media over federation, both directions.

Incoming: ``GET /_matrix/federation/v1/media/download/{mediaId}`` and ``/thumbnail/{mediaId}``
serve this server's media to other servers as the spec's multipart/mixed answer (a JSON
metadata part, then the bytes).

Outgoing: FederationMediaDownloader fetches ``mxc://<other server>/<id>`` for the media
repository's cache. It asks the authenticated federation endpoint first and falls back to the
legacy ``/_matrix/media/v3/download/...?allow_remote=false`` when the remote does not know that
endpoint (as Synapse does), follows a ``Location`` part through the SSRF-safe fetcher, and maps
every failure to the error a client gets:

- the remote has no such media (404 from both endpoints): 404 M_NOT_FOUND;
- the remote says the content is not uploaded yet: 504 M_NOT_YET_UPLOADED;
- no answer in time: 504 M_UNKNOWN; any other failure to reach it or a bad answer: 502 M_UNKNOWN;
- larger than the limit (max_upload_size): 502 M_TOO_LARGE;
- a server outside federation_domain_whitelist: 403 M_FORBIDDEN (nothing is sent to it).
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable
from urllib.parse import quote

from federation.client import (TIMEOUT, FederationBadResponse, FederationError,
                               FederationUnreachable)
from homeserver.api.client.media import content_disposition
from homeserver.http.errors import MatrixError, missing_param
from homeserver.http.router import AUTH_FEDERATION, Router
from homeserver.http.site import HttpRequest
from homeserver.media.fetch import FetchError, Fetched, FetchTimeout, TooLarge
from homeserver.media.ids import check_media_path
from homeserver.media.multipart import MultipartError, encode_media, filename_of, parse_media
from homeserver.media.remote import RemoteFile
from homeserver.media.repository import MAX_TIMEOUT_MS, MediaRepository
from homeserver.media.types import check_filename, clean_content_type, is_inline

logger = logging.getLogger(__name__)

V1 = "/_matrix/federation/v1"
# Room for the multipart delimiters and part headers on top of the media itself.
MULTIPART_OVERHEAD = 64 * 1024
# The time the remote may take beyond the timeout_ms it is given to wait for an upload.
REQUEST_MARGIN_MS = 20_000
_THUMBNAIL_NAMES = {"image/jpeg": "thumbnail.jpg", "image/png": "thumbnail.png"}

UrlFetcher = Callable[[str], Awaitable[Fetched]]


def _failed(message: str = "Failed to fetch remote media") -> MatrixError:
    return MatrixError(502, "M_UNKNOWN", message)


def _too_large(max_size: int) -> MatrixError:
    return MatrixError(502, "M_TOO_LARGE", f"Remote media is larger than {max_size} bytes")


def _not_found() -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", "Media not found")


def _endpoint_unknown(e: FederationError) -> bool:
    """Whether an error says the remote does not implement the endpoint (so: try legacy).

    A 404 counts whatever its errcode: servers from before spec 1.11 answer unknown paths with
    404 M_NOT_FOUND as well as M_UNRECOGNIZED, and asking the legacy endpoint costs one request.
    """
    return e.status in (404, 405, 501) or e.errcode == "M_UNRECOGNIZED"


class FederationMediaDownloader:
    """A RemoteMediaSource over the federation client (see the module docstring)."""

    def __init__(self, client: Any, server_name: str, *,
                 domain_whitelist: tuple[str, ...] | None = None,
                 fetch_url: UrlFetcher | None = None) -> None:
        self.client = client
        self.server_name = server_name
        self.domain_whitelist = set(domain_whitelist) if domain_whitelist is not None else None
        self.fetch_url = fetch_url

    async def download(self, origin: str, media_id: str, max_size: int,
                       timeout_ms: int) -> RemoteFile:
        if origin == self.server_name:
            raise _not_found()  # our own media is never fetched over the network
        if self.domain_whitelist is not None and origin not in self.domain_whitelist:
            raise MatrixError(403, "M_FORBIDDEN", f"Federation with {origin} is not allowed")
        timeout_ms = min(max(0, timeout_ms), MAX_TIMEOUT_MS)
        try:
            return await self._federation_endpoint(origin, media_id, max_size, timeout_ms)
        except FederationError as e:
            if not _endpoint_unknown(e):
                raise self._error(origin, e, max_size) from None
            logger.debug("%s has no federation media endpoint (%s); trying the legacy one",
                         origin, e)
        except (FederationUnreachable, FederationBadResponse) as e:
            raise self._error(origin, e, max_size) from None
        try:
            return await self._legacy_endpoint(origin, media_id, max_size, timeout_ms)
        except (FederationError, FederationUnreachable, FederationBadResponse) as e:
            raise self._error(origin, e, max_size) from None

    async def _federation_endpoint(self, origin: str, media_id: str, max_size: int,
                                   timeout_ms: int) -> RemoteFile:
        status, headers, body = await self.client.get_raw(
            origin, f"{V1}/media/download/{quote(media_id, safe='')}",
            {"timeout_ms": timeout_ms}, max_size + MULTIPART_OVERHEAD,
            timeout_ms=timeout_ms + REQUEST_MARGIN_MS)
        try:
            part = parse_media(_first(headers, "content-type"), body)
        except MultipartError as e:
            logger.warning("bad media answer from %s for %s: %s", origin, media_id, e)
            raise _failed("Remote server sent an invalid media answer") from None
        if part.location is not None:
            return await self._follow(origin, part.location, max_size)
        assert part.content is not None
        if len(part.content) > max_size:
            raise _too_large(max_size)
        return _remote_file(part.content_type, part.content_disposition, part.content)

    async def _follow(self, origin: str, location: str, max_size: int) -> RemoteFile:
        """The bytes behind a ``Location`` part, through the SSRF-safe fetcher."""
        if self.fetch_url is None:
            raise _failed("Remote media redirects are not followed")
        try:
            fetched = await self.fetch_url(location)
        except TooLarge:
            raise _too_large(max_size) from None
        except FetchTimeout:
            raise MatrixError(504, "M_UNKNOWN", "Timed out fetching remote media") from None
        except FetchError as e:
            logger.info("fetching %s's media from %s failed: %s", origin, location, e)
            raise _failed() from None
        if len(fetched.body) > max_size:
            raise _too_large(max_size)
        return _remote_file(fetched.content_type, None, fetched.body)

    async def _legacy_endpoint(self, origin: str, media_id: str, max_size: int,
                               timeout_ms: int) -> RemoteFile:
        path = f"/_matrix/media/v3/download/{quote(origin, safe='')}/{quote(media_id, safe='')}"
        status, headers, body = await self.client.get_raw(
            origin, path, {"allow_remote": "false", "timeout_ms": timeout_ms}, max_size,
            timeout_ms=timeout_ms + REQUEST_MARGIN_MS)
        return _remote_file(_first(headers, "content-type"),
                            _first(headers, "content-disposition"), body)

    def _error(self, origin: str, e: Exception, max_size: int) -> MatrixError:
        if isinstance(e, FederationError):
            if e.status == 404:
                return _not_found()
            if e.errcode == "M_NOT_YET_UPLOADED":
                return MatrixError(504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded")
            if e.errcode == "M_TOO_LARGE" or e.status == 413:
                return _too_large(max_size)
            logger.info("%s answered a media download with %s", origin, e)
            return _failed()
        if isinstance(e, FederationBadResponse):  # only raised for answers over the limit
            return _too_large(max_size)
        assert isinstance(e, FederationUnreachable)
        logger.info("cannot fetch media from %s: %s", origin, e)
        if e.kind == TIMEOUT:
            return MatrixError(504, "M_UNKNOWN", f"Timed out fetching media from {origin}")
        return _failed(f"Failed to fetch remote media from {origin}")


def _first(headers: dict[str, list[str]], name: str) -> str | None:
    values = headers.get(name)
    return values[0] if values else None


def _remote_file(content_type: str | None, disposition: str | None, data: bytes) -> RemoteFile:
    name = filename_of(disposition)
    try:
        name = check_filename(name)
    except MatrixError:
        name = None
    return RemoteFile(clean_content_type(content_type), name, data)


class FederationMediaApi:
    """This server's media for other servers, as multipart/mixed."""

    def __init__(self, repo: MediaRepository) -> None:
        self.repo = repo

    def register(self, router: Router) -> None:
        router.add("GET", f"{V1}/media/download/{{mediaId}}", self.download, auth=AUTH_FEDERATION)
        router.add("GET", f"{V1}/media/thumbnail/{{mediaId}}", self.thumbnail,
                   auth=AUTH_FEDERATION)

    def _media_id(self, media_id: str) -> None:
        check_media_path(self.repo.server_name, media_id)

    @staticmethod
    def _answer(req: HttpRequest, content_type: str, body: bytes) -> tuple[int, bytes]:
        req.raw.setHeader(b"Content-Type", content_type.encode("ascii"))
        return 200, body

    async def download(self, req: HttpRequest, mediaId: str) -> tuple[int, Any]:
        self._media_id(mediaId)
        timeout = req.query_int("timeout_ms", lo=0)
        content = await self.repo.get_content(self.repo.server_name, mediaId, timeout)
        media = content.media
        disposition = content_disposition("inline" if is_inline(media.content_type)
                                          else "attachment", media.upload_name)
        ctype, body = encode_media(content.data, media.content_type, disposition)
        return self._answer(req, ctype, body)

    async def thumbnail(self, req: HttpRequest, mediaId: str) -> tuple[int, Any]:
        self._media_id(mediaId)
        width = req.query_int("width", lo=1)
        height = req.query_int("height", lo=1)
        if width is None:
            raise missing_param("width")
        if height is None:
            raise missing_param("height")
        method = req.query("method", "scale")
        if method not in ("crop", "scale"):
            raise MatrixError(400, "M_INVALID_PARAM", "method must be 'crop' or 'scale'")
        req.query_bool("animated")  # no animated thumbnails: the spec allows a static one
        timeout = req.query_int("timeout_ms", lo=0)
        thumb = await self.repo.get_thumbnail(self.repo.server_name, mediaId, width, height,
                                              method, timeout)
        ctype = thumb.thumbnail.content_type
        disposition = content_disposition("inline", _THUMBNAIL_NAMES.get(ctype, "thumbnail"))
        mp_type, body = encode_media(thumb.data, ctype, disposition)
        return self._answer(req, mp_type, body)
