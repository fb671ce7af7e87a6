"""Unpadded standard and URL-safe base64 encoding, with padding-tolerant decoding."""

from __future__ import annotations

import base64 as _stdlib_base64
import binascii

__all__ = [
    "Base64DecodeError",
    "encode_base64",
    "decode_base64",
    "encode_urlsafe_base64",
    "decode_urlsafe_base64",
]

_STANDARD_ONLY = frozenset("+/")
_URLSAFE_ONLY = frozenset("-_")


class Base64DecodeError(ValueError):
    """Raised when a string is not valid (unpadded or padded) base64."""


def encode_base64(data: bytes) -> str:
    """Encode bytes as unpadded standard base64 (RFC 4648 section 4, no '=')."""
    return _stdlib_base64.b64encode(bytes(data)).decode("ascii").rstrip("=")


def encode_urlsafe_base64(data: bytes) -> str:
    """Encode bytes as unpadded URL-safe base64 (RFC 4648 section 5, no '=')."""
    return _stdlib_base64.urlsafe_b64encode(bytes(data)).decode("ascii").rstrip("=")


def _normalise(value: str | bytes) -> str:
    """Return the input as text with its trailing padding made canonical."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            text = bytes(value).decode("ascii")
        except UnicodeDecodeError as e:
            raise Base64DecodeError("base64 input is not ASCII") from e
    elif isinstance(value, str):
        text = value
    else:
        raise Base64DecodeError(f"cannot base64-decode a {type(value).__name__}")
    stripped = text.rstrip("=")
    if "=" in stripped:
        raise Base64DecodeError("'=' inside base64 data")
    if len(text) - len(stripped) > 2:
        raise Base64DecodeError("too much base64 padding")
    if len(stripped) % 4 == 1:
        raise Base64DecodeError("base64 input has an impossible length")
    return stripped + "=" * (-len(stripped) % 4)


def decode_base64(value: str | bytes) -> bytes:
    """Decode standard base64, accepting input with or without '=' padding."""
    padded = _normalise(value)
    if _URLSAFE_ONLY.intersection(padded):
        raise Base64DecodeError("URL-safe characters in standard base64")
    try:
        return _stdlib_base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as e:
        raise Base64DecodeError(f"invalid base64: {e}") from e


def decode_urlsafe_base64(value: str | bytes) -> bytes:
    """Decode URL-safe base64, accepting input with or without '=' padding."""
    padded = _normalise(value)
    if _STANDARD_ONLY.intersection(padded):
        raise Base64DecodeError("standard-alphabet characters in URL-safe base64")
    translated = padded.replace("-", "+").replace("_", "/")
    try:
        return _stdlib_base64.b64decode(translated, validate=True)
    except (binascii.Error, ValueError) as e:
        raise Base64DecodeError(f"invalid base64: {e}") from e
