"""Fetching URLs for previews without becoming a proxy into the server's own network (SSRF).

Every address a host name resolves to is checked against the IP blacklist before any
connection is made, and so is every redirect hop (each goes through the same resolver), so a
public name pointing at 127.0.0.1 or a redirect to http://10.0.0.1/ gets nowhere. Bodies are
read up to a size limit and the whole fetch, redirects included, has a time limit.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import urljoin

import hyperlink
from twisted.internet import defer, error, protocol
from twisted.internet.interfaces import (IHostnameResolver, IHostResolution,
                                         IReactorPluggableNameResolver, IResolutionReceiver)
from twisted.web.client import Agent, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse
from zope.interface import implementer

MAX_REDIRECTS = 5
_REDIRECTS = {301, 302, 303, 307, 308}
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?\.?")


class FetchError(Exception):
    """The URL could not be fetched (connection, status, too many redirects)."""


class Blocked(FetchError):
    """Every address of the host is in the blacklist."""


class TooLarge(FetchError):
    """The body is larger than the limit."""


class FetchTimeout(FetchError):
    """The fetch took longer than the time limit."""


@dataclass(frozen=True)
class Fetched:
    url: str  # after redirects
    content_type: str | None
    body: bytes


class IpBlacklist:
    def __init__(self, ranges: Sequence[str]) -> None:
        self.networks = [ipaddress.ip_network(r, strict=False) for r in ranges]

    def blocks(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return True  # not an address at all: refuse rather than guess
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        return any(addr.version == net.version and addr in net for net in self.networks)


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class _FilteringResolver:
    """Passes on only the resolved addresses the blacklist allows; notes if it dropped any."""

    def __init__(self, real: IHostnameResolver, blacklist: IpBlacklist) -> None:
        self.real = real
        self.blacklist = blacklist
        self.blocked: list[str] = []

    def resolveHostName(self, receiver: IResolutionReceiver, hostName: str, portNumber: int = 0,
                        addressTypes: Any = None, transportSemantics: str = "TCP") -> IHostResolution:
        resolution = _Resolution(hostName)
        outer = self

        @implementer(IResolutionReceiver)
        class Filter:
            def resolutionBegan(self, inProgress: IHostResolution) -> None:
                receiver.resolutionBegan(resolution)

            def addressResolved(self, address: Any) -> None:
                if outer.blacklist.blocks(address.host):
                    outer.blocked.append(address.host)
                else:
                    receiver.addressResolved(address)

            def resolutionComplete(self) -> None:
                receiver.resolutionComplete()

        self.real.resolveHostName(Filter(), hostName, portNumber, addressTypes, transportSemantics)
        return resolution


@implementer(IReactorPluggableNameResolver)
class _ReactorWithResolver:
    """The reactor, except that host names are resolved through ``resolver``."""

    def __init__(self, reactor: Any, resolver: IHostnameResolver) -> None:
        self._reactor = reactor
        self.nameResolver = resolver

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        raise NotImplementedError

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


class _LimitedBody(protocol.Protocol):
    def __init__(self, limit: int, done: defer.Deferred) -> None:
        self.limit = limit
        self.done = done
        self.parts: list[bytes] = []
        self.size = 0

    def abort(self) -> None:
        if self.transport is not None:
            abort = getattr(self.transport, "abortConnection", None)
            (abort or self.transport.stopProducing)()

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.done.errback(TooLarge(f"body is larger than {self.limit} bytes"))
            self.abort()
            return
        self.parts.append(data)

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(FetchError(f"connection lost: {reason.getErrorMessage()}"))


def read_limited(response: IResponse, limit: int) -> defer.Deferred:
    """The response body, failing with TooLarge past ``limit`` bytes; cancelling aborts it."""
    reader: list[_LimitedBody] = []
    done: defer.Deferred = defer.Deferred(lambda _: reader[0].abort())
    reader.append(_LimitedBody(limit, done))
    response.deliverBody(reader[0])
    return done


class SafeFetcher:
    def __init__(self, reactor: Any, blacklist: IpBlacklist, max_size: int, timeout_s: float,
                 user_agent: str = "Hearth URL preview") -> None:
        self.reactor = reactor
        self.blacklist = blacklist
        self.max_size = max_size
        self.timeout_s = timeout_s
        self.user_agent = user_agent

    async def fetch(self, url: str, accept: str = "*/*") -> Fetched:
        def timed_out(result: Any, timeout: float) -> Any:
            # Whatever the cancelled fetch failed with (often a connection error), it timed out.
            raise FetchTimeout(f"no answer within {timeout:g}s")

        d = defer.ensureDeferred(self._fetch(url, accept))
        d.addTimeout(self.timeout_s, self.reactor, onTimeoutCancel=timed_out)
        return await d

    async def _fetch(self, url: str, accept: str) -> Fetched:
        for _ in range(MAX_REDIRECTS + 1):
            uri = self._check_url(url)
            resolver = _FilteringResolver(self.reactor.nameResolver, self.blacklist)
            agent = Agent(_ReactorWithResolver(self.reactor, resolver),
                          connectTimeout=self.timeout_s)
            headers = Headers({b"User-Agent": [self.user_agent.encode()], b"Accept": [accept.encode()]})
            try:
                response = await agent.request(b"GET", uri, headers)
            except error.DNSLookupError:
                if resolver.blocked:
                    raise Blocked("the host's addresses are not allowed") from None
                raise FetchError("the host name does not resolve") from None
            except defer.CancelledError:
                raise
            except Exception as e:
                raise FetchError(f"cannot connect: {e}") from None
            if response.code in _REDIRECTS:
                location = response.headers.getRawHeaders(b"Location")
                read_limited(response, 0).addErrback(lambda _: None)  # drop the body
                if not location:
                    raise FetchError("redirect without a Location")
                url = urljoin(url, location[0].decode("latin-1"))
                continue
            if response.code != 200:
                read_limited(response, 0).addErrback(lambda _: None)
                raise FetchError(f"the server answered {response.code}")
            if response.length is not UNKNOWN_LENGTH and response.length > self.max_size:
                read_limited(response, 0).addErrback(lambda _: None)
                raise TooLarge(f"body is larger than {self.max_size} bytes")
            body = await read_limited(response, self.max_size)
            ctype = response.headers.getRawHeaders(b"Content-Type")
            return Fetched(url, ctype[0].decode("latin-1") if ctype else None, body)
        raise FetchError("too many redirects")

    def _check_url(self, url: str) -> bytes:
        """The URL as ASCII bytes for the agent; refuses other schemes and blacklisted literals."""
        parsed = check_preview_url(url)
        host = parsed.host.strip("[]")
        if _is_ip(host) and self.blacklist.blocks(host):
            raise Blocked("the address is not allowed")
        return ascii_url(parsed).encode("ascii")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return True
    except ValueError:
        return False


def check_preview_url(url: str) -> hyperlink.URL:
    """``url`` parsed; FetchError unless it is an absolute http(s) URL."""
    try:
        parsed = hyperlink.URL.from_text(url)
    except (hyperlink.URLParseError, ValueError):
        raise FetchError("not a URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise FetchError("only http and https URLs can be previewed")
    ascii_url(parsed)  # raises for host names that cannot be encoded
    return parsed


def ascii_url(parsed: hyperlink.URL) -> str:
    """The URL in ASCII (IDNA host, percent-encoded path), without any user:password@."""
    parsed = parsed.replace(userinfo="")
    host = parsed.host
    try:
        if _is_ip(host):
            # hyperlink would IDNA-encode an IPv6 literal and fail: encode around a stand-in.
            text = parsed.replace(host="ip.invalid").to_uri().to_text()
            literal = f"[{host}]" if ":" in host else host
            return text.replace("//ip.invalid", "//" + literal, 1)
        text = parsed.to_uri().to_text()
    except (UnicodeError, ValueError):
        raise FetchError("not a valid host name") from None
    if not _HOST.fullmatch(hyperlink.URL.from_text(text).host):
        raise FetchError("not a valid host name")
    return text

