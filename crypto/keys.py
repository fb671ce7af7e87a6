"""Ed25519 signing keys: generation, key IDs, Synapse-format key files and verify-key encoding."""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Iterable

import nacl.exceptions
import nacl.signing
from signedjson.key import NACL_ED25519, get_verify_key as _signedjson_get_verify_key
from signedjson.types import SigningKey, VerifyKey

from .base64 import Base64DecodeError, decode_base64, encode_base64

__all__ = [
    "ED25519",
    "KeyFormatError",
    "SigningKey",
    "VerifyKey",
    "generate_key_version",
    "generate_signing_key",
    "signing_key_from_seed",
    "get_verify_key",
    "make_key_id",
    "parse_key_id",
    "key_id_of",
    "encode_signing_key_seed",
    "encode_verify_key",
    "decode_verify_key",
    "parse_signing_key_file",
    "format_signing_key_file",
]

ED25519 = NACL_ED25519
ED25519_SEED_BYTES = 32
ED25519_PUBLIC_KEY_BYTES = 32

# The spec (server-server keys definition) limits key versions to [a-zA-Z0-9_].
_KEY_VERSION_RE = re.compile(r"^[A-Za-z0-9_]+$")


class KeyFormatError(ValueError):
    """Raised when a key, key ID or key file line is malformed."""


def _check_version(version: str) -> str:
    """Return version unchanged if it is a valid key version, else raise KeyFormatError."""
    if not isinstance(version, str) or not _KEY_VERSION_RE.match(version):
        raise KeyFormatError(f"invalid key version {version!r}: must match [a-zA-Z0-9_]+")
    return version


def generate_key_version() -> str:
    """Return a fresh random key version in Synapse's style ("a_" + 4 letters)."""
    return "a_" + "".join(secrets.choice(string.ascii_letters) for _ in range(4))


def signing_key_from_seed(seed: bytes, version: str) -> SigningKey:
    """Build an ed25519 SigningKey (with .alg and .version) from a 32-byte seed."""
    _check_version(version)
    if not isinstance(seed, (bytes, bytearray)) or len(seed) != ED25519_SEED_BYTES:
        raise KeyFormatError("an ed25519 seed must be exactly 32 bytes")
    key = nacl.signing.SigningKey(bytes(seed))
    key.version = version  # type: ignore[attr-defined]
    key.alg = ED25519  # type: ignore[attr-defined]
    return key  # type: ignore[return-value]


def generate_signing_key(version: str | None = None) -> SigningKey:
    """Generate a new random ed25519 signing key with the given (or a random) version."""
    if version is None:
        version = generate_key_version()
    return signing_key_from_seed(secrets.token_bytes(ED25519_SEED_BYTES), version)


def get_verify_key(signing_key: SigningKey) -> VerifyKey:
    """Return the public VerifyKey (carrying .alg and .version) of a signing key."""
    return _signedjson_get_verify_key(signing_key)


def make_key_id(version: str, algorithm: str = ED25519) -> str:
    """Return the key ID "<algorithm>:<version>", e.g. "ed25519:a_AbCd"."""
    return f"{algorithm}:{_check_version(version)}"


def parse_key_id(key_id: str) -> tuple[str, str]:
    """Split a key ID into (algorithm, version), raising KeyFormatError if malformed."""
    if not isinstance(key_id, str) or ":" not in key_id:
        raise KeyFormatError(f"invalid key ID {key_id!r}")
    algorithm, version = key_id.split(":", 1)
    if not algorithm:
        raise KeyFormatError(f"invalid key ID {key_id!r}")
    return algorithm, _check_version(version)


def key_id_of(key: SigningKey | VerifyKey) -> str:
    """Return the key ID of a signedjson-style key object (uses its .alg and .version)."""
    return f"{key.alg}:{key.version}"


def encode_signing_key_seed(signing_key: SigningKey) -> str:
    """Return the unpadded base64 of a signing key's 32-byte seed."""
    return encode_base64(signing_key.encode())


def encode_verify_key(verify_key: VerifyKey) -> str:
    """Return the unpadded base64 encoding of a verify (public) key."""
    return encode_base64(verify_key.encode())


def decode_verify_key(key_id: str, key_base64: str) -> VerifyKey:
    """Decode an unpadded base64 ed25519 public key into a VerifyKey for key_id."""
    algorithm, version = parse_key_id(key_id)
    if algorithm != ED25519:
        raise KeyFormatError(f"unsupported key algorithm {algorithm!r}")
    try:
        key_bytes = decode_base64(key_base64)
    except Base64DecodeError as e:
        raise KeyFormatError(f"verify key for {key_id} is not valid base64") from e
    if len(key_bytes) != ED25519_PUBLIC_KEY_BYTES:
        raise KeyFormatError(f"verify key for {key_id} is not 32 bytes")
    try:
        key = nacl.signing.VerifyKey(key_bytes)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as e:
        raise KeyFormatError(f"invalid ed25519 verify key for {key_id}") from e
    key.version = version  # type: ignore[attr-defined]
    key.alg = algorithm  # type: ignore[attr-defined]
    return key  # type: ignore[return-value]


def parse_signing_key_file(contents: str | Iterable[str]) -> list[SigningKey]:
    """Parse Synapse's key file format: one "ed25519 <version> <base64 seed>" per line."""
    lines = contents.splitlines() if isinstance(contents, str) else contents
    keys: list[SigningKey] = []
    for line_no, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3:
            raise KeyFormatError(f"line {line_no}: expected '<algorithm> <version> <seed>'")
        algorithm, version, seed_base64 = fields
        if algorithm != ED25519:
            raise KeyFormatError(f"line {line_no}: unsupported algorithm {algorithm!r}")
        try:
            seed = decode_base64(seed_base64)
        except Base64DecodeError as e:
            raise KeyFormatError(f"line {line_no}: seed is not valid base64") from e
        try:
            keys.append(signing_key_from_seed(seed, version))
        except KeyFormatError as e:
            raise KeyFormatError(f"line {line_no}: {e}") from e
    return keys


def format_signing_key_file(keys: Iterable[SigningKey]) -> str:
    """Serialise signing keys to Synapse's key file format (one line per key)."""
    return "".join(
        f"{key.alg} {_check_version(key.version)} {encode_signing_key_seed(key)}\n"
        for key in keys
    )
