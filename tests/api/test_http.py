"""The HTTP layer against real servers on both engines: routing errors, CORS, HEAD, access
tokens, body limits, JSON depth, rate limits and the access log."""

from __future__ import annotations

import json
import socket
import time
import uuid
from typing import Any, Callable

import pytest
import requests

from tests.harness import Client, ServerProcess

MakeServer = Callable[..., ServerProcess]
FAST = {"per_second": 1000, "burst_count": 1000}


def name() -> str:
    return "u" + uuid.uuid4().hex[:10]


def err(r: requests.Response) -> tuple[int, str]:
    return r.status_code, r.json().get("errcode")


def login_body(user: str, password: str = "correct horse battery", **extra: Any) -> dict[str, Any]:
    return {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
            "password": password, **extra}


def xff_server(make_server: MakeServer, overrides: dict[str, Any]) -> ServerProcess:
    """A server behind a (pretend) reverse proxy, so each test can speak from its own IPs."""
    srv = make_server(overrides, start=False)
    srv.config["listeners"][0]["x_forwarded"] = True
    return srv.start()


def from_ip(ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip}


def raw_exchange(srv: ServerProcess, data: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes on a fresh connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


# --- routing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("method,path", [
    ("GET", "/_matrix/client/v3/nope"),
    ("POST", "/_matrix/client/v3/nope"),
    ("GET", "/nope"),
    ("GET", "/"),
    ("GET", "/_matrix/client/v3/account/whoami/extra"),
    ("GET", "/_matrix/client/v3/account/whoami/"),
    ("GET", "/_matrix/client/v3/devices/A/B"),
    ("GET", "/_matrix/client/v9/account/whoami"),
    ("PUT", "/_synapse/admin/v1/nope"),
])
@pytest.mark.parametrize("with_token", [False, True])
def test_unknown_endpoint_is_404_unrecognized(user: Client, method: str, path: str,
                                              with_token: bool) -> None:
    r = user.request(method, path, token=user.token if with_token else None)
    assert err(r) == (404, "M_UNRECOGNIZED")


@pytest.mark.parametrize("method,path,allow", [
    ("DELETE", "login", {"GET", "POST"}),
    ("PUT", "login", {"GET", "POST"}),
    ("GET", "logout", {"POST"}),
    ("POST", "account/whoami", {"GET"}),
    ("PUT", "register", {"POST"}),
    ("POST", "devices/ABC", {"GET", "PUT", "DELETE"}),
    ("GET", "delete_devices", {"POST"}),
    ("PATCH", "capabilities", {"GET"}),
    ("POST", "/_matrix/client/versions", {"GET"}),
    ("DELETE", "/_synapse/admin/v1/register", {"GET", "POST"}),
    ("HEAD", "logout/all", {"POST"}),
])
def test_known_path_wrong_method_is_405_unrecognized(user: Client, method: str, path: str,
                                                     allow: set[str]) -> None:
    r = user.request(method, path)
    assert r.status_code == 405
    if method != "HEAD":
        assert r.json()["errcode"] == "M_UNRECOGNIZED"
    allowed = {m.strip() for m in r.headers["Allow"].split(",")}
    assert allow <= allowed and method not in allowed


# --- CORS -------------------------------------------------------------------------------------

def assert_cors(r: requests.Response) -> None:
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    methods = {m.strip() for m in r.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST", "PUT", "DELETE", "OPTIONS"} <= methods
    headers = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "x-requested-with"} <= headers


@pytest.mark.parametrize("method,path,status", [
    ("GET", "/_matrix/client/versions", 200),
    ("GET", "/.well-known/matrix/client", 200),
    ("GET", "account/whoami", 200),
    ("GET", "/_matrix/client/v3/nope", 404),
    ("DELETE", "login", 405),
    ("POST", "login", 400),
])
def test_cors_headers_on_normal_responses(user: Client, method: str, path: str, status: int) -> None:
    r = user.request(method, path, headers={"Origin": "https://app.example"})
    assert r.status_code == status
    assert_cors(r)


@pytest.mark.parametrize("path", ["login", "account/whoami", "devices/ABC", "/_matrix/client/v3/nope",
                                  "/.well-known/matrix/client"])
