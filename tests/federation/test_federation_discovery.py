"""Server discovery (spec "Resolving server names") with a scripted well-known fetch, fake SRV
answers and a clock the test moves: every step of the order, the Host header and TLS name of
each, and the well-known cache rules."""

from __future__ import annotations

import email.utils
import json
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from federation.discovery import (InvalidServerName, ResolutionError, ServerResolver, Target,
                                  WellKnownResponse, parse_server_name)
from tests.federation.tls_servers import FakeSrv, ManualClock

HOUR = 3600


class ScriptedWellKnown:
    """Answers the well-known fetch per host name: a WellKnownResponse or an exception."""

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        self.fetches: list[str] = []

    def set(self, host: str, m_server: str | None = None, *, code: int = 200,
            body: bytes | None = None, cache_control: str | None = None,
            expires: str | None = None) -> None:
        if body is None:
            body = json.dumps({"m.server": m_server}).encode()
        self.answers[host] = WellKnownResponse(code, body, cache_control, expires)

    async def __call__(self, host: str) -> WellKnownResponse:
        self.fetches.append(host)
        answer = self.answers.get(host, ConnectionRefusedError("nobody there"))
        if isinstance(answer, BaseException):
            raise answer
        return answer


def make(srv: dict[str, list[tuple[int, int, int, str]]] | None = None
         ) -> tuple[ServerResolver, ScriptedWellKnown, FakeSrv, ManualClock]:
    wk, dns, clock = ScriptedWellKnown(), FakeSrv(srv), ManualClock()
    resolver = ServerResolver(reactor, http_get_wellknown=wk, dns_resolver=dns, clock=clock)
    return resolver, wk, dns, clock


@pytest.mark.parametrize("name, expected", [
    ("example.org", ("example.org", None)),
    ("example.org:8008", ("example.org", 8008)),
    ("1.2.3.4", ("1.2.3.4", None)),
    ("1.2.3.4:99", ("1.2.3.4", 99)),
    ("[::1]", ("::1", None)),
    ("[2001:db8::1]:8448", ("2001:db8::1", 8448)),
])
def test_parse_server_name(name: str, expected: tuple[str, int | None]) -> None:
    assert parse_server_name(name) == expected


@pytest.mark.parametrize("name", ["", "exa mple.org", "example.org:", "example.org:0",
                                  "example.org:70000", "[::1", "[not:ip]", "a/b", "host:port",
                                  "@user:example.org"])
def test_parse_server_name_refuses(name: str) -> None:
    with pytest.raises(InvalidServerName):
        parse_server_name(name)


@pytest_twisted.ensureDeferred
async def test_ip_literals_are_used_as_they_are() -> None:
    resolver, wk, dns, _ = make()
    assert await resolver.resolve("127.0.0.1") == [
        Target("127.0.0.1", 8448, "127.0.0.1", "127.0.0.1")]
    assert await resolver.resolve("127.0.0.1:18448") == [
        Target("127.0.0.1", 18448, "127.0.0.1:18448", "127.0.0.1")]
    assert await resolver.resolve("[::1]:8000") == [Target("::1", 8000, "[::1]:8000", "::1")]
    assert wk.fetches == [] and dns.lookups == []


@pytest_twisted.ensureDeferred
async def test_explicit_port_skips_well_known_and_srv() -> None:
    resolver, wk, dns, _ = make({"_matrix-fed._tcp.example.org": [(0, 0, 1, "elsewhere.org")]})
    assert await resolver.resolve("example.org:8000") == [
        Target("example.org", 8000, "example.org:8000", "example.org")]
    assert wk.fetches == [] and dns.lookups == []


@pytest_twisted.ensureDeferred
async def test_well_known_to_ip_literal_and_explicit_port() -> None:
    resolver, wk, _, _ = make()
    wk.set("a.org", "10.1.2.3")
    wk.set("b.org", "[2001:db8::5]:1234")
    wk.set("c.org", "matrix.c.org:443")
    assert await resolver.resolve("a.org") == [Target("10.1.2.3", 8448, "10.1.2.3", "10.1.2.3")]
    assert await resolver.resolve("b.org") == [
        Target("2001:db8::5", 1234, "[2001:db8::5]:1234", "2001:db8::5")]
    assert await resolver.resolve("c.org") == [
        Target("matrix.c.org", 443, "matrix.c.org:443", "matrix.c.org")]


@pytest_twisted.ensureDeferred
async def test_well_known_to_name_then_srv_keeps_the_delegated_name() -> None:
    resolver, wk, dns, _ = make({
        "_matrix-fed._tcp.matrix.d.org": [(10, 0, 8001, "box1.hosting.net"),
                                          (5, 0, 8002, "box2.hosting.net.")]})
    wk.set("d.org", "matrix.d.org")
    assert await resolver.resolve("d.org") == [
        Target("box2.hosting.net", 8002, "matrix.d.org", "matrix.d.org"),
        Target("box1.hosting.net", 8001, "matrix.d.org", "matrix.d.org")]
    # SRV is looked up for the delegated name only, not for d.org.
    assert dns.lookups == ["_matrix-fed._tcp.matrix.d.org"]


