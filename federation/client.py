"""The outgoing federation transport: signed JSON requests to other homeservers.

One request: resolve the destination (federation/discovery.py), resolve each target host to
addresses and drop those in the IP blacklist (unless whitelisted) before any connection is
made, connect with verifying TLS for the target's TLS name, send the Host header and an
``Authorization: X-Matrix`` header signed over method, the exact path-with-query sent, and the
JSON body; read the answer up to a size limit. Failures are exceptions: FederationError when
the remote answered with an HTTP error, FederationUnreachable when there was no answer.

The well-known fetch of discovery goes through the same address checks (WellKnownFetcher).
We do not refuse to call our own server name: that is the caller's decision.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import quote, urlencode, urljoin, urlsplit

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import (IHostnameResolver, IHostResolution, IProtocolFactory,
                                         IResolutionReceiver, IStreamClientEndpoint)
from twisted.web.client import (Agent, HTTPConnectionPool, RequestTransmissionFailed,
                                ResponseFailed)
from twisted.web.http_headers import Headers
from twisted.web.iweb import (UNKNOWN_LENGTH, IAgentEndpointFactory, IBodyProducer,
                              IPolicyForHTTPS, IResponse)
from zope.interface import implementer

from crypto.canonical_json import encode_canonical_json
from crypto.keys import SigningKey
from federation.discovery import (InvalidServerName, ResolutionError, ServerResolver, Target,
                                  WellKnownResponse, WELL_KNOWN_MAX_BODY, is_ip_literal)
from federation.xmatrix import sign_request
from homeserver import __version__
from homeserver.clock import Clock
from homeserver.media.fetch import FetchError, IpBlacklist, TooLarge, read_limited

logger = logging.getLogger(__name__)

USER_AGENT = f"Hearth/{__version__}"
MAX_JSON_RESPONSE = 100 * 1024 * 1024  # /state and /send_join answers of big rooms are large
MAX_ERROR_BODY = 64 * 1024
DEFAULT_CONNECT_TIMEOUT_S = 10.0
MAX_WELL_KNOWN_REDIRECTS = 5
_REDIRECTS = {301, 302, 303, 307, 308}

# Values of FederationUnreachable.kind.
INVALID_NAME = "invalid server name"
DNS = "dns"
BLACKLISTED = "blacklisted"
CONNECT = "connect"
TLS = "tls"
CONNECTION_LOST = "connection lost"
TIMEOUT = "timeout"


class FederationRequestError(Exception):
    """A federation request gave no usable answer (base of the errors below)."""


class FederationError(FederationRequestError):
    """The remote server answered with an HTTP error; ``body`` is its JSON object, if any."""

    def __init__(self, status: int, errcode: str | None, message: str, body: Any = None,
                 destination: str | None = None) -> None:
        super().__init__(f"{destination or 'remote'}: {status} {errcode or ''} {message}".strip())
        self.status = status
        self.errcode = errcode
        self.message = message
        self.body = body
        self.destination = destination


class FederationUnreachable(FederationRequestError):
    """No answer: bad name, DNS, blacklisted address, connection, TLS or timeout (``kind``)."""

    def __init__(self, destination: str, kind: str, detail: str) -> None:
        super().__init__(f"{destination}: {kind}: {detail}")
        self.destination = destination
        self.kind = kind
        self.detail = detail


class FederationBadResponse(FederationRequestError):
    """The remote answered 2xx with something that is not a JSON object, or too much of it."""


class AddressPolicy:
    """Which IP addresses outgoing server-server traffic may go to (SSRF protection).

    An address is refused when the blacklist holds it and the whitelist does not. Anything that
    is not an IP address is refused.
    """

    def __init__(self, blacklist: IpBlacklist, whitelist: IpBlacklist | None = None) -> None:
        self._blacklist = blacklist
        self._whitelist = whitelist

    def allows(self, ip: str) -> bool:
        if not is_ip_literal(ip.split("%", 1)[0]):
            return False
        # IpBlacklist.blocks(ip) means "ip is in one of the ranges".
        if self._whitelist is not None and self._whitelist.blocks(ip):
            return True
        return not self._blacklist.blocks(ip)


@implementer(IResolutionReceiver)
class _Collect:
    def __init__(self) -> None:
        self.addresses: list[str] = []
        self.done: defer.Deferred = defer.Deferred()

    def resolutionBegan(self, resolution: IHostResolution) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        if isinstance(address, (IPv4Address, IPv6Address)) and address.host not in self.addresses:
            self.addresses.append(address.host)

    def resolutionComplete(self) -> None:
        self.done.callback(self.addresses)


async def resolve_host(name_resolver: IHostnameResolver, host: str, port: int) -> list[str]:
    """The IPv4/IPv6 addresses of ``host`` (A and AAAA), in the resolver's order."""
    if is_ip_literal(host):
        return [host]
    collect = _Collect()
    name_resolver.resolveHostName(collect, host, port)
    return await collect.done


