"""Events: persisting PDUs with their graph edges, state and memberships, and reading them back."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from twisted.internet import defer

from crypto.room_versions import get_room_version
from homeserver.rooms.events import Event
from storage.batching import TurnBatch
from storage.database import Database, Transaction
from storage.ids import IdGenerator
from storage.single_flight import SingleFlight
from storage.state import StateGroupCache, StateGroups, StateKey, StateMap
from storage.stream_changes import StreamChangeCache


# The memberships that make a user interested in a room (woken by its events, sent its PDUs).
_INTERESTED = ("join", "invite", "knock")


def _members_sql(memberships: tuple[str, ...]) -> str:
    marks = ",".join("?" * len(memberships))
    return (f"SELECT user_id FROM current_membership WHERE room_id = ?"
            f" AND membership IN ({marks}) ORDER BY user_id")


@dataclass(frozen=True)
class PersistedEvent:
    event: Event
    stream_ordering: int
    state_group_before: int | None
    state_group_after: int | None


@dataclass(frozen=True)
class EventRow:
    """An event with the metadata the read paths need."""
    event: Event
    stream_ordering: int
    outlier: bool
    rejected: bool
    soft_failed: bool
    state_group_before: int | None
    state_group_after: int | None


class _EventCache:
    """LRU of parsed events by id; events never change once stored (redaction is applied on read)."""

    def __init__(self, size: int = 20_000) -> None:
        self._size = size
        self._rows: OrderedDict[str, EventRow] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, event_id: str) -> EventRow | None:
        with self._lock:
            row = self._rows.get(event_id)
            if row is not None:
                self._rows.move_to_end(event_id)
            return row

    def put(self, row: EventRow) -> None:
        with self._lock:
            self._rows[row.event.event_id] = row
            while len(self._rows) > self._size:
                self._rows.popitem(last=False)

    def drop(self, event_id: str) -> None:
        with self._lock:
            self._rows.pop(event_id, None)


_ROW_COLS = ("e.event_id, e.json, r.room_version, e.stream_ordering, e.outlier, e.rejected_reason,"
             " e.soft_failed, e.state_group_before, e.state_group_after")


class EventStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.stream_ids = IdGenerator("events", "stream_ordering")
        self.state_ids = IdGenerator("state_groups", "id")
        self.state_cache = StateGroupCache()
        self.state = StateGroups(self.state_cache, self.state_ids)
        self._events = _EventCache()
        self._room_versions: dict[str, str] = {}
        # room id -> forward extremities, kept in step with the table by persist_txn.
        self._extremities: dict[str, list[str]] = {}
        # room id -> users joined, invited or knocking: who a new event may concern.
        self._interested: dict[str, set[str]] = {}
        # Called inside the persisting transaction for every event that enters a timeline, so
        # derived tables (search index, ...) are written atomically with the event.
        self.persist_hooks: list[Callable[[Transaction, Event, int], None]] = []
        # Read-path caches for /sync, kept in step after each commit (see _after_persist):
        # which rooms got timeline events and whose memberships changed, by stream position.
        # Until load() they know nothing (every question goes to the database).
        self.room_changes = StreamChangeCache(1 << 62)
        # Called on the reactor with each committed non-outlier row, in stream order, the
        # position of the room's previous change (everything of the room between the two is
        # none of /sync's business), and whether the event was made here just now (so nothing
        # can relate to or redact it yet).
        self.row_listeners: list[Callable[[EventRow, int, bool], None]] = []
        self.member_changes = StreamChangeCache(1 << 62)
        # Every event at or below this position has committed (persistence is serialized).
        self.committed_position = 0
        # user -> bumped on every membership change of the user (and on forget): per-user
        # cached reads are stored only if the version did not move while they were read.
        self._member_versions: dict[str, int] = {}
        self._join_positions: OrderedDict[str, tuple[int, dict[str, list[int]]]] = OrderedDict()
        self._forgotten: OrderedDict[str, tuple[int, frozenset[str]]] = OrderedDict()
        self._membership_reads: TurnBatch[str, tuple[dict[str, list[int]], frozenset[str]]] = \
            TurnBatch(db.reactor.callLater, self._read_membership_facts)
        # redacted event id -> redaction ids (empty tuple: none); cleared when one arrives.
        self._redactions: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self.redactions_version = 0
        self._redaction_reads: SingleFlight = SingleFlight()
        # Bumped when an event with a relation is stored (for relation read caches).
        self.relations_version = 0

    async def load(self) -> None:
        for gen in (self.stream_ids, self.state_ids):
            await gen.load(self.db)
        self.committed_position = self.stream_ids.current()
        self.room_changes = StreamChangeCache(self.committed_position)
        self.member_changes = StreamChangeCache(self.committed_position)

    # --- rooms ---------------------------------------------------------------------------------

    def store_room_txn(self, txn: Transaction, room_id: str, room_version: str, creator: str,
                       now: int) -> None:
        txn.execute("INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES (?, ?, ?, ?)",
                    (room_id, room_version, creator, now))

    async def get_room_version(self, room_id: str) -> str | None:
        rv = self._room_versions.get(room_id)
        if rv is None:
            rows = await self.db.query("SELECT room_version FROM rooms WHERE room_id = ?", (room_id,))
            if not rows:
                return None
            rv = self._room_versions[room_id] = rows[0][0]
        return rv

    # --- writing -------------------------------------------------------------------------------

    def persist_txn(self, txn: Transaction, event: Event, *, state_before: StateMap | None,
                    state_group_before: int | None, outlier: bool = False,
                    txn_key: str | None = None, now: int, becomes_current: bool = True,
                    rejected_reason: str | None = None, soft_failed: bool = False,
                    new_current_state: StateMap | None = None,
                    backfilled: bool = False, fresh: bool = False) -> PersistedEvent:
        """Write one event in the caller's transaction.

        ``state_before`` is the room state the event was authorised against; when
        ``state_group_before`` is given it already names that state. With ``becomes_current``
        the event replaces its prev_events as the room's forward extremity and its resulting
        state becomes the room's current state — or ``new_current_state`` does, when given (a
        remote event on a branch whose state was resolved against the other extremities).
        """
        if backfilled:
            # History fetched from another server goes below everything already here: a
            # negative position, so no /sync since-token ever counts it as new.
            low = txn.query("SELECT MIN(stream_ordering) FROM events")[0][0]
            stream = min(low or 0, 0) - 1
        else:
            stream = self.stream_ids.next()
        room_id = event.room_id
        group_before = group_after = None
        if not outlier:
            if state_group_before is None and state_before is not None:
                state_group_before = self.state.store(txn, room_id, state_before, None)
            group_before = group_after = state_group_before
            if event.is_state and rejected_reason is None and state_before is not None:
                after = dict(state_before)
                after[event.key] = event.event_id
                group_after = self.state.store(txn, room_id, after, state_group_before)
        rel = event.content.get("m.relates_to")
        relates_to = rel_type = None
        if isinstance(rel, dict) and isinstance(rel.get("event_id"), str) and isinstance(rel.get("rel_type"), str):
            relates_to, rel_type = rel["event_id"], rel["rel_type"]
        txn.execute(
            "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender, depth,"
            " origin_server_ts, received_ts, json, outlier, rejected_reason, soft_failed,"
            " state_group_before, state_group_after, relates_to, rel_type, txn_key)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (stream, event.event_id, room_id, event.type, event.state_key, event.sender,
             event.depth, event.origin_server_ts, now, encode_pdu(event.pdu), outlier,
             rejected_reason, soft_failed, group_before, group_after, relates_to, rel_type, txn_key))
        txn.executemany("INSERT INTO event_edges (event_id, prev_event_id) VALUES (?, ?)"
                        " ON CONFLICT DO NOTHING", [(event.event_id, p) for p in event.prev_event_ids])
        txn.executemany("INSERT INTO event_auth (event_id, auth_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                        [(event.event_id, a) for a in event.auth_event_ids])
        if event.type == "m.room.redaction" and event.redacts and rejected_reason is None:
            txn.execute("INSERT INTO redactions (event_id, redacts) VALUES (?, ?) ON CONFLICT DO NOTHING",
                        (event.event_id, event.redacts))
            redacted = event.redacts
            txn.call_after_commit(lambda: self._events.drop(redacted))
        if not outlier and rejected_reason is None and not soft_failed and becomes_current:
            txn.executemany("DELETE FROM forward_extremities WHERE room_id = ? AND event_id = ?",
                            [(room_id, p) for p in event.prev_event_ids])
            txn.execute("INSERT INTO forward_extremities (room_id, event_id) VALUES (?, ?)",
                        (room_id, event.event_id))
            prevs, new_id = set(event.prev_event_ids), event.event_id

            def update_extremities() -> None:
                current = self._extremities.get(room_id)
                if current is not None:
                    self._extremities[room_id] = [e for e in current if e not in prevs] + [new_id]
            txn.call_after_commit(update_extremities)
            if new_current_state is not None:
                self._replace_current_state_txn(txn, room_id, new_current_state, event)
            elif event.is_state:
                self._set_current_state_txn(txn, room_id, {event.key: event.event_id}, [])
        if event.type == "m.room.member" and event.state_key is not None and not outlier \
                and rejected_reason is None and not soft_failed:
            membership = event.membership or "leave"
            txn.execute("INSERT INTO room_memberships (event_id, room_id, user_id, sender, membership,"
                        " stream_ordering) VALUES (?, ?, ?, ?, ?, ?)",
                        (event.event_id, room_id, event.state_key, event.sender, membership, stream))
            if becomes_current:
                target = event.state_key

                def update_interested() -> None:
                    users = self._interested.get(room_id)
                    if users is not None:
                        if membership in ("join", "invite", "knock"):
                            users.add(target)
                        else:
                            users.discard(target)
                txn.call_after_commit(update_interested)
                txn.execute(
                    "INSERT INTO current_membership (room_id, user_id, membership, event_id,"
                    " stream_ordering, forgotten) VALUES (?, ?, ?, ?, ?, FALSE)"
                    " ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership,"
                    " event_id = excluded.event_id, stream_ordering = excluded.stream_ordering,"
                    " forgotten = FALSE",
                    (room_id, event.state_key, membership, event.event_id, stream))
        if not outlier and rejected_reason is None and not soft_failed:
            for hook in self.persist_hooks:
                hook(txn, event, stream)
        row = EventRow(event, stream, outlier, rejected_reason is not None, soft_failed,
                       group_before, group_after)
        txn.call_after_commit(lambda: self._after_persist(row, relates_to, fresh))
        return PersistedEvent(event, stream, group_before, group_after)

    def _after_persist(self, row: EventRow, relates_to: str | None, fresh: bool = False) -> None:
        """On the reactor, once the event has committed (before any listener moves the /sync
        position past it): cache the row and record what it changed for the read caches."""
        self._events.put(row)
        self.committed_position = max(self.committed_position, row.stream_ordering)
        ev = row.event
        if relates_to is not None:
            self.relations_version += 1
        if ev.type == "m.room.redaction" and ev.redacts:
            self.redactions_version += 1
            self._redactions.pop(ev.redacts, None)
        if fresh:
            # Made here just now: no redaction of it can be stored yet.
            self._redactions[ev.event_id] = ()
            self._redactions.move_to_end(ev.event_id)
        if row.outlier:
            return
        changes = self.room_changes
        previous = max(changes.last_change(ev.room_id), changes.floor)
        changes.record(ev.room_id, row.stream_ordering)
        for listener in self.row_listeners:
            listener(row, previous, fresh)
        if ev.type == "m.room.member" and ev.state_key is not None and not row.rejected \
                and not row.soft_failed:
            self.member_changes.record(ev.state_key, row.stream_ordering)
            self._membership_changed(ev.state_key)

    def _membership_changed(self, user_id: str) -> None:
        self._member_versions[user_id] = self._member_versions.get(user_id, 0) + 1
        self._join_positions.pop(user_id, None)
        self._forgotten.pop(user_id, None)

    def membership_written_txn(self, txn: Transaction, user_id: str, stream: int) -> None:
        """A membership row written outside persist_txn (federation: a remote invite, or the
        members of a room just joined): the read caches hear of it once it commits."""
        def note() -> None:
            self.member_changes.record(user_id, stream)
            self._membership_changed(user_id)
        txn.call_after_commit(note)

    def membership_version(self, user_id: str) -> int:
        """Moves whenever the user's memberships (or forgotten flags) change."""
        return self._member_versions.get(user_id, 0)

    async def backward_extremities(self, room_id: str) -> list[tuple[str, int]]:
        """(event id, depth) of the room's oldest known timeline events whose prev events are
        not in the timeline here: where history fetched from other servers would attach."""
        rows = await self.db.query(
            "SELECT DISTINCT e.event_id, e.depth FROM events e"
            " JOIN event_edges g ON g.event_id = e.event_id"
            " LEFT JOIN events p ON p.event_id = g.prev_event_id AND p.outlier = FALSE"
            " WHERE e.room_id = ? AND e.outlier = FALSE AND p.event_id IS NULL"
            " ORDER BY e.depth LIMIT 20", (room_id,))
        return [(r[0], r[1]) for r in rows]

    def delete_outlier_txn(self, txn: Transaction, event_id: str) -> None:
        """Remove an outlier's row so the event can be stored again in its timeline place."""
        txn.execute("DELETE FROM events WHERE event_id = ? AND outlier = TRUE", (event_id,))
        txn.call_after_commit(lambda: self._events.drop(event_id))

    def _replace_current_state_txn(self, txn: Transaction, room_id: str, new_state: StateMap,
                                   event: Event) -> None:
        """Make ``new_state`` the room's current state, with memberships that changed."""
        old = {(t, k): e for t, k, e in txn.query(
            "SELECT type, state_key, event_id FROM current_state WHERE room_id = ?", (room_id,))}
        changed = {k: v for k, v in new_state.items() if old.get(k) != v}
        removed = [k for k in old if k not in new_state]
        self._set_current_state_txn(txn, room_id, changed, removed)
        member_ids = [v for (t, _), v in changed.items() if t == "m.room.member" and v != event.event_id]
        rows = self.get_rows_txn(txn, member_ids)
        for (t, user), eid in changed.items():
            if t != "m.room.member" or eid == event.event_id or eid not in rows:
                continue  # the event's own membership is written by persist_txn
            membership = rows[eid].event.membership or "leave"
            txn.execute(
                "INSERT INTO current_membership (room_id, user_id, membership, event_id,"
                " stream_ordering, forgotten) VALUES (?, ?, ?, ?, ?, FALSE)"
                " ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership,"
                " event_id = excluded.event_id, stream_ordering = excluded.stream_ordering",
                (room_id, user, membership, eid, rows[eid].stream_ordering))
            self.membership_written_txn(txn, user, rows[eid].stream_ordering)
        if member_ids:
            users = [u for (t, u), eid in changed.items() if t == "m.room.member" and eid in rows]

            def after() -> None:
                self._interested.pop(room_id, None)
                for u in users:
                    self._membership_changed(u)
            txn.call_after_commit(after)

    def _set_current_state_txn(self, txn: Transaction, room_id: str, changes: Mapping[StateKey, str],
                               removed: Iterable[StateKey]) -> None:
        txn.executemany(
            "INSERT INTO current_state (room_id, type, state_key, event_id) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id",
            [(room_id, t, k, e) for (t, k), e in changes.items()])
        txn.executemany("DELETE FROM current_state WHERE room_id = ? AND type = ? AND state_key = ?",
                        [(room_id, t, k) for t, k in removed])

    # --- reading events ------------------------------------------------------------------------

    def _row(self, r: tuple) -> EventRow:
        event_id, text, rv, stream, outlier, rejected, soft_failed, gb, ga = r
        pdu = json.loads(text)
        event = Event(event_id, get_room_version(rv), pdu)
        return EventRow(event, stream, bool(outlier), rejected is not None, bool(soft_failed), gb, ga)

    def get_rows_txn(self, txn: Transaction, event_ids: Iterable[str]) -> dict[str, EventRow]:
        out: dict[str, EventRow] = {}
        missing = []
        for eid in event_ids:
            row = self._events.get(eid)
            if row is not None:
                out[eid] = row
            else:
                missing.append(eid)
        for i in range(0, len(missing), 200):
            chunk = missing[i:i + 200]
            marks = ",".join("?" * len(chunk))
            for r in txn.query(f"SELECT {_ROW_COLS} FROM events e JOIN rooms r ON r.room_id = e.room_id"
                               f" WHERE e.event_id IN ({marks})", chunk):
                row = self._row(r)
                self._events.put(row)
                out[row.event.event_id] = row
        return out

    async def get_rows(self, event_ids: Iterable[str]) -> dict[str, EventRow]:
        ids = list(dict.fromkeys(event_ids))
        cached = {eid: r for eid in ids if (r := self._events.get(eid)) is not None}
        if len(cached) == len(ids):
            return cached
        return await self.db.run("get_events", self.get_rows_txn, ids)

    async def get_events(self, event_ids: Iterable[str]) -> dict[str, Event]:
        return {eid: r.event for eid, r in (await self.get_rows(event_ids)).items()}

    async def get_event_row(self, event_id: str) -> EventRow | None:
        return (await self.get_rows([event_id])).get(event_id)

    async def get_redactions(self, event_ids: Iterable[str]) -> dict[str, list[str]]:
        """redacted event id -> ids of redaction events that target it (cached per event,
        dropped when a redaction of it is stored)."""
        out: dict[str, list[str]] = {}
        ids = []
        for eid in dict.fromkeys(event_ids):
            hit = self._redactions.get(eid)
            if hit is None:
                ids.append(eid)
            elif hit:
                out[eid] = list(hit)
        if not ids:
            return out
        version = self.redactions_version

        def fn(txn: Transaction) -> list[tuple]:
            found = []
            for i in range(0, len(ids), 200):
                chunk = ids[i:i + 200]
                marks = ",".join("?" * len(chunk))
                found += txn.query(f"SELECT event_id, redacts FROM redactions WHERE redacts IN ({marks})",
                                   chunk)
            return found
        fresh: dict[str, list[str]] = {}
        found = await self._redaction_reads.run((tuple(ids), version),
                                                lambda: self.db.run("get_redactions", fn))
        for eid, redacts in found:
            fresh.setdefault(redacts, []).append(eid)
        out.update(fresh)
        if version == self.redactions_version:  # no redaction landed while reading
            for eid in ids:
                self._redactions[eid] = tuple(fresh.get(eid, ()))
            while len(self._redactions) > 50_000:
                self._redactions.popitem(last=False)
        return out

    async def event_id_for_txn(self, txn_key: str) -> str | None:
        return await self.db.run("event_id_for_txn", self.event_id_for_txn_txn, txn_key)

    @staticmethod
    def event_id_for_txn_txn(txn: Transaction, txn_key: str) -> str | None:
        """The event a client transaction id already made, if any."""
        row = txn.query_one("SELECT event_id FROM events WHERE txn_key = ?", (txn_key,))
        return row[0] if row else None

    # --- state ---------------------------------------------------------------------------------

    async def get_forward_extremities(self, room_id: str) -> list[str]:
        cached = self._extremities.get(room_id)
        if cached is not None:
            return list(cached)
        rows = await self.db.query("SELECT event_id FROM forward_extremities WHERE room_id = ?", (room_id,))
        ids = [r[0] for r in rows]
        # Callers that persist hold the event lock, so no write can slip in between.
        self._extremities[room_id] = ids
        return list(ids)

    async def get_state_group(self, group: int, *, copy: bool = True) -> StateMap:
        """A state group's map. ``copy=False``: the cached map itself, for readers that never
        change it (a room's state has one entry per member: copying it for every /sync answer
        of every member is what a busy room cannot afford)."""
        cached = self.state_cache.get(group)
        if cached is not None:
            return dict(cached) if copy else cached
        return await self.db.run("load_state_group", self.state.load, group)

    async def get_state_groups(self, groups: Iterable[int], *, copy: bool = True
                               ) -> dict[int, StateMap]:
        """Several state groups, the uncached ones loaded in one transaction (``copy`` as for
        ``get_state_group``)."""
        out: dict[int, StateMap] = {}
        missing = []
        for g in dict.fromkeys(groups):
            cached = self.state_cache.get(g)
            if cached is not None:
                out[g] = dict(cached) if copy else cached
            else:
                missing.append(g)
        if missing:
            out.update(await self.db.run(
                "load_state_groups", lambda txn: {g: self.state.load(txn, g) for g in missing}))
        return out

    async def get_current_state_ids(self, room_id: str) -> StateMap:
        rows = await self.db.query("SELECT type, state_key, event_id FROM current_state WHERE room_id = ?",
                                   (room_id,))
        return {(t, k): e for t, k, e in rows}

    async def get_current_state_event_id(self, room_id: str, etype: str, state_key: str) -> str | None:
        rows = await self.db.query("SELECT event_id FROM current_state WHERE room_id = ? AND type = ?"
                                   " AND state_key = ?", (room_id, etype, state_key))
        return rows[0][0] if rows else None

    # --- memberships ---------------------------------------------------------------------------

    async def get_membership(self, room_id: str, user_id: str) -> tuple[str, str, int] | None:
        """(membership, event_id, stream_ordering) of a user's latest membership in a room."""
        rows = await self.db.query("SELECT membership, event_id, stream_ordering FROM current_membership"
                                   " WHERE room_id = ? AND user_id = ?", (room_id, user_id))
        return tuple(rows[0]) if rows else None  # type: ignore[return-value]

    def interested_users_txn(self, txn: Transaction, room_id: str) -> set[str]:
        """``get_interested_users`` inside a transaction (on a database thread): the cached set
        when it is there and not changing under our feet, else read in ``txn``."""
        users = self._interested.get(room_id)
        if users is not None:
            try:
                return set(users)
            except RuntimeError:  # the reactor changed the set while we copied it
                pass
        return {u for (u,) in txn.query(_members_sql(_INTERESTED), (room_id, *_INTERESTED))}

    async def get_interested_users(self, room_id: str) -> set[str]:
        """Users joined to, invited to or knocking on a room (cached, kept current on persist)."""
        users = self._interested.get(room_id)
        if users is None:
            users = set(await self.get_members(room_id, _INTERESTED))
            self._interested.setdefault(room_id, users)
        return set(self._interested[room_id])

    async def get_rooms_for_user(self, user_id: str, memberships: tuple[str, ...] = ("join",)) -> list[str]:
        marks = ",".join("?" * len(memberships))
        rows = await self.db.query(f"SELECT room_id FROM current_membership WHERE user_id = ?"
                                   f" AND membership IN ({marks}) ORDER BY room_id",
                                   (user_id, *memberships))
        return [r[0] for r in rows]

    async def get_members(self, room_id: str, memberships: tuple[str, ...] = ("join",)) -> list[str]:
        rows = await self.db.query(_members_sql(memberships), (room_id, *memberships))
        return [r[0] for r in rows]

    async def get_join_positions(self, user_id: str, room_ids: Iterable[str]) -> dict[str, list[int]]:
        """room id -> stream positions of each time the user joined it (all of the user's
        joins are read once and cached until the user's memberships change)."""
        joins, _ = await self._membership_facts(user_id)
        return {r: list(joins.get(r, ())) for r in room_ids}

    async def get_forgotten(self, user_id: str, room_ids: Iterable[str]) -> set[str]:
        """The rooms among ``room_ids`` that the user has forgotten (cached like joins)."""
        _, forgotten = await self._membership_facts(user_id)
        return {r for r in room_ids if r in forgotten}

    async def prefetch_membership_facts(self, user_ids: Iterable[str]) -> None:
        """Have the users' join positions and forgotten rooms in memory (one read for those
        missing), before their woken /sync requests ask."""
        missing = [u for u in user_ids if self._cached_membership_facts(u) is None]
        if missing:
            await defer.gatherResults([defer.ensureDeferred(self._membership_facts(u))
                                       for u in missing], consumeErrors=True)

    def _cached_membership_facts(self, user_id: str
                                 ) -> tuple[dict[str, list[int]], frozenset[str]] | None:
        version = self.membership_version(user_id)
        joins, forgotten = self._join_positions.get(user_id), self._forgotten.get(user_id)
        if joins is not None and forgotten is not None and joins[0] == version == forgotten[0]:
            self._join_positions.move_to_end(user_id)
            self._forgotten.move_to_end(user_id)
            return joins[1], forgotten[1]
        return None

    async def _membership_facts(self, user_id: str
                                ) -> tuple[dict[str, list[int]], frozenset[str]]:
        """(room -> join positions, forgotten rooms) of a user, from the cache or read with
        the other users asked for in the same reactor turn."""
        cached = self._cached_membership_facts(user_id)
        if cached is not None:
            return cached
        version = self.membership_version(user_id)
        facts = await self._membership_reads.get(user_id, ({}, frozenset()))
        if version == self.membership_version(user_id):
            self._join_positions[user_id] = (version, facts[0])
            self._forgotten[user_id] = (version, facts[1])
            for cache in (self._join_positions, self._forgotten):
                while len(cache) > 10_000:
                    cache.popitem(last=False)
        return facts

    async def _read_membership_facts(self, user_ids: list[str]
                                     ) -> dict[str, tuple[dict[str, list[int]], frozenset[str]]]:
        def fn(txn: Transaction) -> dict[str, tuple[dict[str, list[int]], frozenset[str]]]:
            joins: dict[str, dict[str, list[int]]] = {u: {} for u in user_ids}
            forgotten: dict[str, set[str]] = {u: set() for u in user_ids}
            for i in range(0, len(user_ids), 200):
                chunk = user_ids[i:i + 200]
                marks = ",".join("?" * len(chunk))
                for user_id, room_id, pos in txn.query(
                        "SELECT user_id, room_id, stream_ordering FROM room_memberships"
                        f" WHERE user_id IN ({marks}) AND membership = 'join'", chunk):
                    joins[user_id].setdefault(room_id, []).append(pos)
                for user_id, room_id in txn.query(
                        "SELECT user_id, room_id FROM current_membership"
                        f" WHERE user_id IN ({marks}) AND forgotten = TRUE", chunk):
                    forgotten[user_id].add(room_id)
            return {u: (joins[u], frozenset(forgotten[u])) for u in user_ids}
        return await self.db.run("membership_facts", fn)

    async def set_forgotten(self, room_id: str, user_id: str) -> None:
        await self.db.execute("UPDATE current_membership SET forgotten = TRUE WHERE room_id = ?"
                              " AND user_id = ?", (room_id, user_id))
        self._membership_changed(user_id)

    # --- pagination ----------------------------------------------------------------------------

    async def paginate(self, room_id: str, from_pos: tuple[int, int], backwards: bool, limit: int,
                       to_pos: tuple[int, int] | None = None) -> list[EventRow]:
        """Timeline events in topological order (depth, stream) strictly after/before ``from_pos``."""
        depth, stream = from_pos
        if backwards:
            cond = "(e.depth < ? OR (e.depth = ? AND e.stream_ordering < ?))"
            order = "e.depth DESC, e.stream_ordering DESC"
        else:
            cond = "(e.depth > ? OR (e.depth = ? AND e.stream_ordering > ?))"
            order = "e.depth ASC, e.stream_ordering ASC"
        args: list[Any] = [room_id, depth, depth, stream]
        extra = ""
        if to_pos is not None:
            td, ts = to_pos
            extra = (" AND (e.depth > ? OR (e.depth = ? AND e.stream_ordering >= ?))" if backwards else
                     " AND (e.depth < ? OR (e.depth = ? AND e.stream_ordering <= ?))")
            args += [td, td, ts]
        args.append(limit)

        def fn(txn: Transaction) -> list[EventRow]:
            rows = txn.query(f"SELECT {_ROW_COLS} FROM events e JOIN rooms r ON r.room_id = e.room_id"
                             f" WHERE e.room_id = ? AND {cond}{extra} AND e.outlier = FALSE"
                             f" AND e.rejected_reason IS NULL AND e.soft_failed = FALSE"
                             f" ORDER BY {order} LIMIT ?", args)
            return [self._row(r) for r in rows]
        return await self.db.run("paginate", fn)

    async def topological_position(self, event_id: str) -> tuple[int, int] | None:
        row = await self.get_event_row(event_id)
        return (row.event.depth, row.stream_ordering) if row else None


def encode_pdu(pdu: Mapping[str, Any]) -> str:
    """The stored text of a PDU: compact JSON with non-ASCII kept as UTF-8."""
    return json.dumps(pdu, ensure_ascii=False, separators=(",", ":"))
