"""The X-Matrix Authorization header of server-server requests (spec: "Request Authentication").

The signed object is {method, uri, origin, destination, content?}; the header carries the
origin, the destination, the key id and the signature. Only formatting and parsing live here;
checking a signature against the origin's published keys is federation/auth.py's job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from crypto.keys import SigningKey, key_id_of
from crypto.signing import sign_json


class XMatrixFormatError(ValueError):
    """The Authorization header is not a well-formed X-Matrix header."""


@dataclass(frozen=True)
class XMatrixHeader:
    origin: str
    destination: str | None
    key_id: str
    signature: str


def request_json(method: str, uri: str, origin: str, destination: str,
                 content: Any = None) -> dict[str, Any]:
    """The object whose signature the header carries; ``uri`` is the path with its query."""
    obj: dict[str, Any] = {"method": method.upper(), "uri": uri, "origin": origin,
                           "destination": destination}
    if content is not None:
        obj["content"] = content
    return obj


def sign_request(signing_key: SigningKey, origin: str, destination: str, method: str, uri: str,
                 content: Any = None) -> str:
    """The Authorization header value for one outgoing request."""
    # Not strict: bodies may carry events of rooms v1-v5, which allow floats.
    obj = sign_json(request_json(method, uri, origin, destination, content), origin, signing_key,
                    strict=False)
    key_id = key_id_of(signing_key)
    sig = obj["signatures"][origin][key_id]
    return (f'X-Matrix origin="{_quote(origin)}",destination="{_quote(destination)}",'
            f'key="{key_id}",sig="{sig}"')


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


# param = token "=" ( token / quoted-string ), RFC 9110's auth-param.
_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^",\s]+))\s*(?:,|$)')


def parse_header(value: str) -> XMatrixHeader:
    """Parse 'X-Matrix origin=...,destination=...,key=...,sig=...' (quotes optional)."""
    if not isinstance(value, str):
        raise XMatrixFormatError("no Authorization header")
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "x-matrix":
        raise XMatrixFormatError("Authorization header is not X-Matrix")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if not m or m.end() == pos:
            raise XMatrixFormatError("malformed X-Matrix parameters")
        name = m.group(1).lower()
        raw = m.group(2) if m.group(2) is not None else m.group(3)
        params[name] = re.sub(r"\\(.)", r"\1", raw) if m.group(2) is not None else raw
        pos = m.end()
    for name in ("origin", "key", "sig"):
        if not params.get(name):
            raise XMatrixFormatError(f"X-Matrix header without '{name}'")
    return XMatrixHeader(params["origin"], params.get("destination"), params["key"], params["sig"])
