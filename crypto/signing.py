"""Signing and verifying JSON objects (spec appendix "Signing JSON")."""

from __future__ import annotations

from typing import Any

import nacl.exceptions

from .base64 import Base64DecodeError, decode_base64, encode_base64
from .canonical_json import CanonicalJsonError, encode_canonical_json
from .keys import SigningKey, VerifyKey, key_id_of

__all__ = ["SignatureError", "sign_json", "verify_json", "signable_bytes"]

ED25519_SIGNATURE_BYTES = 64


class SignatureError(ValueError):
    """Raised when a JSON object does not carry a valid signature from the expected signer."""


def signable_bytes(obj: dict[str, Any], *, strict: bool = True) -> bytes:
    """Return the canonical JSON of obj without its "signatures" and "unsigned" keys."""
    stripped = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    return encode_canonical_json(stripped, strict=strict)


def sign_json(
    obj: dict[str, Any], signer_name: str, signing_key: SigningKey, *, strict: bool = True
) -> dict[str, Any]:
    """Sign obj in place, adding signatures[signer_name][key_id], and return it."""
    if not isinstance(obj, dict):
        raise TypeError("only JSON objects (dicts) can be signed")
    signatures = obj.get("signatures", {})
    if not isinstance(signatures, dict):
        raise ValueError("existing 'signatures' is not an object")
    if not all(isinstance(sigs, dict) for sigs in signatures.values()):
        raise ValueError("existing 'signatures' entries must be objects")
    signed = signing_key.sign(signable_bytes(obj, strict=strict))
    signatures = {name: dict(sigs) for name, sigs in signatures.items()}
    signatures.setdefault(signer_name, {})[key_id_of(signing_key)] = encode_base64(
        signed.signature
    )
    obj["signatures"] = signatures
    return obj


def verify_json(
    obj: dict[str, Any], signer_name: str, verify_key: VerifyKey, *, strict: bool = True
) -> None:
    """Raise SignatureError unless obj has a valid signature by signer_name with verify_key."""
    key_id = key_id_of(verify_key)
    if not isinstance(obj, dict):
        raise SignatureError("signed JSON must be an object")
    signatures = obj.get("signatures")
    if not isinstance(signatures, dict):
        raise SignatureError("no 'signatures' object")
    signer_sigs = signatures.get(signer_name)
    if not isinstance(signer_sigs, dict):
        raise SignatureError(f"not signed by {signer_name}")
    signature_b64 = signer_sigs.get(key_id)
    if signature_b64 is None:
        raise SignatureError(f"no signature by {signer_name} with key {key_id}")
    if not isinstance(signature_b64, str):
        raise SignatureError(f"signature by {signer_name} with key {key_id} is not a string")
    try:
        signature = decode_base64(signature_b64)
    except Base64DecodeError as e:
        raise SignatureError(f"signature by {signer_name} ({key_id}) is not valid base64") from e
    if len(signature) != ED25519_SIGNATURE_BYTES:
        raise SignatureError(f"signature by {signer_name} ({key_id}) has the wrong length")
    try:
        message = signable_bytes(obj, strict=strict)
    except CanonicalJsonError as e:
        raise SignatureError(f"object is not canonical JSON: {e}") from e
    try:
        verify_key.verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError) as e:
        raise SignatureError(f"bad signature by {signer_name} ({key_id})") from e