@implementer(IStreamClientEndpoint)
class _TargetsEndpoint:
    """Connects TLS to the first target address that is allowed and answers."""

    def __init__(self, transport: HttpsTransport, name: str, targets: Sequence[Target],
                 connect_timeout_s: float) -> None:
        self._transport = transport
        self._name = name
        self._targets = targets
        self._timeout = connect_timeout_s

    def connect(self, factory: IProtocolFactory) -> defer.Deferred:
        return defer.ensureDeferred(self._connect(factory))

    async def _connect(self, factory: IProtocolFactory) -> Any:
        t = self._transport
        blocked: list[str] = []
        dns_failures: list[str] = []
        failures: list[str] = []
        for target in self._targets:
            try:
                ips = await resolve_host(t.name_resolver, target.host, target.port)
            except defer.CancelledError:
                raise
            except Exception as e:
                dns_failures.append(f"{target.host}: {e}")
                continue
            if not ips:
                dns_failures.append(f"{target.host} has no address")
            for ip in ips:
                if not t.addresses.allows(ip):
                    blocked.append(ip)
                    continue
                tcp_class = TCP6ClientEndpoint if ":" in ip else TCP4ClientEndpoint
                tcp = tcp_class(t.reactor, ip, target.port, timeout=self._timeout)
                creator = t.tls_policy.creatorForNetloc(target.tls_name.encode("ascii"),
                                                        target.port)
                try:
                    return await wrapClientTLS(creator, tcp).connect(factory)
                except defer.CancelledError:
                    raise
                except Exception as e:
                    logger.debug("connecting to %s (%s:%d) failed: %s", self._name, ip,
                                 target.port, e)
                    failures.append(f"{_hostport(ip, target.port)}: {e}")
        if failures:
            detail = "; ".join(failures + [f"{ip} is blacklisted" for ip in blocked])
            raise FederationUnreachable(self._name, CONNECT, detail)
        if blocked:
            raise FederationUnreachable(
                self._name, BLACKLISTED, "every address is in the IP blacklist: "
                + ", ".join(blocked))
        raise FederationUnreachable(self._name, DNS, "; ".join(dns_failures) or "no address")


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@implementer(IAgentEndpointFactory)
class _FixedEndpointFactory:
    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self._endpoint = endpoint

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        return self._endpoint


