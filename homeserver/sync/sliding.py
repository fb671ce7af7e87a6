"""Simplified Sliding Sync (MSC4186): the handler behind POST .../org.matrix.simplified_msc3575/sync.

A request names its lists (filtered, sorted windows over the user's rooms), room subscriptions
and extensions; with ``pos`` it continues a connection and gets only what that connection has
not been sent yet. The pieces:

- ``sliding_request``: the request, validated and parsed;
- ``sliding_rooms``: the user's room list, filters, recency order, windows;
- ``sliding_room``: each room's entry (timeline, required_state, metadata);
- ``sliding_extensions``: account data, receipts, typing, to-device, E2EE;
- ``sliding_connections``: what each connection has been sent, persisted per position.

With ``pos`` and nothing to send, the request waits on the notifier (never polling the
database) until something concerning the user happens or ``timeout`` ends, like /sync.
The response's ``pos`` is "<connection position>_<sync token>".
"""

from __future__ import annotations

import re
import time
from typing import Any

from homeserver.clock import Clock
from homeserver.ephemeral.receipts import ReceiptService
from homeserver.ephemeral.typing import TypingService
from homeserver.http.errors import MatrixError
from homeserver.notifier import Notifier
from homeserver.rooms.serialize import ClientSerializer
from homeserver.rooms.stripped import StrippedState
from homeserver.rooms.visibility import Visibility
from homeserver.sync.sliding_connections import (Connection, ConnectionState, SlidingConnections,
                                                 unknown_pos)
from homeserver.sync.sliding_extensions import (DeviceListSource, KeyCountSource, SlidingExtensions,
                                                ToDeviceSource)
from homeserver.sync.sliding_request import SlidingSyncRequest
from homeserver.sync.sliding_room import RoomBuilder, RoomResult
from homeserver.sync.sliding_rooms import InterestedRooms, RoomActivity, RoomLists
from homeserver.sync.tokens import SyncToken
from storage.account_data import AccountDataStore
from storage.events import EventStore, PersistedEvent
from storage.sliding_sync import SlidingSyncStore
from storage.sync import SyncStore

_POS = re.compile(r"^([0-9]{1,18})_(s[0-9_]+)$")


def format_pos(position: int, token: SyncToken) -> str:
    return f"{position}_{token}"


def parse_pos(text: str) -> tuple[int, SyncToken]:
    """(connection position, sync token); anything we did not hand out is M_UNKNOWN_POS, so the
    client starts over rather than failing for good."""
    m = _POS.match(text)
    if not m:
        raise unknown_pos()
    try:
        return int(m.group(1)), SyncToken.parse(m.group(2))
    except MatrixError:
        raise unknown_pos() from None


