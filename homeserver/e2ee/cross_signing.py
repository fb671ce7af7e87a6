"""Cross-signing: master, self-signing and user-signing keys, and signatures made with them.

Spec: "Cross-signing" and POST /keys/device_signing/upload, /keys/signatures/upload. A
signature is stored only after it verifies, and readers see only the signatures the spec lets
them see ("Key and signature security").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Iterable

from crypto.key_checks import (InvalidSignature, KeyCheckError, check_cross_signing_key,
                               device_ed25519_key, same_signed_content, verify_signature)
from homeserver.clock import Clock
from homeserver.e2ee.device_lists import DeviceListTracker
from homeserver.http.errors import MatrixError
from storage.accounts import AccountStore
from storage.e2ee_keys import E2eKeyStore, Signature

MASTER, SELF_SIGNING, USER_SIGNING = "master", "self_signing", "user_signing"
# Request field -> key type.
UPLOAD_FIELDS = {"master_key": MASTER, "self_signing_key": SELF_SIGNING,
                 "user_signing_key": USER_SIGNING}


def public_key_of(key: dict[str, Any]) -> str:
    """The public key of a (validated) cross-signing key: its only key id without "ed25519:"."""
    return next(iter(key["keys"])).partition(":")[2]


def key_id_of(key: dict[str, Any]) -> str:
    return next(iter(key["keys"]))


def visible_to(requester: str, target_user: str, sig: Signature) -> bool:
    """Spec "Key and signature security": a user sees signatures made by the target user's own
    keys and devices, and their own; never another user's user-signing signatures."""
    return sig.signer_user_id in (target_user, requester)


def merge_signatures(obj: dict[str, Any], sigs: Iterable[Signature]) -> dict[str, Any]:
    """A copy of a stored key object with the given uploaded signatures added."""
    out = dict(obj)
    merged = copy.deepcopy(obj.get("signatures")) if isinstance(obj.get("signatures"), dict) else {}
    for s in sigs:
        merged.setdefault(s.signer_user_id, {})[s.signer_key_id] = s.signature
    if merged or "signatures" in obj:
        out["signatures"] = merged
    return out


@dataclass
class PreparedUpload:
    """A validated /keys/device_signing/upload: key type -> (key id, object) to store."""
    keys: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    needs_auth: bool = False


class SignatureFailure(Exception):
    def __init__(self, errcode: str, message: str) -> None:
        super().__init__(message)
        self.errcode = errcode
        self.message = message


