"""The Twisted side of HTTP: request objects with body limits, dispatch, CORS and the access log."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable
from urllib.parse import parse_qs, unquote

from twisted.internet import defer
from twisted.web import http, resource, server
from twisted.web.http_headers import Headers

from homeserver.http.burst import Burst
from homeserver.http.errors import MatrixError, invalid_param, missing_param, too_large, unrecognized
from homeserver.http.jsonbody import JsonObject, parse_json
from homeserver.http.router import AUTH_FEDERATION, AUTH_NONE, AUTH_OPTIONAL, Router

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
_INTEGER = re.compile(r"-?[0-9]{1,18}")


def encode_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# What each listener resource name (Synapse's names) serves.
RESOURCE_PREFIXES: dict[str, tuple[str, ...]] = {
    # Synapse serves the media repository (/_matrix/media/) on client listeners too.
    "client": ("/_matrix/client/", "/_synapse/admin/", "/_synapse/client/", "/.well-known/matrix/",
               "/_matrix/media/"),
    "federation": ("/_matrix/federation/", "/_matrix/key/", "/.well-known/matrix/server"),
    "keys": ("/_matrix/key/",),
    "media": ("/_matrix/media/", "/_matrix/client/v1/media/", "/_matrix/federation/v1/media/"),
    "openid": ("/_matrix/federation/v1/openid/",),
    "health": ("/health",),
}


class MatrixRequest(server.Request):
    """A request that stops buffering its body once it passes the size limit for its path.

    A body announced larger than the limit is read and thrown away, and the request is then
    answered 413 as usual; if the client asked ``Expect: 100-continue`` it is answered 413 at
    once instead of 100 (RFC 9110, 10.1.1), so the body is never sent.
    """

    json_limit = 1024 * 1024
    upload_limit = 50 * 1024 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Bodies are JSON whatever the Content-Type says: left on, Twisted parses "form" bodies
        # itself and answers one that is not valid multipart with a bare, non-JSON 400.
        self._parsePOSTFormSubmission = False
        self.body_too_large = False
        self._body_len = 0
        self._limit = self.json_limit
        self._received = False
        self.start_time = time.monotonic()
        self.requester: Requester | None = None
        # The server that signed a federation request (routes with AUTH_FEDERATION).
        self.origin: str | None = None

    def gotLength(self, length: int | None) -> None:
        # Called after the headers, before the body; the channel still holds the request path.
        path = getattr(self.channel, "_path", b"") or b""
        if path.startswith(_RAW_BODY_PREFIXES):
            self._limit = self.upload_limit
        if length is not None and length > self._limit:
            self.body_too_large = True
            length = 0  # keep the (empty) buffer in memory; the body is discarded
            expect = self.requestHeaders.getRawHeaders(b"Expect") or []
            if any(v.strip().lower() == b"100-continue" for v in expect):
                # The channel sends "100 Continue" after this returns unless Expect is gone.
                self.requestHeaders.removeHeader(b"Expect")
                # The body may still come; the connection cannot be reused after the answer.
                self.channel.persistent = False
                self.responseHeaders.setRawHeaders(b"Connection", [b"close"])
                self.channel.callLater(0, self._answer_before_body)
        super().gotLength(length)

    def _answer_before_body(self) -> None:
        """Process the request now, as if its body had arrived (it is refused anyway)."""
        channel = self.channel
        if (self._received or self._disconnected or channel is None
                or not channel.requests or channel.requests[-1] is not self):
            return
        channel.allContentReceived()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        self._received = True
        super().requestReceived(command, path, version)

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
        # The server that signed a federation request (routes with AUTH_FEDERATION).
        self.origin: str | None = None

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
        # Plain ASCII digits only: int() would also take " 7", "1_000" and non-Latin digits.
        if not _INTEGER.fullmatch(value):
            raise invalid_param(f"Query parameter '{name}' must be an integer")
        n = int(value)
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
                 *, x_forwarded: bool = False, max_json_depth: int = 100,
                 resources: tuple[str, ...] | None = None,
                 federation_auth: "Callable[[HttpRequest], Awaitable[str]] | None" = None,
                 burst: Burst | None = None) -> None:
        super().__init__()
        # Shared with the notifier: answers first while it wakes waiting requests.
        self.burst = burst or Burst()
        # Checks a request's X-Matrix signature and returns the origin server's name.
        self.federation_auth = federation_auth
        self.router = router
        self.auth = authenticator
        self.ip_limiter = ip_limiter
        self.x_forwarded = x_forwarded
        self.max_json_depth = max_json_depth
        # Path prefixes this listener serves (from its configured resource names); None: all.
        self.prefixes: tuple[str, ...] | None = None
        if resources is not None:
            self.prefixes = tuple(p for name in resources for p in RESOURCE_PREFIXES.get(name, ()))

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
            self._log_access(raw, req, status, 0, note=" (client went away)")
            return
        self._respond(raw, req, status, body)

    async def _dispatch(self, req: HttpRequest) -> tuple[int, Any]:
        raw = req.raw
        try:
            if self.prefixes is not None and not req.path.startswith(self.prefixes):
                raise unrecognized(404, "Unrecognized request")
            route, params = self.router.match(req.method, req.path)
        except MatrixError:
            # Requests for unknown paths count against the per-IP limit too.
            self.ip_limiter.check(req.ip)
            raise
        if route.ip_ratelimit:
            self.ip_limiter.check(req.ip)
        if raw.body_too_large:
            raise too_large()
        if route.auth == AUTH_FEDERATION:
            if self.federation_auth is None:
                raise unrecognized(404, "Federation is not served here")
            req.origin = await self.federation_auth(req)
        elif route.auth != AUTH_NONE:
            token = self.auth.token_from_request(req)
            if token is not None or route.auth != AUTH_OPTIONAL:
                req.requester = await self.auth.authenticate(
                    token, req, allow_guest=route.allow_guest)
                raw.requester = req.requester
        return await route.handler(req, **params)

    def _respond(self, raw: MatrixRequest, req: HttpRequest, status: int, body: Any) -> None:
        if isinstance(body, (bytes, type(None))):
            data = body or b""
        else:
            try:
                data = encode_json(body)
            except (TypeError, ValueError):
                logger.exception("response to %s %s is not JSON-serialisable", req.method, req.path)
                status, data = 500, encode_json({"errcode": "M_UNKNOWN",
                                                 "error": "Internal server error"})
            raw.setHeader(b"Content-Type", b"application/json")
        raw.setResponseCode(status)
        if status not in (204, 304):  # RFC 9110 8.6: no Content-Length on a 204
            raw.setHeader(b"Content-Length", str(len(data)).encode())
        if raw.method != b"HEAD" and data:
            raw.write(data)
        channel = raw.channel
        raw.finish()
        self.burst.hold_reads(channel)
        self._log_access(raw, req, status, len(data))

    def _log_access(self, raw: MatrixRequest, req: HttpRequest, status: int, size: int,
                    note: str = "") -> None:
        if not access_logger.isEnabledFor(logging.INFO):
            return
        elapsed_ms = (time.monotonic() - raw.start_time) * 1000
        if self.burst.active:  # the line is made and written when the burst ends
            self.burst.later(_write_access_line, raw, req, status, size, note, elapsed_ms,
                             time.time())
        else:
            _write_access_line(raw, req, status, size, note, elapsed_ms)


def _write_access_line(raw: MatrixRequest, req: HttpRequest, status: int, size: int, note: str,
                       elapsed_ms: float, created: float | None = None) -> None:
    """One access-log line; ``created``: when the request ended, for a line written later."""
    who = "-"
    if raw.requester is not None:
        who = f"{raw.requester.user_id}/{raw.requester.device_id}"
    elif req.origin is not None:
        who = f"server:{req.origin}"
    uri = redact_uri(raw.uri.decode("ascii", "replace"))
    proto = raw.clientproto.decode("ascii", "replace").rsplit("/", 1)[-1]
    args = (req.ip, who, req.method, uri, proto, status, size, elapsed_ms, req.user_agent, note)
    record = access_logger.makeRecord(access_logger.name, logging.INFO, __file__, 0,
                                      '%s - %s "%s %s HTTP/%s" %d %dB %.1fms "%s"%s', args, None)
    if created is not None:
        record.created = created
        record.msecs = int((created - int(created)) * 1000) + 0.0
    access_logger.handle(record)


# Query parameters whose values are secrets, compared after percent-decoding the name.
_SECRET_PARAMS = {"access_token", "refresh_token", "token", "password"}
_QUERY_PARAM = re.compile(r"([?&;])([^=&;]*)=([^&;]*)")


def redact_uri(uri: str) -> str:
    """The request URI for the access log, with the values of secret query parameters hidden.

    Query tokens are not accepted, but clients still send them; the log must not keep them.
    """
    if "?" not in uri:
        return uri
    path, query = uri.split("?", 1)
    lowered = query.lower()
    if "token" not in lowered and "password" not in lowered and "%" not in query:
        return uri  # no secret parameter can be named here (the common case: /sync)

    def hide(m: re.Match) -> str:
        name = unquote(m.group(2).replace("+", " "), errors="replace").strip().lower()
        return f"{m.group(1)}{m.group(2)}=<redacted>" if name in _SECRET_PARAMS else m.group(0)
    return path + _QUERY_PARAM.sub(hide, "?" + query)


class MatrixChannel(http.HTTPChannel):
    """HTTP/1.x, with each response's status line and headers sent as one piece: Twisted's own
    writeHeaders hands the transport ~40 small pieces, each checked on its own (about a tenth of
    the cost of a small answer, measured on woken /sync requests)."""

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        if not isinstance(headers, Headers):
            return super().writeHeaders(version, code, reason, headers)
        parts = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                parts += (name, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        self.transport.write(b"".join(parts))


class MatrixSite(server.Site):
    """A Site speaking HTTP/1.1 only (Matrix clients and servers use it; Twisted would offer
    HTTP/2 over TLS whenever the h2 package happens to be installed)."""

    protocol = MatrixChannel

    def acceptableProtocols(self) -> list[bytes]:
        return [b"http/1.1"]


def make_site(res: resource.Resource, json_limit: int, upload_limit: int) -> server.Site:
    """A Site whose requests enforce the body limits; Twisted's own access log is off."""
    class _Request(MatrixRequest):
        pass
    _Request.json_limit = json_limit
    _Request.upload_limit = upload_limit
    site = MatrixSite(res)
    site.requestFactory = _Request
    site.log = lambda request: None  # we write our own access log line
    site.displayTracebacks = False
    return site

