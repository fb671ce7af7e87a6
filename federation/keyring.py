"""Server signing keys: ours published, other servers' fetched, cached and used to check signatures.

Spec: server-server API "Retrieving server keys" (direct /_matrix/key/v2/server and notary
/_matrix/key/v2/query), "Validating hashes and signatures on received events", and the room
versions' signing-key validity rules (v5+: a key must be valid at the event's origin_server_ts,
and valid_until_ts counts for at most 7 days after fetching).

Lookups go memory -> database -> network. Fetches for one server are coalesced (concurrent
callers wait on one fetch) and a server is asked at most once per ``min_fetch_interval_ms``,
whether the last attempt worked or not, so bogus key ids cannot make us hammer anyone.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from twisted.internet import defer

from crypto.keys import (ED25519, KeyFormatError, SigningKey, VerifyKey, decode_verify_key,
                         encode_verify_key, get_verify_key, key_id_of, parse_key_id)
from crypto.redaction import redact_event
from crypto.signing import SignatureError, sign_json, verify_json
from homeserver.clock import Clock
from homeserver.config import FederationConfig, TrustedKeyServer
from homeserver.rooms.events import Event
from storage.server_keys import ServerKeyStore, StoredServerKey

logger = logging.getLogger(__name__)

# async (method, destination, path, body) -> parsed JSON; raises on any failure.
FetchJson = Callable[[str, str, str, "dict[str, Any] | None"], Awaitable[Any]]

SERVER_KEY_PATH = "/_matrix/key/v2/server"
NOTARY_QUERY_PATH = "/_matrix/key/v2/query"
# Spec: use the lesser of valid_until_ts and 7 days into the future.
MAX_KEY_VALIDITY_MS = 7 * 24 * 3600 * 1000
MIN_FETCH_INTERVAL_MS = 60_000
# Bounds on what one signed object or one notary answer can make us look at.
MAX_KEY_IDS_PER_SIGNER = 8
MAX_NOTARY_ENTRIES = 100
MAX_NOTARY_RESPONSES = 10
_MAX_ATTEMPTS_REMEMBERED = 10_000

# Spec appendix "Server Name": a DNS name, IPv4 or [IPv6] literal, optional port.
_SERVER_NAME = re.compile(r"(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.\-]{1,255})(?::\d{1,5})?")


def is_valid_server_name(name: Any) -> bool:
    return isinstance(name, str) and bool(_SERVER_NAME.fullmatch(name))


class KeyringError(ValueError):
    """A signature or key could not be checked; the message says why."""


class KeyNotFound(KeyringError):
    """No key with that id is known for the server, or none valid at the time asked for."""


class SignatureVerifyError(KeyringError):
    """An object lacks a valid signature from a server it must be signed by."""


class KeyResponseError(KeyringError):
    """A key response (direct or from a notary) that we refuse."""


@dataclass(frozen=True)
class ServerKey:
    """A remote verify key with the row it is stored as."""

    verify_key: VerifyKey
    row: StoredServerKey

    @property
    def usable_until(self) -> int:
        """The last origin_server_ts / request time this key may be used for."""
        if self.row.expired_ts is not None:
            return self.row.expired_ts
        return min(self.row.valid_until_ts, self.row.fetched_ts + MAX_KEY_VALIDITY_MS)


def parse_key_response(response: Any, server_name: str, fetched_ts: int,
                       from_server: str) -> list[ServerKey]:
    """Check a /_matrix/key/v2/server body of ``server_name`` and return its keys.

    The body must name ``server_name``, carry an integer valid_until_ts, and be signed by every
    ed25519 key in verify_keys (keys of other algorithms are ignored). old_verify_keys entries
    that are malformed are skipped; they cannot sign the response, so they cannot spoil it.
    """
    if not isinstance(response, dict):
        raise KeyResponseError("key response is not a JSON object")
    if response.get("server_name") != server_name:
        raise KeyResponseError(f"key response names {response.get('server_name')!r}, "
                               f"not {server_name!r}")
    valid_until = response.get("valid_until_ts")
    if not isinstance(valid_until, int) or isinstance(valid_until, bool):
        raise KeyResponseError(f"key response of {server_name} has no integer valid_until_ts")
    verify_keys = response.get("verify_keys")
    if not isinstance(verify_keys, dict):
        raise KeyResponseError(f"key response of {server_name} has no verify_keys object")
    key_json = json.dumps(response, ensure_ascii=False, separators=(",", ":"), sort_keys=True)

    def row(key_id: str, key_b64: str, expired_ts: int | None) -> StoredServerKey:
        return StoredServerKey(server_name, key_id, key_b64, valid_until, expired_ts, fetched_ts,
                               from_server, key_json)

    keys: list[ServerKey] = []
    for key_id, entry in verify_keys.items():
        if key_id.split(":", 1)[0] != ED25519:
            continue
        key_b64 = entry.get("key") if isinstance(entry, dict) else None
        if not isinstance(key_b64, str):
            raise KeyResponseError(f"verify key {key_id} of {server_name} has no 'key'")
        try:
            vk = decode_verify_key(key_id, key_b64)
        except KeyFormatError as e:
            raise KeyResponseError(f"verify key {key_id} of {server_name}: {e}") from None
        try:
            verify_json(response, server_name, vk)
        except SignatureError as e:
            raise KeyResponseError(f"key response of {server_name} is not self-signed by "
                                   f"{key_id}: {e}") from None
        keys.append(ServerKey(vk, row(key_id, key_b64, None)))
    if not keys:
        raise KeyResponseError(f"key response of {server_name} has no ed25519 verify key")

    old = response.get("old_verify_keys")
    for key_id, entry in (old.items() if isinstance(old, dict) else ()):
        if key_id in verify_keys or key_id.split(":", 1)[0] != ED25519 or not isinstance(entry, dict):
            continue
        key_b64, expired_ts = entry.get("key"), entry.get("expired_ts")
        if (not isinstance(key_b64, str) or not isinstance(expired_ts, int)
                or isinstance(expired_ts, bool)):
            continue
        try:
            vk = decode_verify_key(key_id, key_b64)
        except KeyFormatError:
            logger.info("ignoring malformed old verify key %s of %s", key_id, server_name)
            continue
        keys.append(ServerKey(vk, row(key_id, key_b64, expired_ts)))
    return keys


def server_of(identifier: str) -> str:
    """The server name part of a user or (v1/v2) event id."""
    _, sep, server = identifier.partition(":")
    if not sep or not server:
        raise SignatureVerifyError(f"{identifier!r} has no server name")
    return server


def required_signers(event: Event) -> list[str]:
    """The servers whose signatures a received PDU must carry (spec "Validating ... signatures").

    The sender's server (except for an invite made from a third-party invite, whose sending
    server may differ); in rooms v1/v2 the server that made the event id; and for a restricted
    join (v8+) the server of the user in content.join_authorised_via_users_server.
    """
    rv = event.room_version
    servers: set[str] = set()
    third_party_invite = (event.type == "m.room.member" and event.membership == "invite"
                          and "third_party_invite" in event.content)
    if not third_party_invite:
        servers.add(server_of(event.sender))
    if not rv.event_id_is_reference_hash:
        servers.add(server_of(event.event_id))
    if rv.restricted_join_rule and event.type == "m.room.member" and event.membership == "join":
        via = event.content.get("join_authorised_via_users_server")
        if isinstance(via, str):
            servers.add(server_of(via))
    return sorted(servers)


@dataclass
class _Fetch:
    """One running fetch for a server: what the callers want and who waits for it."""

    wanted: dict[str, int] = field(default_factory=dict)
    waiters: list[defer.Deferred] = field(default_factory=list)

    def want(self, key_id: str | None, min_valid_ts: int) -> None:
        if key_id is not None:
            self.wanted[key_id] = max(min_valid_ts, self.wanted.get(key_id, min_valid_ts))

    def waiter(self) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.waiters.append(d)
        return d


class Keyring:
    """Our signing keys and everything we know about other servers' keys."""

    def __init__(self, store: ServerKeyStore, clock: Clock, fetch_json: FetchJson,
                 server_name: str, signing_key: SigningKey, config: FederationConfig, *,
                 min_fetch_interval_ms: int = MIN_FETCH_INTERVAL_MS) -> None:
        self._store = store
        self._clock = clock
        self._fetch_json = fetch_json
        self.server_name = server_name
        self._signing_key = signing_key
        self._config = config
        self._min_fetch_interval_ms = min_fetch_interval_ms

        self._own_key_id = key_id_of(signing_key)
        self._own_verify_key = get_verify_key(signing_key)
        # Retired keys of ours from the config: key id -> (verify key, base64, expired_ts).
        self._own_old: dict[str, tuple[VerifyKey, str, int]] = {}
        for key_id, (key_b64, expired_ts) in config.old_signing_keys.items():
            if key_id != self._own_key_id:
                self._own_old[key_id] = (decode_verify_key(key_id, key_b64), key_b64, expired_ts)
        # Notaries' own keys from the config (None: fetch them from the notary directly).
        self._notary_keys: dict[str, dict[str, VerifyKey] | None] = {
            ks.server_name: ({kid: decode_verify_key(kid, b64)
                              for kid, b64 in ks.verify_keys.items()}
                             if ks.verify_keys is not None else None)
            for ks in config.trusted_key_servers}

        self._keys: dict[str, dict[str, ServerKey]] = {}
        self._loaded: set[str] = set()
        # Keyed by (server, via_notaries): notary keys are fetched directly only, so that
        # checking a notary's signature never waits on a fetch that waits on that notary.
        self._inflight: dict[tuple[str, bool], _Fetch] = {}
        self._last_attempt: dict[tuple[str, bool], int] = {}
        self._own_response: dict[str, Any] | None = None

    # --- our keys ------------------------------------------------------------------------------

    def own_key_response(self) -> dict[str, Any]:
        """Our /_matrix/key/v2/server body, signed; re-made once half its validity has passed."""
        now = self._clock.time_msec()
        interval = self._config.key_refresh_interval_ms
        cached = self._own_response
        if cached is None or cached["valid_until_ts"] - now < interval // 2:
            cached = {
                "server_name": self.server_name,
                "verify_keys": {self._own_key_id: {"key": encode_verify_key(self._own_verify_key)}},
                "old_verify_keys": {kid: {"key": b64, "expired_ts": expired}
                                    for kid, (_, b64, expired) in self._own_old.items()},
                "valid_until_ts": now + interval,
            }
            sign_json(cached, self.server_name, self._signing_key)
            self._own_response = cached
        return copy.deepcopy(cached)

    def _own_key(self, key_id: str, min_valid_ts: int) -> VerifyKey:
        if key_id == self._own_key_id:
            return self._own_verify_key
        old = self._own_old.get(key_id)
        if old is None:
            raise KeyNotFound(f"{self.server_name} has no key {key_id}")
        if min_valid_ts > old[2]:
            raise KeyNotFound(f"key {key_id} of {self.server_name} expired at {old[2]}")
        return old[0]

    # --- looking keys up -----------------------------------------------------------------------

    async def get_verify_key(self, server_name: str, key_id: str, min_valid_ts: int) -> VerifyKey:
        """``server_name``'s key ``key_id``, usable at ``min_valid_ts``, or KeyNotFound.

        A current key is usable up to min(valid_until_ts, fetched + 7 days), an old one up to
        its expired_ts. Pass 0 where key validity does not count (rooms v1 to v4).
        """
        if server_name == self.server_name:
            return self._own_key(key_id, min_valid_ts)
        key = await self._get_key(server_name, key_id, min_valid_ts, via_notaries=True)
        return key.verify_key

    async def _get_key(self, server_name: str, key_id: str, min_valid_ts: int, *,
                       via_notaries: bool) -> ServerKey:
        try:
            algorithm, _ = parse_key_id(key_id)
        except KeyFormatError:
            raise KeyNotFound(f"malformed key id {key_id!r}") from None
        if algorithm != ED25519:
            raise KeyNotFound(f"unsupported key algorithm in {key_id!r}")
        if not is_valid_server_name(server_name):
            raise KeyNotFound(f"invalid server name {server_name!r}")
        key = await self._known(server_name, key_id)
        if key is None or key.usable_until < min_valid_ts:
            await self._fetch(server_name, {key_id: min_valid_ts}, via_notaries)
            key = await self._known(server_name, key_id)
        if key is None:
            raise KeyNotFound(f"no key {key_id} known for {server_name}")
        if key.usable_until < min_valid_ts:
            raise KeyNotFound(f"key {key_id} of {server_name} is valid until {key.usable_until},"
                              f" not at {min_valid_ts}")
        return key

    async def _known(self, server_name: str, key_id: str) -> ServerKey | None:
        await self._load(server_name)
        return self._keys.get(server_name, {}).get(key_id)

    async def _load(self, server_name: str) -> None:
        """Read a server's keys from the database once; later changes go through _remember."""
        if server_name in self._loaded:
            return
        rows = await self._store.get_keys(server_name)
        keys = []
        for row in rows:
            try:
                keys.append(ServerKey(decode_verify_key(row.key_id, row.verify_key), row))
            except KeyFormatError:
                logger.warning("stored key %s of %s is malformed", row.key_id, server_name)
        self._merge(keys)
        self._loaded.add(server_name)

    def _merge(self, keys: list[ServerKey]) -> None:
        """Take keys into memory by the store's rule: a later valid_until_ts wins."""
        for key in keys:
            known = self._keys.setdefault(key.row.server_name, {})
            old = known.get(key.row.key_id)
            if old is None or old.row.valid_until_ts <= key.row.valid_until_ts:
                known[key.row.key_id] = key

    async def _remember(self, keys: list[ServerKey]) -> None:
        await self._store.store_keys([k.row for k in keys])
        self._merge(keys)

    def _usable(self, server_name: str, key_id: str, min_valid_ts: int) -> bool:
        key = self._keys.get(server_name, {}).get(key_id)
        return key is not None and key.usable_until >= min_valid_ts

    # --- fetching ------------------------------------------------------------------------------

    async def _fetch(self, server_name: str, wanted: Mapping[str, int], via_notaries: bool) -> None:
        """Fetch ``server_name``'s keys (joining a fetch already running); never raises."""
        slot = (server_name, via_notaries)
        running = self._inflight.get(slot)
        if running is None:
            now = self._clock.time_msec()
            last = self._last_attempt.get(slot)
            if last is not None and now - last < self._min_fetch_interval_ms:
                return
            if len(self._last_attempt) > _MAX_ATTEMPTS_REMEMBERED:
                self._forget_old_attempts(now)
            self._last_attempt[slot] = now
            running = _Fetch()
            for key_id, ts in wanted.items():
                running.want(key_id, ts)
            # The waiter is registered before the fetch starts: it may finish synchronously.
            waiter = running.waiter()
            self._inflight[slot] = running
            defer.ensureDeferred(self._run_fetch(server_name, running, via_notaries))
        else:
            for key_id, ts in wanted.items():
                running.want(key_id, ts)
            waiter = running.waiter()
        await waiter

    def _forget_old_attempts(self, now: int) -> None:
        """Drop attempts older than the interval, so the map of server names stays bounded."""
        cutoff = now - self._min_fetch_interval_ms
        for slot in [s for s, ts in self._last_attempt.items() if ts <= cutoff]:
            del self._last_attempt[slot]

    async def _run_fetch(self, server_name: str, running: _Fetch, via_notaries: bool) -> None:
        try:
            try:
                await self._fetch_direct(server_name)
            except Exception as e:
                logger.info("fetching the keys of %s failed: %s", server_name, e)
            if not via_notaries:
                return
            for notary in self._config.trusted_key_servers:
                if notary.server_name in (server_name, self.server_name):
                    continue
                missing = {kid: ts for kid, ts in running.wanted.items()
                           if not self._usable(server_name, kid, ts)}
                if not missing and running.wanted:
                    break
                try:
                    await self._fetch_from_notary(notary, server_name, missing)
                except Exception as e:
                    logger.info("fetching the keys of %s from notary %s failed: %s",
                                server_name, notary.server_name, e)
        finally:
            self._inflight.pop((server_name, via_notaries), None)
            for waiter in running.waiters:
                if not waiter.called:  # a caller that went away cancelled its waiter
                    waiter.callback(None)

    async def _fetch_direct(self, server_name: str) -> None:
        response = await self._fetch_json("GET", server_name, SERVER_KEY_PATH, None)
        keys = parse_key_response(response, server_name, self._clock.time_msec(), server_name)
        await self._remember(keys)

    async def _fetch_from_notary(self, notary: TrustedKeyServer, server_name: str,
                                 wanted: Mapping[str, int]) -> None:
        now = self._clock.time_msec()
        criteria = {kid: {"minimum_valid_until_ts": max(ts, now)} for kid, ts in wanted.items()}
        body = {"server_keys": {server_name: criteria}}
        response = await self._fetch_json("POST", notary.server_name, NOTARY_QUERY_PATH, body)
        entries = response.get("server_keys") if isinstance(response, dict) else None
        if not isinstance(entries, list):
            raise KeyResponseError(f"notary {notary.server_name} sent no server_keys list")
        for entry in entries[:MAX_NOTARY_ENTRIES]:
            if not isinstance(entry, dict) or entry.get("server_name") != server_name:
                continue
            try:
                await self._check_notary_signature(notary.server_name, entry)
                keys = parse_key_response(entry, server_name, self._clock.time_msec(),
                                          notary.server_name)
            except KeyringError as e:
                logger.info("ignoring keys of %s from notary %s: %s", server_name,
                            notary.server_name, e)
                continue
            await self._remember(keys)

    async def _check_notary_signature(self, notary: str, entry: dict[str, Any]) -> None:
        """Raise KeyResponseError unless ``entry`` carries a valid signature by the notary."""
        signatures = entry.get("signatures")
        by_notary = signatures.get(notary) if isinstance(signatures, dict) else None
        if not isinstance(by_notary, dict) or not by_notary:
            raise KeyResponseError(f"not signed by notary {notary}")
        configured = self._notary_keys.get(notary)
        if configured is not None:
            checked = False
            for kid, vk in configured.items():
                if kid in by_notary:
                    try:
                        verify_json(entry, notary, vk)
                    except SignatureError as e:
                        raise KeyResponseError(f"bad notary signature: {e}") from None
                    checked = True
            if not checked:
                raise KeyResponseError(f"not signed by a configured key of notary {notary}")
            return
        now = self._clock.time_msec()
        for kid in sorted(by_notary)[:MAX_KEY_IDS_PER_SIGNER]:
            try:
                key = await self._get_key(notary, kid, now, via_notaries=False)
                verify_json(entry, notary, key.verify_key)
                return
            except (KeyringError, SignatureError):
                continue
        raise KeyResponseError(f"no valid signature by notary {notary}")

    # --- checking signatures -------------------------------------------------------------------

    async def verify_json_for_server(self, server_name: str, obj: Mapping[str, Any],
                                     min_valid_ts: int, *, strict: bool = True) -> None:
        """Raise SignatureVerifyError unless ``obj`` has a valid signature by ``server_name``
        made with a key usable at ``min_valid_ts`` (one valid signature is enough)."""
        signatures = obj.get("signatures") if isinstance(obj, Mapping) else None
        by_server = signatures.get(server_name) if isinstance(signatures, Mapping) else None
        if not isinstance(by_server, Mapping) or not by_server:
            raise SignatureVerifyError(f"not signed by {server_name}")
        key_ids = [k for k in by_server if isinstance(k, str) and k.startswith(ED25519 + ":")]
        if not key_ids:
            raise SignatureVerifyError(f"no ed25519 signature by {server_name}")
        # Keys already in memory first: a good signature there saves a fetch.
        known = self._keys.get(server_name, {})
        key_ids.sort(key=lambda k: (k not in known, k))
        errors: list[str] = []
        for key_id in key_ids[:MAX_KEY_IDS_PER_SIGNER]:
            try:
                vk = await self.get_verify_key(server_name, key_id, min_valid_ts)
                verify_json(dict(obj), server_name, vk, strict=strict)
                return
            except (KeyringError, SignatureError) as e:
                errors.append(str(e))
        raise SignatureVerifyError(f"no valid signature by {server_name}: " + "; ".join(errors))

    async def verify_event_signatures(self, event: Event) -> None:
        """Raise SignatureVerifyError unless a received PDU is signed by every server it must be.

        Checked on the redacted form, so a redacted copy passes too. Keys must be valid at the
        event's origin_server_ts in rooms that enforce key validity (v5+), at any time before.
        """
        rv = event.room_version
        redacted = redact_event(event.pdu, rv)
        min_valid_ts = event.origin_server_ts if rv.enforce_key_validity else 0
        for server_name in required_signers(event):
            try:
                await self.verify_json_for_server(server_name, redacted, min_valid_ts,
                                                  strict=rv.strict_canonical_json)
            except SignatureVerifyError as e:
                raise SignatureVerifyError(f"event {event.event_id}: {e}") from None

    # --- serving as a notary -------------------------------------------------------------------

    async def notary_lookup(self, server_name: str, key_ids: Collection[str],
                            min_valid_until_ts: int) -> list[dict[str, Any]]:
        """Key responses of ``server_name`` for a notary answer, each also signed by us.

        The server is asked directly when we hold nothing for the keys asked for, when our
        newest response expires before ``min_valid_until_ts``, or when half its lifetime has
        passed (spec: notaries cache for half the lifetime). When it cannot be reached we
        answer with what we hold, however old (the spec asks notaries to keep serving it).
        """
        if server_name == self.server_name:
            return [self.own_key_response()]
        if not is_valid_server_name(server_name):
            return []
        rows = await self._rows_for(server_name, key_ids)
        if self._notary_needs_refresh(rows, min_valid_until_ts):
            wanted = {kid: min_valid_until_ts for kid in key_ids}
            await self._fetch(server_name, wanted, via_notaries=False)
            rows = await self._rows_for(server_name, key_ids)
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for row in rows:
            if row.key_json in seen:
                continue
            seen.add(row.key_json)
            out.append(sign_json(json.loads(row.key_json), self.server_name, self._signing_key))
            if len(out) >= MAX_NOTARY_RESPONSES:
                break
        return out

    async def _rows_for(self, server_name: str, key_ids: Collection[str]) -> list[StoredServerKey]:
        await self._load(server_name)
        rows = [k.row for k in self._keys.get(server_name, {}).values()
                if not key_ids or k.row.key_id in key_ids]
        return sorted(rows, key=lambda r: (-r.valid_until_ts, r.key_id))

    def _notary_needs_refresh(self, rows: list[StoredServerKey], min_valid_until_ts: int) -> bool:
        if not rows:
            return True
        newest = rows[0]
        if newest.valid_until_ts < min_valid_until_ts:
            return True
        half_life = newest.fetched_ts + (newest.valid_until_ts - newest.fetched_ts) // 2
        return self._clock.time_msec() >= half_life
