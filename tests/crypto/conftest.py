"""Shared fixtures for the crypto package tests (spec appendix test vectors)."""

from __future__ import annotations

import os
import sys

import pytest

# The project is not installed into the venv; make the repository root importable.
_REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from crypto.keys import SigningKey, VerifyKey, get_verify_key, signing_key_from_seed  # noqa: E402
from crypto.base64 import decode_base64  # noqa: E402

# From content/appendices.md, "Cryptographic Test Vectors".
SPEC_SIGNING_KEY_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"


@pytest.fixture
def spec_signing_key() -> SigningKey:
    """The ed25519 key (version "1") used by the spec's cryptographic test vectors."""
    return signing_key_from_seed(decode_base64(SPEC_SIGNING_KEY_SEED), "1")


@pytest.fixture
def spec_verify_key(spec_signing_key: SigningKey) -> VerifyKey:
    """The public half of spec_signing_key."""
    return get_verify_key(spec_signing_key)
