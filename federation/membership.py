"""Membership through other servers: joining a room this server is not in (make_join/send_join
v2), inviting a remote user (/invite v2), and leaving or knocking through a resident server.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any
from urllib.parse import quote

from crypto.event_signing import hash_and_sign_event
from crypto.keys import SigningKey
from crypto.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version
from federation.event_checks import PduRejected, check_pdu
from federation.event_handler import FederationEventHandler
from federation.server_visibility import server_of
from homeserver.http.errors import MatrixError
from homeserver.rooms.auth_rules import AuthError, check_auth
from homeserver.rooms.creator import EventCreator
from homeserver.rooms.events import Event
from storage.events import EventStore, PersistedEvent
from storage.federation_events import FederationEventStore

logger = logging.getLogger(__name__)

def q(value: str) -> str:
    return quote(value, safe="")


class RemoteMembership:
    def __init__(self, server_name: str, signing_key: SigningKey, store: EventStore,
                 fed_store: FederationEventStore, creator: EventCreator,
                 handler: FederationEventHandler, client: Any, clock: Any) -> None:
        self.server_name = server_name
        self.signing_key = signing_key
        self.store = store
        self.fed_store = fed_store
        self.creator = creator
        self.handler = handler
        self.client = client
        self.clock = clock
        # Told of a local user's membership recorded outside the timeline (wakes their /sync).
        self.on_recorded: Any = None

    def is_local(self, user_id: str) -> bool:
        return server_of(user_id) == self.server_name

    # --- make_* / send_* ------------------------------------------------------------------------

    def _complete(self, template: Any, rv: RoomVersion, user_id: str, membership: str,
                  extra_content: dict[str, Any]) -> Event:
        """Our event from a resident server's template: our fields, hashes and signature."""
        if not isinstance(template, dict):
            raise MatrixError(502, "M_UNKNOWN", "The resident server sent no event template")
        content = template.get("content") if isinstance(template.get("content"), dict) else {}
        if (template.get("type") != "m.room.member" or template.get("state_key") != user_id
                or template.get("sender") != user_id or content.get("membership") != membership):
            raise MatrixError(502, "M_UNKNOWN", "The resident server sent a wrong event template")
        pdu = {k: template[k] for k in ("type", "room_id", "sender", "state_key", "depth",
                                          "prev_events", "auth_events") if k in template}
        pdu["content"] = {**content, **extra_content, "membership": membership}
        pdu["origin_server_ts"] = self.clock.time_msec()
        if not rv.redact_origin:
            pdu["origin"] = self.server_name
        if not rv.event_id_is_reference_hash:
            pdu["event_id"] = f"${secrets.token_urlsafe(18)}:{self.server_name}"
        hash_and_sign_event(pdu, self.server_name, self.signing_key, rv)
        return Event.from_pdu(pdu, rv)

    async def _make(self, servers: list[str], room_id: str, user_id: str, membership: str
                    ) -> tuple[str, RoomVersion, dict[str, Any]]:
        last: Exception | None = None
        for server in servers:
            if server == self.server_name:
                continue
            try:
                args: dict[str, Any] = {"ver": list(KNOWN_ROOM_VERSIONS)} if membership in (
                    "join", "knock") else {}
                body = await self.client.get_json(
                    server, f"/_matrix/federation/v1/make_{membership}/{q(room_id)}/{q(user_id)}",
                    args=args)
                rv_id = body.get("room_version", "1")
                if rv_id not in KNOWN_ROOM_VERSIONS:
                    raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION",
                                      f"Room version {rv_id} is not supported here")
                return server, get_room_version(rv_id), body.get("event")
            except MatrixError:
                raise
            except Exception as e:  # noqa: BLE001 - try the next server
                errcode = getattr(e, "errcode", None)
                status = getattr(e, "status", None)
                logger.info("make_%s for %s through %s failed: %s", membership, room_id, server, e)
                last = e
                if errcode == "M_FORBIDDEN" or status == 403:
                    raise MatrixError(403, "M_FORBIDDEN",
                                      f"{server} refused the {membership}: {getattr(e, 'message', e)}")
                if errcode == "M_INCOMPATIBLE_ROOM_VERSION":
                    raise MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION", str(e))
        raise MatrixError(404, "M_NOT_FOUND",
                          f"No server could {membership} us to {room_id}" + (f": {last}" if last else ""))

    async def join(self, room_id: str, user_id: str, servers: list[str],
                   extra_content: dict[str, Any]) -> PersistedEvent:
        """Join a room this server is not in, through the first of ``servers`` that answers."""
        server, rv, template = await self._make(servers, room_id, user_id, "join")
        event = self._complete(template, rv, user_id, "join", extra_content)
        body = await self.client.put_json(
            server, f"/_matrix/federation/v2/send_join/{q(room_id)}/{q(event.event_id)}",
            dict(event.pdu))
        if not isinstance(body, dict):
            raise MatrixError(502, "M_UNKNOWN", f"{server} sent a malformed send_join answer")
        signed = body.get("event")
        if isinstance(signed, dict):
            # A restricted join comes back with the resident server's signature added.
            try:
                back = await check_pdu(signed, rv, self.handler.verify, room_id)
                if back.event_id == event.event_id:
                    event = back
            except PduRejected as e:
                logger.info("ignoring the returned join event from %s: %s", server, e)
        create = next((p for p in body.get("auth_chain", []) + body.get("state", [])
                       if isinstance(p, dict) and p.get("type") == "m.room.create"), None)
        creator = (create or {}).get("sender", "") if isinstance(create, dict) else ""
        new_room = (rv.identifier, creator)
        async with self.handler.room_lock(room_id):
            await self.handler.store_outliers(body.get("auth_chain", []), rv, room_id, new_room)
            state = await self.handler.store_outliers(body.get("state", []), rv, room_id, new_room)
            state_map = {e.key: e.event_id for e in state if e.is_state}
            if ("m.room.create", "") not in state_map and not rv.room_id_is_create_event_hash:
                raise MatrixError(502, "M_UNKNOWN", f"{server} sent a room state without a create event")
            by_key = {e.key: e for e in state if e.is_state}
            create_ev = by_key.get(("m.room.create", ""))
            if create_ev is None:
                create_ev = (await self.store.get_events(["$" + room_id[1:]])).get("$" + room_id[1:])
            try:
                check_auth(event, by_key, create_event=create_ev)
            except AuthError as e:
                raise MatrixError(403, "M_FORBIDDEN", f"The join is not allowed: {e.message}")
            after = dict(state_map)
            after[event.key] = event.event_id
            return await self.creator.persist_external(
                event, state_before=state_map, new_current_state=after, new_room=new_room)

    async def leave_or_knock(self, room_id: str, user_id: str, servers: list[str],
                             membership: str, extra_content: dict[str, Any]) -> Event:
        """Leave (reject an invite) or knock through a resident server; returns our event."""
        server, rv, template = await self._make(servers, room_id, user_id, membership)
        event = self._complete(template, rv, user_id, membership, extra_content)
        version = "v2" if membership == "leave" else "v1"
        await self.client.put_json(
            server, f"/_matrix/federation/{version}/send_{membership}/{q(room_id)}/{q(event.event_id)}",
            dict(event.pdu))
        await self.record_remote_membership(event, rv)
        return event

    async def record_remote_membership(self, event: Event, rv: RoomVersion,
                                       stripped: list[Any] | None = None) -> PersistedEvent:
        """A local user's membership in a room this server is not in (an invite received, or
        the leave or knock sent through another server): stored outside the timeline, with the
        user's membership, so /sync shows it."""
        async with self.creator.lock:
            def persist(txn: Any) -> PersistedEvent:
                if not txn.query("SELECT 1 FROM rooms WHERE room_id = ?", (event.room_id,)):
                    self.store.store_room_txn(txn, event.room_id, rv.identifier, "",
                                              self.clock.time_msec())
                if txn.query("SELECT 1 FROM events WHERE event_id = ?", (event.event_id,)):
                    return PersistedEvent(event, 0, None, None)
                persisted = self.store.persist_txn(txn, event, state_before=None,
                                                   state_group_before=None, outlier=True,
                                                   now=self.clock.time_msec())
                self.fed_store.remote_membership_txn(
                    txn, event.room_id, event.state_key or "", event.sender,
                    event.membership or "leave", event.event_id, persisted.stream_ordering)
                return persisted
            persisted = await self.store.db.run("remote_membership", persist)
        if stripped is not None:
            await self.fed_store.store_invite_state(event.event_id, event.room_id, stripped)
        if self.on_recorded is not None and persisted.stream_ordering:
            self.on_recorded(persisted)
        return persisted

    # --- invites --------------------------------------------------------------------------------

    async def invite_remote(self, event: Event, invite_room_state: list[dict[str, Any]]) -> Event:
        """Ask the invitee's server to countersign our invite; returns the signed event."""
        target = event.state_key or ""
        server = server_of(target)
        body = await self.client.put_json(
            server, f"/_matrix/federation/v2/invite/{q(event.room_id)}/{q(event.event_id)}",
            {"event": dict(event.pdu), "room_version": event.room_version.identifier,
             "invite_room_state": invite_room_state})
        signed = body.get("event") if isinstance(body, dict) else None
        try:
            back = await check_pdu(signed, event.room_version, self.handler.verify, event.room_id)
        except PduRejected as e:
            raise MatrixError(502, "M_UNKNOWN", f"{server} sent back a bad invite: {e}") from None
        if back.event_id != event.event_id or server not in back.pdu.get("signatures", {}):
            raise MatrixError(502, "M_UNKNOWN", f"{server} did not sign the invite")
        return back
