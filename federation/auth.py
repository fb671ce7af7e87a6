"""Authenticating incoming server-server requests by their X-Matrix signature (spec "Request
Authentication"): the origin must have signed {method, uri, origin, destination, content}."""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from crypto.keys import KeyFormatError
from crypto.signing import SignatureError
from federation.keyring import Keyring, KeyringError, is_valid_server_name
from federation.xmatrix import XMatrixFormatError, XMatrixHeader, parse_header, request_json
from homeserver.clock import Clock
from homeserver.http.errors import MatrixError, forbidden
from homeserver.http.site import HttpRequest

logger = logging.getLogger(__name__)

# More headers than this are not looked at (each may cost a key fetch).
MAX_AUTH_HEADERS = 4


def unauthorized(message: str) -> MatrixError:
    return MatrixError(401, "M_UNAUTHORIZED", message)


class XMatrixAuthenticator:
    """Checks a request's X-Matrix header(s) and returns the origin server's name."""

    def __init__(self, keyring: Keyring, server_name: str, clock: Clock,
                 domain_whitelist: Collection[str] | None = None) -> None:
        self._keyring = keyring
        self._server_name = server_name
        self._clock = clock
        self._whitelist = frozenset(domain_whitelist) if domain_whitelist is not None else None

    async def authenticate(self, req: HttpRequest) -> str:
        """The origin of a validly signed request; 401 M_UNAUTHORIZED (or 403 M_FORBIDDEN for
        an origin outside federation_domain_whitelist) otherwise.

        Several X-Matrix headers may be sent (one per signing key); one valid one is enough.
        """
        headers = self._headers(req)
        if not headers:
            raise unauthorized("Missing X-Matrix Authorization header")
        try:
            uri = req.raw.uri.decode("utf-8")
        except UnicodeDecodeError:
            raise unauthorized("Request target is not valid UTF-8") from None
        content = self._content(req)
        errors: list[MatrixError] = []
        for header in headers[:MAX_AUTH_HEADERS]:
            try:
                return await self._check(req.method, uri, content, header)
            except MatrixError as e:
                errors.append(e)
        # A 403 (known signer, not allowed) says more than a 401 from another header.
        raise next((e for e in errors if e.status == 403), errors[0])

    @staticmethod
    def _headers(req: HttpRequest) -> list[XMatrixHeader]:
        raw = req.raw.requestHeaders.getRawHeaders(b"Authorization") or []
        parsed: list[XMatrixHeader] = []
        malformed = False
        for value in raw:
            try:
                parsed.append(parse_header(value.decode("latin-1")))
            except XMatrixFormatError:
                malformed = True
        if not parsed and malformed:
            raise unauthorized("Malformed X-Matrix Authorization header")
        return parsed

    @staticmethod
    def _content(req: HttpRequest) -> Any:
        """The parsed JSON body, or None when there is none (M_NOT_JSON when it is not JSON)."""
        if not req.body().strip():
            return None
        return req.json_value()

    async def _check(self, method: str, uri: str, content: Any, header: XMatrixHeader) -> str:
        origin = header.origin
        if header.destination is not None and header.destination != self._server_name:
            raise unauthorized(f"Request is for {header.destination}, not for this server")
        if not is_valid_server_name(origin):
            raise unauthorized("Invalid origin server name")
        # Checked before any key is fetched: we do not talk to servers outside the list.
        if self._whitelist is not None and origin not in self._whitelist:
            raise forbidden(f"Federation with {origin} is not allowed")
        signed = request_json(method, uri, origin, header.destination or self._server_name,
                              content)
        signed["signatures"] = {origin: {header.key_id: header.signature}}
        try:
            # Not strict: a transaction may carry events of rooms v1-v5 with floats or big ints.
            await self._keyring.verify_json_for_server(origin, signed, self._clock.time_msec(),
                                                       strict=False)
        except (KeyringError, SignatureError, KeyFormatError) as e:
            logger.info("rejecting request signed by %s with %s: %s", origin, header.key_id, e)
            raise unauthorized(f"Invalid signature by {origin} with key {header.key_id}") from None
        return origin
