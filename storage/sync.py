"""Queries /sync needs: memberships over time and room timelines by stream position.

Most /sync requests ask about a short range just behind the current position, and many users
ask about the same rooms at once (one message wakes every member). So the reads are answered
from memory where that is exact: the change caches of ``EventStore`` say which rooms and users
changed since a position, a user's current memberships are kept until they change, and a
timeline or state lookup below the current position never changes once read.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from storage.database import Database, Transaction
from storage.events import _ROW_COLS, EventRow, EventStore
from storage.relations import RelationStore
from storage.single_flight import SingleFlight

Timeline = tuple[list[EventRow], bool]
_TAIL_ROWS = 50      # newest timeline events kept per room
_TAIL_ROOMS = 10_000


@dataclass
class _Tail:
    """A room's newest timeline events: every one after ``before`` (up to the committed
    position), oldest first."""
    before: int
    rows: list[EventRow]


@dataclass(frozen=True)
class Membership:
    room_id: str
    membership: str
    event_id: str
    stream_ordering: int
    forgotten: bool = False


class _Lru:
    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any) -> Any:
        value = self.items.get(key)
        if value is not None:
            self.items.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        self.items[key] = value
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)


class SyncStore:
    def __init__(self, db: Database, events: EventStore) -> None:
        self.db = db
        self.events = events
        # user -> (membership version, memberships)
        self._memberships = _Lru(10_000)
        # (room, after, upto, limit) -> timeline; (room, upto) -> state group. Events at or
        # below a position handed to /sync are all committed (one lock orders persistence),
        # so these never change.
        self._timelines = _Lru(5_000)
        self._groups_at = _Lru(20_000)
        self._flights: SingleFlight = SingleFlight()
        # room -> its newest events, kept as they commit: the timeline a woken /sync asks for
        # (the events since its token) is answered from here without a database read.
        self._tails: OrderedDict[str, _Tail] = OrderedDict()
        events.row_listeners.append(self._on_row)

    def _on_row(self, row: EventRow, previous: int, fresh: bool) -> None:
        if row.stream_ordering <= 0:
            return  # backfilled history: below every since-token, never in a tail
        room_id = row.event.room_id
        tail = self._tails.get(room_id)
        last = tail.rows[-1].stream_ordering if tail is not None and tail.rows else None
        if tail is None or (last if last is not None else tail.before) != previous:
            # Unknown, or a change was missed: start afresh after the room's previous change.
            tail = self._tails[room_id] = _Tail(previous, [])
        self._tails.move_to_end(room_id)
        # Rejected and soft-failed rows stay in the list (the next row continues after them)
        # but are never answered.
        tail.rows.append(row)
        if len(tail.rows) > _TAIL_ROWS:
            tail.before = tail.rows.pop(0).stream_ordering
        while len(self._tails) > _TAIL_ROOMS:
            self._tails.popitem(last=False)

    def _from_tail(self, room_id: str, after: int | None, upto: int, limit: int) -> Timeline | None:
        tail = self._tails.get(room_id)
        if tail is None or after is None or after < tail.before \
                or upto > self.events.committed_position:
            return None
        rows = [r for r in tail.rows if after < r.stream_ordering <= upto
                and not (r.rejected or r.soft_failed)]
        return rows[-limit:] if limit > 0 else [], len(rows) > limit

    async def current_memberships(self, user_id: str) -> list[Membership]:
        version = self.events.membership_version(user_id)
        hit = self._memberships.get(user_id)
        if hit is not None and hit[0] == version:
            return list(hit[1])
        rows = await self.db.query(
            "SELECT room_id, membership, event_id, stream_ordering, forgotten FROM current_membership"
            " WHERE user_id = ?", (user_id,))
        out = [Membership(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]
        if version == self.events.membership_version(user_id):
            self._memberships.put(user_id, (version, tuple(out)))
        return out

    async def membership_changes(self, user_id: str, after: int, upto: int) -> list[Membership]:
        """Every membership change of the user in (after, upto], oldest first."""
        changes = self.events.member_changes
        if after >= upto or (changes.knows(after) and changes.last_change(user_id) <= after):
            return []
        rows = await self.db.query(
            "SELECT room_id, membership, event_id, stream_ordering FROM room_memberships"
            " WHERE user_id = ? AND stream_ordering > ? AND stream_ordering <= ?"
            " ORDER BY stream_ordering", (user_id, after, upto))
        return [Membership(r[0], r[1], r[2], r[3]) for r in rows]

    async def rooms_with_events(self, room_ids: Iterable[str], after: int, upto: int) -> set[str]:
        """The rooms among ``room_ids`` with a timeline event in (after, upto]."""
        ids = list(room_ids)
        out: set[str] = set()
        if after >= upto:
            return out
        changes = self.events.room_changes
        if changes.knows(after):
            unsure = []
            for room_id in ids:
                last = changes.last_change(room_id)
                if last <= after:
                    continue
                if last <= upto:
                    out.add(room_id)
                else:
                    unsure.append(room_id)  # changed since upto: was there one before?
            ids = unsure
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            rows = await self.db.query(
                f"SELECT DISTINCT room_id FROM events WHERE room_id IN ({marks})"
                f" AND stream_ordering > ? AND stream_ordering <= ? AND outlier = FALSE",
                (*chunk, after, upto))
            out.update(r[0] for r in rows)
        return out

    async def timelines(self, requests: list[tuple[str, int | None, int, int]]
                        ) -> dict[str, Timeline]:
        """For each (room_id, after, upto, limit): the newest ``limit`` timeline events in
        (after, upto], oldest first, and whether older ones in the range were left out."""
        out: dict[str, Timeline] = {}
        missing = []
        for req in requests:
            hit = self._timelines.get(req)
            if hit is not None:
                out[req[0]] = (list(hit[0]), hit[1])
            elif (recent := self._from_tail(*req)) is not None:
                out[req[0]] = recent
            else:
                missing.append(req)
        if not missing:
            return out

        def fn(txn: Transaction) -> dict[tuple, Timeline]:
            found = {}
            for room_id, after, upto, limit in missing:
                args: list = [room_id, upto]
                cond = ""
                if after is not None:
                    cond = " AND e.stream_ordering > ?"
                    args.append(after)
                args.append(limit + 1)
                rows = txn.query(
                    f"SELECT {_ROW_COLS} FROM events e JOIN rooms r ON r.room_id = e.room_id"
                    f" WHERE e.room_id = ? AND e.stream_ordering <= ?{cond} AND e.outlier = FALSE"
                    f" AND e.rejected_reason IS NULL AND e.soft_failed = FALSE"
                    f" ORDER BY e.stream_ordering DESC LIMIT ?", args)
                parsed = [self.events._row(r) for r in rows]
                limited = len(parsed) > limit
                found[(room_id, after, upto, limit)] = (list(reversed(parsed[:limit])), limited)
            return found
        upto_ok = self.events.committed_position
        found = await self._flights.run(("timelines", tuple(missing)),
                                        lambda: self.db.run("sync_timelines", fn))
        for req, (rows, limited) in found.items():
            if req[2] <= upto_ok:
                self._timelines.put(req, (tuple(rows), limited))
            out[req[0]] = (list(rows), limited)
        return out

    async def state_group_at(self, room_id: str, upto: int) -> int | None:
        """The state group after the room's last event at or before stream position ``upto``."""
        return (await self.state_groups_at([room_id], upto)).get(room_id)

    async def state_groups_at(self, room_ids: Sequence[str], upto: int) -> dict[str, int | None]:
        """``state_group_at`` for several rooms, in one transaction."""
        out: dict[str, int | None] = {}
        missing = []
        for room_id in room_ids:
            hit = self._groups_at.get((room_id, upto))
            if hit is not None:
                out[room_id] = hit[0]
            else:
                missing.append(room_id)
        if not missing:
            return out

        def fn(txn: Transaction) -> dict[str, int | None]:
            found = {}
            for room_id in missing:
                row = txn.query_one(
                    "SELECT state_group_after FROM events WHERE room_id = ? AND stream_ordering <= ?"
                    " AND outlier = FALSE AND rejected_reason IS NULL AND soft_failed = FALSE"
                    " ORDER BY stream_ordering DESC LIMIT 1", (room_id, upto))
                found[room_id] = row[0] if row else None
            return found
        cacheable = upto <= self.events.committed_position
        found = await self._flights.run(("groups_at", tuple(missing), upto),
                                        lambda: self.db.run("sync_state_groups_at", fn))
        for room_id, group in found.items():
            out[room_id] = group
            if cacheable:
                self._groups_at.put((room_id, upto), (group,))
        return out

    async def members_of_rooms(self, room_ids: Sequence[str], memberships: tuple[str, ...]
                               ) -> dict[str, dict[str, list[str]]]:
        """room id -> membership -> user ids (sorted), for room summaries, in one query per
        500 rooms."""
        out: dict[str, dict[str, list[str]]] = {r: {m: [] for m in memberships} for r in room_ids}
        ids = list(room_ids)
        kinds = ",".join("?" * len(memberships))
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for room_id, user_id, membership in await self.db.query(
                    f"SELECT room_id, user_id, membership FROM current_membership"
                    f" WHERE room_id IN ({marks}) AND membership IN ({kinds})"
                    f" ORDER BY room_id, user_id", (*chunk, *memberships)):
                out[room_id][membership].append(user_id)
        return out


