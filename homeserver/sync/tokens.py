"""Sync stream tokens: one position per stream, serialised as "s<events>_<account_data>_...".

Every stream's positions are persisted ids except typing, which lives in memory: a token from
before a restart may carry a typing position ahead of the restarted server's, and then counts
as "nothing new" for typing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from homeserver.http.errors import MatrixError

STREAMS = ("events", "account_data", "receipts", "typing", "to_device", "device_lists", "presence")
_TOKEN = re.compile(r"^s(\d+)(?:_(\d+)){0,6}$")


@dataclass(frozen=True)
class SyncToken:
    events: int = 0
    account_data: int = 0
    receipts: int = 0
    typing: int = 0
    to_device: int = 0
    device_lists: int = 0
    presence: int = 0

    def __str__(self) -> str:
        return "s" + "_".join(map(str, self.positions()))

    def positions(self) -> tuple[int, ...]:
        """The positions in STREAMS order."""
        return (self.events, self.account_data, self.receipts, self.typing, self.to_device,
                self.device_lists, self.presence)

    @classmethod
    def parse(cls, text: str) -> "SyncToken":
        if not _TOKEN.match(text):
            raise MatrixError(400, "M_INVALID_PARAM", f"Invalid sync token: {text!r}")
        parts = [int(p) for p in text[1:].split("_")]
        return cls(**dict(zip(STREAMS, parts)))

    def copy_with(self, **changes: int) -> "SyncToken":
        return replace(self, **changes)

    def is_after(self, other: "SyncToken") -> bool:
        """True if any stream has moved on since ``other``."""
        return any(a > b for a, b in zip(self.positions(), other.positions()))

    def at_least(self, other: "SyncToken") -> "SyncToken":
        """Each stream at the further of the two positions."""
        if not other.is_after(self):
            return self
        return SyncToken(*(max(a, b) for a, b in zip(self.positions(), other.positions())))
