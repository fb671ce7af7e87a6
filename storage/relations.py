"""Relations between events (``m.relates_to``): children of parents, thread lists.

The ``events`` table carries ``relates_to``/``rel_type`` for every event with a relation (set
when persisted, see ``EventStore.persist_txn``). Children that were rejected, soft-failed,
stored as outliers or redacted are never returned: a redacted child has lost its relation
(Client-Server API, "Aggregations of child events").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from storage.database import Database, Transaction
from storage.events import EventRow, EventStore

Position = tuple[int, int]  # (depth, stream_ordering): topological order

# A child counts only if it is in the timeline, accepted, and not redacted by an accepted event.
_LIVE = ("{e}.outlier = FALSE AND {e}.rejected_reason IS NULL AND {e}.soft_failed = FALSE"
         " AND NOT EXISTS (SELECT 1 FROM redactions rd JOIN events re ON re.event_id = rd.event_id"
         " WHERE rd.redacts = {e}.event_id AND re.rejected_reason IS NULL AND re.soft_failed = FALSE)")


def _live(alias: str) -> str:
    return _LIVE.format(e=alias)


def _after(alias: str, backwards: bool, inclusive: bool = False) -> str:
    """SQL for "strictly before/after a (depth, stream) position" in the paging direction."""
    op = ("<" if backwards else ">")
    last = op + ("=" if inclusive else "")
    return (f"({alias}.depth {op} ? OR ({alias}.depth = ? AND {alias}.stream_ordering {last} ?))")


@dataclass(frozen=True)
class ThreadCandidate:
    """A thread root and the position of its latest (live) thread event."""
    root_id: str
    latest: Position


class RelationStore:
    def __init__(self, db: Database, events: EventStore) -> None:
        self.db = db
        self.events = events

    async def get_children(self, parent_ids: Iterable[str], rel_types: Sequence[str]
                           ) -> list[EventRow]:
        """Every live child of any of ``parent_ids`` with one of ``rel_types``, oldest first.

        One statement per 200 parents, run with the row fetch in a single transaction."""
        ids = list(dict.fromkeys(parent_ids))
        if not ids or not rel_types:
            return []

        def fn(txn: Transaction) -> list[EventRow]:
            found: list[str] = []
            types = ",".join("?" * len(rel_types))
            for i in range(0, len(ids), 200):
                chunk = ids[i:i + 200]
                marks = ",".join("?" * len(chunk))
                found += [r[0] for r in txn.query(
                    f"SELECT e.event_id FROM events e WHERE e.relates_to IN ({marks})"
                    f" AND e.rel_type IN ({types}) AND {_live('e')}"
                    f" ORDER BY e.depth, e.stream_ordering", (*chunk, *rel_types))]
            rows = self.events.get_rows_txn(txn, found)
            return [rows[i] for i in found if i in rows]
        return await self.db.run("get_relation_children", fn)

    async def paginate_relations(self, room_id: str, parent_id: str, *, rel_type: str | None,
                                 event_type: str | None, from_pos: Position, backwards: bool,
                                 limit: int, to_pos: Position | None = None, max_depth: int = 1
                                 ) -> list[EventRow]:
        """A page of the children of ``parent_id`` in topological order from ``from_pos``.

        With ``max_depth`` > 1 children of children are included too, up to that many hops;
        the filters apply at every hop, so an event reached only through a non-matching
        intermediate event is left out (spec: "Relationships API")."""
        filters = ""
        fargs: list[Any] = []
        if rel_type is not None:
            filters += " AND e.rel_type = ?"
            fargs.append(rel_type)
        if event_type is not None:
            filters += " AND e.type = ?"
            fargs.append(event_type)
        depth, stream = from_pos
        args: list[Any] = [parent_id, room_id, *fargs, max_depth, room_id, *fargs, parent_id,
                           depth, depth, stream]
        extra = ""
        if to_pos is not None:
            extra = " AND " + _after("e", not backwards, inclusive=True)
            args += [to_pos[0], to_pos[0], to_pos[1]]
        args.append(limit)
        order = "DESC" if backwards else "ASC"
        # The hop count bounds the recursion even if (crafted) relations form a cycle.
        sql = (
            "WITH RECURSIVE related(event_id, hops) AS ("
            f" SELECT e.event_id, 1 FROM events e WHERE e.relates_to = ? AND e.room_id = ?{filters}"
            f" AND {_live('e')}"
            " UNION"
            " SELECT e.event_id, r.hops + 1 FROM related r JOIN events e ON e.relates_to = r.event_id"
            f" WHERE r.hops < ? AND e.room_id = ?{filters} AND {_live('e')}"
            ")"
            " SELECT DISTINCT e.event_id, e.depth, e.stream_ordering FROM related r"
            " JOIN events e ON e.event_id = r.event_id"
            f" WHERE e.event_id <> ? AND {_after('e', backwards)}{extra}"
            f" ORDER BY e.depth {order}, e.stream_ordering {order} LIMIT ?")

        def fn(txn: Transaction) -> list[EventRow]:
            found = [r[0] for r in txn.query(sql, args)]
            rows = self.events.get_rows_txn(txn, found)
            return [rows[i] for i in found if i in rows]
        return await self.db.run("paginate_relations", fn)

    async def thread_roots(self, room_id: str, *, before: Position, limit: int,
                           participant: str | None = None) -> list[ThreadCandidate]:
        """Thread roots of a room by their latest live ``m.thread`` child, newest first,
        strictly before ``before``. With ``participant``, only threads that user started or
        replied in. A root must be an accepted timeline event of the room with no relation of
        its own; a redacted root still heads its thread (its children remain, spec)."""
        part = ""
        args: list[Any] = [room_id]
        if participant is not None:
            part = (" AND (r.sender = ? OR EXISTS (SELECT 1 FROM events p WHERE p.relates_to = t.root"
                    " AND p.rel_type = 'm.thread' AND p.room_id = t.room_id AND p.sender = ?"
                    f" AND {_live('p')}))")
        args += [before[0], before[0], before[1]]
        if participant is not None:
            args += [participant, participant]
        args.append(limit)
        sql = (
            "SELECT t.root, t.depth, t.stream_ordering FROM ("
            " SELECT e.relates_to AS root, e.room_id, e.depth, e.stream_ordering,"
            " ROW_NUMBER() OVER (PARTITION BY e.relates_to"
            " ORDER BY e.depth DESC, e.stream_ordering DESC) AS rn"
            f" FROM events e WHERE e.room_id = ? AND e.rel_type = 'm.thread' AND {_live('e')}"
            ") t JOIN events r ON r.event_id = t.root"
            f" WHERE t.rn = 1 AND {_after('t', True)} AND r.room_id = t.room_id"
            " AND r.relates_to IS NULL AND r.state_key IS NULL AND r.outlier = FALSE"
            f" AND r.rejected_reason IS NULL AND r.soft_failed = FALSE{part}"
            " ORDER BY t.depth DESC, t.stream_ordering DESC LIMIT ?")
        rows = await self.db.query(sql, args)
        return [ThreadCandidate(root, (d, s)) for root, d, s in rows]
