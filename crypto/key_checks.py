"""Format and signature checks of end-to-end encryption keys (spec: "End-to-End Encryption").

Pure functions over parsed JSON: device keys, one-time/fallback key objects and cross-signing
keys. Every failure raises ``KeyCheckError`` with a message fit for a client; signature
failures raise its subclass ``InvalidSignature``.
"""

from __future__ import annotations

from typing import Any

import nacl.exceptions
import nacl.signing

from .base64 import Base64DecodeError, decode_base64
from .canonical_json import CanonicalJsonError
from .signing import ED25519_SIGNATURE_BYTES, signable_bytes

__all__ = [
    "KeyCheckError",
    "InvalidSignature",
    "CROSS_SIGNING_USAGES",
    "decode_public_key",
    "verify_signature",
    "check_device_keys",
    "device_ed25519_key",
    "check_signed_key_object",
    "check_cross_signing_key",
    "same_signed_content",
]

PUBLIC_KEY_BYTES = 32
CROSS_SIGNING_USAGES = ("master", "self_signing", "user_signing")


class KeyCheckError(ValueError):
    """A key object is malformed."""


class InvalidSignature(KeyCheckError):
    """A required signature is missing or does not verify."""


def decode_public_key(value: Any, what: str) -> bytes:
    """The 32 bytes of an unpadded-base64 ed25519 or curve25519 public key."""
    if not isinstance(value, str):
        raise KeyCheckError(f"{what} must be a string")
    try:
        raw = decode_base64(value)
    except Base64DecodeError:
        raise KeyCheckError(f"{what} is not valid base64") from None
    if len(raw) != PUBLIC_KEY_BYTES:
        raise KeyCheckError(f"{what} must be a {PUBLIC_KEY_BYTES}-byte key")
    return raw


def verify_signature(obj: dict[str, Any], signer: str, key_id: str, public_key: str) -> None:
    """Raise InvalidSignature unless obj carries signatures[signer][key_id] made by the ed25519
    ``public_key`` over obj's canonical JSON without "signatures" and "unsigned"."""
    sigs = obj.get("signatures")
    if not isinstance(sigs, dict):
        raise InvalidSignature("no 'signatures' object")
    by_signer = sigs.get(signer)
    if not isinstance(by_signer, dict) or key_id not in by_signer:
        raise InvalidSignature(f"no signature by {signer} with key {key_id}")
    sig_b64 = by_signer[key_id]
    if not isinstance(sig_b64, str):
        raise InvalidSignature(f"signature by {key_id} is not a string")
    try:
        sig = decode_base64(sig_b64)
    except Base64DecodeError:
        raise InvalidSignature(f"signature by {key_id} is not valid base64") from None
    if len(sig) != ED25519_SIGNATURE_BYTES:
        raise InvalidSignature(f"signature by {key_id} has the wrong length")
    try:
        verify_key = nacl.signing.VerifyKey(decode_public_key(public_key, f"key {key_id}"))
        message = signable_bytes(obj)
    except (KeyCheckError, CanonicalJsonError, nacl.exceptions.CryptoError, ValueError) as e:
        raise InvalidSignature(f"cannot check the signature by {key_id}: {e}") from None
    try:
        verify_key.verify(message, sig)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
        raise InvalidSignature(f"invalid signature by {key_id}") from None


def _check_signatures_shape(obj: dict[str, Any], required: bool) -> None:
    sigs = obj.get("signatures")
    if sigs is None and not required:
        return
    if not isinstance(sigs, dict) or not all(
            isinstance(k, str) and isinstance(v, dict) and all(isinstance(s, str) for s in v.values())
            for k, v in sigs.items()):
        raise KeyCheckError("'signatures' must map user ids to objects of key id -> signature")


def device_ed25519_key(device_keys: dict[str, Any]) -> str | None:
    """The device's ed25519 public key (base64) from a stored device-keys object."""
    keys = device_keys.get("keys")
    device_id = device_keys.get("device_id")
    if isinstance(keys, dict) and isinstance(device_id, str):
        value = keys.get(f"ed25519:{device_id}")
        return value if isinstance(value, str) else None
    return None


