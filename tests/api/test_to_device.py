"""Send-to-device messaging on both engines: PUT /sendToDevice over HTTP, and the functions /sync
uses (messages_for_device, delete_acknowledged) for exactly-once delivery."""

from __future__ import annotations

import json
import uuid
from typing import Any, AsyncIterator

import pytest_twisted
from twisted.internet import defer, reactor

from homeserver.clock import Clock
from homeserver.e2ee.to_device import ToDeviceService
from homeserver.notifier import Notifier
from storage.accounts import AccountStore
from storage.database import Database
from storage.engines import create_engine
from storage.to_device import ToDeviceStore
from tests.harness import Client, ServerProcess

PW = "correct horse battery"
SERVER = "test.local"


def _txn() -> str:
    return "t" + uuid.uuid4().hex


def _send(c: Client, messages: Any, *, event_type: str = "org.example.ping",
          txn: str | None = None) -> Any:
    return c.put(f"sendToDevice/{event_type}/{txn or _txn()}", {"messages": messages})


def _second_device(c: Client) -> Client:
    other = Client(c.base_url)
    other.login(c.user_id, PW)
    return other


# --- reading a running server's queues --------------------------------------------------------

@pytest_twisted.async_yield_fixture
async def server_db(server: ServerProcess) -> AsyncIterator[Database]:
    cfg = server.config["database"]
    database = Database(create_engine(cfg["name"], cfg["args"]), reactor)
    database.start()
    yield database
    database.stop()


async def _service(database: Database) -> ToDeviceService:
    """The service /sync uses, over the server's database, at the stream's current position."""
    svc = ToDeviceService(ToDeviceStore(database), Notifier(reactor), Clock(reactor), SERVER)
    await svc.load()
    return svc


async def _pending(database: Database, c: Client) -> list[dict[str, Any]]:
    svc = await _service(database)
    events, _ = await svc.messages_for_device(c.user_id, c.device_id, None,
                                              svc.current_position(), limit=1000)
    return events


@pytest_twisted.ensureDeferred
async def test_send_to_all_devices_and_retries(server: ServerProcess, server_db: Database) -> None:
    alice, bob = server.client(), server.client()
    alice.register()
    bob.register()
    bob2 = _second_device(bob)
    content = {"algorithm": "m.olm.v1.curve25519-aes-sha2", "ciphertext": {"k": {"type": 0,
               "body": "Awog+/=="}}, "nested": [1, 2.5, None, "é☃"]}
    txn = _txn()
    r = _send(alice, {bob.user_id: {"*": content}}, event_type="m.room.encrypted", txn=txn)
    assert (r.status_code, r.json()) == (200, {})
    want = [{"type": "m.room.encrypted", "sender": alice.user_id, "content": content}]
    assert await _pending(server_db, bob) == want
    assert await _pending(server_db, bob2) == want
    assert await _pending(server_db, alice) == []
    # Stored opaque, exactly as sent.
    rows = await server_db.query("SELECT content_json FROM device_inbox WHERE user_id = ?",
                                 (bob.user_id,))
    assert [json.loads(r[0]) for r in rows] == [content, content]
    # A retry with the same txnId stores nothing; even a different body is not stored.
    before = (await _service(server_db)).current_position()
    assert _send(alice, {bob.user_id: {"*": {"other": 1}}}, event_type="m.room.encrypted",
                 txn=txn).status_code == 200
    assert (await _service(server_db)).current_position() == before
    assert await _pending(server_db, bob) == want
    # The txnId is scoped to the sending device: another device of alice's may reuse it.
    alice2 = _second_device(alice)
    assert _send(alice2, {bob.user_id: {bob.device_id: {"n": 2}}}, txn=txn).status_code == 200
    assert await _pending(server_db, bob) == want + [
        {"type": "org.example.ping", "sender": alice.user_id, "content": {"n": 2}}]
    assert await _pending(server_db, bob2) == want


