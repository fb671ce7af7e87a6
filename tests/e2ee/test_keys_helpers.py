"""Helpers for the key tests: real Olm devices (python-olm) and ed25519 cross-signing keys.

No tests here; the key test modules import these.
"""

from __future__ import annotations

import copy
from typing import Any

import nacl.signing
import olm

from crypto.base64 import encode_base64
from crypto.canonical_json import encode_canonical_json

ALGORITHMS = ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"]


def _signable(obj: dict[str, Any]) -> str:
    return encode_canonical_json({k: v for k, v in obj.items()
                                  if k not in ("signatures", "unsigned")}).decode()


class Device:
    """An Olm account standing in for one client device."""

    def __init__(self, user_id: str, device_id: str) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.account = olm.Account()

    @property
    def ed25519(self) -> str:
        return self.account.identity_keys["ed25519"]

    @property
    def key_id(self) -> str:
        return f"ed25519:{self.device_id}"

    def sign(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Add this device's signature to obj (in place) and return it."""
        sig = self.account.sign(_signable(obj))
        obj.setdefault("signatures", {}).setdefault(self.user_id, {})[self.key_id] = sig
        return obj

    def device_keys(self) -> dict[str, Any]:
        ik = self.account.identity_keys
        return self.sign({
            "user_id": self.user_id, "device_id": self.device_id, "algorithms": list(ALGORITHMS),
            "keys": {f"curve25519:{self.device_id}": ik["curve25519"],
                     f"ed25519:{self.device_id}": ik["ed25519"]}})

    def one_time_keys(self, n: int) -> dict[str, Any]:
        """n new signed_curve25519 keys, signed by this device, marked as published."""
        self.account.generate_one_time_keys(n)
        out = {f"signed_curve25519:{kid}": self.sign({"key": key})
               for kid, key in self.account.one_time_keys["curve25519"].items()}
        self.account.mark_keys_as_published()
        return out

    def fallback_key(self) -> dict[str, Any]:
        self.account.generate_fallback_key()
        ((kid, key),) = self.account.fallback_key["curve25519"].items()
        out = {f"signed_curve25519:{kid}": self.sign({"key": key, "fallback": True})}
        self.account.mark_keys_as_published()
        return out


class SigningKey:
    """An ed25519 cross-signing key pair."""

    def __init__(self) -> None:
        self.private = nacl.signing.SigningKey.generate()
        self.public = encode_base64(self.private.verify_key.encode())

    @property
    def key_id(self) -> str:
        return f"ed25519:{self.public}"

    def sign(self, obj: dict[str, Any], user_id: str) -> dict[str, Any]:
        sig = encode_base64(self.private.sign(_signable(obj).encode()).signature)
        obj.setdefault("signatures", {}).setdefault(user_id, {})[self.key_id] = sig
        return obj

    def key_object(self, user_id: str, usage: str) -> dict[str, Any]:
        return {"user_id": user_id, "usage": [usage], "keys": {self.key_id: self.public}}


class CrossSigning:
    """A user's master, self-signing and user-signing keys, the latter two signed by master."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.master = SigningKey()
        self.self_signing = SigningKey()
        self.user_signing = SigningKey()

    def master_key(self) -> dict[str, Any]:
        return self.master.key_object(self.user_id, "master")

    def self_signing_key(self) -> dict[str, Any]:
        return self.master.sign(self.self_signing.key_object(self.user_id, "self_signing"), self.user_id)

    def user_signing_key(self) -> dict[str, Any]:
        return self.master.sign(self.user_signing.key_object(self.user_id, "user_signing"), self.user_id)

    def upload_body(self) -> dict[str, Any]:
        return {"master_key": self.master_key(), "self_signing_key": self.self_signing_key(),
                "user_signing_key": self.user_signing_key()}

    def sign_device(self, device_keys: dict[str, Any]) -> dict[str, Any]:
        """A copy of device keys with this user's self-signing signature added."""
        return self.self_signing.sign(copy.deepcopy(device_keys), self.user_id)

    def sign_user(self, master_key: dict[str, Any]) -> dict[str, Any]:
        """A copy of another user's master key signed with this user's user-signing key."""
        return self.user_signing.sign(copy.deepcopy(master_key), self.user_id)
