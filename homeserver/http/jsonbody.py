"""Strict JSON parsing of request bodies (UTF-8, depth, no NaN) and typed field access."""

from __future__ import annotations

import json
import math
from typing import Any

from homeserver.http.errors import bad_json, invalid_param, missing_param, not_json


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # '1e400' is valid JSON grammar but overflows to inf, which no JSON encoder can write back.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _check_tree(value: Any, max_depth: int) -> None:
    """Iteratively check nesting depth and that every string is valid Unicode (no lone surrogates)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            if depth > max_depth:
                raise not_json(f"JSON nested deeper than {max_depth} levels")
            for k, item in v.items():
                _check_str(k)
                stack.append((item, depth + 1))
        elif isinstance(v, list):
            if depth > max_depth:
                raise not_json(f"JSON nested deeper than {max_depth} levels")
            stack.extend((item, depth + 1) for item in v)
        elif isinstance(v, str):
            _check_str(v)


def _check_str(s: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise not_json("JSON contains an invalid Unicode escape (lone surrogate)") from None


def parse_json(raw: bytes, max_depth: int = 100) -> Any:
    """Parse a body or raise M_NOT_JSON with a message that says what is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise not_json("Body is not valid UTF-8") from None
    if text.startswith("\ufeff"):
        raise not_json("Body starts with a byte-order mark")
    try:
        value = _decoder.decode(text)
    except RecursionError:
        raise not_json(f"JSON nested deeper than {max_depth} levels") from None
    except ValueError as e:
        raise not_json(f"Content not JSON: {e}") from None
    _check_tree(value, max_depth)
    return value


_MISSING = object()
_TYPE_NAMES = {str: "a string", bool: "a boolean", int: "an integer", dict: "an object",
               list: "an array"}


class JsonObject:
    """A parsed JSON object with checked accessors that raise the spec's errors."""

    def __init__(self, data: Any) -> None:
        if not isinstance(data, dict):
            raise bad_json("Request body must be a JSON object")
        self.data: dict[str, Any] = data

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def _get(self, key: str, typ: type, required: bool, default: Any) -> Any:
        value = self.data.get(key, _MISSING)
        if value is _MISSING or (value is None and not required):
            if required:
                raise missing_param(key)
            return default
        ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
        if not ok:
            raise invalid_param(f"'{key}' must be {_TYPE_NAMES[typ]}")
        return value

    def str(self, key: str, *, required: bool = False, default: Any = None,
            max_length: int | None = None) -> Any:
        value = self._get(key, str, required, default)
        if isinstance(value, str) and max_length is not None and len(value) > max_length:
            raise invalid_param(f"'{key}' is longer than {max_length} characters")
        return value

    def bool(self, key: str, *, required: bool = False, default: Any = None) -> Any:
        return self._get(key, bool, required, default)

    def int(self, key: str, *, required: bool = False, default: Any = None) -> Any:
        return self._get(key, int, required, default)

    def dict(self, key: str, *, required: bool = False, default: Any = None) -> Any:
        return self._get(key, dict, required, default)

    def list(self, key: str, *, required: bool = False, default: Any = None) -> Any:
        return self._get(key, list, required, default)

    def str_list(self, key: str, *, required: bool = False, default: Any = None) -> Any:
        value = self.list(key, required=required, default=default)
        if value is not None and not all(isinstance(v, str) for v in value):
            raise invalid_param(f"'{key}' must be an array of strings")
        return value
