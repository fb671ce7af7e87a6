"""The Twisted side of HTTP: request objects with body limits, dispatch, CORS and the access log."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from twisted.internet import defer
from twisted.web import resource, server

from homeserver.http.errors import MatrixError, invalid_param, missing_param
from homeserver.http.jsonbody import JsonObject, parse_json
from homeserver.http.router import AUTH_NONE, AUTH_OPTIONAL, Router

if TYPE_CHECKING:
    from homeserver.accounts.auth import Authenticator, Requester
    from homeserver.http.ratelimit import RateLimiter

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("homeserver.access")

CORS_HEADERS = {
    b"Access-Control-Allow-Origin": b"*",
    b"Access-Control-Allow-Methods": b"GET, HEAD, POST, PUT, DELETE, OPTIONS",
    b"Access-Control-Allow-Headers": b"X-Requested-With, Content-Type, Authorization, Date",
    b"Access-Control-Expose-Headers": b"Synapse-Trace-Id, Server, ETag",
}

_RAW_BODY_PREFIXES = (b"/_matrix/media/",)


def encode_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class MatrixRequest(server.Request):
    """A request that stops buffering its body once it passes the size limit for its path."""

    json_limit = 1024 * 1024
    upload_limit = 50 * 1024 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.body_too_large = False
        self._body_len = 0
        self._limit = self.json_limit
        self.start_time = time.monotonic()
        self.requester: Requester | None = None

    def gotLength(self, length: int | None) -> None:
        path = getattr(self.channel, "_path", b"") or b""
        if path.startswith(_RAW_BODY_PREFIXES):
            self._limit = self.upload_limit
        if length is not None and length > self._limit:
            self.body_too_large = True
            length = 0  # keep the (empty) buffer in memory; the body is discarded
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_too_large:
            return
        self._body_len += len(data)
        if self._body_len > self._limit:
            self.body_too_large = True
            self.content.seek(0)
            self.content.truncate()
            return
        super().handleContentChunk(data)


class HttpRequest:
    """What a handler sees: path parameters are passed separately; this wraps the rest."""

    def __init__(self, raw: MatrixRequest, ip: str, max_depth: int) -> None:
        self.raw = raw
        self.ip = ip
        self.method = raw.method.decode("ascii", "replace")
        self.path = raw.path.decode("ascii", "replace")
        self._max_depth = max_depth
        self._args: dict[str, list[str]] | None = None
        self.requester: Requester | None = None

    @property
    def user_agent(self) -> str:
        ua = self.raw.getHeader(b"User-Agent")
        return ua.decode("utf-8", "replace")[:512] if ua else ""

    def header(self, name: str) -> str | None:
        v = self.raw.getHeader(name.encode("ascii"))
        return v.decode("latin-1") if v is not None else None

    @property
    def args(self) -> dict[str, list[str]]:
        if self._args is None:
            query = self.raw.uri.split(b"?", 1)[1] if b"?" in self.raw.uri else b""
            try:
                self._args = parse_qs(query.decode("ascii"), keep_blank_values=True,
                                      errors="strict")
            except (UnicodeDecodeError, ValueError):
                raise invalid_param("Query string is not valid UTF-8") from None
        return self._args

    def query(self, name: str, default: str | None = None, *, required: bool = False) -> str | None:
        values = self.args.get(name)
        if not values:
            if required:
                raise missing_param(name)
            return default
        return values[0]

    def query_int(self, name: str, default: int | None = None, *, lo: int | None = None,
                  hi: int | None = None) -> int | None:
        value = self.query(name)
        if value is None:
            return default
        try:
            n = int(value)
        except ValueError:
            raise invalid_param(f"Query parameter '{name}' must be an integer") from None
        if lo is not None and n < lo or hi is not None and n > hi:
            raise invalid_param(f"Query parameter '{name}' is out of range")
        return n

    def query_bool(self, name: str, default: bool = False) -> bool:
        value = self.query(name)
        if value is None:
            return default
        if value in ("true", "1"):
            return True
        if value in ("false", "0"):
            return False
        raise invalid_param(f"Query parameter '{name}' must be true or false")

    def body(self) -> bytes:
        self.raw.content.seek(0)
        return self.raw.content.read()

    def json_value(self) -> Any:
        raw = self.body()
        return parse_json(raw, self._max_depth)

    def json(self, *, allow_empty: bool = False) -> JsonObject:
        """The body as a JSON object; an empty body counts as {} only when ``allow_empty``."""
        raw = self.body()
        if allow_empty and not raw.strip():
            return JsonObject({})
        return JsonObject(parse_json(raw, self._max_depth))


class MatrixResource(resource.Resource):
    """One leaf resource that routes every request itself."""

    isLeaf = True

    def __init__(self, router: Router, authenticator: "Authenticator", ip_limiter: "RateLimiter",
                 *, x_forwarded: bool = False, max_json_depth: int = 100) -> None:
        super().__init__()
        self.router = router
        self.auth = authenticator
        self.ip_limiter = ip_limiter
        self.x_forwarded = x_forwarded
        self.max_json_depth = max_json_depth

    def render(self, request: MatrixRequest) -> Any:  # type: ignore[override]
        d = defer.ensureDeferred(self._handle(request))
        d.addErrback(lambda f: logger.error("unhandled failure: %s", f.getTraceback()))
        return server.NOT_DONE_YET

    def _client_ip(self, request: MatrixRequest) -> str:
        if self.x_forwarded:
            fwd = request.getHeader(b"X-Forwarded-For")
            if fwd:
                return fwd.split(b",")[0].strip().decode("ascii", "replace")
        addr = request.getClientAddress()
        return getattr(addr, "host", "-")

    async def _handle(self, raw: MatrixRequest) -> None:
        for k, v in CORS_HEADERS.items():
            raw.setHeader(k, v)
        ip = self._client_ip(raw)
        req = HttpRequest(raw, ip, self.max_json_depth)
        disconnected = []
        raw.notifyFinish().addErrback(lambda _: disconnected.append(True))
        try:
            if raw.method == b"OPTIONS":
                status, body = 204, None
            else:
                status, body = await self._dispatch(req)
        except MatrixError as e:
            status, body = e.status, e.to_json()
            for k, v in e.headers.items():
                raw.setHeader(k.encode(), v.encode())
        except Exception:
            logger.exception("request %s %s failed", req.method, req.path)
            status, body = 500, {"errcode": "M_UNKNOWN", "error": "Internal server error"}
        if disconnected:
            return
        self._respond(raw, req, status, body)

    async def _dispatch(self, req: HttpRequest) -> tuple[int, Any]:
        raw = req.raw
        try:
            route, params = self.router.match(req.method, req.path)
        except UnicodeDecodeError:
            raise invalid_param("Path is not valid UTF-8") from None
        if route.ip_ratelimit:
            self.ip_limiter.check(req.ip)
        if raw.body_too_large:
            raise MatrixError(413, "M_TOO_LARGE", "Request body is too large")
        if route.auth != AUTH_NONE:
            token = self.auth.token_from_request(req)
            if token is not None or route.auth != AUTH_OPTIONAL:
                req.requester = await self.auth.authenticate(
                    token, req, allow_guest=route.allow_guest)
                raw.requester = req.requester
        return await route.handler(req, **params)

    def _respond(self, raw: MatrixRequest, req: HttpRequest, status: int, body: Any) -> None:
        raw.setResponseCode(status)
        if isinstance(body, (bytes, type(None))):
            data = body or b""
        else:
            data = encode_json(body)
            raw.setHeader(b"Content-Type", b"application/json")
        raw.setHeader(b"Content-Length", str(len(data)).encode())
        if raw.method != b"HEAD" and data:
            raw.write(data)
        raw.finish()
        self._log_access(raw, req, status, len(data))

    @staticmethod
    def _log_access(raw: MatrixRequest, req: HttpRequest, status: int, size: int) -> None:
        who = "-"
        if raw.requester is not None:
            who = f"{raw.requester.user_id}/{raw.requester.device_id}"
        uri = raw.uri.decode("ascii", "replace")
        if "access_token=" in uri:
            uri = _redact_token(uri)
        access_logger.info('%s - %s "%s %s HTTP/%s" %d %dB %.1fms "%s"', req.ip, who, req.method,
                           uri, raw.clientproto.decode().rsplit("/", 1)[-1], status, size,
                           (time.monotonic() - raw.start_time) * 1000, req.user_agent)


def _redact_token(uri: str) -> str:
    return re.sub(r"(access_token=)[^&]*", r"\1<redacted>", uri)


def make_site(res: resource.Resource, json_limit: int, upload_limit: int) -> server.Site:
    """A Site whose requests enforce the body limits; Twisted's own access log is off."""
    class _Request(MatrixRequest):
        pass
    _Request.json_limit = json_limit
    _Request.upload_limit = upload_limit
    site = server.Site(res)
    site.requestFactory = _Request
    site.log = lambda request: None  # we write our own access log line
    site.displayTracebacks = False
    return site

