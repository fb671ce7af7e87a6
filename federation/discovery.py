"""Server discovery: which host, port, Host header and TLS name reach a server name.

Spec "Resolving server names", in order: an IP literal (port or 8448); a host name with an
explicit port; the host's ``/.well-known/matrix/server`` delegation (then the delegated name's
IP literal / explicit port / SRV / 8448); SRV ``_matrix-fed._tcp`` then the deprecated
``_matrix._tcp``; finally the host name on 8448. Host names in the result are resolved to
addresses by whoever connects (so it can check each address against the IP blacklist).

The well-known fetch itself is injected (``http_get_wellknown``) so this module holds only the
decisions: parsing, caching by Cache-Control/Expires, and the SRV ordering.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import logging
import random
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol

from twisted.internet import defer
from twisted.names import dns
from twisted.names.error import DNSNameError

from homeserver.clock import Clock

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8448
WELL_KNOWN_DEFAULT_CACHE_MS = 24 * 3600 * 1000
WELL_KNOWN_MAX_CACHE_MS = 48 * 3600 * 1000
WELL_KNOWN_FAILURE_CACHE_MS = 3600 * 1000
WELL_KNOWN_MAX_BODY = 50 * 1024

_SERVER_NAME = re.compile(r"(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,255})(?::([0-9]{1,5}))?")


class InvalidServerName(ValueError):
    """The string is not a server name by the spec's grammar."""


class ResolutionError(Exception):
    """The server name cannot be resolved to anywhere to connect to."""


@dataclass(frozen=True)
class Target:
    """One place to try: connect to ``host`` (a DNS name or an IP literal, no brackets) on
    ``port``, send ``Host: host_header`` and require a certificate for ``tls_name``."""
    host: str
    port: int
    host_header: str
    tls_name: str


@dataclass(frozen=True)
class WellKnownResponse:
    """What the well-known fetch got after following redirects."""
    code: int
    body: bytes
    cache_control: str | None = None
    expires: str | None = None


# Fetches https://<hostname>/.well-known/matrix/server (redirects followed, body limited);
# raises on transport failure.
WellKnownGetter = Callable[[str], Awaitable[WellKnownResponse]]


class SrvResolver(Protocol):
    """The part of twisted.names' IResolver used here."""

    def lookupService(self, name: str, timeout: Any = None) -> defer.Deferred: ...


