"""The Twisted side, driven in memory: CORS, OPTIONS, HEAD, errors as JSON, body limits
(including Expect: 100-continue), the per-IP limit and the access log."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from homeserver.accounts.auth import Requester
from homeserver.config import RateLimit
from homeserver.http.errors import MatrixError
from homeserver.http.ratelimit import RateLimiter
from homeserver.http.router import AUTH_NONE, Router
from homeserver.http.site import HttpRequest, MatrixResource, make_site, redact_uri

JSON_LIMIT = 64


class FakeAuth:
    """Bearer tokens only; "good" is the one valid token."""

    def token_from_request(self, req: HttpRequest) -> str | None:
        header = req.header("Authorization")
        return header.split(" ", 1)[1] if header else None

    async def authenticate(self, token: str | None, req: HttpRequest, *,
                           allow_guest: bool = False) -> Requester:
        if token is None:
            raise MatrixError(401, "M_MISSING_TOKEN", "Missing access token")
        if token != "good":
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown token")
        return Requester("@alice:test", "DEVICE", "digest", False, False)


async def ok(req: HttpRequest) -> tuple[int, Any]:
    return 200, {"ok": True}


async def echo(req: HttpRequest) -> tuple[int, Any]:
    return 200, {"got": req.json().data}


async def boom(req: HttpRequest) -> tuple[int, Any]:
    raise RuntimeError("secret internal detail")


async def unserialisable(req: HttpRequest) -> tuple[int, Any]:
    return 200, {"x": {1, 2}}


async def whoami(req: HttpRequest) -> tuple[int, Any]:
    assert req.requester is not None
    return 200, {"user_id": req.requester.user_id}


class Server:
    """A site on an in-memory transport; each ``send`` opens a new connection."""

    def __init__(self, ip_limit: RateLimit = RateLimit(1000, 1000)) -> None:
        router = Router()
        router.add("GET", "/ok", ok, auth=AUTH_NONE)
        router.add("POST", "/echo", echo, auth=AUTH_NONE)
        router.add("GET", "/boom", boom, auth=AUTH_NONE)
        router.add("GET", "/unserialisable", unserialisable, auth=AUTH_NONE)
        router.add("GET", "/whoami", whoami)
        self.clock = Clock()
        self.limiter = RateLimiter(ip_limit, clock=self.clock.seconds)
        self.site = make_site(MatrixResource(router, FakeAuth(), self.limiter),  # type: ignore[arg-type]
                              json_limit=JSON_LIMIT, upload_limit=10 * JSON_LIMIT)

    def connect(self) -> tuple[Any, StringTransport]:
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8008))
        channel.callLater = self.clock.callLater
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.7", 5555))
        channel.makeConnection(transport)
        return channel, transport

    def send(self, data: bytes) -> tuple[bytes, StringTransport]:
        channel, transport = self.connect()
        channel.dataReceived(data)
        self.clock.advance(0)
        return transport.value(), transport


def parse(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a byte stream into (status, headers, body) responses (Content-Length framed)."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        n = int(headers.get("content-length", "0")) if status not in (100, 204, 304) else 0
        if status == 100:
            n = 0
        out.append((status, headers, rest[:n]))
        raw = rest[n:]
    return out


def request(method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
            ) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body is not None and "Transfer-Encoding" not in (headers or {}):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def one(server: Server, data: bytes) -> tuple[int, dict[str, str], bytes]:
    raw, _ = server.send(data)
    responses = parse(raw)
    assert len(responses) == 1, raw
    return responses[0]



def assert_cors(headers: dict[str, str]) -> None:
    assert headers["access-control-allow-origin"] == "*"
    methods = {m.strip() for m in headers["access-control-allow-methods"].split(",")}
    assert {"GET", "POST", "PUT", "DELETE", "OPTIONS"} <= methods
    allowed = {h.strip().lower() for h in headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-requested-with"} <= allowed


@pytest.fixture
def server() -> Server:
    return Server()


@pytest.mark.parametrize("path", ["/ok", "/echo", "/nowhere"])
def test_options_preflight_is_204_with_cors_and_no_body(server: Server, path: str) -> None:
    status, headers, body = one(server, request("OPTIONS", path, headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"}))
    assert (status, body) == (204, b"")
    assert_cors(headers)
    assert "content-length" not in headers and "transfer-encoding" not in headers


@pytest.mark.parametrize("method,path,status,errcode", [
    ("GET", "/ok", 200, None),
    ("GET", "/nowhere", 404, "M_UNRECOGNIZED"),
    ("DELETE", "/ok", 405, "M_UNRECOGNIZED"),
    ("GET", "/whoami", 401, "M_MISSING_TOKEN"),
    ("GET", "/boom", 500, "M_UNKNOWN"),
])
def test_every_response_is_json_with_cors(server: Server, method: str, path: str, status: int,
                                          errcode: str | None) -> None:
    got, headers, body = one(server, request(method, path))
    assert got == status
    assert_cors(headers)
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    if errcode:
        assert b'"errcode":"%s"' % errcode.encode() in body


def test_405_names_the_allowed_methods(server: Server) -> None:
    status, headers, _ = one(server, request("POST", "/ok"))
    assert status == 405 and headers["allow"] == "GET, HEAD, OPTIONS"


def test_head_has_the_get_headers_and_no_body(server: Server) -> None:
    _, get_headers, get_body = one(server, request("GET", "/ok"))
    raw, _ = server.send(request("HEAD", "/ok"))
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and rest == b""
    assert f"Content-Length: {len(get_body)}".encode() in head
    status, _, _ = one(server, request("HEAD", "/echo"))
    assert status == 405


def test_handler_crash_is_500_without_details(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    status, _, body = one(server, request("GET", "/boom"))
    assert status == 500 and b"secret internal detail" not in body and b"Traceback" not in body
    assert "secret internal detail" in caplog.text   # ... but the log has it


def test_unserialisable_response_still_answers_500(server: Server) -> None:
    status, _, body = one(server, request("GET", "/unserialisable"))
    assert status == 500 and b"M_UNKNOWN" in body


def test_body_up_to_the_limit_is_accepted_and_one_byte_more_is_413(server: Server) -> None:
    body = b'{"a":"' + b"x" * (JSON_LIMIT - 8) + b'"}'
    assert len(body) == JSON_LIMIT
    status, _, out = one(server, request("POST", "/echo", body))
    assert status == 200 and out.startswith(b'{"got":')
    body = body[:-2] + b'x"}'
    status, _, out = one(server, request("POST", "/echo", body))
    assert (status, out) == (413, b'{"errcode":"M_TOO_LARGE","error":"Request body is too large"}')


def test_oversized_body_is_read_and_the_connection_kept(server: Server) -> None:
    big = b"x" * (JSON_LIMIT * 100)
    raw, transport = server.send(request("POST", "/echo", big) + request("GET", "/ok"))
    assert [r[0] for r in parse(raw)] == [413, 200]
    assert not transport.disconnecting


def test_oversized_chunked_body_is_413(server: Server) -> None:
    chunk = b"x" * JSON_LIMIT
    body = b"%x\r\n%s\r\n" % (len(chunk), chunk) * 3 + b"0\r\n\r\n"
    status, _, out = one(server, request("POST", "/echo", body, {"Transfer-Encoding": "chunked"}))
    assert status == 413 and b"M_TOO_LARGE" in out


def test_announced_oversized_body_with_expect_continue_is_refused_at_once(server: Server) -> None:
    channel, transport = server.connect()
    channel.dataReceived(b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                         b"Content-Length: %d\r\n\r\n" % (JSON_LIMIT + 1))
    server.clock.advance(0)
    raw = transport.value()
    assert b"100 Continue" not in raw
    [(status, headers, body)] = parse(raw)
    assert status == 413 and b"M_TOO_LARGE" in body
    assert headers["connection"] == "close" and transport.disconnecting
    # A client that sends the body anyway changes nothing.
    channel.dataReceived(b"x" * (JSON_LIMIT + 1))
    server.clock.advance(0)
    assert transport.value() == raw


def test_expect_continue_within_the_limit_gets_100_then_the_answer(server: Server) -> None:
    channel, transport = server.connect()
    channel.dataReceived(b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                         b"Content-Length: 8\r\n\r\n")
    server.clock.advance(0)
    assert transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n"
    channel.dataReceived(b'{"a": 1}')
    assert [(s, b) for s, _, b in parse(transport.value())] == [(100, b""), (200, b'{"got":{"a":1}}')]


@pytest.mark.parametrize("ctype", ["multipart/form-data", "multipart/form-data; boundary=x",
                                   "application/x-www-form-urlencoded"])
def test_form_content_types_are_not_parsed_by_twisted(server: Server, ctype: str) -> None:
    # Twisted would parse these itself and answer a bare, non-JSON 400 to a JSON body.
    status, _, body = one(server, request("POST", "/echo", b'{"a": 1}', {"Content-Type": ctype}))
    assert (status, body) == (200, b'{"got":{"a":1}}')
    status, _, body = one(server, request("POST", "/echo", b"--x\r\nbroken", {"Content-Type": ctype}))
    assert status == 400 and b"M_NOT_JSON" in body


def test_per_ip_limit_counts_every_request() -> None:
    server = Server(ip_limit=RateLimit(0.1, 3))
    assert one(server, request("GET", "/ok"))[0] == 200
    assert one(server, request("GET", "/nowhere"))[0] == 404    # unknown paths count too
    assert one(server, request("POST", "/ok"))[0] == 405
    status, headers, body = one(server, request("GET", "/ok"))
    assert status == 429 and b'"errcode":"M_LIMIT_EXCEEDED"' in body
    assert headers["retry-after"] == "10"
    assert b'"retry_after_ms":10000' in body
    assert one(server, request("OPTIONS", "/ok"))[0] == 204     # preflights are not limited
    server.clock.advance(10)
    assert one(server, request("GET", "/ok"))[0] == 200


def test_access_log_has_method_path_status_and_no_token(server: Server,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="homeserver.access")
    one(server, request("GET", "/whoami?access_token=QUERYSECRET&x=1",
                        headers={"Authorization": "Bearer good"}))
    one(server, request("GET", "/whoami", headers={"Authorization": "Bearer HEADERSECRET"}))
    lines = [r.getMessage() for r in caplog.records if r.name == "homeserver.access"]
    assert len(lines) == 2
    assert '"GET /whoami?access_token=<redacted>&x=1 HTTP/1.1" 200' in lines[0]
    assert "@alice:test/DEVICE" in lines[0] and "10.0.0.7" in lines[0]
    assert '"GET /whoami HTTP/1.1" 401' in lines[1]
    assert "SECRET" not in caplog.text and "good" not in caplog.text


@pytest.mark.parametrize("uri,logged", [
    ("/a", "/a"),
    ("/a?x=1", "/a?x=1"),
    ("/a?access_token=abc", "/a?access_token=<redacted>"),
    ("/a?x=1&access_token=abc&y=2", "/a?x=1&access_token=<redacted>&y=2"),
    ("/a?ACCESS_TOKEN=abc", "/a?ACCESS_TOKEN=<redacted>"),
    ("/a?access%5Ftoken=abc", "/a?access%5Ftoken=<redacted>"),
    ("/a?access_token=abc&access_token=def", "/a?access_token=<redacted>&access_token=<redacted>"),
    ("/a?refresh_token=abc;token=def", "/a?refresh_token=<redacted>;token=<redacted>"),
    ("/a?password=hunter2", "/a?password=<redacted>"),
    ("/a?my_access_token=abc", "/a?my_access_token=abc"),
])
def test_redact_uri(uri: str, logged: str) -> None:
    assert redact_uri(uri) == logged


class RawStub:
    """Just what HttpRequest reads of a Twisted request."""

    def __init__(self, uri: bytes, body: bytes = b"") -> None:
        import io
        self.method = b"GET"
        self.uri = uri
        self.path = uri.split(b"?")[0]
        self.content = io.BytesIO(body)

    def getHeader(self, name: bytes) -> bytes | None:
        return None


def http_request(uri: bytes, body: bytes = b"") -> HttpRequest:
    return HttpRequest(RawStub(uri, body), "127.0.0.1", 100)  # type: ignore[arg-type]


def test_query_parameters() -> None:
    req = http_request(b"/p?a=1&a=2&b=&c=%E2%82%AC&d=x+y")
    assert req.query("a") == "1" and req.query("b") == "" and req.query("c") == "\u20ac"
    assert req.query("d") == "x y" and req.query("zz") is None and req.query("zz", "dflt") == "dflt"
    with pytest.raises(MatrixError) as exc:
        req.query("zz", required=True)
    assert (exc.value.status, exc.value.errcode) == (400, "M_MISSING_PARAM")


@pytest.mark.parametrize("query", [b"a=%FF", b"a=%C3", b"a=\xff"])
def test_query_that_is_not_utf8_is_invalid_param(query: bytes) -> None:
    with pytest.raises(MatrixError) as exc:
        http_request(b"/p?" + query).query("a")
    assert (exc.value.status, exc.value.errcode) == (400, "M_INVALID_PARAM")


@pytest.mark.parametrize("value,result", [("0", 0), ("42", 42), ("-3", -3), (None, 7)])
def test_query_int(value: str | None, result: int) -> None:
    uri = b"/p" if value is None else b"/p?n=" + value.encode()
    assert http_request(uri).query_int("n", 7, lo=-5, hi=100) == result


@pytest.mark.parametrize("value", ["", "x", "1.5", "1e3", " 7", "7 ", "1_000", "%D9%A3", "+1",
                                   "101", "-6", "9" * 40])
def test_query_int_rejects(value: str) -> None:
    with pytest.raises(MatrixError) as exc:
        http_request(b"/p?n=" + value.encode()).query_int("n", lo=-5, hi=100)
    assert (exc.value.status, exc.value.errcode) == (400, "M_INVALID_PARAM")


@pytest.mark.parametrize("value,result", [("true", True), ("1", True), ("false", False), ("0", False)])
def test_query_bool(value: str, result: bool) -> None:
    assert http_request(b"/p?f=" + value.encode()).query_bool("f") is result


@pytest.mark.parametrize("value", ["", "yes", "True", "2"])
def test_query_bool_rejects(value: str) -> None:
    with pytest.raises(MatrixError) as exc:
        http_request(b"/p?f=" + value.encode()).query_bool("f")
    assert exc.value.errcode == "M_INVALID_PARAM"


@pytest.mark.parametrize("body,allow_empty,result", [
    (b'{"a": 1}', False, {"a": 1}),
    (b"", True, {}),
    (b" \r\n", True, {}),
])
def test_json_body(body: bytes, allow_empty: bool, result: Any) -> None:
    assert http_request(b"/p", body).json(allow_empty=allow_empty).data == result


@pytest.mark.parametrize("body,allow_empty,errcode", [
    (b"", False, "M_NOT_JSON"),
    (b"null", True, "M_BAD_JSON"),
    (b"[]", True, "M_BAD_JSON"),
    (b"{", True, "M_NOT_JSON"),
])
def test_json_body_errors(body: bytes, allow_empty: bool, errcode: str) -> None:
    with pytest.raises(MatrixError) as exc:
        http_request(b"/p", body).json(allow_empty=allow_empty)
    assert (exc.value.status, exc.value.errcode) == (400, errcode)
