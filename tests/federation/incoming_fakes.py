"""A local homeserver's incoming federation path on a real database, with one remote server
whose keys a fake network publishes: the pieces tests of received PDUs need.

``Hearth`` wires the real EventStore, EventCreator, RoomService, Keyring (on the real
ServerKeyStore), FederationEventHandler and FederationApi; the remote server is an ed25519
key made here and served by tests/federation/keyring_fakes.Network. Nothing leaves the
process: the federation client the handler would use for missing events refuses every call
and records it.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

from crypto.keys import SigningKey, generate_signing_key
from crypto.room_versions import RoomVersion, get_room_version
from federation.api import FederationApi
from federation.event_handler import FederationEventHandler
from federation.server_visibility import ServerVisibility
from homeserver.rooms.auth_rules import auth_types_for_event
from homeserver.rooms.builder import EventBuilder
from homeserver.rooms.creator import EventCreator
from homeserver.rooms.events import Event
from homeserver.rooms.service import RoomService
from homeserver.rooms.state_res import resolve_state
from storage.database import Database
from storage.directory import DirectoryStore
from storage.events import EventRow, EventStore
from storage.federation_events import FederationEventStore
from storage.profiles import ProfileStore
from storage.server_keys import ServerKeyStore
from tests.federation.keyring_fakes import FakeClock, Network, RemoteServer, make_keyring, request

LOCAL = "local.test"
REMOTE = "remote.test"
ALICE = f"@alice:{LOCAL}"          # the local room creator
BOB = f"@bob:{REMOTE}"             # a remote user who joins
MALLORY = f"@mallory:{REMOTE}"     # a remote user who never joined

# Tables a received PDU could leave a trace in.
TRACE_TABLES = ("events", "event_edges", "event_auth", "current_state", "forward_extremities",
                "room_memberships", "current_membership", "redactions")


class RefusingClient:
    """The federation client of the handler: every request fails (and is recorded)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    async def get_json(self, destination: str, path: str, args: Any = None) -> Any:
        self.calls.append(("GET", destination, path))
        raise ConnectionError(f"cannot reach {destination}")

    async def post_json(self, destination: str, path: str, body: Any = None) -> Any:
        self.calls.append(("POST", destination, path))
        raise ConnectionError(f"cannot reach {destination}")


class Hearth:
    """The local server's stores and services around one database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.clock = FakeClock()
        self.net = Network(self.clock)
        self.remote: RemoteServer = self.net.add(REMOTE)
        self.store = EventStore(db)
        self.client = RefusingClient()

    async def start(self) -> "Hearth":
        await self.store.load()
        self.signing_key = generate_signing_key()

        async def resolve(rv: Any, states: Any) -> Any:
            return await resolve_state(rv, states, self.store.get_events)
        self.creator = EventCreator(self.store, EventBuilder(LOCAL, self.signing_key), self.clock,
                                    resolve)
        self.rooms = RoomService(self.store, self.creator, ProfileStore(self.db),
                                 DirectoryStore(self.db), LOCAL)
        self.keyring = make_keyring(self.net, ServerKeyStore(self.db), server_name=LOCAL,
                                    signing_key=self.signing_key)
        self.handler = FederationEventHandler(self.store, self.creator, self.client,
                                              self.keyring.verify_event_signatures, resolve, LOCAL)
        self.fed_store = FederationEventStore(self.db, self.store)

        async def no_restricted(room_id: str, user_id: str) -> None:
            return None
        self.api = FederationApi(LOCAL, self.signing_key, self.store, self.fed_store,
                                 self.creator, self.handler, ServerVisibility(self.store),
                                 no_restricted, self.clock)
        self.timeline_heard: list[str] = []
        self.creator.listeners.append(lambda p: self.timeline_heard.append(p.event.event_id))
        return self

    # --- the room -------------------------------------------------------------------------------

    async def create_room(self, room_version: str, preset: str = "public_chat") -> str:
        return await self.rooms.create_room(
            ALICE, room_version=room_version, preset=preset, visibility="private",
            creation_content={}, initial_state=[], name=None, topic=None, invite=[],
            is_direct=False, power_level_override=None, alias_localpart=None)

    async def remote_event(self, room_id: str, event_type: str, sender: str,
                           content: Mapping[str, Any], state_key: str | None = None, *,
                           prev_events: list[str] | None = None,
                           auth_state: Mapping[tuple[str, str], str] | None = None,
                           key: SigningKey | None = None, server_name: str = REMOTE,
                           origin_server_ts: int | None = None) -> dict[str, Any]:
        """A PDU as the remote server would send it: on the room's forward extremities, auth
        events picked from ``auth_state`` (default: the current state), hashed and signed."""
        rv = get_room_version(await self.store.get_room_version(room_id) or "")
        prev_ids = prev_events if prev_events is not None else \
            await self.store.get_forward_extremities(room_id)
        prevs = list((await self.store.get_events(prev_ids)).values())
        state = auth_state if auth_state is not None else \
            await self.store.get_current_state_ids(room_id)
        keys = auth_types_for_event(event_type, sender, state_key, content, rv)
        auth_ids = [state[k] for k in sorted(keys) if k in state]
        auth = list((await self.store.get_events(auth_ids)).values())
        builder = EventBuilder(server_name, key or self.remote.key)
        event = builder.build(room_version=rv, room_id=room_id, event_type=event_type,
                              sender=sender, content=content, state_key=state_key,
                              prev_events=prevs, auth_events=auth,
                              depth=max((e.depth for e in prevs), default=0) + 1,
                              origin_server_ts=origin_server_ts or self.clock.time_msec())
        return copy.deepcopy(dict(event.pdu))

    async def join_remote(self, room_id: str, user: str = BOB) -> str:
        """``user`` joins through the incoming path; returns the join's event id."""
        pdu = await self.remote_event(room_id, "m.room.member", user, {"membership": "join"}, user)
        persisted = await self.handler.receive_pdu(REMOTE, pdu)
        assert persisted is not None
        row = await self.store.get_event_row(persisted.event.event_id)
        assert row is not None and not row.rejected and not row.soft_failed
        return persisted.event.event_id

    # --- what is stored ------------------------------------------------------------------------

    async def traces(self) -> dict[str, int]:
        """Row counts of every table a PDU could write to."""
        out = {}
        for table in TRACE_TABLES:
            out[table] = (await self.db.query(f"SELECT COUNT(*) FROM {table}"))[0][0]
        return out

    async def stored(self, event_id: str) -> bool:
        """Whether the events table holds the id (asked of the database, not the cache)."""
        rows = await self.db.query("SELECT 1 FROM events WHERE event_id = ?", (event_id,))
        return bool(rows)

    async def db_row(self, event_id: str) -> tuple[Any, ...] | None:
        """(json, outlier, rejected_reason, soft_failed) straight from the database."""
        rows = await self.db.query("SELECT json, outlier, rejected_reason, soft_failed FROM events"
                                   " WHERE event_id = ?", (event_id,))
        return tuple(rows[0]) if rows else None

    async def timeline(self, room_id: str) -> list[str]:
        """Every event /messages would return, oldest first."""
        rows: list[EventRow] = await self.store.paginate(room_id, (0, 0), False, 1000)
        return [r.event.event_id for r in rows]

    def send_request(self, txn_id: str, body: Any, origin: str = REMOTE) -> Any:
        req = request("PUT", f"/_matrix/federation/v1/send/{txn_id}", body, [])
        req.origin = origin
        return req


def event_id_of(pdu: Mapping[str, Any], room_version: RoomVersion | str) -> str:
    return Event.from_pdu(pdu, room_version).event_id