@pytest_twisted.ensureDeferred
async def test_explicit_devices_unknown_devices_and_remote_users(
        server: ServerProcess, server_db: Database) -> None:
    alice, bob = server.client(), server.client()
    alice.register()
    bob.register()
    bob2 = _second_device(bob)
    r = _send(alice, {bob.user_id: {bob2.device_id: {"to": "bob2"}, "NOSUCHDEVICE": {"x": 1}},
                      "@someone:remote.example": {"*": {"x": 1}, "DEV": {"y": 2}},
                      "@nobody:" + SERVER: {"*": {"x": 1}},
                      alice.user_id: {}})
    assert r.status_code == 200, r.text
    assert await _pending(server_db, bob) == []
    assert await _pending(server_db, bob2) == [
        {"type": "org.example.ping", "sender": alice.user_id, "content": {"to": "bob2"}}]
    # Remote users' messages are queued for their server as one m.direct_to_device EDU
    # (durably, whether or not that server answers); unknown local users and devices get
    # nothing.
    edus = await server_db.query("SELECT edu_type, content_json FROM federation_outbox_edus"
                                 " WHERE destination = ?", ("remote.example",))
    assert [t for t, _ in edus] == ["m.direct_to_device"]
    content = json.loads(edus[0][1])
    assert (content["sender"], content["type"]) == (alice.user_id, "org.example.ping")
    assert content["messages"] == {"@someone:remote.example": {"*": {"x": 1}, "DEV": {"y": 2}}}
    assert await server_db.query("SELECT 1 FROM device_inbox WHERE user_id IN (?, ?, ?)",
                                 ("@someone:remote.example", "@nobody:" + SERVER,
                                  alice.user_id)) == []
    # An explicit device alongside '*' keeps its own content; the others get the '*' one.
    r = _send(alice, {bob.user_id: {"*": {"all": True}, bob.device_id: {"mine": True}}})
    assert r.status_code == 200
    assert (await _pending(server_db, bob))[-1]["content"] == {"mine": True}
    assert (await _pending(server_db, bob2))[-1]["content"] == {"all": True}


@pytest_twisted.ensureDeferred
async def test_bad_requests_store_nothing(server: ServerProcess, server_db: Database) -> None:
    alice, bob = server.client(), server.client()
    alice.register()
    bob.register()
    before = (await _service(server_db)).current_position()
    path = f"sendToDevice/org.example.ping/{_txn()}"
    cases: list[tuple[Any, str]] = [
        ({}, "M_MISSING_PARAM"),
        ({"messages": []}, "M_INVALID_PARAM"),
        ({"messages": {bob.user_id: {"*": "not an object"}}}, "M_BAD_JSON"),
        ({"messages": {bob.user_id: ["*"]}}, "M_BAD_JSON"),
        ({"messages": {"not-a-user": {"*": {}}}}, "M_INVALID_PARAM"),
        # A good entry next to a bad one: the whole request is refused.
        ({"messages": {bob.user_id: {"*": {"ok": 1}}, "@x:" + SERVER: {"D": 5}}}, "M_BAD_JSON"),
    ]
    for body, errcode in cases:
        r = alice.put(path, body)
        assert (r.status_code, r.json()["errcode"]) == (400, errcode), body
    r = alice.put(path, data=b"{not json")
    assert (r.status_code, r.json()["errcode"]) == (400, "M_NOT_JSON")
    r = alice.put(f"sendToDevice/{'t' * 256}/{_txn()}", {"messages": {}})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_INVALID_PARAM")
    r = alice.put(path, {"messages": {bob.user_id: {"*": {}}}}, token=None)
    assert r.status_code == 401
    assert (await _service(server_db)).current_position() == before
    assert await _pending(server_db, bob) == []
    # The failed requests did not burn the transaction id.
    assert alice.put(path, {"messages": {bob.user_id: {"*": {"late": 1}}}}).status_code == 200
    assert [e["content"] for e in await _pending(server_db, bob)] == [{"late": 1}]


@pytest_twisted.ensureDeferred
async def test_deleted_device_loses_its_queue(server: ServerProcess, server_db: Database) -> None:
    alice, bob = server.client(), server.client()
    alice.register()
    bob.register()
    bob2 = _second_device(bob)
    assert _send(alice, {bob.user_id: {"*": {"n": 1}}}).status_code == 200
    assert _send(bob2, {alice.user_id: {"*": {"from": "bob2"}}}).status_code == 200
    assert len(await _pending(server_db, bob2)) == 1
    assert bob2.post("logout").status_code == 200
    assert await server_db.query("SELECT 1 FROM device_inbox WHERE user_id = ? AND device_id = ?",
                                 (bob.user_id, bob2.device_id)) == []
    assert await server_db.query("SELECT 1 FROM to_device_txns WHERE sender = ? AND device_id = ?",
                                 (bob.user_id, bob2.device_id)) == []
    # Messages bob2 sent before going stay delivered; bob's other device keeps its queue.
    assert len(await _pending(server_db, alice)) == 1
    assert len(await _pending(server_db, bob)) == 1
    # A new device with the same id starts empty.
    again = Client(bob.base_url)
    again.login(bob.user_id, PW, device_id=bob2.device_id)
    assert await _pending(server_db, again) == []


