"""The in-memory room tails behind woken /sync requests (storage/sync.py) and the cold-read
batching (storage/batching.py): every timeline the tails answer equals the database's answer,
on both engines, through local and remote events, rejected ones, long histories and a missed
change; events made here are known to have no redactions or relations until one arrives."""

from __future__ import annotations

import itertools

import pytest_twisted
from twisted.internet import defer, reactor

from storage.batching import TurnBatch
from storage.database import Database
from storage.sync import _TAIL_ROWS, SyncRelationStore, SyncStore
from tests.federation.incoming_fakes import ALICE, MALLORY, REMOTE, Hearth


async def db_answer(hs: Hearth, room_id: str, after: int | None, upto: int, limit: int) -> tuple:
    fresh = SyncStore(hs.db, hs.store)  # no tails: reads the database
    fresh._tails.clear()
    rows, limited = (await fresh.timelines([(room_id, after, upto, limit)]))[room_id]
    return [r.event.event_id for r in rows], limited


async def compare_all(hs: Hearth, store: SyncStore, room_id: str, positions: list[int]) -> int:
    """Every (after, upto, limit) over ``positions``: the tail's answer (when it has one) is the
    database's. Returns how many the tail answered."""
    answered = 0
    for after, upto in itertools.combinations(positions, 2):
        for limit in (1, 3, 100):
            recent = store._from_tail(room_id, after, upto, limit)
            if recent is None:
                continue
            answered += 1
            rows, limited = recent
            assert ([r.event.event_id for r in rows], limited) == \
                await db_answer(hs, room_id, after, upto, limit), (after, upto, limit)
    return answered


@pytest_twisted.ensureDeferred
async def test_tails_answer_as_the_database_does(db: Database) -> None:
    hs = await Hearth(db).start()
    store = SyncStore(db, hs.store)
    room_id = await hs.create_room("10")
    await hs.join_remote(room_id)
    positions = [hs.store.committed_position]
    for i in range(8):
        await hs.rooms.send(room_id, ALICE, "m.room.message", {"msgtype": "m.text", "body": f"{i}"})
        positions.append(hs.store.committed_position)
    # A remote message, and one from a user who never joined: stored rejected, never shown.
    await hs.handler.receive_pdu(REMOTE, await hs.remote_event(
        room_id, "m.room.message", "@bob:remote.test", {"msgtype": "m.text", "body": "hi"}))
    positions.append(hs.store.committed_position)
    rejected = await hs.handler.receive_pdu(REMOTE, await hs.remote_event(
        room_id, "m.room.message", MALLORY, {"msgtype": "m.text", "body": "let me in"}))
    assert rejected is not None
    row = await hs.store.get_event_row(rejected.event.event_id)
    assert row is not None and row.rejected
    positions.append(hs.store.committed_position)
    await hs.rooms.send(room_id, ALICE, "m.room.message", {"msgtype": "m.text", "body": "after"})
    positions.append(hs.store.committed_position)
    answered = await compare_all(hs, store, room_id, positions)
    assert answered >= 3 * 50  # nearly every range starts inside the tail
    # timelines() itself uses the tail and agrees.
    got = await store.timelines([(room_id, positions[1], positions[-1], 5)])
    assert ([r.event.event_id for r in got[room_id][0]], got[room_id][1]) == \
        await db_answer(hs, room_id, positions[1], positions[-1], 5)


@pytest_twisted.ensureDeferred
async def test_long_history_and_a_missed_change(db: Database) -> None:
    hs = await Hearth(db).start()
    store = SyncStore(db, hs.store)
    room_id = await hs.create_room("10")
    positions = []
    for i in range(_TAIL_ROWS + 10):
        await hs.rooms.send(room_id, ALICE, "m.room.message", {"msgtype": "m.text", "body": f"{i}"})
        positions.append(hs.store.committed_position)
    tail = store._tails[room_id]
    assert len(tail.rows) == _TAIL_ROWS and tail.before == positions[9]
    assert store._from_tail(room_id, positions[5], positions[-1], 10) is None  # older: database
    assert await compare_all(hs, store, room_id, positions[8:]) > 0
    # A change the tail did not hear of (as if its listener had missed one): it starts over
    # after that change, and ranges reaching before it go to the database.
    hs.store.room_changes.record(room_id, hs.store.committed_position + 1)
    hs.store.stream_ids.next()
    await hs.rooms.send(room_id, ALICE, "m.room.message", {"msgtype": "m.text", "body": "next"})
    tail = store._tails[room_id]
    assert len(tail.rows) == 1 and tail.before == hs.store.committed_position - 1
    assert store._from_tail(room_id, positions[-1], hs.store.committed_position, 10) is None


@pytest_twisted.ensureDeferred
async def test_events_made_here_start_without_redactions_or_relations(db: Database) -> None:
    hs = await Hearth(db).start()
    relations = SyncRelationStore(db, hs.store)
    room_id = await hs.create_room("10")
    types = ("m.thread", "m.replace")
    await relations.get_children(["$none"], types)  # the kind of lookup /sync makes
    root = (await hs.rooms.send(room_id, ALICE, "m.room.message",
                                {"msgtype": "m.text", "body": "root"})).event.event_id
    assert hs.store._redactions[root] == ()
    assert relations._children[(root, types)] == ()
    assert await relations.get_children([root], types) == []
    reply = (await hs.rooms.send(room_id, ALICE, "m.room.message", {
        "msgtype": "m.text", "body": "in thread",
        "m.relates_to": {"rel_type": "m.thread", "event_id": root}})).event.event_id
    assert [r.event.event_id for r in await relations.get_children([root], types)] == [reply]
    redaction = (await hs.rooms.send(room_id, ALICE, "m.room.redaction", {},
                                     redacts=root)).event.event_id
    assert await hs.store.get_redactions([root]) == {root: [redaction]}


@pytest_twisted.ensureDeferred
async def test_turn_batch_loads_one_turns_keys_together() -> None:
    loads: list[list[str]] = []

    async def load(keys: list[str]) -> dict[str, int]:
        loads.append(sorted(keys))
        if "bad" in keys:
            raise ValueError("boom")
        return {k: len(k) for k in keys if k != "missing"}
    batch: TurnBatch[str, int] = TurnBatch(reactor.callLater, load)
    got = await defer.gatherResults([defer.ensureDeferred(batch.get(k, -1))
                                     for k in ("a", "bb", "a", "missing")])
    assert got == [1, 2, 1, -1] and loads == [["a", "bb", "missing"]]
    assert await batch.get("ccc", -1) == 3 and len(loads) == 2  # a later turn: a new load
    failing = [defer.ensureDeferred(batch.get(k, -1)) for k in ("bad", "x")]
    for d in failing:
        try:
            await d
        except ValueError:
            continue
        raise AssertionError("every waiter of a failed load hears of it")