class CrossSigningService:
    def __init__(self, store: E2eKeyStore, device_lists: DeviceListTracker, accounts: AccountStore,
                 clock: Clock) -> None:
        self.store = store
        self.device_lists = device_lists
        self.accounts = accounts
        self.clock = clock

    async def keys_of(self, user_id: str) -> dict[str, dict[str, Any]]:
        return (await self.store.get_cross_signing_keys([user_id])).get(user_id, {})

    # --- /keys/device_signing/upload -------------------------------------------------------------

    async def prepare_upload(self, user_id: str, body: dict[str, Any]) -> PreparedUpload:
        """Validate the keys of an upload and decide whether it needs user-interactive auth.

        Spec: UIA is needed unless the user has no master key yet, or the request repeats the
        stored master key and any other key it carries is also the stored one.
        """
        existing = await self.keys_of(user_id)
        given: dict[str, dict[str, Any]] = {}
        out = PreparedUpload()
        for name, key_type in UPLOAD_FIELDS.items():
            obj = body.get(name)
            if obj is None:
                continue
            try:
                key_id = check_cross_signing_key(obj, user_id, key_type)
            except KeyCheckError as e:
                raise MatrixError(400, "M_INVALID_PARAM", str(e)) from None
            given[key_type] = obj
            out.keys[key_type] = (key_id, obj)
        master = given.get(MASTER) or existing.get(MASTER)
        if master is None and given:
            raise MatrixError(400, "M_MISSING_PARAM", "No master signing key is available")
        for key_type in (SELF_SIGNING, USER_SIGNING):
            if key_type in given:
                assert master is not None
                try:
                    verify_signature(given[key_type], user_id, key_id_of(master), public_key_of(master))
                except InvalidSignature as e:
                    raise MatrixError(400, "M_INVALID_SIGNATURE",
                                      f"The {key_type} key is not signed by the master key: {e}") from None
        if given:
            devices = {d.device_id for d in await self.accounts.get_devices(user_id)}
            for key_type, obj in given.items():
                if public_key_of(obj) in devices:
                    raise MatrixError(403, "M_FORBIDDEN", "Key ID in use")
        out.needs_auth = bool(given) and MASTER in existing and (
            MASTER not in given or any(existing.get(t) != obj for t, obj in given.items()))
        # Keys identical to the stored ones are not written again (no device-list change).
        out.keys = {t: v for t, v in out.keys.items() if existing.get(t) != v[1]}
        return out

    async def store_upload(self, user_id: str, prepared: PreparedUpload) -> None:
        if not prepared.keys:
            return
        pos = await self.store.set_cross_signing_keys(user_id, prepared.keys, self.clock.time_msec())
        await self.device_lists.changed(user_id, pos)

    # --- /keys/signatures/upload -----------------------------------------------------------------

    async def upload_signatures(self, user_id: str, body: dict[str, dict[str, dict[str, Any]]],
                                is_local: Any) -> dict[str, dict[str, dict[str, str]]]:
        """Verify and store the signatures in ``body`` (target user -> key id -> signed object);
        returns the failures, which store nothing. ``is_local(user_id)`` tells local users."""
        failures: dict[str, dict[str, dict[str, str]]] = {}
        accepted: list[Signature] = []
        mine = await self.keys_of(user_id)
        local_targets = [u for u in body if is_local(u)]
        all_keys = await self.store.get_cross_signing_keys(local_targets)
        stored_sigs = await self.store.get_signatures(local_targets)
        my_devices = (await self.store.query_device_keys([user_id])).get(user_id, {}) \
            if user_id in body else {}
        for target, objs in body.items():
            for key_id, obj in objs.items():
                try:
                    if not is_local(target):
                        raise SignatureFailure("M_UNKNOWN", "Signing keys of remote users is not supported yet")
                    sigs = [s for s in stored_sigs if s.target_user_id == target and s.target_key_id == key_id]
                    if target == user_id and key_id in my_devices:
                        stored = merge_signatures(my_devices[key_id].keys, sigs)
                        ssk = mine.get(SELF_SIGNING)
                        signers = {key_id_of(ssk): public_key_of(ssk)} if ssk else {}
                    else:
                        their_master = all_keys.get(target, {}).get(MASTER)
                        if their_master is None or public_key_of(their_master) != key_id:
                            raise SignatureFailure("M_NOT_FOUND", "Unknown key")
                        stored = merge_signatures(their_master, sigs)
                        if target == user_id:
                            # Own master key: signed by the user's devices.
                            signers = {f"ed25519:{d}": k for d, row in my_devices.items()
                                       if (k := device_ed25519_key(row.keys)) is not None}
                        else:
                            usk = mine.get(USER_SIGNING)
                            signers = {key_id_of(usk): public_key_of(usk)} if usk else {}
                    accepted += self._new_signatures(user_id, target, key_id, obj, stored, signers)
                except SignatureFailure as e:
                    failures.setdefault(target, {})[key_id] = {"errcode": e.errcode, "error": e.message}
        if accepted:
            pos = await self.store.add_signatures(accepted)
            # Every accepted signature is one the uploader sees in their own /keys/query.
            await self.device_lists.changed(user_id, pos)
        return failures

    @staticmethod
    def _new_signatures(user_id: str, target: str, target_key_id: str, obj: dict[str, Any],
                        stored: dict[str, Any], signers: dict[str, str]) -> list[Signature]:
        """The uploader's signatures in ``obj`` not yet on ``stored``, each verified with the
        key its id names, which must be among ``signers`` (key id -> public key)."""
        if not same_signed_content(obj, stored):
            raise SignatureFailure("M_INVALID_SIGNATURE", "The signed object does not match the stored key")
        all_given = obj.get("signatures", {})
        given = all_given.get(user_id, {}) if isinstance(all_given, dict) else None
        if not isinstance(given, dict):
            raise SignatureFailure("M_INVALID_SIGNATURE", "Malformed signatures")
        known = stored.get("signatures", {}).get(user_id, {})
        out = []
        for signer_key_id, sig in given.items():
            if known.get(signer_key_id) == sig:
                continue  # already there: a retried upload
            if signer_key_id not in signers:
                raise SignatureFailure("M_INVALID_SIGNATURE",
                                       f"{signer_key_id} is not a key that may sign this key")
            try:
                verify_signature(obj, user_id, signer_key_id, signers[signer_key_id])
            except InvalidSignature as e:
                raise SignatureFailure("M_INVALID_SIGNATURE", str(e)) from None
            out.append(Signature(target, target_key_id, user_id, signer_key_id, sig))
        return out

    # --- /keys/query -----------------------------------------------------------------------------

    async def keys_for_query(self, requester: str, user_ids: list[str], sigs: list[Signature]
                             ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """(master_keys, self_signing_keys, user_signing_keys) of the users as the requester may
        see them; the user-signing key only of the requester."""
        keys = await self.store.get_cross_signing_keys(user_ids)
        masters: dict[str, Any] = {}
        self_signing: dict[str, Any] = {}
        user_signing: dict[str, Any] = {}
        for user, by_type in keys.items():
            if MASTER in by_type:
                master = by_type[MASTER]
                pub = public_key_of(master)
                masters[user] = merge_signatures(master, [
                    s for s in sigs if s.target_user_id == user and s.target_key_id == pub
                    and visible_to(requester, user, s)])
            if SELF_SIGNING in by_type:
                self_signing[user] = by_type[SELF_SIGNING]
            if USER_SIGNING in by_type and user == requester:
                user_signing[user] = by_type[USER_SIGNING]
        return masters, self_signing, user_signing