def check_device_keys(obj: Any, user_id: str, device_id: str) -> str:
    """Validate a DeviceKeys object uploaded by ``user_id``'s device ``device_id``; returns its
    ed25519 key. The object must be self-signed by that key."""
    if not isinstance(obj, dict):
        raise KeyCheckError("'device_keys' must be an object")
    if obj.get("user_id") != user_id:
        raise KeyCheckError("device_keys.user_id does not match the logged-in user")
    if obj.get("device_id") != device_id:
        raise KeyCheckError("device_keys.device_id does not match the logged-in device")
    algorithms = obj.get("algorithms")
    if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
        raise KeyCheckError("device_keys.algorithms must be an array of strings")
    keys = obj.get("keys")
    if not isinstance(keys, dict) or not keys:
        raise KeyCheckError("device_keys.keys must be a non-empty object")
    for key_id, value in keys.items():
        algorithm, sep, key_device = key_id.partition(":")
        if not sep or not algorithm or key_device != device_id:
            raise KeyCheckError(f"device key id {key_id!r} must be <algorithm>:{device_id}")
        if not isinstance(value, str):
            raise KeyCheckError(f"device key {key_id!r} must be a string")
        if algorithm in ("ed25519", "curve25519"):
            decode_public_key(value, f"device key {key_id}")
    ed_id = f"ed25519:{device_id}"
    if ed_id not in keys:
        raise KeyCheckError(f"device_keys.keys must contain {ed_id}")
    _check_signatures_shape(obj, required=True)
    verify_signature(obj, user_id, ed_id, keys[ed_id])
    return keys[ed_id]


def check_signed_key_object(name: str, value: Any, user_id: str, device_id: str,
                            ed25519_key: str) -> None:
    """Validate one ``signed_curve25519`` one-time or fallback key named ``name``: a curve25519
    key signed by the uploading device's ed25519 key."""
    if not isinstance(value, dict):
        raise KeyCheckError(f"key {name!r} must be an object")
    decode_public_key(value.get("key"), f"key {name!r}")
    if "fallback" in value and not isinstance(value["fallback"], bool):
        raise KeyCheckError(f"key {name!r}: 'fallback' must be a boolean")
    _check_signatures_shape(value, required=True)
    try:
        verify_signature(value, user_id, f"ed25519:{device_id}", ed25519_key)
    except InvalidSignature as e:
        raise InvalidSignature(f"key {name!r}: {e}") from None


def check_cross_signing_key(obj: Any, user_id: str, usage: str) -> str:
    """Validate a CrossSigningKey of ``user_id`` for ``usage``; returns its key id
    ("ed25519:<public key>"). Signatures are checked by the caller."""
    if not isinstance(obj, dict):
        raise KeyCheckError(f"the {usage} key must be an object")
    if obj.get("user_id") != user_id:
        raise KeyCheckError(f"the {usage} key's user_id does not match the user")
    usages = obj.get("usage")
    if not isinstance(usages, list) or not all(isinstance(u, str) for u in usages):
        raise KeyCheckError(f"the {usage} key's 'usage' must be an array of strings")
    if usage not in usages:
        raise KeyCheckError(f"the {usage} key's 'usage' must contain {usage!r}")
    keys = obj.get("keys")
    if not isinstance(keys, dict) or len(keys) != 1:
        raise KeyCheckError(f"the {usage} key's 'keys' must have exactly one entry")
    ((key_id, value),) = keys.items()
    algorithm, sep, public = key_id.partition(":")
    if algorithm != "ed25519" or not sep:
        raise KeyCheckError(f"the {usage} key must be an ed25519 key")
    decode_public_key(value, f"the {usage} key")
    if public != value:
        raise KeyCheckError(f"the {usage} key's id must be ed25519:<its public key>")
    _check_signatures_shape(obj, required=False)
    return key_id


def same_signed_content(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True if two key objects are the same apart from their signatures and unsigned data."""
    try:
        return signable_bytes(a) == signable_bytes(b)
    except CanonicalJsonError:
        return False
