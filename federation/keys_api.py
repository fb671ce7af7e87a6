"""The key API under /_matrix/key/v2: our own keys, and the notary endpoints for other servers'
(spec "Publishing Keys" and "Querying Keys Through Another Server"). No authentication."""

from __future__ import annotations

import logging
from typing import Any

from twisted.internet import defer

from federation.keyring import Keyring, KeyringError, is_valid_server_name
from homeserver.clock import Clock
from homeserver.http.errors import invalid_param
from homeserver.http.router import AUTH_NONE, Router
from homeserver.http.site import HttpRequest

logger = logging.getLogger(__name__)

# One batch query may not make us contact more servers than this, nor ask for more key ids.
MAX_QUERY_SERVERS = 100
MAX_QUERY_KEY_IDS = 100


class KeysApi:
    def __init__(self, keyring: Keyring, clock: Clock) -> None:
        self._keyring = keyring
        self._clock = clock

    def register(self, router: Router) -> None:
        router.add("GET", "/_matrix/key/v2/server", self.server_keys, auth=AUTH_NONE)
        # Deprecated: the key id is ignored and every key is returned.
        router.add("GET", "/_matrix/key/v2/server/{keyId}", self.server_keys, auth=AUTH_NONE)
        router.add("POST", "/_matrix/key/v2/query", self.query_batch, auth=AUTH_NONE)
        router.add("GET", "/_matrix/key/v2/query/{serverName}", self.query_server, auth=AUTH_NONE)
        # Deprecated form with a key id; answers for the one key (the notary may add more).
        router.add("GET", "/_matrix/key/v2/query/{serverName}/{keyId}", self.query_server,
                   auth=AUTH_NONE)

    async def server_keys(self, req: HttpRequest, keyId: str | None = None) -> tuple[int, Any]:
        return 200, self._keyring.own_key_response()

    async def query_server(self, req: HttpRequest, serverName: str,
                           keyId: str | None = None) -> tuple[int, Any]:
        if not is_valid_server_name(serverName):
            raise invalid_param("Invalid server name")
        min_valid = req.query_int("minimum_valid_until_ts", lo=0)
        if min_valid is None:  # spec: the notary MUST then use the current time
            min_valid = self._clock.time_msec()
        responses = await self._lookup(serverName, [keyId] if keyId else [], min_valid)
        return 200, {"server_keys": responses}

    async def query_batch(self, req: HttpRequest) -> tuple[int, Any]:
        body = req.json()
        server_keys = body.dict("server_keys", required=True)
        if len(server_keys) > MAX_QUERY_SERVERS:
            raise invalid_param(f"At most {MAX_QUERY_SERVERS} servers per query")
        now = self._clock.time_msec()
        queries: list[tuple[str, list[str], int]] = []
        for server_name, criteria in server_keys.items():
            if not is_valid_server_name(server_name):
                raise invalid_param(f"Invalid server name {server_name[:100]!r}")
            if not isinstance(criteria, dict):
                raise invalid_param(f"server_keys.{server_name} must be an object")
            if len(criteria) > MAX_QUERY_KEY_IDS:
                raise invalid_param(f"At most {MAX_QUERY_KEY_IDS} key ids per server")
            min_valid = None
            for key_id, criterion in criteria.items():
                if not isinstance(criterion, dict):
                    raise invalid_param(f"server_keys.{server_name}.{key_id} must be an object")
                ts = criterion.get("minimum_valid_until_ts")
                if ts is None:
                    continue
                if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
                    raise invalid_param("minimum_valid_until_ts must be a non-negative integer")
                min_valid = ts if min_valid is None else max(min_valid, ts)
            queries.append((server_name, list(criteria), now if min_valid is None else min_valid))
        # The servers are asked in parallel; one that cannot be reached is left out.
        results = await defer.gatherResults(
            [defer.ensureDeferred(self._lookup(*q)) for q in queries], consumeErrors=True)
        return 200, {"server_keys": [resp for found in results for resp in found]}

    async def _lookup(self, server_name: str, key_ids: list[str],
                      min_valid: int) -> list[dict[str, Any]]:
        try:
            return await self._keyring.notary_lookup(server_name, key_ids, min_valid)
        except KeyringError as e:
            logger.info("notary lookup of %s failed: %s", server_name, e)
            return []
