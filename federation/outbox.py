"""Our users' events into the outbox of every other server in the room, inside the event's own
transaction: the event and its place in the per-destination queues commit together, so a crash
can lose neither one without the other (spec: each server in the room receives the PDU)."""

from __future__ import annotations

from typing import Any, Callable

from federation.server_visibility import server_of
from storage.events import EventStore


def outbox_hook(events: EventStore, sender: Any, server_name: str
                ) -> Callable[[Any, Any, int], None]:
    """An EventStore persist hook (runs on the database thread, in the event's transaction)."""
    local_suffix = ":" + server_name

    def queue_out(txn: Any, ev: Any, stream: int) -> None:
        if server_of(ev.sender) != server_name or stream < 0:
            return  # other servers' events, and history fetched by backfill, are not ours to send
        members = events.interested_users_txn(txn, ev.room_id)
        servers = {server_of(u) for u in members if not u.endswith(local_suffix)}
        if ev.type == "m.room.member" and ev.state_key:
            servers.add(server_of(ev.state_key))  # the kicked, banned or invited user's server
        servers.discard(server_name)
        if servers:
            sender.queue_pdu_txn(txn, ev.event_id, servers)
    return queue_out
