"""Matrix canonical JSON encoding (spec appendix "Canonical JSON")."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import canonicaljson

__all__ = [
    "CanonicalJsonError",
    "MAX_SAFE_INTEGER",
    "MIN_SAFE_INTEGER",
    "encode_canonical_json",
    "check_canonical_json",
]

MAX_SAFE_INTEGER = 2**53 - 1
MIN_SAFE_INTEGER = -(2**53) + 1


class CanonicalJsonError(ValueError):
    """Raised when a value cannot be represented as Matrix canonical JSON."""


def _normalise(value: Any, strict: bool, path: str) -> Any:
    """Return a plain dict/list/str/int copy of value, validating it on the way."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        if strict and not MIN_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalJsonError(f"integer out of the canonical JSON range at {path}")
        return int(value)
    if isinstance(value, float):
        if strict:
            raise CanonicalJsonError(f"float value not allowed in canonical JSON at {path}")
        if math.isnan(value) or math.isinf(value):
            raise CanonicalJsonError(f"NaN/Infinity not allowed in JSON at {path}")
        return float(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalJsonError(f"non-string object key {key!r} at {path}")
            out[str(key)] = _normalise(item, strict, f"{path}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_normalise(item, strict, f"{path}[{i}]") for i, item in enumerate(value)]
    raise CanonicalJsonError(f"unsupported type {type(value).__name__} at {path}")


def check_canonical_json(obj: Any) -> None:
    """Raise CanonicalJsonError unless obj satisfies the strict canonical JSON rules."""
    encode_canonical_json(obj, strict=True)


def encode_canonical_json(obj: Any, *, strict: bool = True) -> bytes:
    """Encode obj as canonical JSON bytes; strict=False permits floats and big ints (room v1-v5)."""
    try:
        normalised = _normalise(obj, strict, "$")
        return canonicaljson.encode_canonical_json(normalised)
    except CanonicalJsonError:
        raise
    except RecursionError as e:
        raise CanonicalJsonError("JSON nested too deeply") from e
    except (ValueError, TypeError, UnicodeEncodeError) as e:
        raise CanonicalJsonError(str(e)) from e