@implementer(IBodyProducer)
class _BytesProducer:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> defer.Deferred:
        consumer.write(self.body)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class HttpsTransport:
    """HTTPS requests to resolved targets with the address policy and TLS policy applied.

    Connections in ``pool`` are keyed by ``scheme`` and ``name`` (the destination), so a
    persistent connection is reused only for the name it was opened for. The next target is
    tried when a TCP connection fails; a failed TLS handshake ends the request (it shows up
    only once the request is under way).
    """

    def __init__(self, reactor: Any, tls_policy: IPolicyForHTTPS, addresses: AddressPolicy,
                 name_resolver: IHostnameResolver | None = None,
                 connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> None:
        self.reactor = reactor
        self.tls_policy = tls_policy
        self.addresses = addresses
        self.name_resolver = name_resolver or reactor.nameResolver
        self.connect_timeout_s = connect_timeout_s

    async def request(self, pool: HTTPConnectionPool, scheme: bytes, name: str,
                      targets: Sequence[Target], method: str, path_qs: str,
                      headers: Headers, body: bytes | None,
                      timeout_s: float) -> IResponse:
        """Send one request; FederationUnreachable for anything short of a response."""
        if not targets:
            raise FederationUnreachable(name, DNS, "no target")
        headers.setRawHeaders(b"Host", [targets[0].host_header.encode("ascii")])
        endpoint = _TargetsEndpoint(self, name, targets, min(timeout_s, self.connect_timeout_s))
        agent = Agent.usingEndpointFactory(self.reactor, _FixedEndpointFactory(endpoint),
                                           pool=pool)
        uri = scheme + b"://" + _uri_netloc(name) + path_qs.encode("ascii")
        try:
            return await agent.request(method.encode("ascii"), uri, headers,
                                       _BytesProducer(body) if body is not None else None)
        except (FederationUnreachable, defer.CancelledError):
            raise
        except (ResponseFailed, RequestTransmissionFailed) as e:
            raise _classify(name, e.reasons) from None
        except Exception as e:
            raise FederationUnreachable(name, CONNECT, str(e) or type(e).__name__) from None


def _uri_netloc(name: str) -> bytes:
    """``name`` as a URI authority for the pool key (IPv6 hosts keep their brackets)."""
    return name.lower().encode("ascii")


def _classify(name: str, reasons: Iterable[Any]) -> FederationUnreachable:
    details: list[str] = []
    tls = False
    for reason in reasons:
        if reason.check(FederationUnreachable):
            return reason.value
        if reason.check(SSL.Error, VerificationError):
            tls = True
            details.append(_tls_detail(reason.value))
        else:
            details.append(reason.getErrorMessage() or reason.type.__name__)
    if tls:
        return FederationUnreachable(name, TLS, "; ".join(details))
    return FederationUnreachable(name, CONNECTION_LOST, "; ".join(details) or "no response")


def _tls_detail(error: Exception) -> str:
    if isinstance(error, VerificationError):
        return f"certificate does not match the name: {error.errors}"
    return f"handshake failed: {error}"


class WellKnownFetcher:
    """Fetches ``https://<host>/.well-known/matrix/server`` for discovery, SSRF-safe.

    Redirects (https only) are followed up to a limit, each hop through the address policy;
    the body is read up to 50 KB. ``https_port`` is 443 except in tests.
    """

    def __init__(self, reactor: Any, tls_policy: IPolicyForHTTPS, addresses: AddressPolicy,
                 *, name_resolver: IHostnameResolver | None = None, timeout_s: float = 10.0,
                 https_port: int = 443) -> None:
        self._transport = HttpsTransport(reactor, tls_policy, addresses, name_resolver)
        self._reactor = reactor
        self._pool = HTTPConnectionPool(reactor, persistent=False)
        self._timeout_s = timeout_s
        self._port = https_port

    async def __call__(self, hostname: str) -> WellKnownResponse:
        port_part = "" if self._port == 443 else f":{self._port}"
        url = f"https://{hostname}{port_part}/.well-known/matrix/server"
        d = defer.ensureDeferred(self._fetch(url))
        d.addTimeout(self._timeout_s, self._reactor,
                     onTimeoutCancel=_timed_out(hostname, self._timeout_s))
        return await d

    async def _fetch(self, url: str) -> WellKnownResponse:
        seen: set[str] = set()
        for _ in range(MAX_WELL_KNOWN_REDIRECTS + 1):
            if url in seen:
                raise FederationUnreachable(url, CONNECT, "redirect loop")
            seen.add(url)
            parts = urlsplit(url)
            host = parts.hostname
            if parts.scheme != "https" or not host:
                raise FederationUnreachable(url, CONNECT, "well-known redirects only to https")
            port = parts.port or 443
            host_header = parts.netloc.rpartition("@")[2]
            target = Target(host, port, host_header, host)
            path_qs = (quote(parts.path, safe="/%:@!$&'()*+,;=-._~") or "/") + (
                "?" + parts.query if parts.query else "")
            headers = Headers({b"User-Agent": [USER_AGENT.encode()]})
            response = await self._transport.request(
                self._pool, b"https", _hostport(host, port), [target], "GET", path_qs, headers,
                None, self._timeout_s)
            if response.code in _REDIRECTS:
                location = response.headers.getRawHeaders(b"Location")
                _discard(response)
                if not location:
                    return WellKnownResponse(response.code, b"")
                url = urljoin(url, location[0].decode("latin-1"))
                continue
            try:
                body = await read_limited(response, WELL_KNOWN_MAX_BODY)
            except TooLarge:
                raise FederationBadResponse(
                    f"{host}: well-known answer is over {WELL_KNOWN_MAX_BODY} bytes") from None
            except FetchError as e:
                raise FederationUnreachable(host, CONNECTION_LOST, str(e)) from None
            return WellKnownResponse(response.code, body, _header(response, b"Cache-Control"),
                                     _header(response, b"Expires"))
        raise FederationUnreachable(url, CONNECT, "too many redirects")


def _header(response: IResponse, name: bytes) -> str | None:
    values = response.headers.getRawHeaders(name)
    return ", ".join(v.decode("latin-1") for v in values) if values else None


def _discard(response: IResponse) -> None:
    read_limited(response, 0).addErrback(lambda _: None)


def _timed_out(name: str, timeout_s: float) -> Any:
    def raise_timeout(result: Any, timeout: float) -> Any:
        # Whatever the cancelled attempt failed with, the reason is the time limit.
        raise FederationUnreachable(name, TIMEOUT, f"no answer within {timeout_s:g}s")
    return raise_timeout


ArgValue = str | int | bool | Sequence[str]


def encode_query(args: Mapping[str, ArgValue] | None) -> str:
    """``?a=1&b=x&b=y`` (percent-encoded, lists repeat the key) or "" without args."""
    if not args:
        return ""
    pairs: list[tuple[str, str]] = []
    for key, value in args.items():
        if isinstance(value, bool):
            pairs.append((key, "true" if value else "false"))
        elif isinstance(value, (str, int)):
            pairs.append((key, str(value)))
        else:
            pairs.extend((key, str(v)) for v in value)
    return "?" + urlencode(pairs, quote_via=quote, safe="")


def _check_path(path: str) -> None:
    if not path.startswith("/") or any(c in path for c in "?# ") or not path.isascii() \
            or not path.isprintable():
        raise ValueError(f"federation path must be an encoded absolute path: {path!r}")


class FederationClient:
    """Signed JSON (and raw) requests to other homeservers over one connection pool."""

    def __init__(self, reactor: Any, clock: Clock, server_name: str, signing_key: SigningKey,
                 resolver: ServerResolver, tls_policy: IPolicyForHTTPS,
                 ip_blacklist: IpBlacklist, ip_whitelist: IpBlacklist | None, timeout_ms: int,
                 *, name_resolver: IHostnameResolver | None = None,
                 max_json_response: int = MAX_JSON_RESPONSE) -> None:
        self._reactor = reactor
        self._clock = clock
        self._server_name = server_name
        self._signing_key = signing_key
        self._resolver = resolver
        self._transport = HttpsTransport(reactor, tls_policy,
                                         AddressPolicy(ip_blacklist, ip_whitelist), name_resolver)
        self._timeout_ms = timeout_ms
        self._max_json = max_json_response
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 5
        self._pool.cachedConnectionTimeout = 120

    async def close(self) -> None:
        """Close the idle pooled connections (at shutdown, and at the end of tests)."""
        await self._pool.closeCachedConnections()

    async def get_json(self, destination: str, path: str,
                       args: Mapping[str, ArgValue] | None = None, *,
                       timeout_ms: int | None = None) -> Any:
        return await self.request_json("GET", destination, path, args=args, timeout_ms=timeout_ms)

    async def put_json(self, destination: str, path: str, body: Any, *,
                       args: Mapping[str, ArgValue] | None = None,
                       timeout_ms: int | None = None) -> Any:
        return await self.request_json("PUT", destination, path, args=args, body=body,
                                       timeout_ms=timeout_ms)

    async def post_json(self, destination: str, path: str, body: Any, *,
                        args: Mapping[str, ArgValue] | None = None,
                        timeout_ms: int | None = None) -> Any:
        return await self.request_json("POST", destination, path, args=args, body=body,
                                       timeout_ms=timeout_ms)

    async def request_json(self, method: str, destination: str, path: str, *,
                           args: Mapping[str, ArgValue] | None = None, body: Any = None,
                           timeout_ms: int | None = None, max_size: int | None = None) -> Any:
        """Send a signed request and return the parsed JSON answer.

        ``path`` is the already-encoded path (ids quoted by the caller); ``args`` become the
        query string. PUT and POST always carry a JSON body ({} when none is given).
        Raises FederationError, FederationUnreachable or FederationBadResponse.
        """
        method = method.upper()
        if body is None and method in ("PUT", "POST"):
            body = {}
        status, _headers, raw = await self._request(
            method, destination, path, args, body, timeout_ms, max_size or self._max_json)
        try:
            return _loads(raw)
        except ValueError as e:
            raise FederationBadResponse(f"{destination}: {status} answer is not JSON: {e}") \
                from None

    async def get_raw(self, destination: str, path: str,
                      args: Mapping[str, ArgValue] | None = None,
                      max_size: int = MAX_JSON_RESPONSE, *,
                      timeout_ms: int | None = None) -> tuple[int, dict[str, list[str]], bytes]:
        """A signed GET whose 2xx answer is returned as is: (status, headers, body).

        Header names are lower-case. For media downloads; errors as in request_json.
        """
        return await self._request("GET", destination, path, args, None, timeout_ms, max_size)

    async def _request(self, method: str, destination: str, path: str,
                       args: Mapping[str, ArgValue] | None, body: Any, timeout_ms: int | None,
                       max_size: int) -> tuple[int, dict[str, list[str]], bytes]:
        _check_path(path)
        path_qs = path + encode_query(args)
        timeout_s = (timeout_ms if timeout_ms is not None else self._timeout_ms) / 1000
        d = defer.ensureDeferred(
            self._send(method, destination, path_qs, body, timeout_s, max_size))
        d.addTimeout(timeout_s, self._reactor, onTimeoutCancel=_timed_out(destination, timeout_s))
        return await d

    async def _send(self, method: str, destination: str, path_qs: str, body: Any,
                    timeout_s: float, max_size: int) -> tuple[int, dict[str, list[str]], bytes]:
        try:
            targets = await self._resolver.resolve(destination)
        except InvalidServerName as e:
            raise FederationUnreachable(destination, INVALID_NAME, str(e)) from None
        except ResolutionError as e:
            raise FederationUnreachable(destination, DNS, str(e)) from None
        auth = sign_request(self._signing_key, self._server_name, destination, method, path_qs,
                            body)
        headers = Headers({b"Authorization": [auth.encode("utf-8")],
                           b"User-Agent": [USER_AGENT.encode()]})
        payload = None
        if body is not None:
            payload = encode_canonical_json(body, strict=False)
            headers.setRawHeaders(b"Content-Type", [b"application/json"])
        response = await self._transport.request(
            self._pool, b"matrix-federation", destination, targets, method, path_qs, headers,
            payload, timeout_s)
        if not 200 <= response.code < 300:
            raise await self._error(destination, response)
        if response.length is not UNKNOWN_LENGTH and response.length > max_size:
            _discard(response)
            raise FederationBadResponse(
                f"{destination}: answer of {response.length} bytes is over {max_size}")
        raw = await self._read(destination, response, max_size)
        return response.code, _headers_dict(response.headers), raw

    async def _read(self, destination: str, response: IResponse, limit: int) -> bytes:
        try:
            return await read_limited(response, limit)
        except TooLarge:
            raise FederationBadResponse(f"{destination}: answer is over {limit} bytes") from None
        except FetchError as e:
            raise FederationUnreachable(destination, CONNECTION_LOST, str(e)) from None

    async def _error(self, destination: str, response: IResponse) -> FederationError:
        """The FederationError for a non-2xx answer, with the Matrix error JSON if it has one."""
        try:
            raw = await self._read(destination, response, MAX_ERROR_BODY)
        except FederationBadResponse:
            raw = b""
        body: Any = None
        try:
            body = _loads(raw)
        except ValueError:
            pass
        errcode = message = None
        if isinstance(body, dict):
            errcode = body.get("errcode") if isinstance(body.get("errcode"), str) else None
            message = body.get("error") if isinstance(body.get("error"), str) else None
        else:
            body = None
        return FederationError(response.code, errcode,
                               message or response.phrase.decode("latin-1", "replace"), body,
                               destination)


def _loads(raw: bytes) -> Any:
    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")
    return json.loads(raw.decode("utf-8"), parse_constant=no_constants)


def _headers_dict(headers: Headers) -> dict[str, list[str]]:
    return {name.decode("latin-1").lower(): [v.decode("latin-1") for v in values]
            for name, values in headers.getAllRawHeaders()}
