"""Our users' events enter the federation outbox in the event's own transaction."""

from __future__ import annotations

import pytest_twisted

from federation.outbox import outbox_hook
from federation.sender import FederationSender
from homeserver.config import FederationConfig
from storage.database import Database
from storage.federation_queue import FederationQueueStore
from tests.federation.incoming_fakes import ALICE, LOCAL, REMOTE, Hearth


async def _outbox(db: Database) -> list[tuple[str, str]]:
    return [tuple(r) for r in await db.query(
        "SELECT destination, event_id FROM federation_outbox_pdus ORDER BY stream_id")]


@pytest_twisted.ensureDeferred
async def test_local_events_are_queued_with_the_event(db: Database) -> None:
    hs = await Hearth(db).start()
    queue = FederationQueueStore(db)
    await queue.load()

    async def never_called(*args: object) -> dict:
        raise AssertionError("the sender was not started: nothing may be sent")
    sender = FederationSender(queue, hs.clock, never_called, LOCAL, FederationConfig(),
                              lambda ids: never_called())
    hs.store.persist_hooks.append(outbox_hook(hs.store, sender, LOCAL))
    local_only = await hs.create_room("12")
    await hs.rooms.send(local_only, ALICE, "m.room.message", {"msgtype": "m.text", "body": "x"})
    assert await _outbox(db) == []  # nobody else to tell
    shared = await hs.create_room("12")
    join = await hs.join_remote(shared)
    assert await _outbox(db) == []  # the remote join is theirs, not ours to send
    sent = await hs.rooms.send(shared, ALICE, "m.room.message", {"msgtype": "m.text", "body": "hi"})
    assert await _outbox(db) == [(REMOTE, sent.event.event_id)]
    kick = await hs.rooms.update_membership(shared, ALICE, f"@bob:{REMOTE}", "leave")
    assert kick is not None
    # The kick goes to the kicked user's server although it has no member left.
    assert (await _outbox(db))[-1] == (REMOTE, kick.event.event_id)
    assert join not in {e for _, e in await _outbox(db)}
