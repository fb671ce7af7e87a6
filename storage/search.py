"""The full-text index of timeline events behind POST /search.

One row per searchable event in ``event_search``; the words live in an FTS5 index on SQLite
and in a tsvector column with a GIN index on PostgreSQL (schema 0007). The engine's SQL is
chosen once, here; callers see one API. Rows are written by a persist hook inside the
transaction that stores the event, and deleted when the event is redacted.

Ranks differ by engine: SQLite's is bm25 (negated, so higher is better; it depends on the
whole index, so it shifts a little as events arrive), PostgreSQL's is ts_rank_cd (cover
density, a function of the event and the query only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from storage.database import Database, Transaction

ORDER_RANK = "rank"
ORDER_RECENT = "recent"


# --- a parsed search term (homeserver/search/query.py builds it) ----------------------------------

@dataclass(frozen=True)
class Term:
    """Words that must follow each other; with ``prefix`` the last one may be a word's start."""
    words: tuple[str, ...]
    prefix: bool


@dataclass(frozen=True)
class Clause:
    """All of ``include`` and none of ``exclude``."""
    include: tuple[Term, ...]
    exclude: tuple[Term, ...]


@dataclass(frozen=True)
class SearchQuery:
    """Any one of ``clauses``; no clause at all matches nothing."""
    clauses: tuple[Clause, ...]

    @property
    def empty(self) -> bool:
        return not self.clauses


@dataclass(frozen=True)
class SearchEntry:
    """What the index keeps of one event; ``text`` is already split into words."""
    event_id: str
    room_id: str
    sender: str
    stream_ordering: int
    key: str
    contains_url: bool
    text: str


@dataclass(frozen=True)
class SearchScope:
    """Which indexed events a search may return, before the visibility check.

    Only rooms where ``user_id`` has a membership that is not forgotten, and in rooms the user
    is not joined to now, only events up to their latest membership change: the spec's
    "events in rooms that happened after you left" are never candidates (nor are events
    sent while the user is merely invited or knocking: search covers rooms one has been in).
    """
    user_id: str
    keys: tuple[str, ...]
    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    senders: tuple[str, ...] | None = None
    not_senders: tuple[str, ...] = ()
    contains_url: bool | None = None


@dataclass(frozen=True)
class SearchPosition:
    """Where a page ended: the last event's stream position, and its rank for rank order."""
    stream_ordering: int
    rank: float | None = None


@dataclass(frozen=True)
class SearchHit:
    event_id: str
    room_id: str
    sender: str
    stream_ordering: int
    rank: float

    def position(self, order: str) -> SearchPosition:
        return SearchPosition(self.stream_ordering, self.rank if order == ORDER_RANK else None)


# --- query rendering -------------------------------------------------------------------------
# Words are runs of letters and digits (homeserver/search/text.py), so they never contain a
# quote or an operator character of either query language.

def _fts5_term(term: Term) -> str:
    return '"' + " ".join(term.words) + '"' + ("*" if term.prefix else "")


def _fts5_clause(clause: Clause) -> str:
    expr = " AND ".join(_fts5_term(t) for t in clause.include)
    for t in clause.exclude:
        expr = f"({expr}) NOT {_fts5_term(t)}"
    return f"({expr})"


def render_fts5(query: SearchQuery) -> str:
    """An FTS5 MATCH expression (NOT is binary there: "a NOT b")."""
    return " OR ".join(_fts5_clause(c) for c in query.clauses)


def _tsquery_term(term: Term) -> str:
    parts = [f"'{w}'" for w in term.words]
    if term.prefix:
        parts[-1] += ":*"
    return parts[0] if len(parts) == 1 else "(" + " <-> ".join(parts) + ")"


def _tsquery_clause(clause: Clause) -> str:
    parts = [_tsquery_term(t) for t in clause.include]
    parts += ["!" + _tsquery_term(t) for t in clause.exclude]
    return "(" + " & ".join(parts) + ")"


def render_tsquery(query: SearchQuery) -> str:
    """Text for to_tsquery('simple', ...)."""
    return " | ".join(_tsquery_clause(c) for c in query.clauses)


def _marks(n: int) -> str:
    return ",".join("?" * n)


class SearchStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._sqlite = db.engine_name == "sqlite3"

    # --- writing (inside the event's transaction) ----------------------------------------------

    def index_txn(self, txn: Transaction, entry: SearchEntry) -> None:
        args = (entry.stream_ordering, entry.event_id, entry.room_id, entry.sender, entry.key,
                entry.contains_url, entry.text)
        if self._sqlite:
            txn.execute("INSERT INTO event_search (stream_ordering, event_id, room_id, sender, key,"
                        " contains_url, value) VALUES (?, ?, ?, ?, ?, ?, ?)", args)
            txn.execute("INSERT INTO event_search_fts (rowid, value) VALUES (?, ?)",
                        (entry.stream_ordering, entry.text))
        else:
            txn.execute("INSERT INTO event_search (stream_ordering, event_id, room_id, sender, key,"
                        " contains_url, vector) VALUES (?, ?, ?, ?, ?, ?, to_tsvector('simple', ?))",
                        args)

    def delete_txn(self, txn: Transaction, event_id: str, room_id: str) -> None:
        """Drop an event from the index (it was redacted); nothing happens if it is not there."""
        if self._sqlite:
            row = txn.query_one("SELECT stream_ordering, value FROM event_search"
                                " WHERE event_id = ? AND room_id = ?", (event_id, room_id))
            if row is None:
                return
            # An external-content FTS5 index forgets a row when told its exact old text.
            txn.execute("INSERT INTO event_search_fts (event_search_fts, rowid, value)"
                        " VALUES ('delete', ?, ?)", row)
            txn.execute("DELETE FROM event_search WHERE stream_ordering = ?", (row[0],))
        else:
            txn.execute("DELETE FROM event_search WHERE event_id = ? AND room_id = ?",
                        (event_id, room_id))

    def is_redacted_txn(self, txn: Transaction, event_id: str) -> bool:
        """A redaction of the event is already stored (it arrived before the event did)."""
        return txn.query_one("SELECT 1 FROM redactions WHERE redacts = ?", (event_id,)) is not None

    def room_is_encrypted_txn(self, txn: Transaction, room_id: str) -> bool:
        return txn.query_one("SELECT 1 FROM current_state WHERE room_id = ?"
                             " AND type = 'm.room.encryption' AND state_key = ''",
                             (room_id,)) is not None

    # --- searching -----------------------------------------------------------------------------

    def _candidates(self, query: SearchQuery, scope: SearchScope) -> tuple[str, list[Any]]:
        """A SELECT of (event_id, room_id, sender, stream_ordering, score) for every match."""
        if self._sqlite:
            sql = ("SELECT s.event_id, s.room_id, s.sender, s.stream_ordering,"
                   " -bm25(event_search_fts) AS score"
                   " FROM event_search_fts"
                   " JOIN event_search s ON s.stream_ordering = event_search_fts.rowid"
                   " JOIN current_membership m ON m.room_id = s.room_id AND m.user_id = ?"
                   " WHERE event_search_fts MATCH ?")
            args: list[Any] = [scope.user_id, render_fts5(query)]
        else:
            # The tsquery is written out twice so that the planner sees a constant in the
            # WHERE clause and can use the GIN index.
            tsquery = render_tsquery(query)
            sql = ("SELECT s.event_id, s.room_id, s.sender, s.stream_ordering,"
                   " ts_rank_cd(s.vector, to_tsquery('simple', ?))::float8 AS score"
                   " FROM event_search s"
                   " JOIN current_membership m ON m.room_id = s.room_id AND m.user_id = ?"
                   " WHERE s.vector @@ to_tsquery('simple', ?)")
            args = [tsquery, scope.user_id, tsquery]
        sql += (" AND m.forgotten = FALSE"
                " AND (m.membership = 'join' OR s.stream_ordering <= m.stream_ordering)"
                f" AND s.key IN ({_marks(len(scope.keys))})")
        args += scope.keys
        if scope.rooms is not None:
            sql += f" AND s.room_id IN ({_marks(len(scope.rooms))})"
            args += scope.rooms
        if scope.not_rooms:
            sql += f" AND s.room_id NOT IN ({_marks(len(scope.not_rooms))})"
            args += scope.not_rooms
        if scope.senders is not None:
            sql += f" AND s.sender IN ({_marks(len(scope.senders))})"
            args += scope.senders
        if scope.not_senders:
            sql += f" AND s.sender NOT IN ({_marks(len(scope.not_senders))})"
            args += scope.not_senders
        if scope.contains_url is not None:
            sql += " AND s.contains_url = ?"
            args.append(scope.contains_url)
        return sql, args

    async def search(self, query: SearchQuery, scope: SearchScope, order: str,
                     after: SearchPosition | None, limit: int) -> list[SearchHit]:
        """Up to ``limit`` matches in ``order`` (best or newest first), strictly after ``after``."""
        if query.empty or not scope.keys or scope.rooms == () or scope.senders == ():
            return []
        inner, args = self._candidates(query, scope)
        sql = f"SELECT event_id, room_id, sender, stream_ordering, score FROM ({inner}) AS hits"
        if order == ORDER_RANK:
            if after is not None:
                sql += " WHERE score < ? OR (score = ? AND stream_ordering < ?)"
                args += [after.rank, after.rank, after.stream_ordering]
            sql += " ORDER BY score DESC, stream_ordering DESC LIMIT ?"
        else:
            if after is not None:
                sql += " WHERE stream_ordering < ?"
                args.append(after.stream_ordering)
            sql += " ORDER BY stream_ordering DESC LIMIT ?"
        args.append(limit)
        rows: Sequence[tuple] = await self.db.query(sql, args)
        return [SearchHit(e, r, s, int(so), float(score)) for e, r, s, so, score in rows]