@pytest_twisted.ensureDeferred
async def test_stream_positions_survive_a_restart_after_delivery(make_server) -> None:  # type: ignore[no-untyped-def]
    srv = make_server()
    alice, bob = srv.client(), srv.client()
    alice.register()
    bob.register()
    cfg = srv.config["database"]

    async def deliver_all() -> int:
        database = Database(create_engine(cfg["name"], cfg["args"]), reactor)
        database.start()
        try:
            svc = await _service(database)
            pos = svc.current_position()
            events, next_pos = await svc.messages_for_device(bob.user_id, bob.device_id, None, pos)
            assert len(events) == 1
            await svc.delete_acknowledged(bob.user_id, bob.device_id, next_pos)
            return pos
        finally:
            database.stop()

    assert _send(alice, {bob.user_id: {"*": {"n": 1}}}).status_code == 200
    first = await deliver_all()
    assert first > 0
    srv.restart()  # the queue is empty now: positions must still not start over
    assert _send(alice, {bob.user_id: {"*": {"n": 2}}}).status_code == 200
    second = await deliver_all()
    assert second > first


# --- the functions /sync uses, on a fresh database ------------------------------------------

async def _setup(database: Database, devices: dict[str, list[str]]) -> tuple[ToDeviceService, Notifier]:
    accounts = AccountStore(database)
    for user_id, device_ids in devices.items():
        await accounts.create_user(user_id, None, 1)
        for i, device_id in enumerate(device_ids):
            await accounts.upsert_device(user_id, device_id, None, 1 + i)
    notifier = Notifier(reactor)
    svc = ToDeviceService(ToDeviceStore(database), notifier, Clock(reactor), SERVER)
    await svc.load()
    return svc, notifier


A, B = "@a:" + SERVER, "@b:" + SERVER


@pytest_twisted.ensureDeferred
async def test_exactly_once_across_syncs(db: Database) -> None:  # noqa: F811
    svc, _ = await _setup(db, {A: ["A1"], B: ["B1", "B2"]})
    for n in range(3):
        await svc.send(A, "A1", "m.test", f"t{n}", {B: {"B1": {"n": n}}})
    # Initial sync: everything pending.
    events, p1 = await svc.messages_for_device(B, "B1", None, svc.current_position())
    assert [e["content"]["n"] for e in events] == [0, 1, 2]
    assert events[0] == {"type": "m.test", "sender": A, "content": {"n": 0}}
    assert p1 == svc.current_position()
    # The response was lost: the client syncs again with no since and gets them again.
    again, _ = await svc.messages_for_device(B, "B1", None, svc.current_position())
    assert again == events
    # Next sync with since=p1 acknowledges them: deleted, not delivered again.
    await svc.delete_acknowledged(B, "B1", p1)
    assert await svc.store.count_pending(B, "B1") == 0
    events, p2 = await svc.messages_for_device(B, "B1", p1, svc.current_position())
    assert (events, p2) == ([], p1)
    # New messages arrive; a sync from p2 sees only them.
    await svc.send(A, "A1", "m.test", "t3", {B: {"*": {"n": 3}}})
    await svc.send(A, "A1", "m.test", "t4", {B: {"B1": {"n": 4}}})
    events, p3 = await svc.messages_for_device(B, "B1", p2, svc.current_position())
    assert [e["content"]["n"] for e in events] == [3, 4]
    # Retrying the same since (lost response) gives the same messages: nothing was lost.
    await svc.delete_acknowledged(B, "B1", p2)
    assert (await svc.messages_for_device(B, "B1", p2, svc.current_position()))[0] == events
    await svc.delete_acknowledged(B, "B1", p3)
    assert await svc.messages_for_device(B, "B1", p3, svc.current_position()) == ([], p3)
    assert await svc.store.count_pending(B, "B1") == 0
    # B2's queue is its own: acknowledging B1 took nothing from it.
    events, _ = await svc.messages_for_device(B, "B2", None, svc.current_position())
    assert [e["content"]["n"] for e in events] == [3]