def is_ip_literal(host: str) -> bool:
    """True for an IPv4 or IPv6 address (IPv6 without brackets)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def parse_server_name(server_name: str) -> tuple[str, int | None]:
    """(host, port or None); IPv6 hosts come back without their brackets.

    Raises InvalidServerName unless ``server_name`` matches the appendix's grammar.
    """
    m = _SERVER_NAME.fullmatch(server_name) if isinstance(server_name, str) else None
    if m is None:
        raise InvalidServerName(f"not a server name: {server_name!r}")
    host, port_text = m.group(1), m.group(2)
    if host.startswith("["):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidServerName(f"not an IPv6 literal: {server_name!r}") from None
    port = int(port_text) if port_text is not None else None
    if port is not None and not 0 < port < 65536:
        raise InvalidServerName(f"port out of range: {server_name!r}")
    return host, port


@dataclass(frozen=True)
class _Cached:
    delegated: str | None  # the m.server value; None when there is no valid delegation
    expires_ms: int


class ServerResolver:
    """Resolves server names to connection targets (spec "Resolving server names")."""

    def __init__(self, reactor: Any, *, http_get_wellknown: WellKnownGetter,
                 dns_resolver: SrvResolver | None = None, clock: Clock,
                 rng: random.Random | None = None) -> None:
        self._reactor = reactor
        self._get_wellknown = http_get_wellknown
        if dns_resolver is None:
            from twisted.names import client as dns_client
            dns_resolver = dns_client.createResolver()
        self._dns = dns_resolver
        self._clock = clock
        self._rng = rng or random.Random()
        self._well_known: dict[str, _Cached] = {}

    async def resolve(self, server_name: str) -> list[Target]:
        """The targets to try in order; every one shares the Host header and TLS name.

        Raises InvalidServerName for a malformed name and ResolutionError when SRV says the
        service does not exist.
        """
        host, port = parse_server_name(server_name)
        if is_ip_literal(host):
            return [Target(host, port or DEFAULT_PORT, server_name, host)]
        if port is not None:
            return [Target(host, port, server_name, host)]
        delegated = await self.delegation(host)
        if delegated is not None:
            d_host, d_port = parse_server_name(delegated)
            if is_ip_literal(d_host):
                return [Target(d_host, d_port or DEFAULT_PORT, delegated, d_host)]
            if d_port is not None:
                return [Target(d_host, d_port, delegated, d_host)]
            return await self._srv_or_default(d_host)
        return await self._srv_or_default(host)

    async def _srv_or_default(self, host: str) -> list[Target]:
        # The SRV target only says where to connect; Host and certificate stay ``host``.
        for service in ("_matrix-fed._tcp", "_matrix._tcp"):
            found = await self._lookup_srv(f"{service}.{host}")
            if found:
                return [Target(t, p, host, host) for t, p in found]
        return [Target(host, DEFAULT_PORT, host, host)]

    # --- well-known -------------------------------------------------------------------------

    async def delegation(self, hostname: str) -> str | None:
        """The ``m.server`` of ``hostname``'s well-known, or None; cached per the spec."""
        key = hostname.lower()
        now = self._clock.time_msec()
        cached = self._well_known.get(key)
        if cached is not None and cached.expires_ms > now:
            return cached.delegated
        delegated, ttl_ms = await self._fetch_well_known(hostname)
        if ttl_ms > 0:
            self._well_known[key] = _Cached(delegated, self._clock.time_msec() + ttl_ms)
        else:
            self._well_known.pop(key, None)
        self._expire(now)
        return delegated

    def _expire(self, now: int) -> None:
        if len(self._well_known) > 10_000:
            for name in [n for n, c in self._well_known.items() if c.expires_ms <= now]:
                del self._well_known[name]

    async def _fetch_well_known(self, hostname: str) -> tuple[str | None, int]:
        """(delegated name or None, how long to cache the answer in ms)."""
        try:
            response = await self._get_wellknown(hostname)
        except defer.CancelledError:
            raise  # our caller gave up; that says nothing about the remote server
        except Exception as e:
            logger.info("well-known of %s: fetch failed: %s", hostname, e)
            return None, WELL_KNOWN_FAILURE_CACHE_MS
        delegated = _parse_well_known(hostname, response)
        if delegated is None:
            return None, WELL_KNOWN_FAILURE_CACHE_MS
        ttl = _cache_period_ms(response, self._clock.time_msec())
        return delegated, WELL_KNOWN_DEFAULT_CACHE_MS if ttl is None else min(
            ttl, WELL_KNOWN_MAX_CACHE_MS)

    # --- SRV --------------------------------------------------------------------------------

    async def _lookup_srv(self, name: str) -> list[tuple[str, int]]:
        """(target, port) in the order to try them; [] when there is no usable record."""
        try:
            answers, _authority, _additional = await self._dns.lookupService(name)
        except DNSNameError:
            return []
        except defer.CancelledError:
            raise
        except Exception as e:  # timeouts, SERVFAIL: carry on as if there were no record
            logger.info("SRV lookup of %s failed: %s", name, e)
            return []
        records = [a.payload for a in answers if a.type == dns.SRV]
        if len(records) == 1 and str(records[0].target.name, "ascii") in ("", "."):
            # RFC 2782: a lone "." target means the service is decidedly not available.
            raise ResolutionError(f"{name}: SRV record says there is no such service")
        records = [r for r in records if str(r.target.name, "ascii") not in ("", ".")]
        return [(str(r.target.name, "ascii").rstrip("."), r.port)
                for r in _order_srv(records, self._rng)]


def _order_srv(records: list[Any], rng: random.Random) -> list[Any]:
    """RFC 2782 order: by priority, and within one priority a weighted random shuffle."""
    ordered: list[Any] = []
    for priority in sorted({r.priority for r in records}):
        # Zero-weight records go first so that they keep a small chance of being picked.
        group = sorted((r for r in records if r.priority == priority), key=lambda r: r.weight != 0)
        while group:
            total = sum(r.weight for r in group)
            pick = rng.randint(0, total)
            running = 0
            for i, r in enumerate(group):
                running += r.weight
                if running >= pick:
                    ordered.append(group.pop(i))
                    break
    return ordered


def _parse_well_known(hostname: str, response: WellKnownResponse) -> str | None:
    """The valid ``m.server`` of a well-known answer, or None (the spec then skips to SRV)."""
    if response.code != 200:
        logger.info("well-known of %s: status %d", hostname, response.code)
        return None
    try:
        body = json.loads(response.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        logger.info("well-known of %s: not JSON", hostname)
        return None
    server = body.get("m.server") if isinstance(body, dict) else None
    if not isinstance(server, str):
        logger.info("well-known of %s: no m.server string", hostname)
        return None
    try:
        parse_server_name(server)
    except InvalidServerName:
        logger.info("well-known of %s: m.server %r is not a server name", hostname, server)
        return None
    return server


def _cache_period_ms(response: WellKnownResponse, now_ms: int) -> int | None:
    """How long Cache-Control/Expires allow caching, in ms; None when they say nothing."""
    if response.cache_control:
        directives: dict[str, str | None] = {}
        for part in response.cache_control.split(","):
            name, _, value = part.strip().partition("=")
            directives[name.strip().lower()] = value.strip().strip('"') or None
        if "no-store" in directives or "no-cache" in directives:
            return 0
        max_age = directives.get("max-age")
        if max_age is not None:
            try:
                return max(0, int(max_age)) * 1000
            except ValueError:
                pass
    if response.expires:
        try:
            expires = email.utils.parsedate_to_datetime(response.expires)
            return max(0, int(expires.timestamp() * 1000) - now_ms)
        except (TypeError, ValueError):
            return 0  # RFC 9111: an invalid Expires means "already expired"
    return None
