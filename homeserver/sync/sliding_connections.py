"""Per-connection state of simplified sliding sync (MSC4186 "Connections").

For each connection the server remembers, per position it handed out, what the client then had:
which rooms were sent and up to which stream position, the room config each was sent with, the
same for the receipts and account data extensions, and the lazy-loaded members sent. A response
carries a new position only when that state changed; a request names the position it builds on,
so a retried request (its response lost) starts again from the same state. Once a request comes
with a position, the connection's other positions are forgotten.

A position that is unknown, superseded, expired or not the requester's (user, device, conn_id)
answers 400 M_UNKNOWN_POS, and the client starts the connection again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from homeserver.clock import Clock
from homeserver.http.errors import MatrixError
from homeserver.sync.sliding_request import RoomConfig
from storage.sliding_sync import SlidingSyncStore

logger = logging.getLogger(__name__)

# Connections unused this long are dropped (Synapse uses the same week).
CONNECTION_MAX_IDLE_MS = 7 * 24 * 3600 * 1000
# last_used_ts is written at most this often for a connection whose state does not change.
_TOUCH_INTERVAL_MS = 3600 * 1000
# Lazy-loaded members remembered per room; older ones may be sent again, which is harmless.
MAX_LAZY_MEMBERS_PER_ROOM = 100

# A room's status in a stream of data (room data, receipts, account data), as kept in the
# ConnectionState dicts: absent: never sent on this connection; None ("live"): everything up to
# the position the request came with has been sent; an int ("previously"): sent up to that
# stream position only, later updates were not.


def unknown_pos(message: str = "Unknown or expired position") -> MatrixError:
    return MatrixError(400, "M_UNKNOWN_POS", message)


@dataclass
class ConnectionState:
    rooms: dict[str, int | None] = field(default_factory=dict)
    configs: dict[str, RoomConfig] = field(default_factory=dict)
    receipts: dict[str, int | None] = field(default_factory=dict)
    account_data: dict[str, int | None] = field(default_factory=dict)
    lazy_members: dict[str, list[str]] = field(default_factory=dict)

    def copy(self) -> "ConnectionState":
        return ConnectionState(dict(self.rooms), dict(self.configs), dict(self.receipts),
                               dict(self.account_data),
                               {k: list(v) for k, v in self.lazy_members.items()})

    def remember_lazy(self, room_id: str, users: list[str]) -> None:
        """Record members sent to the client; the newest are kept when there are too many."""
        known = [u for u in self.lazy_members.get(room_id, []) if u not in users] + users
        self.lazy_members[room_id] = known[-MAX_LAZY_MEMBERS_PER_ROOM:]

    def forget_lazy(self, room_id: str, users: set[str]) -> None:
        if room_id in self.lazy_members:
            self.lazy_members[room_id] = [u for u in self.lazy_members[room_id] if u not in users]

    def to_json(self) -> str:
        # Configs repeat (every room of a list shares one); each distinct one is stored once.
        distinct: dict[str, int] = {}
        per_room: dict[str, int] = {}
        for room_id, cfg in sorted(self.configs.items()):
            text = json.dumps(cfg.to_json(), sort_keys=True)
            per_room[room_id] = distinct.setdefault(text, len(distinct))
        data: dict[str, Any] = {
            "rooms": self.rooms, "receipts": self.receipts, "account_data": self.account_data,
            "cfgs": [json.loads(t) for t in distinct], "configs": per_room,
            "lazy": self.lazy_members}
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "ConnectionState":
        data = json.loads(text)
        cfgs = [RoomConfig.from_json(c) for c in data.get("cfgs", [])]
        return cls(dict(data.get("rooms", {})),
                   {r: cfgs[i] for r, i in data.get("configs", {}).items()},
                   dict(data.get("receipts", {})), dict(data.get("account_data", {})),
                   {r: list(u) for r, u in data.get("lazy", {}).items()})


@dataclass(frozen=True)
class Connection:
    """A resumed connection: where it stands and the state as of the request's position."""
    connection_key: int
    position: int
    state: ConnectionState
    state_json: str


class SlidingConnections:
    def __init__(self, store: SlidingSyncStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        # connection key -> the one position it is known to have left (nothing to forget).
        self._clean: dict[int, int] = {}
        self._touched: dict[int, int] = {}

    async def resume(self, user_id: str, device_id: str, conn_id: str, position: int) -> Connection:
        """The connection state at ``position``; M_UNKNOWN_POS unless it is a live position of
        this user's connection ``conn_id`` on this device."""
        stored = await self.store.get_position(position)
        if stored is None or (stored.user_id, stored.device_id, stored.conn_id) != (
                user_id, device_id, conn_id):
            raise unknown_pos()
        key = stored.connection_key
        if self._clean.get(key) != position:
            await self.store.forget_other_positions(key, position)
            self._clean[key] = position
        now = self.clock.time_msec()
        if now - self._touched.get(key, 0) > _TOUCH_INTERVAL_MS:
            await self.store.touch(key, now)
            self._touched[key] = now
        try:
            state = ConnectionState.from_json(stored.state_json)
        except (ValueError, KeyError, TypeError, IndexError):
            logger.warning("sliding sync position %d has unreadable state; expiring it", position)
            raise unknown_pos() from None
        return Connection(key, position, state, stored.state_json)

    async def record(self, conn: Connection | None, user_id: str, device_id: str, conn_id: str,
                     state: ConnectionState) -> int:
        """The position to hand out for ``state``: the request's own when nothing changed."""
        text = state.to_json()
        now = self.clock.time_msec()
        if conn is None:
            key, position = await self.store.new_connection(user_id, device_id, conn_id, text, now)
            self._clean[key] = position
            self._touched[key] = now
            return position
        if text == conn.state_json:
            return conn.position
        position = await self.store.add_position(conn.connection_key, text, now)
        if position is None:
            # Replaced by a new connection, expired or its device deleted while we computed.
            raise unknown_pos("The connection was closed")
        self._clean.pop(conn.connection_key, None)
        self._touched[conn.connection_key] = now
        return position

    async def devices_deleted(self, user_id: str, device_ids: list[str]) -> None:
        """SessionService listener: a deleted device's connections go with it."""
        await self.store.delete_device_connections(user_id, device_ids)

    async def expire_idle(self) -> None:
        dropped = await self.store.delete_unused_since(self.clock.time_msec() - CONNECTION_MAX_IDLE_MS)
        if dropped:
            logger.info("expired %d idle sliding sync connections", dropped)
        self._clean.clear()
        self._touched.clear()
