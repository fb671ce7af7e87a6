"""Pagination tokens: a topological position in a room, written "t<depth>_<stream>"."""

from __future__ import annotations

import re

from homeserver.http.errors import MatrixError

_TOKEN = re.compile(r"^t(-?\d+)_(-?\d+)$")


def position_token(depth: int, stream: int) -> str:
    return f"t{depth}_{stream}"


def parse_token(token: str) -> tuple[int, int]:
    m = _TOKEN.match(token)
    if not m:
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid pagination token: {token!r}")
    return int(m.group(1)), int(m.group(2))
