"""The ``next_batch`` tokens of POST /search: where a page ended, opaque to clients.

A token is base64url of a small JSON object: the order it belongs to, the position of the
last result handed out (its stream position, and its rank in rank order), how many results
came before (for ``count``), and, for a token returned inside a group, that group's key and
value, so the next request continues that group only (spec "Pagination").
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass

from homeserver.http.errors import MatrixError
from storage.search import ORDER_RANK, ORDER_RECENT, SearchPosition

GROUP_KEYS = ("room_id", "sender")


@dataclass(frozen=True)
class BatchToken:
    order: str
    position: SearchPosition
    delivered: int = 0
    group: tuple[str, str] | None = None


def encode_token(token: BatchToken) -> str:
    data: dict = {"o": token.order, "s": token.position.stream_ordering, "n": token.delivered}
    if token.position.rank is not None:
        data["r"] = token.position.rank
    if token.group is not None:
        data["g"] = list(token.group)
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _invalid() -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", "Invalid next_batch token")


def decode_token(text: str) -> BatchToken:
    if len(text) > 2000:
        raise _invalid()
    try:
        data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error):
        raise _invalid() from None
    if not isinstance(data, dict):
        raise _invalid()
    order, stream, delivered = data.get("o"), data.get("s"), data.get("n", 0)
    rank, group = data.get("r"), data.get("g")
    if order not in (ORDER_RANK, ORDER_RECENT) or type(stream) is not int \
            or type(delivered) is not int or delivered < 0:
        raise _invalid()
    if order == ORDER_RANK:
        if type(rank) not in (int, float) or not math.isfinite(rank):
            raise _invalid()
        rank = float(rank)
    else:
        rank = None
    if group is not None:
        if not (isinstance(group, list) and len(group) == 2 and group[0] in GROUP_KEYS
                and isinstance(group[1], str)):
            raise _invalid()
        group = (group[0], group[1])
    return BatchToken(order, SearchPosition(stream, rank), delivered, group)
