"""The outgoing federation client against real TLS servers on 127.0.0.1 with certificates from
a throwaway CA: signed requests, certificate checks, the IP blacklist, well-known and SRV
delegation, errors and timeouts."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Callable
from urllib.parse import parse_qs, urlsplit

import pytest
import pytest_twisted
from twisted.internet import reactor

from crypto.keys import generate_signing_key, get_verify_key
from crypto.signing import verify_json
from federation.client import (BLACKLISTED, CONNECT, TIMEOUT, TLS, FederationBadResponse,
                               FederationClient, FederationError, FederationUnreachable,
                               WellKnownFetcher, AddressPolicy)
from federation.discovery import ServerResolver
from federation.tls import client_tls_policy
from federation.xmatrix import parse_header, request_json
from homeserver.config import DEFAULT_IP_RANGE_BLACKLIST
from homeserver.media.fetch import IpBlacklist
from tests.federation.tls_servers import (Answer, FakeNames, FakeSrv, ManualClock, Recorded,
                                          RecordingServer, SilentServer, TestCA, closed_port)

ORIGIN = "origin.test"
LOOPBACK = ["127.0.0.0/8"]


class World:
    """A CA, servers made on demand, fake DNS, and clients built with chosen settings."""

    def __init__(self) -> None:
        self.ca = TestCA()
        self.key = generate_signing_key("t1")
        self.names = FakeNames()
        self.srv = FakeSrv()
        self.clock = ManualClock()
        self.servers: list[Any] = []
        self.clients: list[FederationClient] = []
        self.well_known_port = closed_port()  # no well-known anywhere unless a test says so

    def server(self, dns_names: tuple[str, ...] = (), ips: tuple[str, ...] = (),
               handler: Callable[[Recorded], Answer] | None = None,
               ca: TestCA | None = None) -> RecordingServer:
        cert, key = (ca or self.ca).issue(dns_names, ips)
        srv = RecordingServer(cert, key, handler)
        self.servers.append(srv)
        return srv

    def client(self, *, extra_ca: bool = True,
               blacklist: tuple[str, ...] = DEFAULT_IP_RANGE_BLACKLIST,
               whitelist: tuple[str, ...] | None = tuple(LOOPBACK),
               timeout_ms: int = 5000) -> FederationClient:
        policy = client_tls_policy([self.ca.ca_path] if extra_ca else [])
        black = IpBlacklist(blacklist)
        white = IpBlacklist(whitelist) if whitelist is not None else None
        fetcher = WellKnownFetcher(reactor, policy, AddressPolicy(black, white),
                                   name_resolver=self.names, timeout_s=5,
                                   https_port=self.well_known_port)
        resolver = ServerResolver(reactor, http_get_wellknown=fetcher, dns_resolver=self.srv,
                                  clock=self.clock)
        client = FederationClient(reactor, self.clock, ORIGIN, self.key, resolver, policy,
                                  black, white, timeout_ms, name_resolver=self.names)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        for srv in self.servers:
            await srv.stop()


@pytest_twisted.async_yield_fixture
async def world() -> AsyncIterator[World]:
    w = World()
    yield w
    await w.close()


def check_signature(world: World, rec: Recorded, destination: str) -> None:
    """The X-Matrix header of ``rec`` verifies over exactly what was sent."""
    header = parse_header(rec.header("authorization") or "")
    assert (header.origin, header.destination) == (ORIGIN, destination)
    content = json.loads(rec.body) if rec.body else None
    signed = request_json(rec.method, rec.uri, header.origin, destination, content)
    signed["signatures"] = {ORIGIN: {header.key_id: header.signature}}
    verify_json(signed, ORIGIN, get_verify_key(world.key))


def ip_literal_server(world: World, **kw: Any) -> tuple[RecordingServer, str]:
    srv = world.server(ips=("127.0.0.1",), **kw)
    return srv, f"127.0.0.1:{srv.port}"


@pytest_twisted.ensureDeferred
async def test_signed_put_with_query_and_body_round_trips(world: World) -> None:
    srv, dest = ip_literal_server(
        world, handler=lambda rec: Answer(200, {"got": json.loads(rec.body)}))
    client = world.client()
    body = {"pdus": [{"type": "m.room.message", "content": {"body": "héllo ☃"}}], "n": 3}
    args = {"a": "b c/d&e", "ver": ["1", "12"], "flag": True}
    answer = await client.put_json(dest, "/_matrix/federation/v1/send/txn%201", body, args=args)
    assert answer == {"got": body}
    [rec] = srv.requests
    assert rec.method == "PUT"
    parts = urlsplit(rec.uri)
    assert parts.path == "/_matrix/federation/v1/send/txn%201"
    assert parse_qs(parts.query) == {"a": ["b c/d&e"], "ver": ["1", "12"], "flag": ["true"]}
    assert json.loads(rec.body) == body
    assert rec.header("content-type") == "application/json"
    assert rec.header("host") == dest
    check_signature(world, rec, dest)
    assert srv.sni == [None]  # no SNI for an IP literal


@pytest_twisted.ensureDeferred
async def test_get_is_signed_without_content(world: World) -> None:
    srv, dest = ip_literal_server(world, handler=lambda rec: Answer(200, {"server": {"name": "x"}}))
    client = world.client()
    answer = await client.get_json(dest, "/_matrix/federation/v1/version")
    assert answer == {"server": {"name": "x"}}
    [rec] = srv.requests
    assert rec.method == "GET" and rec.body == b"" and rec.header("content-type") is None
    check_signature(world, rec, dest)
    # A tampered uri does not verify: the check above is not vacuous.
    with pytest.raises(Exception):
        check_signature(world, Recorded("GET", rec.uri + "?x=1", rec.headers, b""), dest)


@pytest_twisted.ensureDeferred
async def test_post_without_body_sends_empty_object(world: World) -> None:
    srv, dest = ip_literal_server(world)
    await world.client().post_json(dest, "/_matrix/federation/v1/user/keys/query", None)
    [rec] = srv.requests
    assert json.loads(rec.body) == {}
    check_signature(world, rec, dest)


@pytest_twisted.ensureDeferred
async def test_two_ip_literal_servers_on_one_address(world: World) -> None:
    a, dest_a = ip_literal_server(world, handler=lambda rec: Answer(200, {"me": "a"}))
    b, dest_b = ip_literal_server(world, handler=lambda rec: Answer(200, {"me": "b"}))
    client = world.client()
    for _ in range(2):  # the second round reuses pooled connections, each to its own server
        assert await client.get_json(dest_a, "/x") == {"me": "a"}
        assert await client.get_json(dest_b, "/x") == {"me": "b"}
    assert len(a.requests) == len(b.requests) == 2
    assert a.connections == b.connections == 1


@pytest_twisted.ensureDeferred
async def test_unknown_ca_is_refused_and_the_extra_ca_makes_it_pass(world: World) -> None:
    srv, dest = ip_literal_server(world)
    with pytest.raises(FederationUnreachable) as e:
        await world.client(extra_ca=False).get_json(dest, "/x")
    assert e.value.kind == TLS
    assert srv.requests == []
    assert await world.client(extra_ca=True).get_json(dest, "/x") == {"ok": True}


@pytest_twisted.ensureDeferred
async def test_certificate_of_another_ca_is_refused(world: World) -> None:
    other = TestCA("Someone else")
    srv, dest = ip_literal_server(world, ca=other)
    with pytest.raises(FederationUnreachable) as e:
        await world.client().get_json(dest, "/x")
    assert e.value.kind == TLS and srv.requests == []


@pytest_twisted.ensureDeferred
async def test_name_mismatch_is_refused(world: World) -> None:
    srv = world.server(dns_names=("hs1.test",))
    world.names.names.update({"hs1.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    client = world.client()
    assert await client.get_json(f"hs1.test:{srv.port}", "/x") == {"ok": True}
    assert srv.sni == [b"hs1.test"]
    with pytest.raises(FederationUnreachable) as e:
        await client.get_json(f"other.test:{srv.port}", "/x")
    assert e.value.kind == TLS
    # A certificate with only a DNS name does not do for an IP literal server name.
    with pytest.raises(FederationUnreachable) as e:
        await client.get_json(f"127.0.0.1:{srv.port}", "/x")
    assert e.value.kind == TLS
    assert len(srv.requests) == 1


@pytest_twisted.ensureDeferred
async def test_blacklisted_addresses_are_refused_before_connecting(world: World) -> None:
    srv, dest = ip_literal_server(world)
    world.names.names["named.test"] = ["127.0.0.1"]
    strict = world.client(whitelist=None)
    with pytest.raises(FederationUnreachable) as e:
        await strict.get_json(dest, "/x")
    assert e.value.kind == BLACKLISTED and "127.0.0.1" in str(e.value)
    with pytest.raises(FederationUnreachable) as e:
        await strict.get_json(f"named.test:{srv.port}", "/x")
    assert e.value.kind == BLACKLISTED
    assert srv.connections == 0
    # The whitelist wins over the blacklist.
    assert await world.client(whitelist=("127.0.0.1/32",)).get_json(dest, "/x") == {"ok": True}
    assert srv.connections == 1


@pytest_twisted.ensureDeferred
async def test_well_known_delegation_is_followed(world: World) -> None:
    hs = world.server(dns_names=("hs.deleg.test",))
    wk = world.server(dns_names=("deleg.test",), handler=lambda rec: Answer(
        200, {"m.server": f"hs.deleg.test:{hs.port}"}, {"Cache-Control": "max-age=3600"}))
    world.well_known_port = wk.port
    world.names.names.update({"deleg.test": ["127.0.0.1"], "hs.deleg.test": ["127.0.0.1"]})
    client = world.client()
    assert await client.get_json("deleg.test", "/_matrix/federation/v1/version") == {"ok": True}
    [wk_req] = wk.requests
    assert (wk_req.method, wk_req.uri, wk_req.header("host")) == (
        "GET", "/.well-known/matrix/server", f"deleg.test:{wk.port}")  # 443 outside tests
    assert wk_req.header("authorization") is None
    assert wk.sni == [b"deleg.test"]
    [rec] = hs.requests
    assert rec.header("host") == f"hs.deleg.test:{hs.port}"
    assert hs.sni == [b"hs.deleg.test"]
    check_signature(world, rec, "deleg.test")  # signed for the name before delegation
    await client.get_json("deleg.test", "/again")
    assert len(wk.requests) == 1 and len(hs.requests) == 2  # the well-known answer is cached


@pytest_twisted.ensureDeferred
async def test_well_known_redirects_are_followed(world: World) -> None:
    hs = world.server(ips=("127.0.0.1",))

    def well_known(rec: Recorded) -> Answer:
        if rec.uri == "/.well-known/matrix/server":
            return Answer(302, b"", {"Location": "/moved/here"})
        return Answer(200, {"m.server": f"127.0.0.1:{hs.port}"})

    wk = world.server(dns_names=("redir.test",), handler=well_known)
    world.well_known_port = wk.port
    world.names.names["redir.test"] = ["127.0.0.1"]
    assert await world.client().get_json("redir.test", "/x") == {"ok": True}
    assert [r.uri for r in wk.requests] == ["/.well-known/matrix/server", "/moved/here"]
    assert hs.requests[0].header("host") == f"127.0.0.1:{hs.port}"


@pytest_twisted.ensureDeferred
async def test_well_known_fetch_obeys_the_blacklist(world: World) -> None:
    wk = world.server(dns_names=("wk.test",), handler=lambda rec: Answer(200, {"m.server": "x:1"}))
    world.well_known_port = wk.port
    world.names.names["wk.test"] = ["127.0.0.1"]
    policy = client_tls_policy([world.ca.ca_path])
    blacklist = IpBlacklist(DEFAULT_IP_RANGE_BLACKLIST)
    strict = WellKnownFetcher(reactor, policy, AddressPolicy(blacklist), name_resolver=world.names,
                              https_port=wk.port)
    with pytest.raises(FederationUnreachable) as e:
        await strict("wk.test")
    assert e.value.kind == BLACKLISTED and wk.connections == 0
    allowed = WellKnownFetcher(reactor, policy, AddressPolicy(blacklist, IpBlacklist(LOOPBACK)),
                               name_resolver=world.names, https_port=wk.port)
    answer = await allowed("wk.test")
    assert (answer.code, json.loads(answer.body)) == (200, {"m.server": "x:1"})


@pytest_twisted.ensureDeferred
async def test_srv_targets_are_tried_in_order(world: World) -> None:
    hs = world.server(dns_names=("srv.test",))  # the certificate names the server, not the target
    world.srv.records["_matrix-fed._tcp.srv.test"] = [
        (10, 0, closed_port(), "dead.test"), (20, 0, hs.port, "alive.test")]
    world.names.names.update({"dead.test": ["127.0.0.1"], "alive.test": ["127.0.0.1"]})
    assert await world.client().get_json("srv.test", "/x") == {"ok": True}
    [rec] = hs.requests
    assert rec.header("host") == "srv.test" and hs.sni == [b"srv.test"]
    # srv.test itself is looked up first, for its (absent) well-known.
    assert world.names.lookups == ["srv.test", "dead.test", "alive.test"]


@pytest_twisted.ensureDeferred
async def test_deprecated_srv_is_used(world: World) -> None:
    hs = world.server(dns_names=("old.test",))
    world.srv.records["_matrix._tcp.old.test"] = [(0, 0, hs.port, "box.test")]
    world.names.names["box.test"] = ["127.0.0.1"]
    assert await world.client().get_json("old.test", "/x") == {"ok": True}
    assert world.srv.lookups == ["_matrix-fed._tcp.old.test", "_matrix._tcp.old.test"]


@pytest_twisted.ensureDeferred
async def test_connection_failures_are_unreachable(world: World) -> None:
    client = world.client()
    with pytest.raises(FederationUnreachable) as e:
        await client.get_json(f"127.0.0.1:{closed_port()}", "/x")
    assert e.value.kind == CONNECT
    with pytest.raises(FederationUnreachable) as e:
        await client.get_json("nowhere.test:8448", "/x")  # no address
    assert e.value.kind == "dns"
    with pytest.raises(FederationUnreachable) as e:
        await client.get_json("bad name", "/x")
    assert e.value.kind == "invalid server name"


@pytest_twisted.ensureDeferred
async def test_error_json_becomes_federation_error(world: World) -> None:
    def handler(rec: Recorded) -> Answer:
        if rec.uri == "/missing":
            return Answer(404, {"errcode": "M_NOT_FOUND", "error": "No such room", "extra": 1})
        return Answer(502, b"<html>bad gateway</html>", {"Content-Type": "text/html"})

    _, dest = ip_literal_server(world, handler=handler)
    client = world.client()
    with pytest.raises(FederationError) as e:
        await client.get_json(dest, "/missing")
    assert (e.value.status, e.value.errcode, e.value.message) == (
        404, "M_NOT_FOUND", "No such room")
    assert e.value.body == {"errcode": "M_NOT_FOUND", "error": "No such room", "extra": 1}
    with pytest.raises(FederationError) as e:
        await client.get_json(dest, "/broken")
    assert (e.value.status, e.value.errcode, e.value.body) == (502, None, None)


@pytest_twisted.ensureDeferred
async def test_bad_and_oversized_answers(world: World) -> None:
    def handler(rec: Recorded) -> Answer:
        if rec.uri == "/big":
            return Answer(200, {"x": "y" * 5000})
        return Answer(200, b"{not json")

    _, dest = ip_literal_server(world, handler=handler)
    client = world.client()
    with pytest.raises(FederationBadResponse):
        await client.get_json(dest, "/garbage")
    with pytest.raises(FederationBadResponse):
        await client.request_json("GET", dest, "/big", max_size=1000)
    assert (await client.request_json("GET", dest, "/big"))["x"] == "y" * 5000


@pytest_twisted.ensureDeferred
async def test_get_raw(world: World) -> None:
    def handler(rec: Recorded) -> Answer:
        if rec.uri.startswith("/media"):
            return Answer(200, b"\x89PNG...", {"Content-Type": "image/png"})
        return Answer(404, {"errcode": "M_NOT_FOUND", "error": "gone"})

    srv, dest = ip_literal_server(world, handler=handler)
    client = world.client()
    status, headers, body = await client.get_raw(dest, "/media/abc", {"timeout_ms": "20000"},
                                                 max_size=100)
    assert (status, headers["content-type"], body) == (200, ["image/png"], b"\x89PNG...")
    check_signature(world, srv.requests[0], dest)
    assert srv.requests[0].uri == "/media/abc?timeout_ms=20000"
    with pytest.raises(FederationBadResponse):
        await client.get_raw(dest, "/media/abc", None, max_size=3)
    with pytest.raises(FederationError) as e:
        await client.get_raw(dest, "/other", None, max_size=100)
    assert e.value.errcode == "M_NOT_FOUND"


@pytest_twisted.ensureDeferred
async def test_timeouts_become_unreachable(world: World) -> None:
    _, dest = ip_literal_server(world, handler=lambda rec: Answer(hang=True))
    client = world.client(timeout_ms=300)
    with pytest.raises(FederationUnreachable) as e:
        await client.get_json(dest, "/slow")
    assert e.value.kind == TIMEOUT
    silent = SilentServer()
    world.servers.append(silent)
    with pytest.raises(FederationUnreachable) as e:
        await client.get_json(f"127.0.0.1:{silent.port}", "/x", timeout_ms=200)
    assert e.value.kind == TIMEOUT and "0.2s" in str(e.value)


@pytest.mark.parametrize("path", ["no/slash", "/with?query", "/frag#ment", "/sp ace", "/ünï"])
@pytest_twisted.ensureDeferred
async def test_unencoded_paths_are_refused(world: World, path: str) -> None:
    with pytest.raises(ValueError):
        await world.client().get_json("127.0.0.1:1", path)


@pytest_twisted.ensureDeferred
async def test_oversized_well_known_is_a_failure(world: World) -> None:
    hs = world.server(dns_names=("huge.test",))
    wk = world.server(dns_names=("huge.test",), handler=lambda rec: Answer(
        200, {"m.server": "elsewhere.test:1", "pad": "x" * 60_000}))
    world.well_known_port = wk.port
    world.names.names["huge.test"] = ["127.0.0.1"]
    world.srv.records["_matrix-fed._tcp.huge.test"] = [(0, 0, hs.port, "huge.test")]
    # The 60 KB answer is ignored: discovery goes on to SRV, which leads to hs.
    assert await world.client().get_json("huge.test", "/x") == {"ok": True}
    assert len(wk.requests) == 1 and len(hs.requests) == 1