@pytest_twisted.ensureDeferred
async def test_well_known_to_name_deprecated_srv_then_8448() -> None:
    resolver, wk, dns, _ = make({"_matrix._tcp.old.e.org": [(0, 0, 9000, "srv.e.org")]})
    wk.set("e.org", "old.e.org")
    wk.set("f.org", "plain.f.org")
    assert await resolver.resolve("e.org") == [Target("srv.e.org", 9000, "old.e.org", "old.e.org")]
    assert await resolver.resolve("f.org") == [
        Target("plain.f.org", 8448, "plain.f.org", "plain.f.org")]
    assert dns.lookups == ["_matrix-fed._tcp.old.e.org", "_matrix._tcp.old.e.org",
                           "_matrix-fed._tcp.plain.f.org", "_matrix._tcp.plain.f.org"]


@pytest_twisted.ensureDeferred
async def test_without_well_known_srv_then_default_port() -> None:
    resolver, wk, dns, _ = make({
        "_matrix-fed._tcp.g.org": [(0, 0, 8443, "fed.g.org")],
        "_matrix._tcp.g.org": [(0, 0, 1, "never.g.org")],
        "_matrix._tcp.h.org": [(0, 0, 8444, "legacy.h.org")]})
    # The certificate and Host are the server name, never the SRV target.
    assert await resolver.resolve("g.org") == [Target("fed.g.org", 8443, "g.org", "g.org")]
    assert await resolver.resolve("h.org") == [Target("legacy.h.org", 8444, "h.org", "h.org")]
    assert await resolver.resolve("i.org") == [Target("i.org", 8448, "i.org", "i.org")]
    assert wk.fetches == ["g.org", "h.org", "i.org"]


@pytest_twisted.ensureDeferred
async def test_srv_saying_no_service_is_an_error() -> None:
    resolver, _, _, _ = make({"_matrix-fed._tcp.j.org": [(0, 0, 0, ".")]})
    with pytest.raises(ResolutionError):
        await resolver.resolve("j.org")


@pytest.mark.parametrize("answer", [
    {"code": 404, "body": b'{"m.server": "x.org"}'},
    {"body": b"not json"},
    {"body": b'["m.server"]'},
    {"body": b'{"m.server": 5}'},
    {"body": b'{"other": "x.org"}'},
    {"body": b'{"m.server": "bad name/"}'},
])
@pytest_twisted.ensureDeferred
async def test_invalid_well_known_falls_through_to_srv(answer: dict[str, Any]) -> None:
    resolver, wk, _, _ = make({"_matrix-fed._tcp.k.org": [(0, 0, 8500, "srv.k.org")]})
    wk.set("k.org", **answer)
    assert await resolver.resolve("k.org") == [Target("srv.k.org", 8500, "k.org", "k.org")]


@pytest_twisted.ensureDeferred
async def test_well_known_cache_default_max_age_and_cap() -> None:
    resolver, wk, _, clock = make()
    wk.set("default.org", "a.default.org:1")
    wk.set("short.org", "a.short.org:1", cache_control="public, max-age=600")
    wk.set("long.org", "a.long.org:1", cache_control="max-age=864000")
    for name in ("default.org", "short.org", "long.org"):
        await resolver.resolve(name)
    assert len(wk.fetches) == 3

    async def fetched_again(name: str) -> bool:
        before = len(wk.fetches)
        await resolver.resolve(name)
        return len(wk.fetches) > before

    clock.advance(599)
    assert not await fetched_again("short.org")
    clock.advance(2)
    assert await fetched_again("short.org")
    clock.advance(24 * HOUR - 601 - 1)
    assert not await fetched_again("default.org")
    clock.advance(2)
    assert await fetched_again("default.org")
    clock.advance(24 * HOUR)  # long.org is now 48h old: capped although max-age says 10 days
    assert await fetched_again("long.org")


@pytest_twisted.ensureDeferred
async def test_well_known_cache_expires_and_no_store() -> None:
    resolver, wk, _, clock = make()
    expires = email.utils.formatdate(clock.now_ms / 1000 + 2 * HOUR, usegmt=True)
    wk.set("exp.org", "a.exp.org:1", expires=expires)
    wk.set("nostore.org", "a.nostore.org:1", cache_control="no-store")
    await resolver.resolve("exp.org")
    await resolver.resolve("nostore.org")
    await resolver.resolve("nostore.org")
    assert wk.fetches == ["exp.org", "nostore.org", "nostore.org"]
    clock.advance(2 * HOUR - 10)
    await resolver.resolve("exp.org")
    assert wk.fetches.count("exp.org") == 1
    clock.advance(20)
    await resolver.resolve("exp.org")
    assert wk.fetches.count("exp.org") == 2


@pytest_twisted.ensureDeferred
async def test_failures_are_cached_for_an_hour() -> None:
    resolver, wk, _, clock = make()
    # No answer configured: the fetch raises.
    assert await resolver.resolve("down.org") == [Target("down.org", 8448, "down.org", "down.org")]
    wk.set("down.org", "up.down.org:1")
    clock.advance(HOUR - 5)
    await resolver.resolve("down.org")
    assert wk.fetches == ["down.org"]
    clock.advance(10)
    assert await resolver.resolve("down.org") == [
        Target("up.down.org", 1, "up.down.org:1", "up.down.org")]
    # An invalid answer counts as a failure too (not 24 hours).
    wk.set("bad.org", body=b"{}")
    await resolver.resolve("bad.org")
    wk.set("bad.org", "x.bad.org:2")
    clock.advance(HOUR + 1)
    assert (await resolver.resolve("bad.org"))[0].port == 2
