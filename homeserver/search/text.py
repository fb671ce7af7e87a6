"""Words: how searched text and search terms are split, the same way for both engines.

Text is cut into runs of letters and digits (underscores and punctuation separate words) and
lower-cased in Python, so an index and a query see the same words whether the database is
SQLite (FTS5) or PostgreSQL (whose own lower() depends on the database's locale).
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    """The lower-cased words of ``text``, in order."""
    return _WORD.findall(text.lower())


def index_text(text: str) -> str:
    """The text an index stores for ``text``: its words, space separated."""
    return " ".join(words(text))
