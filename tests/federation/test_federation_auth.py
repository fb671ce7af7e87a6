"""X-Matrix request authentication: a real keyring over a fake network, requests in memory."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted

from crypto.keys import key_id_of
from crypto.signing import sign_json
from federation.auth import XMatrixAuthenticator
from federation.xmatrix import request_json, sign_request
from homeserver.http.errors import MatrixError
from homeserver.http.site import HttpRequest
from tests.federation.keyring_fakes import FakeClock, Network, make_keyring, request

LOCAL = "local.test"
ORIGIN = "remote.test"
URI = "/_matrix/federation/v1/send/txn1?a=b&c=%20d"


@pytest.fixture
def net() -> Network:
    network = Network(FakeClock())
    network.add(ORIGIN)
    return network


def authenticator(net: Network, whitelist: list[str] | None = None) -> XMatrixAuthenticator:
    return XMatrixAuthenticator(make_keyring(net, server_name=LOCAL), LOCAL, net.clock, whitelist)


def header(net: Network, method: str = "PUT", uri: str = URI, content: Any = None, *,
           destination: str = LOCAL, origin: str = ORIGIN) -> str:
    """An X-Matrix header as another server makes it; the content may hold floats (events of
    rooms v1-v5 do), so the signature is over non-strict canonical JSON."""
    key = net.servers[origin].key
    signed = sign_json(request_json(method, uri, origin, destination, content), origin, key,
                       strict=False)
    sig = signed["signatures"][origin][key_id_of(key)]
    return (f'X-Matrix origin="{origin}",destination="{destination}",key="{key_id_of(key)}",'
            f'sig="{sig}"')


async def refused(auth: XMatrixAuthenticator, req: HttpRequest) -> MatrixError:
    with pytest.raises(MatrixError) as exc:
        await auth.authenticate(req)
    return exc.value


BODY = {"pdus": [], "edus": [{"edu_type": "m.typing", "content": {"n": 1.5}}]}


@pytest_twisted.ensureDeferred
async def test_valid_request(net: Network) -> None:
    auth = authenticator(net)
    assert await auth.authenticate(request("PUT", URI, BODY, [header(net, content=BODY)])) == ORIGIN
    get_uri = "/_matrix/federation/v1/query/profile?user_id=%40a%3Aremote.test"
    assert await auth.authenticate(
        request("GET", get_uri, None, [header(net, "GET", get_uri)])) == ORIGIN
    # The header our own federation client makes is accepted too.
    made = sign_request(net.servers[ORIGIN].key, ORIGIN, LOCAL, "POST", "/x?y=1", {"n": 1})
    assert await auth.authenticate(request("POST", "/x?y=1", {"n": 1}, [made])) == ORIGIN
    assert len(net.calls) == 1  # the origin's keys were fetched once


@pytest_twisted.ensureDeferred
async def test_header_without_destination_is_accepted(net: Network) -> None:
    value = header(net, content=BODY)
    legacy = ",".join(p for p in value.split(",") if not p.startswith("destination="))
    assert "destination" not in legacy
    assert await authenticator(net).authenticate(request("PUT", URI, BODY, [legacy])) == ORIGIN


@pytest_twisted.ensureDeferred
async def test_wrong_destination(net: Network) -> None:
    err = await refused(authenticator(net), request(
        "PUT", URI, BODY, [header(net, content=BODY, destination="other.test")]))
    assert (err.status, err.errcode) == (401, "M_UNAUTHORIZED")
    assert net.calls == []  # refused before any key was fetched


@pytest_twisted.ensureDeferred
async def test_tampered_body_method_or_uri(net: Network) -> None:
    auth = authenticator(net)
    good = header(net, content=BODY)
    for req in (request("PUT", URI, {**BODY, "pdus": [{}]}, [good]),
                request("PUT", URI, None, [good]),
                request("POST", URI, BODY, [good]),
                request("PUT", URI.replace("a=b", "a=c"), BODY, [good]),
                request("PUT", URI.split("?")[0], BODY, [good])):
        err = await refused(auth, req)
        assert (err.status, err.errcode) == (401, "M_UNAUTHORIZED")


@pytest_twisted.ensureDeferred
async def test_unknown_key_and_unknown_origin(net: Network) -> None:
    auth = authenticator(net)
    unknown_key = header(net, content=BODY).replace(net.servers[ORIGIN].key_id, "ed25519:nope")
    err = await refused(auth, request("PUT", URI, BODY, [unknown_key]))
    assert (err.status, err.errcode) == (401, "M_UNAUTHORIZED")
    stranger = net.add("stranger.test")
    stranger.available = False
    err = await refused(auth, request("PUT", URI, BODY, [header(net, content=BODY,
                                                                origin="stranger.test")]))
    assert (err.status, err.errcode) == (401, "M_UNAUTHORIZED")


@pytest_twisted.ensureDeferred
async def test_missing_or_malformed_header(net: Network) -> None:
    auth = authenticator(net)
    for values in ([], ["Bearer abc"], ["X-Matrix"], ['X-Matrix origin="remote.test"'],
                   ['X-Matrix origin=remote.test,key="ed25519:a",sig'],
                   ['X-Matrix origin="a b/c",key="ed25519:a",sig="AAAA"'],
                   ['X-Matrix origin="remote.test",key="ed25519:a",sig="!!notbase64"'],
                   ['X-Matrix origin="remote.test",key="nonsense",sig="AAAA"']):
        err = await refused(auth, request("PUT", URI, BODY, values))
        assert (err.status, err.errcode) == (401, "M_UNAUTHORIZED"), values


@pytest_twisted.ensureDeferred
async def test_body_that_is_not_json(net: Network) -> None:
    err = await refused(authenticator(net), request("PUT", URI, b"{not json",
                                                    [header(net, content=BODY)]))
    assert (err.status, err.errcode) == (400, "M_NOT_JSON")


@pytest_twisted.ensureDeferred
async def test_any_valid_header_of_several(net: Network) -> None:
    auth = authenticator(net)
    bad = header(net, content=BODY, destination="other.test")
    good = header(net, content=BODY)
    assert await auth.authenticate(request("PUT", URI, BODY, [bad, "garbage", good])) == ORIGIN


@pytest_twisted.ensureDeferred
async def test_domain_whitelist(net: Network) -> None:
    auth = authenticator(net, whitelist=["friend.test"])
    err = await refused(auth, request("PUT", URI, BODY, [header(net, content=BODY)]))
    assert (err.status, err.errcode) == (403, "M_FORBIDDEN")
    assert net.calls == []
    allowed = authenticator(net, whitelist=[ORIGIN])
    assert await allowed.authenticate(request("PUT", URI, BODY, [header(net, content=BODY)])) == ORIGIN


# --- through the real Twisted request path -------------------------------------------------------

def test_through_the_site(net: Network) -> None:
    """Real HTTP bytes: several Authorization lines, the raw query string, JSON errors."""
    from twisted.internet.address import IPv4Address
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from homeserver.config import RateLimit
    from homeserver.http.ratelimit import RateLimiter
    from homeserver.http.router import AUTH_FEDERATION, Router
    from homeserver.http.site import MatrixResource, make_site

    async def whoami(req: HttpRequest, txnId: str) -> tuple[int, Any]:
        return 200, {"origin": req.origin, "txn": txnId}

    router = Router()
    router.add("PUT", "/_matrix/federation/v1/send/{txnId}", whoami, auth=AUTH_FEDERATION)
    reactor_clock = Clock()
    resource = MatrixResource(router, None, RateLimiter(RateLimit(1000, 1000),  # type: ignore[arg-type]
                                                       clock=reactor_clock.seconds),
                              federation_auth=authenticator(net).authenticate)
    site = make_site(resource, json_limit=65536, upload_limit=65536)

    def send(authorization: list[str], body: bytes) -> tuple[int, Any]:
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8448))
        channel.callLater = reactor_clock.callLater
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.7", 5555))
        channel.makeConnection(transport)
        lines = [f"PUT {URI} HTTP/1.1", "Host: local.test", f"Content-Length: {len(body)}"]
        lines += [f"Authorization: {a}" for a in authorization]
        channel.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        reactor_clock.advance(0)
        head, _, rest = transport.value().partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(rest)

    body = json.dumps(BODY).encode()
    bad = header(net, content=BODY, destination="other.test")
    assert send([bad, header(net, content=BODY)], body) == (200, {"origin": ORIGIN, "txn": "txn1"})
    status, err = send([bad], body)
    assert (status, err["errcode"]) == (401, "M_UNAUTHORIZED")
    status, err = send([], body)
    assert (status, err["errcode"]) == (401, "M_UNAUTHORIZED")
