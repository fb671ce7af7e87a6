"""The content repository: uploads under /_matrix/media/, authenticated downloads, thumbnails,
config and URL previews under /_matrix/client/v1/media/, and the legacy unauthenticated
/_matrix/media/v3/download and /thumbnail.

Served bytes carry the type given at upload, nosniff, a sandboxing Content-Security-Policy,
and Content-Disposition: attachment for every type the spec does not list as safe inline, so
an uploaded HTML or SVG file can never run as a page of this server's origin.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from homeserver.http.errors import MatrixError, missing_param
from homeserver.http.router import AUTH_NONE, Router
from homeserver.http.site import HttpRequest
from homeserver.media.ids import check_media_path, mxc_uri
from homeserver.media.preview import UrlPreviewer
from homeserver.media.repository import MediaRepository
from homeserver.media.types import DEFAULT_CONTENT_TYPE, check_filename, clean_content_type, is_inline

# The spec's recommendation ("Security considerations" of the content repository), plus media
# from this origin so audio and video opened directly still play.
CONTENT_SECURITY_POLICY = ("sandbox; default-src 'none'; script-src 'none'; "
                           "plugin-types application/pdf; style-src 'unsafe-inline'; "
                           "media-src 'self'; object-src 'self';")
_THUMBNAIL_NAMES = {"image/jpeg": "thumbnail.jpg", "image/png": "thumbnail.png"}
_SAFE_FILENAME = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                     " !#$%&'()*+,-./:;<=>?@[]^_`{|}~")


def content_disposition(disposition: str, filename: str | None) -> str:
    """RFC 6266: a quoted name when it is plain ASCII, else the RFC 8187 ``filename*`` form."""
    if not filename:
        return disposition
    if all(c in _SAFE_FILENAME for c in filename):
        return f'{disposition}; filename="{filename}"'
    return f"{disposition}; filename*=utf-8''{quote(filename, safe='')}"


def _serve(req: HttpRequest, data: bytes, content_type: str | None, disposition: str,
           filename: str | None) -> tuple[int, bytes]:
    raw = req.raw
    raw.setHeader(b"Content-Type", (content_type or DEFAULT_CONTENT_TYPE).encode("latin-1"))
    raw.setHeader(b"Content-Disposition", content_disposition(disposition, filename).encode("ascii"))
    raw.setHeader(b"Content-Security-Policy", CONTENT_SECURITY_POLICY.encode("ascii"))
    raw.setHeader(b"X-Content-Type-Options", b"nosniff")
    # Web clients on other origins may embed the media (it is already authorised to them).
    raw.setHeader(b"Cross-Origin-Resource-Policy", b"cross-origin")
    # Content never changes under one id; "private" keeps shared caches out of it.
    raw.setHeader(b"Cache-Control", b"private, max-age=86400")
    return 200, data


class MediaApi:
    def __init__(self, repo: MediaRepository, max_upload_size: int,
                 previewer: UrlPreviewer | None) -> None:
        self.repo = repo
        self.max_upload_size = max_upload_size
        self.previewer = previewer

    def register(self, router: Router) -> None:
        # Uploads live under /_matrix/media/ only, where the server accepts bodies up to
        # max_upload_size (homeserver/http/site.py).
        for v in ("v3", "r0"):
            router.add("POST", f"/_matrix/media/{v}/upload", self.upload)
            router.add("PUT", f"/_matrix/media/{v}/upload/{{serverName}}/{{mediaId}}", self.upload_to)
        router.add("POST", "/_matrix/media/v1/create", self.create)

        base = "/_matrix/client/v1/media"
        router.add("GET", f"{base}/config", self.config, allow_guest=True)
        router.add("GET", f"{base}/download/{{serverName}}/{{mediaId}}", self.download,
                   allow_guest=True)
        router.add("GET", f"{base}/download/{{serverName}}/{{mediaId}}/{{fileName}}",
                   self.download, allow_guest=True)
        router.add("GET", f"{base}/thumbnail/{{serverName}}/{{mediaId}}", self.thumbnail,
                   allow_guest=True)
        if self.previewer is not None:  # like Synapse, no route at all when previews are off
            router.add("GET", f"{base}/preview_url", self.preview_url)

        # Deprecated since spec 1.11. Downloads stay unauthenticated but refuse media uploaded
        # while enable_authenticated_media was on.
        for v in ("v3", "r0"):
            legacy = f"/_matrix/media/{v}"
            router.add("GET", f"{legacy}/download/{{serverName}}/{{mediaId}}",
                       self.legacy_download, auth=AUTH_NONE)
            router.add("GET", f"{legacy}/download/{{serverName}}/{{mediaId}}/{{fileName}}",
                       self.legacy_download, auth=AUTH_NONE)
            router.add("GET", f"{legacy}/thumbnail/{{serverName}}/{{mediaId}}",
                       self.legacy_thumbnail, auth=AUTH_NONE)
            router.add("GET", f"{legacy}/config", self.config)
            if self.previewer is not None:
                router.add("GET", f"{legacy}/preview_url", self.preview_url)

    # --- uploads --------------------------------------------------------------------------------

    @staticmethod
    def _upload_params(req: HttpRequest) -> tuple[str, str | None]:
        return (clean_content_type(req.header("Content-Type")),
                check_filename(req.query("filename")))

    @staticmethod
    def _body(req: HttpRequest) -> Any:
        # The body as the file Twisted buffered it in (memory or a temporary file), so a large
        # upload is copied to the media store in a thread without another copy in memory.
        content = req.raw.content
        content.seek(0)
        return content

    async def upload(self, req: HttpRequest) -> tuple[int, Any]:
        assert req.requester is not None
        content_type, filename = self._upload_params(req)
        media_id = await self.repo.upload(req.requester.user_id, self._body(req), content_type,
                                          filename)
        return 200, {"content_uri": mxc_uri(self.repo.server_name, media_id)}

    async def create(self, req: HttpRequest) -> tuple[int, Any]:
        assert req.requester is not None
        media_id, expires = await self.repo.create(req.requester.user_id)
        return 200, {"content_uri": mxc_uri(self.repo.server_name, media_id),
                     "unused_expires_at": expires}

    async def upload_to(self, req: HttpRequest, serverName: str, mediaId: str) -> tuple[int, Any]:
        assert req.requester is not None
        check_media_path(serverName, mediaId)
        content_type, filename = self._upload_params(req)
        await self.repo.upload_to(req.requester.user_id, serverName, mediaId, self._body(req),
                                  content_type, filename)
        return 200, {}

    # --- downloads ------------------------------------------------------------------------------

    async def download(self, req: HttpRequest, serverName: str, mediaId: str,
                       fileName: str | None = None, *, legacy: bool = False,
                       allow_remote: bool = True) -> tuple[int, Any]:
        check_media_path(serverName, mediaId)
        timeout = req.query_int("timeout_ms", lo=0)
        content = await self.repo.get_content(serverName, mediaId, timeout, legacy=legacy,
                                              allow_remote=allow_remote)
        media = content.media
        disposition = "inline" if is_inline(media.content_type) else "attachment"
        return _serve(req, content.data, media.content_type, disposition,
                      fileName if fileName is not None else media.upload_name)

    async def legacy_download(self, req: HttpRequest, serverName: str, mediaId: str,
                              fileName: str | None = None) -> tuple[int, Any]:
        allow_remote = req.query_bool("allow_remote", True)
        return await self.download(req, serverName, mediaId, fileName, legacy=True,
                                   allow_remote=allow_remote)

    async def thumbnail(self, req: HttpRequest, serverName: str, mediaId: str, *,
                        legacy: bool = False, allow_remote: bool = True) -> tuple[int, Any]:
        check_media_path(serverName, mediaId)
        width = req.query_int("width", lo=1)
        height = req.query_int("height", lo=1)
        if width is None:
            raise missing_param("width")
        if height is None:
            raise missing_param("height")
        method = req.query("method", "scale")
        if method not in ("crop", "scale"):
            raise MatrixError(400, "M_INVALID_PARAM", "method must be 'crop' or 'scale'")
        # Animated thumbnails are not made: the spec lets a server answer as if animated=false.
        req.query_bool("animated")
        timeout = req.query_int("timeout_ms", lo=0)
        thumb = await self.repo.get_thumbnail(serverName, mediaId, width, height, method, timeout,
                                              legacy=legacy, allow_remote=allow_remote)
        ctype = thumb.thumbnail.content_type
        return _serve(req, thumb.data, ctype, "inline", _THUMBNAIL_NAMES.get(ctype, "thumbnail"))

    async def legacy_thumbnail(self, req: HttpRequest, serverName: str, mediaId: str
                               ) -> tuple[int, Any]:
        allow_remote = req.query_bool("allow_remote", True)
        return await self.thumbnail(req, serverName, mediaId, legacy=True,
                                    allow_remote=allow_remote)

    # --- the rest -------------------------------------------------------------------------------

    async def config(self, req: HttpRequest) -> tuple[int, Any]:
        return 200, {"m.upload.size": self.max_upload_size}

    async def preview_url(self, req: HttpRequest) -> tuple[int, Any]:
        assert self.previewer is not None
        url = req.query("url", required=True)
        assert url is not None
        req.query_int("ts", lo=0)  # any version will do: we answer with the latest
        return 200, await self.previewer.preview(url)
