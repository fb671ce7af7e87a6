"""Fakes for keyring tests: a clock, an in-memory key store, remote servers and notaries
reached through a fake ``fetch_json``, and in-memory HTTP requests."""

from __future__ import annotations

import io
import json
from typing import Any, Callable

from twisted.internet import defer
from twisted.web.http_headers import Headers

from crypto.keys import SigningKey, encode_verify_key, generate_signing_key, get_verify_key, key_id_of
from crypto.signing import sign_json
from federation.keyring import Keyring
from homeserver.config import FederationConfig, TrustedKeyServer
from homeserver.http.site import HttpRequest
from storage.server_keys import StoredServerKey

NOW = 1_700_000_000_000
HOUR = 3600 * 1000
DAY = 24 * HOUR


class FakeClock:
    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def time_msec(self) -> int:
        return self.now


class MemoryKeyStore:
    """ServerKeyStore's contract without a database (same replace rule)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], StoredServerKey] = {}

    async def store_keys(self, keys: Any) -> None:
        for k in keys:
            old = self.rows.get((k.server_name, k.key_id))
            if old is None or old.valid_until_ts <= k.valid_until_ts:
                self.rows[(k.server_name, k.key_id)] = k

    async def get_keys(self, server_name: str) -> list[StoredServerKey]:
        return sorted((r for r in self.rows.values() if r.server_name == server_name),
                      key=lambda r: (-r.valid_until_ts, r.key_id))


class RemoteServer:
    """A server that publishes its keys; ``old`` keys are listed under old_verify_keys."""

    def __init__(self, name: str, key: SigningKey | None = None) -> None:
        self.name = name
        self.key = key or generate_signing_key()
        self.old: dict[str, tuple[SigningKey, int]] = {}
        self.valid_for = DAY
        self.available = True

    @property
    def key_id(self) -> str:
        return key_id_of(self.key)

    def key_response(self, now: int, *, signers: list[SigningKey] | None = None,
                     **overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "server_name": self.name,
            "verify_keys": {self.key_id: {"key": encode_verify_key(get_verify_key(self.key))}},
            "old_verify_keys": {kid: {"key": encode_verify_key(get_verify_key(k)),
                                      "expired_ts": ts} for kid, (k, ts) in self.old.items()},
            "valid_until_ts": now + self.valid_for,
        }
        body.update(overrides)
        for signer in signers if signers is not None else [self.key]:
            sign_json(body, self.name, signer)
        return body


class Notary:
    """A notary answering /_matrix/key/v2/query from what the network lets it fetch."""

    def __init__(self, name: str, network: "Network") -> None:
        self.name = name
        self.key = generate_signing_key()
        self.network = network
        self.requests: list[dict[str, Any]] = []
        self.tamper: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def trusted(self, with_keys: bool = True) -> TrustedKeyServer:
        keys = {key_id_of(self.key): encode_verify_key(get_verify_key(self.key))}
        return TrustedKeyServer(self.name, keys if with_keys else None)

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(body)
        out = []
        for server_name in body["server_keys"]:
            remote = self.network.servers.get(server_name)
            if remote is None:
                continue
            entry = remote.key_response(self.network.clock.now)
            if self.tamper is not None:
                entry = self.tamper(entry)
            out.append(sign_json(entry, self.name, self.key))
        return {"server_keys": out}


class Network:
    """fetch_json over fake servers: records every call; unknown or unavailable servers fail."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.servers: dict[str, RemoteServer] = {}
        self.notaries: dict[str, Notary] = {}
        self.calls: list[tuple[str, str, str]] = []
        # When set, each call waits on a Deferred the test fires (to test coalescing).
        self.gate: defer.Deferred | None = None
        # Override for one server's direct answer.
        self.direct_answers: dict[str, Callable[[], Any]] = {}

    def add(self, name: str) -> RemoteServer:
        self.servers[name] = RemoteServer(name)
        return self.servers[name]

    def add_notary(self, name: str) -> Notary:
        self.notaries[name] = Notary(name, self)
        return self.notaries[name]

    def calls_to(self, destination: str) -> list[tuple[str, str, str]]:
        return [c for c in self.calls if c[1] == destination]

    async def fetch_json(self, method: str, destination: str, path: str,
                         body: dict[str, Any] | None) -> Any:
        self.calls.append((method, destination, path))
        if self.gate is not None:
            await self.gate
        if method == "GET" and path == "/_matrix/key/v2/server":
            if destination in self.direct_answers:
                return self.direct_answers[destination]()
            remote = self.servers.get(destination)
            if remote is not None and remote.available:
                return remote.key_response(self.clock.now)
            notary = self.notaries.get(destination)
            if notary is not None:
                return RemoteServer(notary.name, notary.key).key_response(self.clock.now)
        if method == "POST" and path == "/_matrix/key/v2/query" and destination in self.notaries:
            assert body is not None
            return self.notaries[destination].answer(body)
        raise ConnectionError(f"cannot reach {destination}")


def make_keyring(network: Network, store: Any = None, *, server_name: str = "local.test",
                 signing_key: SigningKey | None = None,
                 trusted: tuple[TrustedKeyServer, ...] = (),
                 old_signing_keys: dict[str, tuple[str, int]] | None = None,
                 min_fetch_interval_ms: int = 60_000) -> Keyring:
    config = FederationConfig(trusted_key_servers=trusted,
                              old_signing_keys=old_signing_keys or {},
                              key_refresh_interval_ms=DAY)
    return Keyring(store if store is not None else MemoryKeyStore(), network.clock,  # type: ignore[arg-type]
                   network.fetch_json, server_name, signing_key or generate_signing_key(), config,
                   min_fetch_interval_ms=min_fetch_interval_ms)


class FakeRawRequest:
    """The parts of a Twisted request that HttpRequest and the authenticator read."""

    def __init__(self, method: str, uri: str, body: bytes, authorization: list[str]) -> None:
        self.method = method.encode("ascii")
        self.uri = uri.encode("utf-8")
        self.path = self.uri.split(b"?", 1)[0]
        self.content = io.BytesIO(body)
        self.requestHeaders = Headers()
        if authorization:
            self.requestHeaders.setRawHeaders(b"Authorization",
                                              [a.encode("latin-1") for a in authorization])

    def getHeader(self, name: bytes) -> bytes | None:
        values = self.requestHeaders.getRawHeaders(name)
        return values[-1] if values else None


def request(method: str, uri: str, body: Any, authorization: list[str]) -> HttpRequest:
    raw_body = b"" if body is None else (body if isinstance(body, bytes) else
                                         json.dumps(body).encode("utf-8"))
    return HttpRequest(FakeRawRequest(method, uri, raw_body, authorization), "127.0.0.1",  # type: ignore[arg-type]
                       100)