@pytest_twisted.ensureDeferred
async def test_upto_and_limit_bound_a_sync(db: Database) -> None:  # noqa: F811
    svc, _ = await _setup(db, {A: ["A1"], B: ["B1"]})
    for n in range(5):
        await svc.send(A, "A1", "m.test", f"t{n}", {B: {"B1": {"n": n}}})
    end = svc.current_position()
    events, p = await svc.messages_for_device(B, "B1", None, end, limit=2)
    assert [e["content"]["n"] for e in events] == [0, 1]
    assert p < end  # more to come: next_batch stops after the last message handed out
    await svc.delete_acknowledged(B, "B1", p)
    events, p = await svc.messages_for_device(B, "B1", p, end, limit=2)
    assert [e["content"]["n"] for e in events] == [2, 3]
    await svc.delete_acknowledged(B, "B1", p)
    events, p = await svc.messages_for_device(B, "B1", p, end, limit=2)
    assert [e["content"]["n"] for e in events] == [4]
    assert p == end
    await svc.delete_acknowledged(B, "B1", p)
    # A message stored after the sync's upper bound waits for the next sync.
    await svc.send(A, "A1", "m.test", "late", {B: {"B1": {"n": 5}}})
    assert await svc.messages_for_device(B, "B1", p, end) == ([], end)
    # An upper bound behind since never moves the position back.
    assert await svc.messages_for_device(B, "B1", end, end - 1) == ([], end)
    events, p = await svc.messages_for_device(B, "B1", p, svc.current_position())
    assert [e["content"]["n"] for e in events] == [5]
    # A since beyond the stream (a forged token) acknowledges nothing and gets the whole queue.
    await svc.delete_acknowledged(B, "B1", 10 ** 12)
    assert await svc.store.count_pending(B, "B1") == 1
    events, p = await svc.messages_for_device(B, "B1", 10 ** 12, svc.current_position())
    assert [e["content"]["n"] for e in events] == [5]
    assert p == svc.current_position()


@pytest_twisted.ensureDeferred
async def test_wildcard_expands_at_send_time(db: Database) -> None:  # noqa: F811
    svc, _ = await _setup(db, {A: ["A1"], B: ["B1", "B2"]})
    await svc.send(A, "A1", "m.test", "t1", {B: {"*": {"n": 1}}})
    await AccountStore(db).upsert_device(B, "B3", None, 10)  # logs in afterwards
    for device in ("B1", "B2"):
        events, _ = await svc.messages_for_device(B, device, None, svc.current_position())
        assert [e["content"] for e in events] == [{"n": 1}]
    assert (await svc.messages_for_device(B, "B3", None, svc.current_position()))[0] == []
    await svc.send(A, "A1", "m.test", "t2", {B: {"*": {"n": 2}}})
    events, _ = await svc.messages_for_device(B, "B3", None, svc.current_position())
    assert [e["content"] for e in events] == [{"n": 2}]


@pytest_twisted.ensureDeferred
async def test_txn_ids_are_idempotent_and_persist(db: Database) -> None:  # noqa: F811
    svc, _ = await _setup(db, {A: ["A1", "A2"], B: ["B1"]})
    await svc.send(A, "A1", "m.test", "same", {B: {"B1": {"n": 1}}})
    pos = svc.current_position()
    await svc.send(A, "A1", "m.test", "same", {B: {"B1": {"n": 1}}})
    assert svc.current_position() == pos
    restarted, _ = await _setup(db, {})  # a restarted server remembers the txn id
    await restarted.send(A, "A1", "m.test", "same", {B: {"B1": {"n": 1}}})
    assert restarted.current_position() == pos
    await restarted.send(A, "A2", "m.test", "same", {B: {"B1": {"n": 2}}})  # another device
    events, _ = await restarted.messages_for_device(B, "B1", None, restarted.current_position())
    assert [e["content"] for e in events] == [{"n": 1}, {"n": 2}]


@pytest_twisted.ensureDeferred
async def test_deleted_devices_drop_their_queue(db: Database) -> None:  # noqa: F811
    svc, _ = await _setup(db, {A: ["A1"], B: ["B1", "B2"]})
    await svc.send(A, "A1", "m.test", "t1", {B: {"*": {"n": 1}}})
    await svc.devices_deleted(B, ["B2"])
    assert await svc.store.count_pending(B, "B2") == 0
    assert await svc.store.count_pending(B, "B1") == 1


@pytest_twisted.ensureDeferred
async def test_send_wakes_the_recipients(db: Database) -> None:  # noqa: F811
    svc, notifier = await _setup(db, {A: ["A1"], B: ["B1"]})
    waiting = defer.ensureDeferred(notifier.wait(B, 30))
    other = defer.ensureDeferred(notifier.wait(A, 0.2))
    await svc.send(A, "A1", "m.test", "t1", {B: {"B1": {"n": 1}}})
    assert waiting.called
    assert not other.called  # the sender has nothing new
    assert notifier.current_token().to_device == svc.current_position() > 0
    await other
    # Nothing stored (no such device): nobody is woken and the stream stays put.
    pos = svc.current_position()
    waiting = defer.ensureDeferred(notifier.wait(B, 0.2))
    await svc.send(A, "A1", "m.test", "t2", {B: {"NOPE": {"n": 2}}})
    assert not waiting.called and svc.current_position() == pos
    await waiting
