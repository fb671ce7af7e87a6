"""Creating local events: prev and auth events, authorisation, persistence, then wake listeners.

Every local event goes through ``EventCreator.create``: it builds a full PDU of the room's
version on top of the room's forward extremities, checks the authorization rules against the
state before it, and persists event, graph edges, state and membership in one transaction.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Mapping

from twisted.internet import defer

from crypto.room_versions import RoomVersion, get_room_version
from homeserver.clock import Clock
from homeserver.http.errors import MatrixError
from homeserver.rooms.auth_rules import AuthError, auth_types_for_event, check_auth
from homeserver.rooms.builder import EventBuilder, EventTooLarge
from homeserver.rooms.events import Event
from storage.events import EventStore, PersistedEvent
from storage.state import StateMap

logger = logging.getLogger(__name__)

Listener = Callable[[PersistedEvent], Any]


class EventCreator:
    def __init__(self, store: EventStore, builder: EventBuilder, clock: Clock,
                 resolve_state: Callable[[RoomVersion, list[StateMap]], Awaitable[StateMap]]) -> None:
        self.store = store
        self.builder = builder
        self.clock = clock
        self.resolve_state = resolve_state
        # One event at a time: stream orderings then commit in the order they were handed out,
        # which is what lets /sync treat a stream position as "everything up to here".
        self._lock = defer.DeferredLock()
        self._last_create_ts = 0
        self.listeners: list[Listener] = []

    async def state_before_new_event(self, room_id: str, rv: RoomVersion
                                     ) -> tuple[list[Event], StateMap, int | None]:
        """(prev events, state after them, its group when no resolution was needed)."""
        prev_ids = await self.store.get_forward_extremities(room_id)
        rows = await self.store.get_rows(prev_ids)
        prevs = [rows[i] for i in prev_ids if i in rows]
        if not prevs:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        groups = [r.state_group_after for r in prevs]
        if len(set(groups)) == 1 and groups[0] is not None:
            return [r.event for r in prevs], await self.store.get_state_group(groups[0]), groups[0]
        states = [await self.store.get_state_group(g) for g in groups if g is not None]
        resolved = await self.resolve_state(rv, states)
        return [r.event for r in prevs], resolved, None

    async def create(self, *, room_id: str | None, room_version: str, event_type: str, sender: str,
                     content: Mapping[str, Any], state_key: str | None = None,
                     redacts: str | None = None, txn_key: str | None = None,
                     new_room_creator: str | None = None,
                     exchange: Callable[[Event], Awaitable[Event]] | None = None) -> PersistedEvent:
        """Build, authorise and persist one event. ``room_id`` None means a v12 create event.

        ``exchange`` sees the authorised event before it is stored and returns the event to
        store: an invite of a remote user comes back countersigned by the invitee's server."""
        rv = get_room_version(room_version)
        async with self._lock:
            now = self.clock.time_msec()
            if event_type == "m.room.create":
                # In rooms v12 the room id is the create event's hash: two identical create
                # events in one millisecond would name the same room. Timestamps of create
                # events therefore never repeat (the lock orders them).
                now = max(now, self._last_create_ts + 1)
                self._last_create_ts = now
            if txn_key is not None and exchange is not None:
                # (another server would be asked to countersign a repeat: look first)
                existing = await self.store.event_id_for_txn(txn_key)
                if existing is not None:
                    return await self._made_before(existing)
            if event_type == "m.room.create":
                prevs, state, group = [], {}, None
            else:
                assert room_id is not None
                prevs, state, group = await self.state_before_new_event(room_id, rv)
            auth_keys = auth_types_for_event(event_type, sender, state_key, content, rv)
            auth_ids = [state[k] for k in sorted(auth_keys) if k in state]
            auth_rows = await self.store.get_events(auth_ids)
            auth_events = [auth_rows[i] for i in auth_ids if i in auth_rows]
            depth = max((e.depth for e in prevs), default=0) + 1
            try:
                event = self.builder.build(
                    room_version=rv, room_id=room_id, event_type=event_type, sender=sender,
                    content=content, state_key=state_key, prev_events=prevs, auth_events=auth_events,
                    depth=depth, origin_server_ts=now, redacts=redacts)
            except EventTooLarge as e:
                raise MatrixError(413, "M_TOO_LARGE", str(e)) from None
            except ValueError as e:
                raise MatrixError(400, "M_BAD_JSON", str(e)) from None
            create_event = None
            if event_type != "m.room.create":
                create_id = state.get(("m.room.create", ""))
                create_event = (await self.store.get_events([create_id]))[create_id] if create_id else None
            try:
                check_auth(event, {e.key: e for e in auth_events}, create_event=create_event)
            except AuthError as e:
                raise MatrixError(403, "M_FORBIDDEN", str(e)) from None
            if exchange is not None:
                event = await exchange(event)

            def persist(txn: Any) -> PersistedEvent | str:
                # A repeated transaction id (a client retrying) gets the event it made before:
                # looked up here, in the transaction, rather than in a round trip of its own
                # before the event is built (the event lock is held all along).
                if txn_key is not None:
                    existing = self.store.event_id_for_txn_txn(txn, txn_key)
                    if existing is not None:
                        return existing
                if event_type == "m.room.create":
                    self.store.store_room_txn(txn, event.room_id, rv.identifier,
                                              new_room_creator or sender, now)
                return self.store.persist_txn(txn, event, state_before=state, state_group_before=group,
                                              txn_key=txn_key, now=now,
                                              fresh=exchange is None)
            persisted = await self.store.db.run("persist_event", persist)
        if isinstance(persisted, str):
            return await self._made_before(persisted)
        self._tell_listeners(persisted)
        return persisted

    async def _made_before(self, event_id: str) -> PersistedEvent:
        row = await self.store.get_event_row(event_id)
        assert row is not None
        return PersistedEvent(row.event, row.stream_ordering, row.state_group_before,
                              row.state_group_after)

    def _tell_listeners(self, persisted: PersistedEvent) -> None:
        for listener in self.listeners:
            try:
                listener(persisted)
            except Exception:
                logger.exception("event listener failed for %s", persisted.event.event_id)

    async def persist_external(self, event: Event, *, state_before: StateMap | None,
                               outlier: bool = False, rejected_reason: str | None = None,
                               soft_failed: bool = False, becomes_current: bool = True,
                               new_current_state: StateMap | None = None,
                               new_room: tuple[str, str] | None = None,
                               notify: bool = True, backfilled: bool = False) -> PersistedEvent:
        """Persist an event that was built elsewhere (received over federation, or a join
        event signed by another server), under the same lock as local events so stream
        orderings still commit in order. ``new_room`` (room version, creator) adds the rooms
        row of a room this server has just joined. Listeners hear of timeline events only."""
        async with self._lock:
            existing = await self.store.get_event_row(event.event_id)
            if existing is not None and not existing.outlier:
                return PersistedEvent(existing.event, existing.stream_ordering,
                                      existing.state_group_before, existing.state_group_after)

            def persist(txn: Any) -> PersistedEvent:
                if new_room is not None and not txn.query(
                        "SELECT 1 FROM rooms WHERE room_id = ?", (event.room_id,)):
                    self.store.store_room_txn(txn, event.room_id, new_room[0], new_room[1],
                                              self.clock.time_msec())
                if existing is not None:  # an outlier that now gets its place in the timeline
                    self.store.delete_outlier_txn(txn, event.event_id)
                return self.store.persist_txn(
                    txn, event, state_before=state_before, state_group_before=None, outlier=outlier,
                    now=self.clock.time_msec(), becomes_current=becomes_current,
                    rejected_reason=rejected_reason, soft_failed=soft_failed,
                    new_current_state=new_current_state, backfilled=backfilled)
            persisted = await self.store.db.run("persist_external_event", persist)
        if notify and not backfilled and not outlier and rejected_reason is None \
                and not soft_failed:
            self._tell_listeners(persisted)
        return persisted

    async def persist_outliers(self, events: list[Event], new_room: tuple[str, str] | None = None
                               ) -> None:
        """Store events whose place in the room graph is not known yet (auth chains, state
        from a join): kept for auth checks and /event, never in a timeline."""
        async with self._lock:
            known = await self.store.get_rows([e.event_id for e in events])

            def persist(txn: Any) -> None:
                if new_room is not None and events and not txn.query(
                        "SELECT 1 FROM rooms WHERE room_id = ?", (events[0].room_id,)):
                    self.store.store_room_txn(txn, events[0].room_id, new_room[0], new_room[1],
                                              self.clock.time_msec())
                for ev in events:
                    if ev.event_id not in known:
                        self.store.persist_txn(txn, ev, state_before=None, state_group_before=None,
                                               outlier=True, now=self.clock.time_msec())
            await self.store.db.run("persist_outliers", persist)

    @property
    def lock(self) -> defer.DeferredLock:
        """Held while an event is created or persisted (stream orderings commit in order)."""
        return self._lock
