"""A thin asynchronous Matrix client for load: aiohttp, keep-alive connections, no validation.

Latency is measured around one request, from just before it is sent to the last byte of the
response body; JSON decoding happens after the clock stops, so the client's own parsing is not
charged to the server.
"""

from __future__ import annotations

import json
import math
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

PREFIX = "/_matrix/client/v3"


def q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


@dataclass
class Reply:
    status: int
    body: bytes
    seconds: float
    ended: float = 0.0  # time.perf_counter() when the last byte of the body arrived

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class User:
    user_id: str
    token: str
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}


class RequestFailed(RuntimeError):
    pass


class Client:
    """One aiohttp session (one connection pool) to one server."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session: aiohttp.ClientSession | None = None
        self.errors: list[str] = []
        self.error_count = 0
        self._txn = 0

    async def __aenter__(self) -> "Client":
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60)
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=120),
            skip_auto_headers=("User-Agent", "Accept-Encoding"))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.session is not None
        await self.session.close()

    def txn_id(self) -> str:
        self._txn += 1
        return f"b{self._txn}"

    async def request(self, method: str, path: str, user: User | None = None,
                      body: Any = None) -> Reply:
        assert self.session is not None
        url = URL(self.base_url + (path if path.startswith("/_matrix") else PREFIX + path),
                  encoded=True)
        data = None if body is None else json.dumps(body).encode()
        headers = user.headers if user else ({"Content-Type": "application/json"} if data else None)
        t0 = time.perf_counter()
        async with self.session.request(method, url, data=data, headers=headers) as resp:
            raw = await resp.read()
            status = resp.status
        t1 = time.perf_counter()
        reply = Reply(status, raw, t1 - t0, t1)
        if not reply.ok:
            self.error_count += 1
            if len(self.errors) < 10:
                self.errors.append(f"{method} {path.split('?')[0]} -> {status} {raw[:200]!r}")
        return reply

    async def must(self, method: str, path: str, user: User | None = None, body: Any = None) -> Any:
        r = await self.request(method, path, user, body)
        if not r.ok:
            raise RequestFailed(f"{method} {path} -> {r.status}: {r.body[:300]!r}")
        return r.json()

    # --- Matrix calls used by the scenarios ----------------------------------------------------

    async def register(self, username: str, password: str = "bench password 1") -> User:
        body = {"username": username, "password": password, "auth": {"type": "m.login.dummy"},
                "initial_device_display_name": "bench"}
        r = await self.request("POST", "/register", None, body)
        if r.status == 401 and "session" in (r.json() or {}):
            body["auth"]["session"] = r.json()["session"]
            r = await self.request("POST", "/register", None, body)
        if not r.ok:
            raise RequestFailed(f"register {username} -> {r.status}: {r.body[:300]!r}")
        out = r.json()
        return User(out["user_id"], out["access_token"])

    async def login(self, user_id: str, password: str = "bench password 1") -> User:
        """A new device (and access token) for an existing user."""
        out = await self.must("POST", "/login", None, {
            "type": "m.login.password", "password": password,
            "identifier": {"type": "m.id.user", "user": user_id},
            "initial_device_display_name": "bench"})
        return User(out["user_id"], out["access_token"])

    async def sync(self, user: User, since: str | None = None, timeout_ms: int = 0,
                   filter_json: str | None = None) -> Reply:
        path = f"/sync?timeout={timeout_ms}"
        if since:
            path += "&since=" + q(since)
        if filter_json:
            path += "&filter=" + q(filter_json)
        return await self.request("GET", path, user)

    async def create_room(self, user: User, **body: Any) -> Reply:
        return await self.request("POST", "/createRoom", user, body)

    async def join(self, user: User, room_id: str) -> Reply:
        return await self.request("POST", f"/rooms/{q(room_id)}/join", user, {})

    async def send_text(self, user: User, room_id: str, text: str) -> Reply:
        path = f"/rooms/{q(room_id)}/send/m.room.message/{self.txn_id()}"
        return await self.request("PUT", path, user, {"msgtype": "m.text", "body": text})

    async def messages(self, user: User, room_id: str, limit: int, from_token: str | None) -> Reply:
        path = f"/rooms/{q(room_id)}/messages?dir=b&limit={limit}"
        if from_token:
            path += "&from=" + q(from_token)
        return await self.request("GET", path, user)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100.0 * len(s)) - 1))
    return s[k]
