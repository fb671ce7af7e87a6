"""Random tokens and their stored digests; passwords hashed with bcrypt off the reactor thread."""

from __future__ import annotations

import base64
import hashlib
import secrets
import string

import bcrypt
from twisted.internet import threads

_DEVICE_ALPHABET = string.ascii_uppercase


def new_token(prefix: str) -> str:
    """A bearer token with 256 random bits, e.g. 'hat_...' (access) or 'hrt_...' (refresh)."""
    return prefix + "_" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def token_digest(token: str) -> str:
    """What the database keeps of a token: its SHA-256, so a leaked database opens no session."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_device_id() -> str:
    return "".join(secrets.choice(_DEVICE_ALPHABET) for _ in range(10))


def new_session_id() -> str:
    return secrets.token_urlsafe(24)


def _prehash(password: str) -> bytes:
    # bcrypt reads at most 72 bytes; a SHA-256 pre-hash keeps every byte of a long password
    # significant (base64 so no NUL byte ends the input early).
    return base64.b64encode(hashlib.sha256(password.encode("utf-8")).digest())


async def hash_password(password: str, rounds: int) -> str:
    def work() -> str:
        return bcrypt.hashpw(_prehash(password), bcrypt.gensalt(rounds)).decode("ascii")
    return await threads.deferToThread(work)


async def check_password(password: str, stored_hash: str | None) -> bool:
    if not stored_hash:
        return False

    def work() -> bool:
        try:
            return bcrypt.checkpw(_prehash(password), stored_hash.encode("ascii"))
        except ValueError:
            return False
    return await threads.deferToThread(work)
