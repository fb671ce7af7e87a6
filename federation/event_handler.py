"""Received PDUs: fill gaps, work out the state before each event, authorise, persist.

Spec: server-server API "Checks performed on receipt of a PDU". After the format, signature
and hash checks (federation/event_checks.py) an event is authorised three times:
  - against its own auth events (failure: rejected, stored but never shown or used);
  - against the room state before it, resolved from its prev events (failure: rejected);
  - against the room's current state (failure: soft-failed — stored, not shown, not used as
    a prev event, so a banned user's server cannot keep talking by pointing at old state).
Missing prev events are asked for with /get_missing_events; when a gap remains, the state
before it is fetched with /state. Events of one room are handled one at a time.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Iterable
from urllib.parse import quote

from twisted.internet import defer

from crypto.room_versions import RoomVersion, get_room_version
from federation.event_checks import PduRejected, SignatureVerifier, check_pdu
from homeserver.rooms.auth_rules import AuthError, auth_types_for_event, check_auth, check_event_auth
from homeserver.rooms.creator import EventCreator
from homeserver.rooms.events import Event
from storage.events import EventStore, PersistedEvent
from storage.state import StateMap

logger = logging.getLogger(__name__)

MISSING_EVENTS_LIMIT = 10
StateResolver = Callable[[RoomVersion, list[StateMap]], Awaitable[StateMap]]


def q(value: str) -> str:
    return quote(value, safe="")


class FederationEventHandler:
    def __init__(self, store: EventStore, creator: EventCreator, client: Any,
                 verify_signatures: SignatureVerifier, resolve_state: StateResolver,
                 server_name: str) -> None:
        self.store = store
        self.creator = creator
        self.client = client
        self.verify = verify_signatures
        self.resolve_state = resolve_state
        self.server_name = server_name
        self._room_locks: dict[str, defer.DeferredLock] = {}
        # (room, backward extremities) that no server had anything older for.
        self._exhausted: set[tuple[str, tuple[str, ...]]] = set()

    def room_lock(self, room_id: str) -> defer.DeferredLock:
        lock = self._room_locks.get(room_id)
        if lock is None:
            lock = self._room_locks[room_id] = defer.DeferredLock()
        return lock

    # --- entry points ---------------------------------------------------------------------------

    async def room_version_of(self, room_id: Any) -> RoomVersion:
        if not isinstance(room_id, str):
            raise PduRejected("PDU has no room_id")
        rv = await self.store.get_room_version(room_id)
        if rv is None:
            raise PduRejected(f"this server is not in room {room_id}")
        return get_room_version(rv)

    async def receive_pdu(self, origin: str, pdu: Any) -> PersistedEvent | None:
        """One PDU of a /send transaction. Raises PduRejected when it is not stored at all."""
        room_id = pdu.get("room_id") if isinstance(pdu, dict) else None
        rv = await self.room_version_of(room_id)
        event = await check_pdu(pdu, rv, self.verify, room_id)
        async with self.room_lock(event.room_id):
            return await self.handle_checked(origin, event, fetch_missing=True)

    # --- the receipt path ------------------------------------------------------------------------

    async def handle_checked(self, origin: str, event: Event, *, fetch_missing: bool,
                             backfilled: bool = False) -> PersistedEvent | None:
        """Authorise and persist an event that passed the signature and hash checks."""
        known = await self.store.get_event_row(event.event_id)
        if known is not None and not known.outlier:
            return None
        rv = event.room_version
        prev_rows = await self.store.get_rows(event.prev_event_ids)
        missing = [p for p in event.prev_event_ids if p not in prev_rows or prev_rows[p].outlier]
        if missing and fetch_missing and not backfilled:
            await self._fetch_missing_events(origin, event)
            prev_rows = await self.store.get_rows(event.prev_event_ids)
            missing = [p for p in event.prev_event_ids if p not in prev_rows or prev_rows[p].outlier]
        states: list[StateMap] = []
        for prev in event.prev_event_ids:
            row = prev_rows.get(prev)
            if row is not None and not row.outlier and row.state_group_after is not None:
                states.append(await self.store.get_state_group(row.state_group_after))
            else:
                states.append(await self._remote_state_after(origin, event.room_id, prev, rv))
        state_before = await self.resolve_state(rv, states) if len(states) > 1 else (
            states[0] if states else {})
        auth_events = await self._auth_events(origin, event)
        create_event = await self._create_event(event, state_before, auth_events)
        rejected: str | None = None
        auth_rows = await self.store.get_rows(e.event_id for e in auth_events)
        rejected_ids = {i for i, r in auth_rows.items() if r.rejected}
        try:
            check_event_auth(event, auth_events, create_event=create_event,
                             rejected_event_ids=rejected_ids)
        except AuthError as e:
            rejected = f"auth events: {e}"
        if rejected is None:
            state_events = await self._state_events(state_before, event)
            try:
                check_auth(event, state_events, create_event=create_event)
            except AuthError as e:
                rejected = f"state before: {e}"
        soft_failed = False
        new_current: StateMap | None = None
        if rejected is None and not backfilled:
            current = await self.store.get_current_state_ids(event.room_id)
            try:
                check_auth(event, await self._state_events(current, event), create_event=create_event)
            except AuthError as e:
                soft_failed = True
                logger.info("soft-failing %s from %s: %s", event.event_id, origin, e)
            if not soft_failed:
                new_current = await self._new_current_state(event, state_before)
        if rejected is not None:
            logger.info("rejecting %s from %s: %s", event.event_id, origin, rejected)
        return await self.creator.persist_external(
            event, state_before=state_before, rejected_reason=rejected, soft_failed=soft_failed,
            becomes_current=not backfilled, new_current_state=new_current, backfilled=backfilled)

    async def _new_current_state(self, event: Event, state_before: StateMap) -> StateMap:
        after = dict(state_before)
        if event.is_state:
            after[event.key] = event.event_id
        extremities = await self.store.get_forward_extremities(event.room_id)
        others = [e for e in extremities if e not in event.prev_event_ids and e != event.event_id]
        if not others:
            return after
        rows = await self.store.get_rows(others)
        states = [after]
        for eid in others:
            row = rows.get(eid)
            if row is not None and row.state_group_after is not None:
                states.append(await self.store.get_state_group(row.state_group_after))
        return await self.resolve_state(event.room_version, states)

    async def _state_events(self, state: StateMap, event: Event) -> dict[tuple[str, str], Event]:
        keys = auth_types_for_event(event.type, event.sender, event.state_key, event.content,
                                    event.room_version)
        ids = [state[k] for k in keys if k in state]
        evs = await self.store.get_events(ids)
        return {e.key: e for e in evs.values()}

    async def _create_event(self, event: Event, state: StateMap, auth_events: list[Event]
                            ) -> Event | None:
        for e in auth_events:
            if e.type == "m.room.create":
                return e
        create_id = state.get(("m.room.create", ""))
        if create_id is None and event.room_version.room_id_is_create_event_hash:
            create_id = "$" + event.room_id[1:]
        if create_id is None:
            return None
        return (await self.store.get_events([create_id])).get(create_id)

    # --- history ---------------------------------------------------------------------------------

    async def backfill(self, room_id: str, servers: Iterable[str], limit: int = 100) -> int:
        """Fetch history older than what this server has from the first server that gives
        some (spec /backfill); returns how many events were added to the timeline."""
        extremities = await self.store.backward_extremities(room_id)
        if not extremities:
            return 0
        key = (room_id, tuple(sorted(e for e, _ in extremities)))
        if key in self._exhausted:
            return 0
        rv = await self.room_version_of(room_id)
        for server in servers:
            if server == self.server_name:
                continue
            try:
                body = await self.client.get_json(
                    server, f"/_matrix/federation/v1/backfill/{q(room_id)}",
                    args={"v": [e for e, _ in extremities], "limit": str(limit)})
            except Exception as e:  # noqa: BLE001 - try the next server
                logger.info("backfill of %s from %s failed: %s", room_id, server, e)
                continue
            pdus = body.get("pdus", []) if isinstance(body, dict) else []
            checked: list[Event] = []
            for pdu in pdus if isinstance(pdus, list) else []:
                try:
                    checked.append(await check_pdu(pdu, rv, self.verify, room_id))
                except PduRejected as e:
                    logger.info("dropping a backfilled event from %s: %s", server, e)
            added = 0
            async with self.room_lock(room_id):
                for ev in sorted(checked, key=lambda e: e.depth):
                    row = await self.store.get_event_row(ev.event_id)
                    if row is not None and not row.outlier:
                        continue
                    await self.handle_checked(server, ev, fetch_missing=False, backfilled=True)
                    added += 1
            if added:
                return added
        self._exhausted.add(key)
        return 0

    # --- filling gaps ----------------------------------------------------------------------------

    async def _auth_events(self, origin: str, event: Event) -> list[Event]:
        """The event's auth events, fetched (with their auth chain) from ``origin`` if unknown."""
        ids = event.auth_event_ids
        if event.room_version.room_id_is_create_event_hash and event.type != "m.room.create":
            ids = ids + ["$" + event.room_id[1:]]
        have = await self.store.get_events(ids)
        if len(have) < len(set(ids)):
            try:
                body = await self.client.get_json(
                    origin, f"/_matrix/federation/v1/event_auth/{q(event.room_id)}/{q(event.event_id)}")
                chain = body.get("auth_chain", []) if isinstance(body, dict) else []
                await self.store_outliers(chain, event.room_version, event.room_id)
            except Exception as e:  # noqa: BLE001 - a peer's failure only limits what we know
                logger.info("could not fetch the auth chain of %s from %s: %s", event.event_id, origin, e)
            have = await self.store.get_events(ids)
        return [have[i] for i in dict.fromkeys(event.auth_event_ids) if i in have]

    async def store_outliers(self, pdus: Iterable[Any], rv: RoomVersion, room_id: str,
                             new_room: tuple[str, str] | None = None) -> list[Event]:
        """Check and store events outside the timeline (auth chains, state); bad ones are
        dropped. Returns the events that passed, in depth order."""
        checked: list[Event] = []
        pdus = list(pdus)
        results = await defer.DeferredList(
            [defer.ensureDeferred(check_pdu(p, rv, self.verify, room_id)) for p in pdus],
            consumeErrors=True)
        for ok, value in results:
            if ok:
                checked.append(value)
            else:
                logger.info("dropping a state/auth event: %s", value.getErrorMessage())
        checked.sort(key=lambda e: e.depth)
        await self.creator.persist_outliers(checked, new_room=new_room)
        return checked

    async def _fetch_missing_events(self, origin: str, event: Event) -> None:
        extremities = await self.store.get_forward_extremities(event.room_id)
        try:
            body = await self.client.post_json(
                origin, f"/_matrix/federation/v1/get_missing_events/{q(event.room_id)}",
                {"earliest_events": extremities, "latest_events": [event.event_id],
                 "limit": MISSING_EVENTS_LIMIT, "min_depth": 0})
        except Exception as e:  # noqa: BLE001
            logger.info("get_missing_events for %s from %s failed: %s", event.event_id, origin, e)
            return
        pdus = body.get("events", []) if isinstance(body, dict) else []
        events: list[Event] = []
        for pdu in pdus if isinstance(pdus, list) else []:
            try:
                events.append(await check_pdu(pdu, event.room_version, self.verify, event.room_id))
            except PduRejected as e:
                logger.info("dropping a missing event from %s: %s", origin, e)
        for ev in sorted(events, key=lambda e: e.depth):
            if ev.event_id != event.event_id:
                await self.handle_checked(origin, ev, fetch_missing=False)

    async def _remote_state_after(self, origin: str, room_id: str, event_id: str,
                                  rv: RoomVersion) -> StateMap:
        """The state after an event we do not have in the timeline, asked of ``origin``."""
        try:
            body = await self.client.get_json(origin, f"/_matrix/federation/v1/state/{q(room_id)}",
                                              args={"event_id": event_id})
            ev_body = await self.client.get_json(origin, f"/_matrix/federation/v1/event/{q(event_id)}")
        except Exception as e:  # noqa: BLE001
            logger.info("cannot get the state at %s from %s: %s", event_id, origin, e)
            return {}
        await self.store_outliers(body.get("auth_chain", []), rv, room_id)
        state = await self.store_outliers(body.get("pdus", []), rv, room_id)
        out: StateMap = {e.key: e.event_id for e in state if e.is_state}
        for pdu in (ev_body.get("pdus") or [])[:1]:
            prev = (await self.store_outliers([pdu], rv, room_id))
            if prev and prev[0].event_id == event_id and prev[0].is_state:
                out[prev[0].key] = event_id
        return out