def test_cors_preflight_is_204(client: Client, path: str) -> None:
    r = client.request("OPTIONS", path, token=None, headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type"})
    assert r.status_code == 204 and r.content == b""
    assert_cors(r)


# --- access tokens ----------------------------------------------------------------------------

def test_access_token_in_query_string_is_not_accepted(user: Client) -> None:
    r = user.get("account/whoami", token=None, params={"access_token": user.token})
    assert err(r) == (401, "M_MISSING_TOKEN")
    r = user.get("devices", token=None, params={"access_token": user.token})
    assert err(r) == (401, "M_MISSING_TOKEN")
    # The header is what counts, whatever the query says.
    r = user.get("account/whoami", params={"access_token": "nonsense"})
    assert r.status_code == 200 and r.json()["user_id"] == user.user_id


def test_bearer_header_is_accepted_case_insensitively(user: Client) -> None:
    for scheme in ("Bearer", "bearer", "BEARER"):
        r = user.get("account/whoami", token=None, headers={"Authorization": f"{scheme} {user.token}"})
        assert r.status_code == 200 and r.json()["user_id"] == user.user_id


@pytest.mark.parametrize("header", [
    "Basic dXNlcjpwYXNz",
    "Bearer",
    "Bearer   ",
    "Token {token}",
    "Bearer{token}",
    "{token}",
    "",
])
def test_malformed_authorization_header_is_401(user: Client, header: str) -> None:
    r = user.get("account/whoami", token=None,
                 headers={"Authorization": header.format(token=user.token)})
    assert err(r) == (401, "M_MISSING_TOKEN")


@pytest.mark.parametrize("token", ["hat_unknown", "x" * 2000, "a b", "'; DROP TABLE users; --",
                                   "%00", "\u00e9"])
def test_unknown_token_is_401_unknown_token(client: Client, token: str) -> None:
    r = client.get("account/whoami", token=None,
                   headers={"Authorization": b"Bearer " + token.encode("utf-8")})  # type: ignore[dict-item]
    assert err(r) == (401, "M_UNKNOWN_TOKEN")
    assert r.json().get("soft_logout", False) is False


def test_token_for_optional_auth_endpoint_is_still_checked(user: Client) -> None:
    # /profile allows anonymous reads, but a bad token is an error, not "anonymous".
    assert user.get(f"profile/{user.user_id}", token=None).status_code == 200
    r = user.get(f"profile/{user.user_id}", token="hat_unknown")
    assert err(r) == (401, "M_UNKNOWN_TOKEN")


# --- body limits ------------------------------------------------------------------------------

def padded_login(size: int) -> bytes:
    """A syntactically valid login body of exactly ``size`` bytes (for an unknown user)."""
    base = json.dumps(login_body("nobody-" + uuid.uuid4().hex[:8], password=""),
                      separators=(",", ":")).encode()
    body = base.replace(b'"password":""', b'"password":"' + b"p" * (size - len(base)) + b'"')
    assert len(body) == size
    return body


def test_body_over_max_json_body_size_is_413(make_server: MakeServer) -> None:
    srv = make_server({"max_json_body_size": "1K"})
    c = srv.client()
    r = c.post("login", data=padded_login(1024), token=None)
    assert err(r) == (403, "M_FORBIDDEN")            # at the limit: processed
    r = c.post("login", data=padded_login(1025), token=None)
    assert err(r) == (413, "M_TOO_LARGE")
    r = c.post("login", data=padded_login(100_000), token=None)
    assert err(r) == (413, "M_TOO_LARGE")
    # Chunked, so the size is not announced.
    r = c.post("login", data=iter([padded_login(1025)[:500], padded_login(1025)[500:]]), token=None)
    assert err(r) == (413, "M_TOO_LARGE")
    # Authenticated, and nothing is changed by the refused request.
    u = srv.client()
    u.register()
    path = f"profile/{u.user_id}/displayname"
    before = u.get(path).json()
    r = u.put(path, data=json.dumps({"displayname": "x" * 2000}).encode())
    assert err(r) == (413, "M_TOO_LARGE")
    assert u.get(path).json() == before


def test_content_length_over_the_limit(make_server: MakeServer) -> None:
    srv = make_server({"max_json_body_size": "1K"})
    head = (b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: application/json\r\nContent-Length: 5000\r\n")
    # With Expect: 100-continue the answer comes at once, and the body is never asked for.
    t0 = time.monotonic()
    out = raw_exchange(srv, head + b"Expect: 100-continue\r\n\r\n")
    assert time.monotonic() - t0 < 5
    assert out.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in out
    assert json.loads(out.partition(b"\r\n\r\n")[2])["errcode"] == "M_TOO_LARGE"
    # Without it, the body is read and thrown away, then refused; the connection stays usable.
    out = raw_exchange(srv, head + b"\r\n" + b"x" * 5000 +
                       b"GET /_matrix/client/versions HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 413 ")
    assert b"HTTP/1.1 200 OK" in out and b'"versions"' in out


def test_json_nesting_over_max_json_depth_is_not_json(make_server: MakeServer) -> None:
    srv = make_server({"max_json_depth": 10})
    c = srv.client()
    c.register()
    path = f"profile/{c.user_id}/org.example.deep"

    def nested(depth: int) -> Any:   # the body object itself is the first level
        value: Any = 1
        for _ in range(depth - 1):
            value = [value]
        return {"org.example.deep": value}

    r = c.put(path, data=json.dumps(nested(11)).encode())
    assert err(r) == (400, "M_NOT_JSON")
    assert err(c.get(path)) == (404, "M_NOT_FOUND")      # nothing was stored
    assert c.put(path, nested(10)).status_code == 200
    assert c.get(path).json() == nested(10)


@pytest.mark.parametrize("ctype", ["multipart/form-data", "application/x-www-form-urlencoded",
                                   "text/plain"])
def test_json_body_is_read_whatever_the_content_type(client: Client, ctype: str) -> None:
    r = client.post("login", data=json.dumps(login_body(name(), "wrong")).encode(), token=None,
                    headers={"Content-Type": ctype})
    assert err(r) == (403, "M_FORBIDDEN")


@pytest.mark.parametrize("depth", [101, 5000, 200_000])
def test_absurd_nesting_on_default_server(client: Client, depth: int) -> None:
    r = client.post("login", data=b'{"a":' + b"[" * depth + b"]" * depth + b"}", token=None)
    assert err(r) == (400, "M_NOT_JSON")


# --- rate limits ------------------------------------------------------------------------------

def assert_limited(r: requests.Response, max_ms: int) -> None:
    assert err(r) == (429, "M_LIMIT_EXCEEDED"), r.text
    ms = r.json()["retry_after_ms"]
    assert isinstance(ms, int) and 0 < ms <= max_ms
    assert int(r.headers["Retry-After"]) == -(-ms // 1000)


def test_rc_client_ip(make_server: MakeServer) -> None:
    srv = xff_server(make_server, {"rc_client_ip": {"per_second": 0.1, "burst_count": 3}})
    c = srv.client()
    ip = from_ip("203.0.113.1")
    for _ in range(3):
        assert c.get("/_matrix/client/versions", headers=ip).status_code == 200
    assert_limited(c.get("/_matrix/client/versions", headers=ip), 10_000)
    assert_limited(c.post("login", login_body("x"), token=None, headers=ip), 10_000)
    assert_limited(c.get("/_matrix/client/v3/nope", headers=ip), 10_000)
    # Per IP: another address is not limited, and unknown paths count for it too.
    other = from_ip("203.0.113.2")
    assert c.get("/nope", headers=other).status_code == 404
    assert c.get("/nope", headers=other).status_code == 404
    assert c.get("/_matrix/client/versions", headers=other).status_code == 200
    assert_limited(c.get("/_matrix/client/versions", headers=other), 10_000)


def test_rc_login_per_account(make_server: MakeServer) -> None:
    srv = make_server({"rc_login": {"address": FAST, "failed_attempts": FAST,
                                    "account": {"per_second": 0.01, "burst_count": 2}}})
    alice, bob = srv.client(), srv.client()
    a, b = name(), name()
    alice.register(a)
    bob.register(b)
    for _ in range(2):
        assert alice.post("login", login_body(a), token=None).status_code == 200
    assert_limited(alice.post("login", login_body(a), token=None), 100_000)
    # The same account by another spelling, and with a wrong password, is limited too.
    assert_limited(alice.post("login", login_body(f"@{a}:test.local"), token=None), 100_000)
    assert_limited(alice.post("login", login_body(a.upper(), "wrong"), token=None), 100_000)
    assert bob.post("login", login_body(b), token=None).status_code == 200
    # The refused logins created no devices.
    assert len(alice.get("devices").json()["devices"]) == 3


def test_rc_login_per_address(make_server: MakeServer) -> None:
    srv = xff_server(make_server, {"rc_login": {"account": FAST, "failed_attempts": FAST,
                                                "address": {"per_second": 0.01, "burst_count": 2}}})
    c = srv.client()
    users = [name() for _ in range(3)]
    for u in users:
        srv.client().register(u)
    ip = from_ip("198.51.100.7")
    assert c.post("login", login_body(users[0]), token=None, headers=ip).status_code == 200
    assert c.post("login", login_body(users[1], "wrong"), token=None, headers=ip).status_code == 403
    assert_limited(c.post("login", login_body(users[2]), token=None, headers=ip), 100_000)
    assert c.post("login", login_body(users[2]), token=None,
                  headers=from_ip("198.51.100.8")).status_code == 200


def test_rc_login_failed_attempts(make_server: MakeServer) -> None:
    srv = make_server({"rc_login": {"account": FAST, "address": FAST,
                                    "failed_attempts": {"per_second": 0.01, "burst_count": 2}}})
    c = srv.client()
    a, b = name(), name()
    c.register(a)
    srv.client().register(b)
    for _ in range(2):
        assert err(c.post("login", login_body(a, "wrong"), token=None)) == (403, "M_FORBIDDEN")
    # Even the right password is refused now, until the failures have drained.
    assert_limited(c.post("login", login_body(a), token=None), 100_000)
    assert c.post("login", login_body(b), token=None).status_code == 200
    # Successful logins do not count as failures.
    for _ in range(3):
        assert c.post("login", login_body(b), token=None).status_code == 200


def test_rc_registration(make_server: MakeServer) -> None:
    srv = xff_server(make_server, {"rc_registration": {"per_second": 0.01, "burst_count": 2}})
    c = srv.client()
    ip = from_ip("192.0.2.10")

    def register(u: str, headers: dict[str, str]) -> requests.Response:
        return c.post("register", {"username": u, "password": "pw-pw-pw-pw",
                                   "auth": {"type": "m.login.dummy"}}, token=None, headers=headers)

    for _ in range(2):
        assert register(name(), ip).status_code == 200
    refused = name()
    assert_limited(register(refused, ip), 100_000)
    r = c.get("register/available", params={"username": refused}, token=None, headers=ip)
    assert r.json() == {"available": True}
    assert register(refused, from_ip("192.0.2.11")).status_code == 200


# --- access log -------------------------------------------------------------------------------

def wait_for_log(srv: ServerProcess, needle: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log = srv.log()
        if needle in log or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


def test_access_log_has_method_path_status_and_never_a_token(server: ServerProcess) -> None:
    c = server.client()
    password = "pw-" + uuid.uuid4().hex
    out = c.register(password=password, refresh_token=True)
    token, refresh = out["access_token"], out["refresh_token"]
    marker = uuid.uuid4().hex
    assert c.get("account/whoami", params={"m": marker}).status_code == 200
    assert c.get("account/whoami", token=None,
                 params={"access_token": token, "m": marker}).status_code == 401
    assert c.post("login", login_body(c.user_id, "wrong"), token=None,
                  params={"m": marker}).status_code == 403
    r = c.post("refresh", {"refresh_token": refresh}, token=None, params={"m": marker})
    assert r.status_code == 200
    new_token = r.json()["access_token"]
    c.get("account/whoami", token=new_token, params={"m": marker, "access_token": new_token})
    log = wait_for_log(server, f"/_matrix/client/v3/account/whoami?m={marker}&access_token=")
    lines = [ln for ln in log.splitlines() if marker in ln]
    assert len(lines) == 5, lines
    assert f'"GET /_matrix/client/v3/account/whoami?m={marker} HTTP/1.1" 200' in lines[0]
    assert c.user_id in lines[0]
    assert "401" in lines[1] and "access_token=<redacted>" in lines[1]
    assert f'"POST /_matrix/client/v3/login?m={marker} HTTP/1.1" 403' in lines[2]
    assert f'"POST /_matrix/client/v3/refresh?m={marker} HTTP/1.1" 200' in lines[3]
    for secret in (token, refresh, new_token, password):
        assert secret not in log


# --- HEAD -------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/_matrix/client/versions", "/.well-known/matrix/client", "login",
                                  "account/whoami", "devices", "capabilities"])
def test_head_works_on_get_routes(user: Client, path: str) -> None:
    get = user.get(path)
    head = user.request("HEAD", path)
    assert get.status_code == head.status_code == 200
    assert head.content == b""
    assert int(head.headers["Content-Length"]) == len(get.content)
    assert head.headers["Content-Type"] == "application/json"


def test_head_is_authenticated_like_get(client: Client) -> None:
    r = client.request("HEAD", "account/whoami", token=None)
    assert r.status_code == 401 and r.content == b""
    r = client.request("HEAD", "account/whoami", token="hat_unknown")
    assert r.status_code == 401