class SlidingSyncHandler:
    def __init__(self, events: EventStore, sync_store: SyncStore, store: SlidingSyncStore,
                 visibility: Visibility, serializer: ClientSerializer, notifier: Notifier,
                 account_data: AccountDataStore, clock: Clock,
                 typing: TypingService | None = None, receipts: ReceiptService | None = None,
                 to_device: ToDeviceSource | None = None,
                 device_lists: DeviceListSource | None = None,
                 keys: KeyCountSource | None = None,
                 stripped: StrippedState | None = None) -> None:
        self.store = store
        self.notifier = notifier
        self.activity = RoomActivity(store)
        self.lists = RoomLists(events, sync_store, store, account_data, self.activity)
        self.rooms = RoomBuilder(events, sync_store, visibility, serializer, self.activity, stripped)
        self.extensions = SlidingExtensions(account_data, typing, receipts, to_device,
                                            device_lists, keys)
        self.connections = SlidingConnections(store, clock)

    async def load(self) -> None:
        await self.store.load()

    # --- hooks wired in server.py --------------------------------------------------------------

    def on_event(self, persisted: PersistedEvent) -> None:
        """EventCreator listener: keeps the rooms' recency and bump stamps current."""
        self.activity.on_event(persisted)

    async def devices_deleted(self, user_id: str, device_ids: list[str]) -> None:
        """SessionService listener."""
        await self.connections.devices_deleted(user_id, device_ids)

    async def expire_idle_connections(self) -> None:
        await self.connections.expire_idle()

    # --- the request ---------------------------------------------------------------------------

    async def sync(self, user_id: str, device_id: str, request: SlidingSyncRequest,
                   pos: str | None, timeout_ms: int) -> dict[str, Any]:
        conn: Connection | None = None
        since: SyncToken | None = None
        if pos is not None:
            position, since = parse_pos(pos)
            conn = await self.connections.resume(user_id, device_id, request.conn_id, position)
        prev = conn.state if conn is not None else ConnectionState()
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            now = _clamp(self.notifier.current_token(), since)
            response, new = await self._compute(user_id, device_id, request, since, now, prev)
            remaining = deadline - time.monotonic()
            if since is None or self._has_news(response) or remaining <= 0:
                break
            if not self.notifier.current_token().is_after(now):
                # Nothing new since we looked: wait to be woken (by anything concerning the user).
                await self.notifier.wait(user_id, remaining)
                if deadline - time.monotonic() <= 0 and not self.notifier.current_token().is_after(now):
                    break
        position = await self.connections.record(conn, user_id, device_id, request.conn_id, new)
        response["pos"] = format_pos(position, now)
        return response

    @staticmethod
    def _has_news(response: dict[str, Any]) -> bool:
        # List counts are left out: whatever changes a count also sends a room.
        return bool(response["rooms"]) or SlidingExtensions.has_news(response["extensions"])

    async def _compute(self, user_id: str, device_id: str, request: SlidingSyncRequest,
                       since: SyncToken | None, now: SyncToken, prev: ConnectionState
                       ) -> tuple[dict[str, Any], ConnectionState]:
        new = prev.copy()
        rooms = await self.lists.compute(user_id, request, since, now, prev.rooms.keys())
        to_send = await self._rooms_to_send(since, now, rooms, prev)
        results = await self.rooms.build(user_id, since, now, rooms, to_send, prev, new)
        if since is not None:
            # Rooms sent before and now out of every window: remember where their news starts.
            gone = [r for r, status in prev.rooms.items() if status is None and r not in rooms.configs]
            for room_id in await self._active(gone, since, now):
                new.rooms[room_id] = since.events
        extensions = await self.extensions.compute(user_id, device_id, request.extensions, since,
                                                   now, rooms, results, prev, new)
        response: dict[str, Any] = {
            "lists": {name: {"count": count} for name, count in rooms.counts.items()},
            "rooms": {r: res.body for r, res in results.items() if self._worth(r, res, rooms)},
            "extensions": extensions,
        }
        return response, new

    @staticmethod
    def _worth(room_id: str, result: RoomResult, rooms: InterestedRooms) -> bool:
        return result.worth_sending() or room_id in rooms.newly_left

    async def _rooms_to_send(self, since: SyncToken | None, now: SyncToken, rooms: InterestedRooms,
                             prev: ConnectionState) -> list[str]:
        """The matched rooms that may have something for the client: never sent (or not all
        sent), a room config asking for more than before, or new events since the request's
        position."""
        if since is None:
            return list(rooms.configs)
        out, live = [], []
        for room_id, cfg in rooms.configs.items():
            prev_cfg = prev.configs.get(room_id)
            if (room_id not in prev.rooms or prev.rooms[room_id] is not None
                    or room_id in rooms.fresh or prev_cfg is None
                    or prev_cfg.combine(cfg) != prev_cfg):
                out.append(room_id)
            else:
                live.append(room_id)
        active = await self._active(live, since, now)
        return out + [r for r in live if r in active]

    async def _active(self, room_ids: list[str], since: SyncToken, now: SyncToken) -> set[str]:
        """The rooms with timeline events in (since, now]."""
        if not room_ids:
            return set()
        latest = await self.activity.latest({r: now.events for r in room_ids})
        return {r for r, pos in latest.items() if pos > since.events}


def _clamp(now: SyncToken, since: SyncToken | None) -> SyncToken:
    """Never go backwards: a token from before a restart may be ahead in in-memory streams."""
    if since is None:
        return now
    return SyncToken(**{k: max(getattr(now, k), getattr(since, k)) for k in now.__dataclass_fields__})
