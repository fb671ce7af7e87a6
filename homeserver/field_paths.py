"""Dot-separated property paths (spec appendix), as push rule keys and filter event_fields use."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1024)
def parse_path(key: str) -> tuple[str, ...]:
    """Split a dot-separated property path; ``\\.`` is a literal dot and ``\\\\`` a backslash,
    any other backslash is kept as is."""
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(key):
        c = key[i]
        if c == "\\" and i + 1 < len(key) and key[i + 1] in ".\\":
            cur.append(key[i + 1])
            i += 2
            continue
        if c == ".":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return tuple(parts)
