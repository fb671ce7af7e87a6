"""What the matrix-nio compat tests share: user ids, and checks that name the server's answer."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import nio

SERVER_NAME = "test.local"

R = TypeVar("R")


def mxid(localpart: str) -> str:
    return f"@{localpart}:{SERVER_NAME}"


def describe(resp: object) -> str:
    """nio's class and the HTTP exchange behind it, short enough to read in a failure."""
    transport = getattr(resp, "transport_response", None)
    body = getattr(transport, "_body", None)  # aiohttp keeps the body it has read
    shown = body[:800] + (b"..." if len(body) > 800 else b"") if isinstance(body, bytes) else body
    detail = str(resp) if isinstance(resp, nio.ErrorResponse) else ""
    return (f"{type(resp).__name__} {detail}; HTTP {getattr(transport, 'status', '?')} "
            f"{getattr(transport, 'method', '')} {getattr(transport, 'url', '')} body {shown!r}")


def ok(resp: object, cls: type[R]) -> R:
    """``resp`` is nio's success class ``cls``; otherwise fail with what the server answered."""
    if not isinstance(resp, cls) or isinstance(resp, nio.ErrorResponse):
        raise AssertionError(f"expected {cls.__name__}, got {describe(resp)}")
    return resp


def raw_body(resp: nio.Response) -> dict[str, Any]:
    """The JSON the server sent for ``resp``, before nio replaced encrypted events."""
    body = resp.transport_response._body  # type: ignore[union-attr]
    assert isinstance(body, bytes), describe(resp)
    return json.loads(body)
