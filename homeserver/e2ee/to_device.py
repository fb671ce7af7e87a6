"""Send-to-device messaging (spec: Client-Server API "Send-to-Device messaging").

A message is queued per recipient device at its own position of the ``to_device`` stream and is
delivered exactly once: /sync hands out the messages after its ``since`` position, and the next
/sync, whose ``since`` covers them, acknowledges (deletes) them. Contents are opaque: the server
stores and serves them as the client sent them (olm-encrypted payloads included).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from homeserver.clock import Clock
from homeserver.notifier import Notifier
from storage.to_device import ToDeviceStore

logger = logging.getLogger(__name__)

# The spec's recommended cap on messages per /sync response.
DEFAULT_LIMIT = 100
# How long a (sender, device, txnId) is remembered for idempotency.
TXN_RETENTION_MS = 7 * 24 * 3600 * 1000

Messages = dict[str, dict[str, dict[str, Any]]]  # {user_id: {device_id or '*': content}}


def _dump(content: dict[str, Any]) -> str:
    return json.dumps(content, ensure_ascii=False, separators=(",", ":"))


class ToDeviceService:
    def __init__(self, store: ToDeviceStore, notifier: Notifier, clock: Clock,
                 server_name: str) -> None:
        self.store = store
        self.notifier = notifier
        self.clock = clock
        self.server_name = server_name
        # (user, device) -> position up to which its queue is known to be deleted: a long-poll
        # repeats the same since token, and nothing can be queued at or below a position that
        # was already handed out (writes commit in position order).
        self._acked: dict[tuple[str, str], int] = {}
        # async (sender, type, {remote user: {device: content}}): m.direct_to_device EDUs.
        self.remote_send: Any = None

    async def load(self) -> None:
        await self.store.load()
        self.notifier.set_position("to_device", self.store.current_position())

    def current_position(self) -> int:
        """The to_device stream's position: every message at or below it is readable."""
        return self.store.current_position()

    def _is_local(self, user_id: str) -> bool:
        return user_id.split(":", 1)[1] == self.server_name

    # --- sending -------------------------------------------------------------------------------

    async def send(self, sender: str, sender_device: str, event_type: str, txn_id: str,
                   messages: Messages) -> None:
        """Queue one message per target device (already validated by the caller).

        Idempotent per (sender, sender_device, txn_id): a retry stores nothing new.
        """
        local: dict[str, dict[str, str]] = {}
        remote: dict[str, dict[str, Any]] = {}
        for user_id, by_device in messages.items():
            if not by_device:
                continue
            if self._is_local(user_id):
                local[user_id] = {d: _dump(c) for d, c in by_device.items()}
            else:
                remote[user_id] = dict(by_device)
        result = await self.store.add_messages(sender, sender_device, txn_id, event_type, local,
                                               self.clock.time_msec())
        if result.position is not None:
            self.notifier.notify("to_device", result.position, users=result.users)
        if remote and not result.duplicate:
            if self.remote_send is None:
                logger.info("dropping to-device %s from %s to %d remote users: federation is off",
                            event_type, sender, len(remote))
            else:
                await self.remote_send(sender, event_type, remote)

    async def deliver_remote(self, origin: str, sender: str, event_type: str, message_id: str,
                             messages: Messages) -> None:
        """Messages another server sent (m.direct_to_device) for our users' devices; a
        repeated message id from the same sender stores nothing."""
        local = {u: {d: _dump(c) for d, c in by_device.items()} for u, by_device in messages.items()
                 if self._is_local(u) and isinstance(by_device, dict)}
        result = await self.store.add_messages(sender, f"federation:{origin}", message_id,
                                               event_type, local, self.clock.time_msec())
        if result.position is not None:
            self.notifier.notify("to_device", result.position, users=result.users)

    # --- for /sync -----------------------------------------------------------------------------

    async def messages_for_device(self, user_id: str, device_id: str, since_pos: int | None,
                                  upto_pos: int, limit: int = DEFAULT_LIMIT
                                  ) -> tuple[list[dict[str, Any]], int]:
        """The device's messages in (since_pos, upto_pos], oldest first, at most ``limit``, as
        /sync's ``to_device.events`` ({type, sender, content}), and the to_device position for
        next_batch: ``upto_pos`` when everything fitted, else the last message returned (the
        rest follows in the next /sync). since_pos None (initial sync): every pending message.

        /sync calls ``delete_acknowledged(since)`` first, and answers at once instead of
        long-polling when next_pos < upto_pos (more messages are waiting). The position never
        moves back behind ``since``.
        """
        limit = max(1, limit)
        current = self.current_position()
        upto_pos = min(upto_pos, current)
        if since_pos is not None and since_pos > current:
            since_pos = None  # a token from nowhere (forged, or older than a restored database)
        if since_pos is not None and since_pos >= upto_pos:
            return [], since_pos
        rows = await self.store.get_messages(user_id, device_id, since_pos, upto_pos, limit + 1)
        next_pos = upto_pos
        if len(rows) > limit:
            rows = rows[:limit]
            next_pos = rows[-1].stream_id
        events = [{"type": r.message_type, "sender": r.sender, "content": json.loads(r.content_json)}
                  for r in rows]
        return events, next_pos

    async def delete_acknowledged(self, user_id: str, device_id: str, upto_pos: int) -> None:
        """A /sync arrived with ``since`` = upto_pos: the device has everything up to there.

        A position beyond the stream's current one comes from no response of this server (a
        forged token, or one older than a restored database): it acknowledges nothing, and
        messages_for_device then delivers the whole queue.
        """
        if 0 < upto_pos <= self.current_position():
            key = (user_id, device_id)
            if self._acked.get(key, 0) >= upto_pos:
                return
            await self.store.delete_up_to(user_id, device_id, upto_pos)
            if len(self._acked) > 100_000:
                self._acked.clear()
            self._acked[key] = max(upto_pos, self._acked.get(key, 0))

    # --- housekeeping --------------------------------------------------------------------------

    async def devices_deleted(self, user_id: str, device_ids: list[str]) -> None:
        """SessionService listener: a deleted device's queue (and its txn ids) go with it."""
        await self.store.delete_devices(user_id, device_ids)
        for device_id in device_ids:
            self._acked.pop((user_id, device_id), None)

    async def purge_old_txns(self) -> None:
        await self.store.purge_txns_before(self.clock.time_msec() - TXN_RETENTION_MS)
