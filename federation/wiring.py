"""Builds the federation side and hooks it into the rooms and ephemeral services.

Called from homeserver/server.py (the composition root); kept here so that file stays a list
of constructors. Outgoing: every event our users create goes into the per-destination queues
of the servers in its room (federation/sender.py); typing and receipts go as EDUs.
Incoming: federation/api.py's routes, signed requests checked by federation/auth.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import quote

from crypto.keys import SigningKey
from federation.api import FederationApi
from federation.auth import XMatrixAuthenticator
from federation.client import AddressPolicy, FederationClient, WellKnownFetcher
from federation.discovery import ServerResolver
from federation.edus import EduBridge
from federation.event_handler import FederationEventHandler
from federation.keyring import Keyring
from federation.keys_api import KeysApi
from federation.membership import RemoteMembership
from federation.outbox import outbox_hook
from federation.sender import FederationSender
from federation.server_visibility import ServerVisibility, server_of
from federation.tls import client_tls_policy
from homeserver.config import Config
from homeserver.http.errors import MatrixError
from homeserver.http.router import AUTH_FEDERATION, Router
from homeserver.http.site import HttpRequest
from homeserver.media.fetch import IpBlacklist
from homeserver.rooms.creator import EventCreator
from homeserver.rooms.service import RoomService
from storage.database import Database
from storage.events import EventStore, PersistedEvent
from storage.federation_events import FederationEventStore
from storage.federation_queue import FederationQueueStore
from storage.server_keys import ServerKeyStore

logger = logging.getLogger(__name__)


@dataclass
class Federation:
    client: FederationClient
    keyring: Keyring
    sender: FederationSender
    handler: FederationEventHandler
    api: FederationApi
    membership: RemoteMembership
    authenticator: XMatrixAuthenticator
    edus: EduBridge
    fed_store: FederationEventStore

    async def start(self) -> None:
        await self.sender.start()

    async def stop(self) -> None:
        await self.sender.stop()
        await self.client.close()


def build_federation(config: Config, db: Database, clock: Any, signing_key: SigningKey,
                     router: Router, events: EventStore, creator: EventCreator,
                     rooms: RoomService, resolve_state: Any, directory: Any, profiles: Any,
                     accounts: Any, notifier: Any) -> Federation:
    fc = config.federation
    policy = client_tls_policy(fc.custom_ca_list)
    addresses = AddressPolicy(IpBlacklist(fc.ip_range_blacklist),
                              IpBlacklist(fc.ip_range_whitelist) if fc.ip_range_whitelist else None)
    from twisted.names import client as dns_client
    resolver = ServerResolver(clock.reactor, clock=clock, dns_resolver=dns_client.createResolver(),
                              http_get_wellknown=WellKnownFetcher(clock.reactor, policy, addresses))
    client = FederationClient(clock.reactor, clock, config.server_name, signing_key, resolver,
                              policy, IpBlacklist(fc.ip_range_blacklist),
                              IpBlacklist(fc.ip_range_whitelist) if fc.ip_range_whitelist else None,
                              fc.client_timeout_ms)

    async def fetch_json(method: str, destination: str, path: str, body: dict | None) -> Any:
        return await client.request_json(method, destination, path,
                                         body=body if method != "GET" else None)
    keyring = Keyring(ServerKeyStore(db), clock, fetch_json, config.server_name, signing_key, fc)
    KeysApi(keyring, clock).register(router)
    authenticator = XMatrixAuthenticator(keyring, config.server_name, clock, fc.domain_whitelist)

    async def send_transaction(destination: str, txn_id: str, body: dict[str, Any]) -> Any:
        return await client.put_json(destination, f"/_matrix/federation/v1/send/{quote(txn_id, safe='')}",
                                     body)

    async def get_pdu_json(event_ids: list[str]) -> Mapping[str, Mapping[str, Any]]:
        rows = await events.get_rows(event_ids)
        return {eid: dict(r.event.pdu) for eid, r in rows.items()}
    sender = FederationSender(FederationQueueStore(db), clock, send_transaction,
                              config.server_name, fc, get_pdu_json)
    handler = FederationEventHandler(events, creator, client, keyring.verify_event_signatures,
                                     resolve_state, config.server_name)
    fed_store = FederationEventStore(db, events)
    visibility = ServerVisibility(events)
    api = FederationApi(config.server_name, signing_key, events, fed_store, creator, handler,
                        visibility, rooms._restricted_join_authoriser, clock)
    api.register(router)
    membership = RemoteMembership(config.server_name, signing_key, events, fed_store, creator,
                                  handler, client, clock)
    rooms.remote = membership

    def wake_member(persisted: PersistedEvent) -> None:
        notifier.notify("events", persisted.stream_ordering,
                        users={persisted.event.state_key or ""})
    membership.on_recorded = wake_member
    edus = EduBridge(config.server_name, events, sender, clock)
    fed = Federation(client, keyring, sender, handler, api, membership, authenticator, edus,
                     fed_store)

    async def on_invite(origin: str, event: Any, stripped: list[Any]) -> None:
        # Spec "Stripped state": type, state_key, content and sender of each event (some
        # servers send whole PDUs).
        clean = [{k: e[k] for k in ("type", "state_key", "content", "sender") if k in e}
                 for e in stripped if isinstance(e, dict) and isinstance(e.get("type"), str)
                 and isinstance(e.get("content"), dict)]
        await membership.record_remote_membership(event, event.room_version, clean)
        await sender.wake(origin)
    api.on_invite = on_invite

    events.persist_hooks.append(outbox_hook(events, sender, config.server_name))

    async def query_directory(req: HttpRequest) -> Any:
        alias = req.query("room_alias", required=True)
        assert alias is not None
        room_id = await directory.get_alias(alias)
        if room_id is None:
            raise MatrixError(404, "M_NOT_FOUND", f"Room alias {alias} not found")
        servers = sorted(await visibility.servers_in_room(room_id) | {config.server_name})
        return {"room_id": room_id, "servers": servers}

    async def query_profile(req: HttpRequest) -> Any:
        user_id = req.query("user_id", required=True)
        assert user_id is not None
        if server_of(user_id) != config.server_name:
            raise MatrixError(400, "M_INVALID_PARAM", f"{user_id} is not a user of this server")
        field = req.query("field")
        profile = await profiles.get_profile(user_id)
        if not profile and await accounts.get_user(user_id) is None:
            raise MatrixError(404, "M_NOT_FOUND", "Profile not found")
        if field is not None:
            if field not in ("displayname", "avatar_url"):
                return {}
            return {field: profile[field]} if profile.get(field) is not None else {}
        return {k: v for k, v in profile.items() if v is not None}
    api.query_handlers["directory"] = query_directory
    api.query_handlers["profile"] = query_profile

    async def remote_alias(alias: str) -> tuple[str, list[str]]:
        server = alias.split(":", 1)[1]
        try:
            body = await client.get_json(server, "/_matrix/federation/v1/query/directory",
                                         args={"room_alias": alias})
        except Exception as e:  # noqa: BLE001
            if getattr(e, "status", None) == 404:
                raise MatrixError(404, "M_NOT_FOUND", f"Room alias {alias} not found") from None
            raise MatrixError(502, "M_UNKNOWN", f"Could not ask {server} about {alias}: {e}") from None
        room_id = body.get("room_id") if isinstance(body, dict) else None
        if not isinstance(room_id, str):
            raise MatrixError(502, "M_UNKNOWN", f"{server} gave no room for {alias}")
        servers = [s for s in body.get("servers", []) if isinstance(s, str)]
        return room_id, [server] + servers
    fed.remote_alias = remote_alias  # type: ignore[attr-defined]

    async def backfill_room(room_id: str) -> int:
        servers = sorted(await visibility.servers_in_room(room_id) - {config.server_name})
        return await handler.backfill(room_id, servers) if servers else 0
    fed.backfill_room = backfill_room  # type: ignore[attr-defined]

    def connect_public_rooms(directory_api: Any) -> None:
        """/publicRooms both ways: ours to other servers when allowed, theirs to our users."""
        async def serve(req: HttpRequest) -> tuple[int, Any]:
            if not fc.allow_public_rooms_over_federation:
                raise MatrixError(403, "M_FORBIDDEN", "This server does not share its room directory")
            if req.method == "POST":
                body = req.json(allow_empty=True).data
                limit, since = body.get("limit"), body.get("since")
                flt = body.get("filter") if isinstance(body.get("filter"), dict) else {}
                term = flt.get("generic_search_term")
            else:
                limit, since, term = req.query_int("limit", None, lo=0), req.query("since"), None
            if (limit is not None and (not isinstance(limit, int) or limit < 0)) or \
                    (since is not None and not isinstance(since, str)) or \
                    (term is not None and not isinstance(term, str)):
                raise MatrixError(400, "M_INVALID_PARAM", "limit, since or filter is malformed")
            return 200, await directory_api.local_public_rooms(limit, since, term)
        router.add("GET", "/_matrix/federation/v1/publicRooms", serve, auth=AUTH_FEDERATION)
        router.add("POST", "/_matrix/federation/v1/publicRooms", serve, auth=AUTH_FEDERATION)

        async def remote(server: str, limit: int | None, since: str | None,
                         term: str | None) -> Any:
            body: dict[str, Any] = {}
            if limit is not None:
                body["limit"] = limit
            if since is not None:
                body["since"] = since
            if term:
                body["filter"] = {"generic_search_term": term}
            try:
                return await client.post_json(server, "/_matrix/federation/v1/publicRooms", body)
            except Exception as e:  # noqa: BLE001
                status = getattr(e, "status", None)
                if status in (403, 404):
                    raise MatrixError(status, getattr(e, "errcode", None) or "M_FORBIDDEN",
                                      f"{server} does not share its room directory") from None
                raise MatrixError(502, "M_UNKNOWN", f"Could not reach {server}: {e}") from None
        directory_api.remote_public_rooms = remote
    fed.connect_public_rooms = connect_public_rooms  # type: ignore[attr-defined]
    return fed
