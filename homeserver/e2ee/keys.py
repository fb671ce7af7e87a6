"""Device keys, one-time keys and fallback keys: upload, query and claim.

Spec: "Key Distribution" and POST /keys/upload, /keys/query, /keys/claim. Keys are validated
(formats, the device's self-signature, one-time key signatures) before anything is written,
and stored exactly as uploaded. Remote users are answered in ``failures`` until federation
exists.
"""

from __future__ import annotations

from typing import Any

from crypto.key_checks import (InvalidSignature, KeyCheckError, check_device_keys,
                               check_signed_key_object, device_ed25519_key)
from homeserver.clock import Clock
from homeserver.e2ee.cross_signing import CrossSigningService, merge_signatures, visible_to
from homeserver.e2ee.device_lists import DeviceListTracker
from homeserver.http.errors import MatrixError
from storage.e2ee_keys import E2eKeyStore, KeyConflict

SIGNED_CURVE25519 = "signed_curve25519"
# Not reachable until federation exists: how remote servers appear in ``failures``.
REMOTE_FAILURE = {"status": 503, "message": "Federation is not available yet"}


def _bad(message: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", message)


def _check_error(e: KeyCheckError) -> MatrixError:
    if isinstance(e, InvalidSignature):
        return MatrixError(400, "M_INVALID_SIGNATURE", str(e))
    return _bad(str(e))


def parse_key_map(keys: dict[str, Any], what: str) -> list[tuple[str, str, Any]]:
    """{"<algorithm>:<key id>": key} -> [(algorithm, key id, key)]."""
    out = []
    for name, value in keys.items():
        algorithm, sep, key_id = name.partition(":")
        if not sep or not algorithm or not key_id:
            raise _bad(f"{what}: key name {name!r} must be <algorithm>:<key id>")
        if not isinstance(value, (str, dict)):
            raise _bad(f"{what}: key {name!r} must be a string or an object")
        out.append((algorithm, key_id, value))
    return out


class KeyService:
    def __init__(self, store: E2eKeyStore, device_lists: DeviceListTracker,
                 cross_signing: CrossSigningService, clock: Clock, server_name: str) -> None:
        self.store = store
        self.device_lists = device_lists
        self.cross_signing = cross_signing
        self.clock = clock
        self.server_name = server_name
        # federation/e2ee.E2eeFederation when federation is on: remote users' keys.
        self.remote: Any = None
        self._counts: dict[tuple[str, str], dict[str, Any]] = {}
        self._count_gen: dict[tuple[str, str], int] = {}

    def is_local(self, user_id: str) -> bool:
        return user_id.partition(":")[2] == self.server_name

    # --- /keys/upload ----------------------------------------------------------------------------

    async def upload(self, user_id: str, device_id: str, device_keys: dict[str, Any] | None,
                     one_time_keys: dict[str, Any] | None,
                     fallback_keys: dict[str, Any] | None) -> dict[str, int]:
        """Validate and store a /keys/upload; returns the one-time key counts."""
        ed25519 = None
        if device_keys is not None:
            try:
                ed25519 = check_device_keys(device_keys, user_id, device_id)
            except KeyCheckError as e:
                raise _check_error(e) from None
        otks = parse_key_map(one_time_keys or {}, "one_time_keys")
        fallbacks = parse_key_map(fallback_keys or {}, "fallback_keys")
        algorithms = [alg for alg, _, _ in fallbacks]
        if len(set(algorithms)) != len(algorithms):
            raise _bad("fallback_keys: at most one key per algorithm")
        signed = [(f"{a}:{k}", v) for a, k, v in otks + fallbacks if a == SIGNED_CURVE25519]
        if signed:
            if ed25519 is None:
                stored = await self.store.get_device_keys(user_id, device_id)
                ed25519 = device_ed25519_key(stored) if stored else None
            if ed25519 is None:
                raise _bad("Upload the device keys before signed one-time or fallback keys")
            for name, value in signed:
                try:
                    check_signed_key_object(name, value, user_id, device_id, ed25519)
                except KeyCheckError as e:
                    raise _check_error(e) from None

        def accept(current: dict[str, Any] | None) -> bool:
            # Spec: a device's identity keys never change; a device with new keys is a new device.
            assert device_keys is not None
            if current is not None and current.get("keys") != device_keys.get("keys"):
                raise _bad("This device already has different identity keys")
            return current != device_keys

        try:
            counts, pos = await self.store.upload(user_id, device_id, self.clock.time_msec(),
                                                  device_keys, accept, otks, fallbacks)
        except KeyConflict as e:
            raise _bad(f"One-time key {e.name} already exists with different content") from None
        finally:
            self._forget_counts(user_id, device_id)
        await self.device_lists.changed(user_id, pos)
        return self._with_default(counts)

    @staticmethod
    def _with_default(counts: dict[str, int]) -> dict[str, int]:
        # Some clients read signed_curve25519 without a default: always report it.
        return {SIGNED_CURVE25519: 0, **counts}

    # Every /sync response carries the device's key counts: they are cached per device and
    # forgotten after each upload, claim or deletion that touches the device. A read racing
    # such a write is not cached (the generation moved).
    def _forget_counts(self, user_id: str, device_id: str) -> None:
        key = (user_id, device_id)
        self._counts.pop(key, None)
        self._count_gen[key] = self._count_gen.get(key, 0) + 1

    async def _cached(self, kind: str, user_id: str, device_id: str, load: Any) -> Any:
        key = (user_id, device_id)
        hit = self._counts.get(key, {}).get(kind)
        if hit is not None:
            return hit
        gen = self._count_gen.get(key, 0)
        value = await load(user_id, device_id)
        if self._count_gen.get(key, 0) == gen:
            if len(self._counts) > 100_000:
                self._counts.clear()
            self._counts.setdefault(key, {})[kind] = value
        return value

    async def one_time_key_counts(self, user_id: str, device_id: str) -> dict[str, int]:
        """For /sync's device_one_time_keys_count: algorithm -> unclaimed one-time keys."""
        counts = await self._cached("otk", user_id, device_id, self.store.one_time_key_counts)
        return self._with_default(counts)

    async def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        """For /sync's device_unused_fallback_key_types."""
        return list(await self._cached("fallback", user_id, device_id,
                                       self.store.unused_fallback_key_types))

    # --- /keys/query -----------------------------------------------------------------------------

    async def query(self, requester: str, wanted: dict[str, list[str]]) -> dict[str, Any]:
        """Device keys (all devices, or the listed ones) and cross-signing keys of users."""
        local = [u for u in wanted if self.is_local(u)]
        failures = {u.partition(":")[2]: dict(REMOTE_FAILURE) for u in wanted if not self.is_local(u)}
        rows = await self.store.query_device_keys(local)
        sigs = await self.store.get_signatures(local)
        device_keys: dict[str, dict[str, Any]] = {}
        for user in local:
            only = set(wanted[user])
            out = device_keys[user] = {}
            for device_id, row in rows.get(user, {}).items():
                if only and device_id not in only:
                    continue
                obj = merge_signatures(row.keys, [
                    s for s in sigs if s.target_user_id == user and s.target_key_id == device_id
                    and visible_to(requester, user, s)])
                unsigned = dict(obj["unsigned"]) if isinstance(obj.get("unsigned"), dict) else {}
                if row.display_name is not None:
                    unsigned["device_display_name"] = row.display_name
                obj["unsigned"] = unsigned
                out[device_id] = obj
        masters, self_signing, user_signing = await self.cross_signing.keys_for_query(requester, local, sigs)
        remote = {u: d for u, d in wanted.items() if not self.is_local(u)}
        if remote and self.remote is not None:
            got = await self.remote.query_remote(remote)
            device_keys.update(got["device_keys"])
            masters.update(got["master_keys"])
            self_signing.update(got["self_signing_keys"])
            failures = got["failures"]
        return {"device_keys": device_keys, "failures": failures, "master_keys": masters,
                "self_signing_keys": self_signing, "user_signing_keys": user_signing}

    # --- /keys/claim -----------------------------------------------------------------------------

    async def claim(self, wanted: dict[str, dict[str, str]]) -> dict[str, Any]:
        """One key per (user, device, algorithm): a one-time key, each handed out once, or else
        the device's fallback key."""
        requests = [(u, d, alg) for u, devices in wanted.items() if self.is_local(u)
                    for d, alg in devices.items()]
        failures = {u.partition(":")[2]: dict(REMOTE_FAILURE) for u in wanted if not self.is_local(u)}
        try:
            claimed = await self.store.claim(requests)
        finally:
            for user, device, _ in requests:
                self._forget_counts(user, device)
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for (user, device, _), key in sorted(claimed.items()):
            out.setdefault(user, {}).setdefault(device, {})[key.name] = key.key
        remote = {u: d for u, d in wanted.items() if not self.is_local(u)}
        if remote and self.remote is not None:
            got = await self.remote.claim_remote(remote)
            out.update(got["one_time_keys"])
            failures = got["failures"]
        return {"one_time_keys": out, "failures": failures}

    # --- devices ---------------------------------------------------------------------------------

    async def devices_deleted(self, user_id: str, device_ids: list[str]) -> None:
        """SessionService listener: a deleted device's keys go, and watchers hear of it."""
        try:
            pos = await self.store.delete_devices(user_id, device_ids)
        finally:
            for device_id in device_ids:
                self._forget_counts(user_id, device_id)
        await self.device_lists.changed(user_id, pos)
