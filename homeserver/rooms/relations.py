"""Event relationships: the /relations and /threads reads and bundled aggregations.

Spec: Client-Server API "Forming relationships between events", "Threading", "Event
replacements" and "Reference relations". Every child shown to a user, listed or aggregated, has
passed ``Visibility.filter_for_user`` for that user.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from homeserver.http.errors import MatrixError
from homeserver.rooms.events import Event
from homeserver.rooms.visibility import Visibility
from storage.events import EventRow, EventStore
from storage.relations import Position, RelationStore

THREAD = "m.thread"
REPLACE = "m.replace"
REFERENCE = "m.reference"
ANNOTATION = "m.annotation"
AGGREGATED = (THREAD, REPLACE, REFERENCE)

# How many hops /relations?recurse=true follows (the spec asks for at least 3).
RECURSION_DEPTH = 3


def relation_of(event: Event) -> tuple[str, str] | None:
    """(parent event id, rel_type) of an event's ``m.relates_to``, as storage records it."""
    rel = event.content.get("m.relates_to")
    if isinstance(rel, dict) and isinstance(rel.get("event_id"), str) \
            and isinstance(rel.get("rel_type"), str):
        return rel["event_id"], rel["rel_type"]
    return None


def is_valid_replacement(original: Event, edit: Event) -> bool:
    """The spec's "Validity of replacement events": same room, sender and type, no state
    events, no edit of an edit, and ``m.new_content`` present (unless encrypted, where it
    lives in the ciphertext)."""
    if original.room_id != edit.room_id or original.sender != edit.sender \
            or original.type != edit.type or original.is_state or edit.is_state:
        return False
    rel = relation_of(original)
    if rel is not None and rel[1] == REPLACE:
        return False
    if edit.type != "m.room.encrypted" and not isinstance(edit.content.get("m.new_content"), dict):
        return False
    return True


def can_bundle(event: Event) -> bool:
    """Whether an event can carry bundled aggregations: not state events (spec), and not edits
    or annotations, which may have no children of their own."""
    if event.is_state:
        return False
    rel = relation_of(event)
    return rel is None or rel[1] not in (REPLACE, ANNOTATION)


@dataclass(frozen=True)
class ThreadSummary:
    latest: EventRow
    count: int
    participated: bool


@dataclass(frozen=True)
class Bundle:
    """What a user may see aggregated under one parent event."""
    thread: ThreadSummary | None = None
    replace: EventRow | None = None
    references: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.thread or self.replace or self.references)


class Aggregations:
    """Bundled aggregations for a page of events: one query for all their children."""

    def __init__(self, store: RelationStore, visibility: Visibility) -> None:
        self.store = store
        self.visibility = visibility

    async def bundles(self, user_id: str, rows: Iterable[EventRow]) -> dict[str, Bundle]:
        parents = {r.event.event_id: r.event for r in rows if can_bundle(r.event)}
        if not parents:
            return {}
        children: list[tuple[tuple[str, str], EventRow]] = []
        for c in await self.store.get_children(parents, AGGREGATED):
            rel = relation_of(c.event)
            # Relations across rooms are ignored (spec "Forming relationships between events").
            if rel is not None and rel[0] in parents and c.event.room_id == parents[rel[0]].room_id:
                children.append((rel, c))
        visible = {r.event.event_id for r in await self.visibility.filter_for_user(
            user_id, [c for _, c in children])}
        by_parent: dict[str, dict[str, list[EventRow]]] = {}
        for (parent_id, rel_type), c in children:
            if c.event.event_id in visible:
                by_parent.setdefault(parent_id, {}).setdefault(rel_type, []).append(c)
        out: dict[str, Bundle] = {}
        for parent_id, rels in by_parent.items():
            parent = parents[parent_id]
            bundle = Bundle(thread=self._thread(user_id, parent, rels.get(THREAD, [])),
                            replace=self._replacement(parent, rels.get(REPLACE, [])),
                            references=[c.event.event_id for c in rels.get(REFERENCE, [])])
            if bundle:
                out[parent_id] = bundle
        return out

    @staticmethod
    def _thread(user_id: str, root: Event, children: list[EventRow]) -> ThreadSummary | None:
        # A thread cannot hang off an event that has a relation itself (spec "Threading").
        if not children or relation_of(root) is not None:
            return None
        latest = max(children, key=lambda c: (c.event.depth, c.stream_ordering))
        participated = root.sender == user_id or any(c.event.sender == user_id for c in children)
        return ThreadSummary(latest, len(children), participated)

    @staticmethod
    def _replacement(original: Event, edits: list[EventRow]) -> EventRow | None:
        valid = [e for e in edits if is_valid_replacement(original, e.event)]
        if not valid:
            return None
        # Most recent by origin_server_ts, ties broken by the larger event id (spec).
        return max(valid, key=lambda e: (e.event.origin_server_ts, e.event.event_id))


