"""Ephemeral data between servers: typing notifications and read receipts (spec: "Typing
Notifications", "Receipts"), out as EDUs through the per-destination queues and in from /send.
Only our own users' typing and public read receipts go out; what comes in is accepted only for
users of the sending server who are joined to the room.
"""

from __future__ import annotations

import logging
from typing import Any

from federation.server_visibility import server_of
from storage.events import EventRow, EventStore

logger = logging.getLogger(__name__)


class EduBridge:
    def __init__(self, server_name: str, events: EventStore, sender: Any, clock: Any) -> None:
        self.server_name = server_name
        self.events = events
        self.sender = sender
        self.clock = clock
        self.typing: Any = None
        self.receipts: Any = None
        self.presence: Any = None

    async def _servers(self, room_id: str) -> set[str]:
        # The cached member set (joined, invited, knocking): no database read per EDU.
        members = await self.events.get_interested_users(room_id)
        return {server_of(u) for u in members} - {self.server_name}

    async def _joined(self, origin: str, user_id: Any, room_id: Any) -> bool:
        if not isinstance(user_id, str) or not isinstance(room_id, str) or server_of(user_id) != origin:
            return False
        m = await self.events.get_membership(room_id, user_id)
        return m is not None and m[0] == "join"

    # --- out -----------------------------------------------------------------------------------

    async def on_typing(self, room_id: str, user_id: str, typing: bool, timeout_ms: int) -> None:
        if server_of(user_id) != self.server_name:
            return
        content = {"room_id": room_id, "user_id": user_id, "typing": typing}
        if typing:
            content["timeout"] = timeout_ms
        for server in await self._servers(room_id):
            await self.sender.send_edu(server, "m.typing", content, key=f"{room_id}/{user_id}")

    async def on_receipt(self, user_id: str, room_id: str, receipt_type: str,
                         thread_id: str | None, row: EventRow) -> None:
        if server_of(user_id) != self.server_name or receipt_type != "m.read":
            return  # private receipts stay on this server
        data: dict[str, Any] = {"ts": self.clock.time_msec()}
        if thread_id is not None:
            data["thread_id"] = thread_id
        content = {room_id: {"m.read": {user_id: {"event_ids": [row.event.event_id], "data": data}}}}
        for server in await self._servers(room_id):
            await self.sender.send_edu(server, "m.receipt", content,
                                       key=f"{room_id}/{user_id}/{thread_id or ''}")

    async def on_presence(self, user_id: str, presence: Any) -> None:
        if server_of(user_id) != self.server_name:
            return
        servers: set[str] = set()
        for room_id in await self.events.get_rooms_for_user(user_id):
            servers |= await self._servers(room_id)
        item = {"user_id": user_id, **presence.content(self.clock.time_msec())}
        item.setdefault("currently_active", False)
        for server in servers:
            await self.sender.send_edu(server, "m.presence", {"push": [item]}, key=user_id)

    # --- in ------------------------------------------------------------------------------------

    async def typing_edu(self, origin: str, content: Any) -> None:
        if not isinstance(content, dict) or self.typing is None:
            return
        room_id, user_id = content.get("room_id"), content.get("user_id")
        if not await self._joined(origin, user_id, room_id):
            return
        timeout = content.get("timeout", 30_000)
        timeout = timeout if isinstance(timeout, int) and not isinstance(timeout, bool) else 30_000
        await self.typing.set_typing(user_id, room_id, content.get("typing") is True, timeout)

    async def presence_edu(self, origin: str, content: Any) -> None:
        if not isinstance(content, dict) or self.presence is None:
            return
        for item in content.get("push", []) if isinstance(content.get("push"), list) else []:
            if not isinstance(item, dict):
                continue
            user_id, state = item.get("user_id"), item.get("presence")
            if not isinstance(user_id, str) or server_of(user_id) != origin or not isinstance(state, str):
                continue
            status = item.get("status_msg")
            ago = item.get("last_active_ago")
            await self.presence.set_remote(user_id, state, status if isinstance(status, str) else None,
                                           ago if isinstance(ago, int) and not isinstance(ago, bool) else None,
                                           item.get("currently_active") is True)

    async def receipt_edu(self, origin: str, content: Any) -> None:
        if not isinstance(content, dict) or self.receipts is None:
            return
        for room_id, by_type in content.items():
            if not isinstance(by_type, dict) or not isinstance(by_type.get("m.read"), dict):
                continue
            for user_id, receipt in by_type["m.read"].items():
                if not isinstance(receipt, dict) or not await self._joined(origin, user_id, room_id):
                    continue
                ids = receipt.get("event_ids")
                data = receipt.get("data") if isinstance(receipt.get("data"), dict) else {}
                thread_id = data.get("thread_id") if isinstance(data.get("thread_id"), str) else None
                for event_id in ids if isinstance(ids, list) else []:
                    if not isinstance(event_id, str):
                        continue
                    row = await self.events.get_event_row(event_id)
                    if row is None or row.outlier or row.event.room_id != room_id:
                        continue
                    await self.receipts.record_remote(user_id, room_id, "m.read", row, thread_id)
