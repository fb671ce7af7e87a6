"""The server-server API other homeservers call: /send, joins, leaves, invites, state, events,
backfill, missing events and queries. Every route but /version needs an X-Matrix signature
(AUTH_FEDERATION sets ``req.origin``); every room route checks the room's server ACL and what
the origin may read (federation/server_visibility.py).
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from twisted.internet import defer

from crypto.event_signing import sign_event
from crypto.hashes import compute_event_id
from crypto.keys import SigningKey
from crypto.room_versions import KNOWN_ROOM_VERSIONS, get_room_version
from federation.acl import server_allowed
from federation.event_checks import PduRejected, check_pdu
from federation.event_handler import FederationEventHandler
from federation.server_visibility import ServerVisibility, server_of
from homeserver.http.errors import MatrixError
from homeserver.http.router import AUTH_FEDERATION, AUTH_NONE, Router
from homeserver.http.site import HttpRequest
from homeserver.rooms.builder import event_refs
from homeserver.rooms.auth_rules import AuthError, auth_types_for_event, check_auth
from homeserver.rooms.creator import EventCreator
from homeserver.rooms.stripped import StrippedState
from homeserver.rooms.events import Event
from storage.events import EventRow, EventStore
from storage.federation_events import FederationEventStore

logger = logging.getLogger(__name__)

V1 = "/_matrix/federation/v1"
V2 = "/_matrix/federation/v2"
MAX_PDUS, MAX_EDUS = 50, 100

EduHandler = Callable[[str, Any], Awaitable[None]]


def bad_json(message: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", message)


class FederationApi:
    def __init__(self, server_name: str, signing_key: SigningKey, store: EventStore,
                 fed_store: FederationEventStore, creator: EventCreator,
                 handler: FederationEventHandler, visibility: ServerVisibility,
                 restricted_authoriser: Callable[[str, str], Awaitable[str | None]],
                 clock: Any, version: str = "0.1") -> None:
        self.server_name = server_name
        self.signing_key = signing_key
        self.store = store
        self.fed_store = fed_store
        self.creator = creator
        self.handler = handler
        self.visibility = visibility
        self.restricted_authoriser = restricted_authoriser
        self.clock = clock
        self.version = version
        self.edu_handlers: dict[str, EduHandler] = {}
        # Called with (origin, invite event, stripped state) for an invite of a local user.
        self.on_invite: Callable[[str, Event, list[Any]], Awaitable[None]] | None = None
        self.query_handlers: dict[str, Callable[[HttpRequest], Awaitable[Any]]] = {}
        # Transactions being processed, with the retries waiting for their answer.
        self._in_flight: dict[tuple[str, str], list[defer.Deferred]] = {}

    def register(self, router: Router) -> None:
        a = AUTH_FEDERATION
        router.add("GET", f"{V1}/version", self.get_version, auth=AUTH_NONE)
        router.add("PUT", f"{V1}/send/{{txnId}}", self.send_transaction, auth=a)
        router.add("GET", f"{V1}/make_join/{{roomId}}/{{userId}}", self.make_join, auth=a)
        router.add("PUT", f"{V2}/send_join/{{roomId}}/{{eventId}}", self.send_join_v2, auth=a)
        router.add("PUT", f"{V1}/send_join/{{roomId}}/{{eventId}}", self.send_join_v1, auth=a)
        router.add("GET", f"{V1}/make_leave/{{roomId}}/{{userId}}", self.make_leave, auth=a)
        router.add("PUT", f"{V2}/send_leave/{{roomId}}/{{eventId}}", self.send_leave_v2, auth=a)
        router.add("PUT", f"{V1}/send_leave/{{roomId}}/{{eventId}}", self.send_leave_v1, auth=a)
        router.add("GET", f"{V1}/make_knock/{{roomId}}/{{userId}}", self.make_knock, auth=a)
        router.add("PUT", f"{V1}/send_knock/{{roomId}}/{{eventId}}", self.send_knock, auth=a)
        router.add("PUT", f"{V2}/invite/{{roomId}}/{{eventId}}", self.invite_v2, auth=a)
        router.add("GET", f"{V1}/event/{{eventId}}", self.get_event, auth=a)
        router.add("GET", f"{V1}/state/{{roomId}}", self.get_state, auth=a)
        router.add("GET", f"{V1}/state_ids/{{roomId}}", self.get_state_ids, auth=a)
        router.add("GET", f"{V1}/event_auth/{{roomId}}/{{eventId}}", self.get_event_auth, auth=a)
        router.add("GET", f"{V1}/backfill/{{roomId}}", self.backfill, auth=a)
        router.add("POST", f"{V1}/get_missing_events/{{roomId}}", self.get_missing_events, auth=a)
        router.add("GET", f"{V1}/query/{{queryType}}", self.query, auth=a)

    async def get_version(self, req: HttpRequest) -> tuple[int, Any]:
        return 200, {"server": {"name": "Hearth", "version": self.version}}

    # --- helpers ---------------------------------------------------------------------------------

    async def _room(self, origin: str, room_id: str, *, must_be_in_room: bool = True) -> str:
        """The room's version, after the ACL and "is the origin in the room" checks."""
        rv = await self.store.get_room_version(room_id)
        if rv is None or not await self.store.get_forward_extremities(room_id):
            raise MatrixError(404, "M_NOT_FOUND", f"This server is not in room {room_id}")
        await self._check_acl(origin, room_id)
        if must_be_in_room and not await self.visibility.is_in_room(origin, room_id):
            raise MatrixError(403, "M_FORBIDDEN", f"{origin} is not in room {room_id}")
        return rv

    async def _check_acl(self, origin: str, room_id: str) -> None:
        acl_id = await self.store.get_current_state_event_id(room_id, "m.room.server_acl", "")
        if acl_id is None:
            return
        acl = (await self.store.get_events([acl_id])).get(acl_id)
        if acl is not None and not server_allowed(origin, acl.content):
            raise MatrixError(403, "M_FORBIDDEN", f"{origin} is denied by the room's server ACL")

    @staticmethod
    def _pdus(rows: list[EventRow] | list[Event]) -> list[dict[str, Any]]:
        return [dict((r.event if isinstance(r, EventRow) else r).pdu) for r in rows]

    async def _state_at(self, room_id: str, event_id: str | None) -> dict[tuple[str, str], str]:
        """The state before ``event_id`` (or the current state)."""
        if event_id is None:
            return await self.store.get_current_state_ids(room_id)
        row = await self.store.get_event_row(event_id)
        if row is None or row.outlier or row.event.room_id != room_id or row.state_group_before is None:
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown event {event_id}")
        return await self.store.get_state_group(row.state_group_before)

    # --- /send -----------------------------------------------------------------------------------

    async def send_transaction(self, req: HttpRequest, txnId: str) -> tuple[int, Any]:
        origin = req.origin
        assert origin is not None
        body = req.json().data
        pdus = body.get("pdus", [])
        edus = body.get("edus", [])
        if not isinstance(pdus, list) or not isinstance(edus, list):
            raise bad_json("'pdus' and 'edus' must be lists")
        if len(pdus) > MAX_PDUS or len(edus) > MAX_EDUS:
            raise bad_json(f"a transaction carries at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs")
        if body.get("origin") not in (None, origin):
            raise MatrixError(400, "M_FORBIDDEN", "'origin' does not match the signing server")
        done = await self.fed_store.get_transaction(origin, txnId)
        if done is not None:
            return 200, done
        key = (origin, txnId)
        if key in self._in_flight:
            # A sender that timed out retries the same transaction: the retry waits for the
            # first attempt's answer instead of applying it twice.
            waiter: defer.Deferred = defer.Deferred()
            self._in_flight[key].append(waiter)
            return 200, await waiter
        self._in_flight[key] = []
        try:
            result = await self._process_and_record(origin, txnId, pdus, edus)
        except Exception as e:
            for w in self._in_flight.pop(key, []):
                w.errback(e)
            raise
        for w in self._in_flight.pop(key, []):
            w.callback(result)
        return 200, result

    async def _process_and_record(self, origin: str, txn_id: str, pdus: list[Any],
                                  edus: list[Any]) -> dict[str, Any]:
        result = await self._process_transaction(origin, pdus, edus)
        await self.fed_store.record_transaction(origin, txn_id, result, self.clock.time_msec())
        return result

    async def _process_transaction(self, origin: str, pdus: list[Any], edus: list[Any]
                                   ) -> dict[str, Any]:
        results: dict[str, Any] = {}
        for i, pdu in enumerate(pdus):
            event_id = await self._event_id_of(pdu)
            if event_id is None:
                # Nothing to key an answer by: refused, and said so in the log only.
                logger.info("PDU %d of a transaction from %s has no event id; dropped", i, origin)
                continue
            try:
                room_id = pdu.get("room_id") if isinstance(pdu, dict) else None
                if isinstance(room_id, str):
                    await self._check_acl(origin, room_id)
                await self.handler.receive_pdu(origin, pdu)
                results[event_id] = {}
            except (PduRejected, MatrixError) as e:
                msg = e.message if isinstance(e, MatrixError) else str(e)
                logger.info("PDU %s from %s not accepted: %s", event_id, origin, msg)
                results[event_id] = {"error": msg}
            except Exception as e:  # noqa: BLE001 - one bad PDU must not fail the others
                logger.exception("PDU %s from %s failed", event_id, origin)
                results[event_id] = {"error": f"internal error: {type(e).__name__}"}
        for edu in edus:
            if not isinstance(edu, dict) or not isinstance(edu.get("edu_type"), str):
                continue
            handler = self.edu_handlers.get(edu["edu_type"])
            if handler is None:
                continue
            try:
                await handler(origin, edu.get("content"))
            except (MatrixError, ValueError, KeyError, TypeError) as e:
                logger.info("EDU %s from %s ignored: %s", edu["edu_type"], origin, e)
            except Exception:  # noqa: BLE001
                logger.exception("EDU %s from %s failed", edu["edu_type"], origin)
        return {"pdus": results}

    async def _event_id_of(self, pdu: Any) -> str | None:
        """The id a PDU is reported under in the /send answer: its reference hash in rooms v3
        and later (a PDU's own "event_id" field proves nothing there); None when it has none."""
        if not isinstance(pdu, dict):
            return None
        rid = pdu.get("room_id")
        rv = await self.store.get_room_version(rid) if isinstance(rid, str) else None
        if rv is None and isinstance(pdu.get("event_id"), str):
            return pdu["event_id"]  # an unknown room: a v1/v2 id if it carries one
        if rv is None or get_room_version(rv).event_id_is_reference_hash:
            try:
                return compute_event_id(pdu, rv or "10")
            except Exception:  # noqa: BLE001 - a PDU malformed enough to have no id
                return None
        return pdu["event_id"] if isinstance(pdu.get("event_id"), str) else None

    # --- joins, leaves and knocks ----------------------------------------------------------------

    async def _make_membership(self, req: HttpRequest, room_id: str, user_id: str,
                               membership: str) -> tuple[int, Any]:
        origin = req.origin
        assert origin is not None
        if server_of(user_id) != origin:
            raise MatrixError(403, "M_FORBIDDEN", f"{origin} may not act for {user_id}")
        rv_id = await self._room(origin, room_id, must_be_in_room=False)
        if membership in ("join", "knock"):
            supported = req.args.get("ver") or ["1"]
            if rv_id not in supported:
                raise MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION",
                                  f"Room version {rv_id} is not supported by {origin}",
                                  room_version=rv_id)
        rv = get_room_version(rv_id)
        content: dict[str, Any] = {"membership": membership}
        if membership == "join":
            via = await self.restricted_authoriser(room_id, user_id)
            if via is not None:
                content["join_authorised_via_users_server"] = via
        prevs, state, _ = await self.creator.state_before_new_event(room_id, rv)
        keys = auth_types_for_event("m.room.member", user_id, user_id, content, rv)
        auth_ids = [state[k] for k in sorted(keys) if k in state]
        auth_events = await self.store.get_events(auth_ids)
        template: dict[str, Any] = {
            "type": "m.room.member", "room_id": room_id, "sender": user_id, "state_key": user_id,
            "content": content, "depth": max(e.depth for e in prevs) + 1,
            "origin_server_ts": self.clock.time_msec(),
            "prev_events": event_refs(prevs, rv), "auth_events": event_refs(
                [auth_events[i] for i in auth_ids if i in auth_events], rv),
        }
        if not rv.redact_origin:
            template["origin"] = origin
        if not rv.event_id_is_reference_hash:
            template["event_id"] = f"$template:{origin}"  # replaced by the joining server
        provisional = Event(template.get("event_id", "$provisional"), rv, template)
        create_id = state.get(("m.room.create", ""))
        create = (await self.store.get_events([create_id])).get(create_id) if create_id else None
        try:
            check_auth(provisional, {e.key: e for e in auth_events.values()}, create_event=create,
                       verify_signature=lambda ev, server: True)
        except AuthError as e:
            raise MatrixError(403, "M_FORBIDDEN", f"{user_id} may not {membership}: {e.message}")
        return 200, {"event": template, "room_version": rv_id}

    async def make_join(self, req: HttpRequest, roomId: str, userId: str) -> tuple[int, Any]:
        return await self._make_membership(req, roomId, userId, "join")

    async def make_leave(self, req: HttpRequest, roomId: str, userId: str) -> tuple[int, Any]:
        return await self._make_membership(req, roomId, userId, "leave")

    async def make_knock(self, req: HttpRequest, roomId: str, userId: str) -> tuple[int, Any]:
        return await self._make_membership(req, roomId, userId, "knock")

    async def _send_membership(self, req: HttpRequest, room_id: str, event_id: str,
                               membership: str) -> Event:
        origin = req.origin
        assert origin is not None
        rv_id = await self._room(origin, room_id, must_be_in_room=False)
        rv = get_room_version(rv_id)
        try:
            event = await check_pdu(req.json_value(), rv, self.handler.verify, room_id)
        except PduRejected as e:
            raise MatrixError(400, "M_BAD_JSON", str(e)) from None
        if event.event_id != event_id:
            raise MatrixError(400, "M_BAD_JSON", "The event id does not match the path")
        if (event.type != "m.room.member" or event.membership != membership
                or event.state_key != event.sender or server_of(event.sender) != origin):
            raise MatrixError(400, "M_BAD_JSON", f"Expected a {membership} of a user of {origin}")
        via = event.content.get("join_authorised_via_users_server")
        if membership == "join" and isinstance(via, str) and server_of(via) == self.server_name:
            # Restricted join: our signature vouches that our user admitted them.
            pdu = sign_event(dict(event.pdu), self.server_name, self.signing_key, rv)
            event = Event(event.event_id, rv, pdu)
        async with self.handler.room_lock(room_id):
            persisted = await self.handler.handle_checked(origin, event, fetch_missing=True)
        row = await self.store.get_event_row(event.event_id)
        if row is None or row.rejected or row.soft_failed:
            raise MatrixError(403, "M_FORBIDDEN", f"The {membership} event is not allowed")
        del persisted
        return event

    async def _join_response(self, room_id: str, event: Event) -> dict[str, Any]:
        state = await self._state_at(room_id, event.event_id)
        state_rows = await self.store.get_rows(state.values())
        chain = await self.fed_store.auth_chain_ids(list(state.values()) + [event.event_id])
        chain_rows = await self.store.get_rows(chain)
        return {
            "origin": self.server_name,
            "state": self._pdus([state_rows[i] for i in state.values() if i in state_rows]),
            "auth_chain": self._pdus(sorted(chain_rows.values(), key=lambda r: r.event.depth)),
            "event": dict(event.pdu),
            "members_omitted": False,
            "servers_in_room": sorted(await self.visibility.servers_in_room(room_id)),
        }

    async def send_join_v2(self, req: HttpRequest, roomId: str, eventId: str) -> tuple[int, Any]:
        event = await self._send_membership(req, roomId, eventId, "join")
        return 200, await self._join_response(roomId, event)

    async def send_join_v1(self, req: HttpRequest, roomId: str, eventId: str) -> tuple[int, Any]:
        event = await self._send_membership(req, roomId, eventId, "join")
        return 200, [200, await self._join_response(roomId, event)]

    async def send_leave_v2(self, req: HttpRequest, roomId: str, eventId: str) -> tuple[int, Any]:
        await self._send_membership(req, roomId, eventId, "leave")
        return 200, {}

    async def send_leave_v1(self, req: HttpRequest, roomId: str, eventId: str) -> tuple[int, Any]:
        await self._send_membership(req, roomId, eventId, "leave")
        return 200, [200, {}]

    async def send_knock(self, req: HttpRequest, roomId: str, eventId: str) -> tuple[int, Any]:
        await self._send_membership(req, roomId, eventId, "knock")
        return 200, {"knock_room_state": await StrippedState(self.store).of_room(roomId)}

    # --- invites ---------------------------------------------------------------------------------

    async def invite_v2(self, req: HttpRequest, roomId: str, eventId: str) -> tuple[int, Any]:
        origin = req.origin
        assert origin is not None
        body = req.json().data
        rv_id = body.get("room_version")
        if not isinstance(rv_id, str) or rv_id not in KNOWN_ROOM_VERSIONS:
            raise MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION",
                              f"Room version {rv_id!r} is not supported here", room_version=rv_id)
        rv = get_room_version(rv_id)
        try:
            event = await check_pdu(body.get("event"), rv, self.handler.verify, roomId)
        except PduRejected as e:
            raise MatrixError(400, "M_BAD_JSON", str(e)) from None
        if event.event_id != eventId:
            raise MatrixError(400, "M_BAD_JSON", "The event id does not match the path")
        target = event.state_key or ""
        if (event.type != "m.room.member" or event.membership != "invite"
                or server_of(target) != self.server_name or server_of(event.sender) != origin):
            raise MatrixError(400, "M_BAD_JSON", "Expected an invite of a user of this server "
                              f"sent by a user of {origin}")
        room_known = await self.store.get_room_version(roomId)
        if room_known is not None:
            await self._check_acl(origin, roomId)
        stripped = body.get("invite_room_state", [])
        if not isinstance(stripped, list):
            stripped = []
        pdu = sign_event(dict(event.pdu), self.server_name, self.signing_key, rv)
        signed = Event(event.event_id, rv, pdu)
        if self.on_invite is not None:
            await self.on_invite(origin, signed, stripped)
        return 200, {"event": dict(signed.pdu)}

    # --- reading the room ------------------------------------------------------------------------

    async def get_event(self, req: HttpRequest, eventId: str) -> tuple[int, Any]:
        origin = req.origin
        assert origin is not None
        row = await self.store.get_event_row(eventId)
        if row is None:
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown event {eventId}")
        await self._check_acl(origin, row.event.room_id)
        if not row.outlier:
            if not await self.visibility.filter(origin, [row]):
                raise MatrixError(403, "M_FORBIDDEN", f"{origin} may not see {eventId}")
        elif not await self.visibility.is_in_room(origin, row.event.room_id):
            raise MatrixError(403, "M_FORBIDDEN", f"{origin} may not see {eventId}")
        return 200, {"origin": self.server_name, "origin_server_ts": self.clock.time_msec(),
                     "pdus": [dict(row.event.pdu)]}

    async def _state_and_chain(self, req: HttpRequest, roomId: str) -> tuple[list[str], set[str]]:
        origin = req.origin
        assert origin is not None
        await self._room(origin, roomId)
        event_id = req.query("event_id", required=True)
        assert event_id is not None
        row = await self.store.get_event_row(event_id)
        if row is not None and not await self.visibility.filter(origin, [row]):
            raise MatrixError(403, "M_FORBIDDEN", f"{origin} may not see {event_id}")
        # The state before the event (what Synapse answers; the asking server adds the event
        # itself when it is a state event).
        state = await self._state_at(roomId, event_id)
        ids = list(state.values())
        return ids, await self.fed_store.auth_chain_ids(ids)

    async def get_state(self, req: HttpRequest, roomId: str) -> tuple[int, Any]:
        ids, chain = await self._state_and_chain(req, roomId)
        rows = await self.store.get_rows(list(ids) + list(chain))
        return 200, {"pdus": self._pdus([rows[i] for i in ids if i in rows]),
                     "auth_chain": self._pdus([rows[i] for i in chain if i in rows])}

    async def get_state_ids(self, req: HttpRequest, roomId: str) -> tuple[int, Any]:
        ids, chain = await self._state_and_chain(req, roomId)
        return 200, {"pdu_ids": ids, "auth_chain_ids": sorted(chain)}

    async def get_event_auth(self, req: HttpRequest, roomId: str, eventId: str) -> tuple[int, Any]:
        origin = req.origin
        assert origin is not None
        await self._room(origin, roomId)
        row = await self.store.get_event_row(eventId)
        if row is None or row.event.room_id != roomId:
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown event {eventId}")
        chain = await self.fed_store.auth_chain_ids([eventId])
        rows = await self.store.get_rows(chain)
        return 200, {"auth_chain": self._pdus(sorted(rows.values(), key=lambda r: r.event.depth))}

    async def backfill(self, req: HttpRequest, roomId: str) -> tuple[int, Any]:
        origin = req.origin
        assert origin is not None
        await self._room(origin, roomId)
        start = req.args.get("v") or []
        if not start:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing 'v'")
        limit = req.query_int("limit", 10, lo=1, hi=10_000) or 10
        ids = await self.fed_store.walk_back(start, [], min(limit, 100), include_start=True)
        rows = await self.store.get_rows(ids)
        visible = await self.visibility.filter(
            origin, [rows[i] for i in ids if i in rows and rows[i].event.room_id == roomId])
        return 200, {"origin": self.server_name, "origin_server_ts": self.clock.time_msec(),
                     "pdus": self._pdus(visible)}

    async def get_missing_events(self, req: HttpRequest, roomId: str) -> tuple[int, Any]:
        origin = req.origin
        assert origin is not None
        await self._room(origin, roomId)
        body = req.json().data
        earliest = body.get("earliest_events", [])
        latest = body.get("latest_events", [])
        limit = body.get("limit", 10)
        if (not isinstance(earliest, list) or not isinstance(latest, list)
                or not all(isinstance(e, str) for e in earliest + latest)
                or not isinstance(limit, int) or isinstance(limit, bool)):
            raise bad_json("earliest_events and latest_events are lists of event ids")
        limit = max(0, min(limit, 100))
        ids = await self.fed_store.walk_back(latest, earliest, limit, include_start=False)
        rows = await self.store.get_rows(ids)
        found = sorted((rows[i] for i in ids if i in rows and rows[i].event.room_id == roomId),
                       key=lambda r: (r.event.depth, r.stream_ordering))
        return 200, {"events": self._pdus(await self.visibility.filter(origin, found))}

    # --- queries ---------------------------------------------------------------------------------

    async def query(self, req: HttpRequest, queryType: str) -> tuple[int, Any]:
        handler = self.query_handlers.get(queryType)
        if handler is None:
            raise MatrixError(404, "M_UNRECOGNIZED", f"Unknown query type {queryType}")
        return 200, await handler(req)