class SyncRelationStore(RelationStore):
    """RelationStore whose children lookups (bundled aggregations) are cached per parent until
    any relation or redaction is stored: /sync serializes the same new events for every member
    of a room."""

    def __init__(self, db: Database, events: EventStore,
                 rel_types: Sequence[Sequence[str]] = ()) -> None:
        super().__init__(db, events)
        self._children: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}
        self._version = self._current_version()
        self._flights: SingleFlight = SingleFlight()
        # The relation type lists asked about (given ones first): an event made here is
        # recorded as having no children of each.
        self._types_asked: set[tuple[str, ...]] = {tuple(t) for t in rel_types}
        events.row_listeners.append(self._on_row)

    def _on_row(self, row: EventRow, previous: int, fresh: bool) -> None:
        """An event made here just now has no children yet: say so before anyone asks."""
        if not fresh:
            return
        self._check_version()
        if len(self._children) > 50_000:
            self._children.clear()
        for types in self._types_asked:
            self._children[(row.event.event_id, types)] = ()

    def _current_version(self) -> tuple[int, int]:
        return (self.events.relations_version, self.events.redactions_version)

    def _check_version(self) -> tuple[int, int]:
        """Forget the cached children if a relation or redaction was stored since; returns the
        version they are now valid at."""
        version = self._current_version()
        if version != self._version:
            self._children.clear()
            self._version = version
        return version

    async def get_children(self, parent_ids: Iterable[str], rel_types: Sequence[str]
                           ) -> list[EventRow]:
        version = self._check_version()
        ids = list(dict.fromkeys(parent_ids))
        types = tuple(rel_types)
        self._types_asked.add(types)
        known = [c for p in ids for c in self._children.get((p, types), ())]
        missing = [p for p in ids if (p, types) not in self._children]
        found: list[EventRow] = []
        if missing:
            found = list(await self._flights.run((tuple(missing), types, version),
                                                 lambda: self._read_children(missing, types)))
            if self._current_version() == version:  # nothing related or redacted meanwhile
                by_parent: dict[str, list[str]] = {p: [] for p in missing}
                for row in found:
                    rel = row.event.content.get("m.relates_to")
                    parent = rel.get("event_id") if isinstance(rel, dict) else None
                    if parent in by_parent:
                        by_parent[parent].append(row.event.event_id)
                if len(self._children) > 50_000:
                    self._children.clear()
                for p, children in by_parent.items():
                    self._children[(p, types)] = tuple(children)
        if not known:
            return found
        rows = await self.events.get_rows(known)
        # The store's order: oldest first (depth, then stream position).
        return sorted(found + [rows[c] for c in known if c in rows],
                      key=lambda r: (r.event.depth, r.stream_ordering))

    async def _read_children(self, parent_ids: list[str], rel_types: tuple[str, ...]
                             ) -> list[EventRow]:
        return await super().get_children(parent_ids, rel_types)
