"""In-memory "what changed since position X" for a stream, so readers can skip empty queries.

A ``StreamChangeCache`` remembers, per entity (a room, a user), the highest stream position at
which it changed. It knows every change above its ``floor`` (the stream position when it was
created, raised when old entries are dropped to bound memory); below the floor it knows
nothing, and callers fall back to the database.
"""

from __future__ import annotations


class StreamChangeCache:
    def __init__(self, floor: int, max_entries: int = 100_000) -> None:
        self.floor = floor
        self._max = max_entries
        self._last: dict[str, int] = {}

    def record(self, entity: str, position: int) -> None:
        """``entity`` changed at ``position`` (called once the change has committed)."""
        if position > self._last.get(entity, 0):
            self._last[entity] = position
        if len(self._last) > self._max:
            self._trim()

    def _trim(self) -> None:
        """Forget the older half; the floor rises to the newest position forgotten."""
        items = sorted(self._last.items(), key=lambda kv: kv[1])
        cut = len(items) // 2
        self.floor = max(self.floor, items[cut - 1][1])
        self._last = dict(items[cut:])

    def knows(self, since: int) -> bool:
        """Whether every change after ``since`` is recorded here."""
        return since >= self.floor

    def last_change(self, entity: str) -> int:
        """The entity's latest recorded change (0: none above the floor)."""
        return self._last.get(entity, 0)

    def changed_since(self, entity: str, since: int) -> bool:
        """Whether the entity may have changed after ``since`` (True when unknown)."""
        return since < self.floor or self._last.get(entity, 0) > since