@dataclass(frozen=True)
class RelationsPage:
    rows: list[EventRow]
    next_pos: Position | None


@dataclass(frozen=True)
class ThreadsPage:
    roots: list[EventRow]
    next_pos: Position | None


class RelationsService:
    def __init__(self, store: RelationStore, events: EventStore, visibility: Visibility) -> None:
        self.store = store
        self.events = events
        self.visibility = visibility

    async def relations(self, user_id: str, room_id: str, event_id: str, *,
                        rel_type: str | None, event_type: str | None, from_pos: Position | None,
                        to_pos: Position | None, backwards: bool, limit: int, recurse: bool
                        ) -> RelationsPage:
        """A page of the children of an event the user can see (404 otherwise)."""
        parent = await self.events.get_event_row(event_id)
        if parent is None or parent.event.room_id != room_id or parent.outlier \
                or not await self.visibility.can_see(user_id, parent):
            raise MatrixError(404, "M_NOT_FOUND", "Event not found")
        if from_pos is None:
            from_pos = (2**62, 2**62) if backwards else (-(2**62), -(2**62))
        rows = await self.store.paginate_relations(
            room_id, event_id, rel_type=rel_type, event_type=event_type, from_pos=from_pos,
            backwards=backwards, limit=limit + 1, to_pos=to_pos,
            max_depth=RECURSION_DEPTH if recurse else 1)
        more = len(rows) > limit
        rows = rows[:limit]
        next_pos = (rows[-1].event.depth, rows[-1].stream_ordering) if more and rows else None
        return RelationsPage(await self.visibility.filter_for_user(user_id, rows), next_pos)

    async def threads(self, user_id: str, room_id: str, *, participated_only: bool,
                      from_pos: Position | None, limit: int) -> ThreadsPage:
        """Thread roots the user can see, by latest thread activity, newest first.

        The caller serializes the roots with bundled aggregations; roots whose thread has no
        event the user may see are dropped there, so a reader who left does not learn of
        threads started after they left."""
        await self._check_can_read_room(user_id, room_id)
        before = from_pos if from_pos is not None else (2**62, 2**62)
        candidates = await self.store.thread_roots(
            room_id, before=before, limit=limit + 1,
            participant=user_id if participated_only else None)
        more = len(candidates) > limit
        candidates = candidates[:limit]
        next_pos = candidates[-1].latest if more and candidates else None
        rows = await self.events.get_rows(c.root_id for c in candidates)
        roots = [rows[c.root_id] for c in candidates if c.root_id in rows]
        return ThreadsPage(await self.visibility.filter_for_user(user_id, roots), next_pos)

    async def _check_can_read_room(self, user_id: str, room_id: str) -> None:
        """403 unless the room exists and the user is or was in it, or it is world-readable."""
        if await self.events.get_room_version(room_id) is None:
            raise MatrixError(403, "M_FORBIDDEN", "You are not allowed to view this room")
        if await self.events.get_membership(room_id, user_id) is not None:
            return
        hv_id = await self.events.get_current_state_event_id(room_id, "m.room.history_visibility", "")
        hv = (await self.events.get_events([hv_id])).get(hv_id) if hv_id else None
        if hv is None or hv.content.get("history_visibility") != "world_readable":
            raise MatrixError(403, "M_FORBIDDEN", "You are not allowed to view this room")
